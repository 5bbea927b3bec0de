"""GET the Token Status Lists (draft-ietf-oauth-status-list-17 §8) and their aggregation (§9).

Public, like the JWKS: a sync server fetches the list its tokens name, verifies it with the
JWKS and caches it for its ``ttl``. ``Cache-Control: max-age`` is what is left of that ttl
for the copy served, and a strong ETag answers conditional GETs with 304.
"""

from __future__ import annotations

from flask import Blueprint
from flask import Response
from flask import jsonify
from flask import request

from authserver.tokens.statuslist import MEDIA_TYPE
from authserver.tokens.statuslist import PATH
from authserver.web.context import services
from authserver.web.errors import error_response

bp = Blueprint("statuslists", __name__)

#: §8: "The HTTP endpoint SHOULD support the use of Cross-Origin Resource Sharing".
_CORS = {"Access-Control-Allow-Origin": "*"}


@bp.get(PATH)
def aggregation() -> Response:
    """§9.3: every status list URI, for verifiers that prefetch."""
    lists = services().status_lists
    response = jsonify({"status_lists": [lists.uri(i) for i in lists.list_ids()]})
    response.headers.update(_CORS)
    response.headers["Cache-Control"] = f"public, max-age={lists.ttl}"
    return response


@bp.get(f"{PATH}/<int:list_id>")
def status_list(list_id: int) -> Response:
    """§8.2: the signed list, ``application/statuslist+jwt``."""
    svc = services()
    published = svc.status_lists.published(list_id)
    if published is None:
        return error_response(404, "not_found", "no such status list")
    headers = {
        **_CORS,
        "ETag": f'"{published.etag}"',
        "Cache-Control": f"public, max-age={published.max_age(svc.clock.now())}",
    }
    # RFC 9110 §13.1.2: If-None-Match uses the weak comparison.
    if request.if_none_match.contains_weak(published.etag):
        return Response(status=304, headers=headers)
    return Response(published.token, content_type=MEDIA_TYPE, headers=headers)
