"""JSON error responses for everything that is not an OAuth protocol error."""

from __future__ import annotations

import logging

from flask import Flask
from flask import Response
from flask import jsonify
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from authserver.errors import KeyStoreError

log = logging.getLogger(__name__)

#: RFC 6749 §5.2-shaped codes for plain HTTP errors, so every error body has one shape.
_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "invalid_request",
    415: "invalid_request",
    429: "too_many_requests",
}


def error_response(status: int, error: str, description: str) -> Response:
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def database_unavailable(exc: Exception) -> Response:
    """503 for a database failure. Never the exception text: it can carry connection
    strings and SQL."""
    log.error("database unavailable: %s", type(exc).__name__)
    response = error_response(503, "temporarily_unavailable", "the database is unavailable")
    response.headers["Retry-After"] = "5"
    return response


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        description = {
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
            413: "the request body is too large",
        }.get(status, exc.name)
        response = error_response(status, _CODES.get(status, "server_error"), description)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    @app.errorhandler(DBAPIError)
    def _database(exc: Exception) -> Response:
        return database_unavailable(exc)

    @app.errorhandler(KeyStoreError)
    def _keys(exc: KeyStoreError) -> Response:
        log.error("signing keys unavailable: %s", exc)
        response = error_response(503, "temporarily_unavailable", "no signing key is available")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "server_error", "internal error")
