"""POST /token, /introspect, /revoke: one-line delegations to the Authlib server."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask import Response
from flask import current_app

bp = Blueprint("oauth", __name__)


def _server() -> Any:
    return current_app.extensions["authserver.oauth"]


@bp.post("/token")
def token() -> Response:
    return _server().create_token_response()  # type: ignore[no-any-return]


@bp.post("/introspect")
def introspect() -> Response:
    """RFC 7662."""
    return _server().create_endpoint_response("introspection")  # type: ignore[no-any-return]


@bp.post("/revoke")
def revoke() -> Response:
    """RFC 7009."""
    return _server().create_endpoint_response("revocation")  # type: ignore[no-any-return]
