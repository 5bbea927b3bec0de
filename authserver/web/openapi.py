"""GET /openapi.json: the packaged OpenAPI document (``openapi.yaml``), with ``servers``
set to this server's issuer."""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint
from flask import Response
from flask import request

from authserver.web.context import services

bp = Blueprint("openapi", __name__)

RESOURCE = "openapi.yaml"


@functools.cache
def document() -> dict[str, Any]:
    """The packaged document, parsed once per process."""
    text = resources.files("authserver.web").joinpath(RESOURCE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise TypeError(f"authserver/web/{RESOURCE} is not an OpenAPI document")
    return data


@functools.lru_cache(maxsize=8)
def document_for(issuer: str) -> bytes:
    """The document as served for *issuer*, serialised once per issuer."""
    data = copy.deepcopy(document())
    data["servers"] = [{"url": issuer}]
    return json.dumps(data, separators=(",", ":")).encode()


@bp.get("/openapi.json")
def openapi_json() -> Response:
    response = Response(document_for(services().settings.issuer), mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.add_etag()
    response.make_conditional(request)  # 304 when If-None-Match matches; in place
    return response
