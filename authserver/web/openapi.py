"""GET /openapi.json: the packaged OpenAPI document (``openapi.yaml``), with ``servers``
set to this server's issuer, served by the lean WSGI layer as a prepared
:class:`~authserver.oauth.wsgi.Document` (ETag, 304, CORS)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml

from authserver.container import Services
from authserver.oauth.wsgi import Document
from authserver.oauth.wsgi import OAuthWSGI

RESOURCE = "openapi.yaml"
#: libyaml's parser where PyYAML was built with it (its wheels are): the same document in
#: an eighth of the time of the pure-Python one, which was most of a worker's start-up.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PATH = "/openapi.json"
#: The document changes only with a release.
MAX_AGE = 300


@functools.cache
def document() -> dict[str, Any]:
    """The packaged document, parsed once per process."""
    text = resources.files("authserver.web").joinpath(RESOURCE).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader, C or Python
    if not isinstance(data, dict):
        raise TypeError(f"authserver/web/{RESOURCE} is not an OpenAPI document")
    return data


@functools.lru_cache(maxsize=8)
def served(issuer: str) -> Document:
    """The document for *issuer*, serialised once per process and issuer."""
    # Only the top level changes: a shallow copy keeps the packaged document intact.
    data = {**document(), "servers": [{"url": issuer}]}
    # In the authored order (Document.json would sort the keys): paths read as written.
    return Document(json.dumps(data, separators=(",", ":")).encode(), "application/json", MAX_AGE)


def register(wsgi: OAuthWSGI, services: Services) -> None:
    document_for_issuer = served(services.settings.issuer)
    wsgi.add_document(PATH, lambda: document_for_issuer)
