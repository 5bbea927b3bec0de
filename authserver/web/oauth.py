"""POST /token, /introspect, /revoke: one-line delegations to the Authlib server."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app

from authserver.profiles.registry import ProfileRegistry

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


def profile_path() -> Response:
    """A profile's own token path (``stream``: ``POST /auth/v1/access-tokens``)."""
    return _server().create_profile_path_response()  # type: ignore[no-any-return]


def register_profile_paths(app: Flask, profiles: ProfileRegistry) -> None:
    """Serve each profile's own paths (the same grant as ``/token``)."""
    for path, profile in sorted(profiles.paths().items()):
        app.add_url_rule(
            path,
            endpoint=f"profile_{profile.name}_{path}",
            view_func=profile_path,
            methods=["POST"],
        )
