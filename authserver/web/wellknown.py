"""/.well-known/jwks.json (RFC 7517) and the RFC 8414 / OIDC discovery documents.

Every sync server and verifier polls these, so they are served from bytes prepared once:
the metadata document never changes while the process runs, and the JWK set changes only
when the set of published keys does (a rotation, a retire, or a key passing out of its
retention), so its body and ETag are cached keyed by the published key ids.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from flask import Blueprint
from flask import Response
from flask import request

from authserver.oauth.metadata import metadata_document
from authserver.web.context import services

bp = Blueprint("wellknown", __name__)


class _Document:
    """A JSON document as sent: body, strong ETag and the cache headers."""

    __slots__ = ("body", "etag", "headers")

    def __init__(self, document: dict[str, Any], max_age: int) -> None:
        self.body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        self.etag = hashlib.sha256(self.body).hexdigest()[:32]
        self.headers = {
            "ETag": f'"{self.etag}"',
            # max-age never exceeds the publish-ahead time (Settings.validate), so a
            # verifier that honours it has seen a new key before the key signs anything.
            "Cache-Control": f"public, max-age={max_age}",
            "Access-Control-Allow-Origin": "*",
        }

    def response(self) -> Response:
        # RFC 9110 §13.1.2: If-None-Match uses the weak comparison ("W/" prefix ignored).
        if request.if_none_match.contains_weak(self.etag):
            return Response(status=304, headers=self.headers)
        return Response(self.body, mimetype="application/json", headers=self.headers)


_lock = threading.Lock()
_jwks: dict[tuple[Any, ...], _Document] = {}
_metadata: dict[tuple[str, int], _Document] = {}


def _cached(cache: dict[Any, _Document], key: Any, build: Any, max_age: int) -> _Document:
    document = cache.get(key)
    if document is None:
        document = _Document(build(), max_age)
        with _lock:
            if len(cache) >= 16:  # only ever a handful of live key sets; stay bounded
                cache.clear()
            cache[key] = document
    return document


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    svc = services()
    published = svc.keys.published_jwks()
    key = (svc.settings.jwks_max_age, *(jwk.get("kid") for jwk in published["keys"]))
    return _cached(_jwks, key, lambda: published, svc.settings.jwks_max_age).response()


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def metadata() -> Response:
    svc = services()
    issuer, max_age = svc.settings.issuer, svc.settings.jwks_max_age
    return _cached(
        _metadata, (issuer, max_age), lambda: metadata_document(issuer), max_age
    ).response()
