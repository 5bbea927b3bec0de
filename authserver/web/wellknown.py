"""/.well-known/jwks.json (RFC 7517) and the RFC 8414 / OIDC discovery documents.

Every sync server and verifier polls these, so they are served by the lean WSGI layer
(``oauth/wsgi.py``) from bytes prepared once: the metadata document never changes while the
process runs, and the JWK set changes only when the set of published keys does (a
rotation, a retire, or a key passing out of its retention), so its prepared document is
cached keyed by the published key ids.

To publish another document, add a source here: a function returning the current
:class:`~authserver.oauth.wsgi.Document` (built once per version through a
:class:`~authserver.cache.BoundedCache`).
"""

from __future__ import annotations

from authserver.cache import BoundedCache
from authserver.container import Services
from authserver.oauth.metadata import metadata_document
from authserver.oauth.metadata import validate
from authserver.oauth.wsgi import Document
from authserver.oauth.wsgi import OAuthWSGI

JWKS = "/.well-known/jwks.json"
METADATA = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def register(wsgi: OAuthWSGI, services: Services) -> None:
    keys, settings = services.key_ring, services.settings
    max_age = settings.jwks_max_age
    # Only ever a handful of live key sets (rotation, retire, retention).
    jwks_cache: BoundedCache[tuple[object, ...], Document] = BoundedCache(16)

    # The document of the last key set served: the ring returns the same set object while
    # nothing changed, so most GETs cost one identity check. One tuple, replaced whole, so
    # concurrent requests never pair a set with another set's document.
    last: tuple[object, Document] | None = None

    def jwks() -> Document:
        nonlocal last
        published = keys.published_jwks()
        if last is not None and last[0] is published:
            return last[1]
        kids = tuple(jwk.get("kid") for jwk in published["keys"])
        document = jwks_cache.get_or_build(kids, lambda: Document.json(published, max_age))
        last = (published, document)
        return document

    # Authlib's RFC 8414 checks, once per process: a document that fails them is never
    # served (``serve`` refuses to start first, with one line).
    validate(settings.issuer)
    metadata = Document.json(metadata_document(settings.issuer), max_age)

    wsgi.add_document(JWKS, jwks)
    for path in METADATA:
        wsgi.add_document(path, lambda: metadata)
