"""JSON error responses for everything that is not an OAuth protocol error."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask import Response
from flask import jsonify
from werkzeug.exceptions import HTTPException

from authserver.clients.secrets import withhold_secrets
from authserver.errors import KeyStoreError
from authserver.errors import StorageError
from authserver.errors import StorageUnavailable
from authserver.oauth.wsgi import allow_header

log = logging.getLogger(__name__)

#: RFC 6749 §5.2-shaped codes for plain HTTP errors, so every error body has one shape:
#: every 4xx RFC 9110 (and RFC 6585, RFC 7725) names, by its reason phrase. 408, 411, 413
#: and 415 are malformed requests, as the body reader (web/bodies.py) answers them; 406
#: and 412 are what the lean layer's documents answer.
_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    407: "proxy_authentication_required",
    408: "invalid_request",
    409: "conflict",
    410: "gone",
    411: "invalid_request",
    412: "precondition_failed",
    413: "invalid_request",
    414: "uri_too_long",
    415: "invalid_request",
    416: "range_not_satisfiable",
    417: "expectation_failed",
    421: "misdirected_request",
    422: "unprocessable_content",
    423: "locked",
    424: "failed_dependency",
    425: "too_early",
    426: "upgrade_required",
    428: "precondition_required",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    451: "unavailable_for_legal_reasons",
    # 5xx: the server's own failures are server_error (RFC 6749 §5.2); 503 is the code
    # RFC 6749 §4.1.2.1 gives an unavailable server, as a database or key outage answers
    # it; 501 is what the lean layer answers an unimplemented parameter.
    501: "not_implemented",
    503: "temporarily_unavailable",
}

#: How long a client should wait before retrying a 503 (RFC 9110 §10.2.3), whatever raised it.
RETRY_AFTER = (("Retry-After", "5"),)


def error_code(status: int) -> str:
    """The ``error`` of an HTTP error *status*: from :data:`_CODES`; any other 4xx is
    ``invalid_request``, any other 5xx ``server_error``. ``server_error`` is for 5xx only
    (RFC 6749 §5.2 and §4.1.2.1 give it to the server's own failures): a client reading it
    would retry a request that can never succeed."""
    if status in _CODES:
        return _CODES[status]
    return "invalid_request" if 400 <= status < 500 else "server_error"


def error_response(status: int, error: str, description: str) -> Response:
    response = jsonify({"error": error, "error_description": withhold_secrets(description)})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


Rendered = tuple[int, dict[str, Any], list[tuple[str, str]]]


def _body(error: str, description: str) -> dict[str, Any]:
    return {"error": error, "error_description": description}


class Throttled:
    """A line logged at most once per *every* seconds (per process): a database outage is
    answered 503 on every request, and each request's access line already says so; the
    error log says it once, then once per *every* seconds with how many it left out."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._last = float("-inf")
        self._left_out = 0
        self._lock = threading.Lock()

    def error(self, message: str, *args: object) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last < self._every:
                self._left_out += 1
                return
            left_out, self._left_out, self._last = self._left_out, 0, now
        if left_out:
            log.error(message + " (%d more since the last such line)", *args, left_out)
        else:
            log.error(message, *args)


_DATABASE_UNAVAILABLE = Throttled()
_KEYS_UNAVAILABLE = Throttled()


def render_exception(exc: Exception) -> Rendered:
    """``(status, body, headers)`` for an exception that is not a protocol error: 503 when
    the database or the signing keys are unavailable, else 500 (a :class:`StorageError`
    that is not :class:`StorageUnavailable` included: a storage bug). Used by the Flask
    app and by the lean WSGI layer alike, so every error body has one shape."""
    retry = list(RETRY_AFTER)
    if isinstance(exc, StorageUnavailable):
        # Its message (storage/sql/engine.explain_error) says which database, password
        # masked, and why in known words; the driver's own text, which can carry the
        # connection string and SQL, is never part of it.
        _DATABASE_UNAVAILABLE.error("database unavailable: %s", exc)
        return 503, _body("temporarily_unavailable", "the database is unavailable"), retry
    if isinstance(exc, KeyStoreError):
        _KEYS_UNAVAILABLE.error("signing keys unavailable: %s", exc)
        return 503, _body("temporarily_unavailable", "no signing key is available"), retry
    log.error("unhandled error", exc_info=exc)
    return 500, _body("server_error", "internal error"), []


def _flask(rendered: Rendered) -> Response:
    status, body, headers = rendered
    response = error_response(status, body["error"], body["error_description"])
    for name, value in headers:
        response.headers[name] = value
    return response


def database_unavailable(exc: StorageError) -> Response:
    """The answer to a failed commit at the end of a request: 503 when the database is
    unavailable, as for any other database failure."""
    return _flask(render_exception(exc))


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        description = {
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
            413: "the request body is too large",
        }.get(status, exc.name)
        response = error_response(status, error_code(status), description)
        if status == 503:
            for name, value in RETRY_AFTER:
                response.headers[name] = value
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:
            # In order, as the lean layer lists them (Werkzeug's order is a set's).
            response.headers["Allow"] = allow_header(allowed)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        return _flask(render_exception(exc))
