"""POST /token: one-line delegation to the Authlib server (RFC 6749 §4.4, RFC 9068)."""

from __future__ import annotations

from flask import Blueprint
from flask import Response
from flask import current_app

bp = Blueprint("oauth", __name__)


@bp.post("/token")
def token() -> Response:
    return current_app.extensions["authserver.oauth"].create_token_response()  # type: ignore[no-any-return]
