"""/.well-known/jwks.json (RFC 7517) and the RFC 8414 / OIDC discovery documents."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Blueprint
from flask import Response
from flask import request

from authserver.oauth.metadata import metadata_document
from authserver.web.context import services

bp = Blueprint("wellknown", __name__)


def _cacheable_json(document: dict[str, Any], max_age: int) -> Response:
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    etag = hashlib.sha256(body).hexdigest()[:32]
    response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    # max-age never exceeds the publish-ahead time (Settings.validate), so a verifier that
    # honours it has seen a new key before the key signs anything.
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.make_conditional(request)  # in place: 304 when If-None-Match matches
    return response


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    svc = services()
    return _cacheable_json(svc.keys.published_jwks(), svc.settings.jwks_max_age)


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def metadata() -> Response:
    svc = services()
    return _cacheable_json(metadata_document(svc.settings.issuer), svc.settings.jwks_max_age)
