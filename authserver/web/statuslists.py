"""GET the Token Status Lists (draft-ietf-oauth-status-list-17 §8) and their aggregation (§9).

Public, like the JWKS, and served the same way: as :class:`~authserver.oauth.wsgi.Document`\\ s
of the lean WSGI layer (strong ETag, ``If-None-Match`` 304, CORS: §8 "SHOULD support the
use of Cross-Origin Resource Sharing"). A sync server fetches the list its tokens name,
verifies it with the JWKS and caches it for its ``ttl``: ``Cache-Control: max-age`` is what
is left of that ttl for the copy served, so it is computed per request; the signed list
itself is rebuilt only when ``StatusListService.published`` says so.

Only the JWT form is served. §8.1 makes the request HTTP content negotiation (RFC 9110)
between ``application/statuslist+jwt`` and ``+cwt``: a request whose ``Accept`` takes no
JWT list is answered 406, never with a list in a type the client did not ask for. The
aggregation, ``application/json`` (§9.3), is negotiated the same way (RFC 9110 §12.5.1
lets a server either refuse or ignore an ``Accept`` it cannot meet): a client asking it
for a status list type, taking the aggregation URL for a list's, is told 406 rather than
handed JSON to parse as a token, and both endpoints answer one ``Accept`` alike.

Historical resolution (§8.4, a ``time`` query parameter asking for the list as it stood
then) is not implemented: such a request is answered 501, as §8.4 asks of a server without
it, never with the current list (which a verifier would have to notice and refuse).
"""

from __future__ import annotations

from authserver.cache import BoundedCache
from authserver.container import Services
from authserver.oauth.wsgi import Document
from authserver.oauth.wsgi import OAuthWSGI
from authserver.tokens.statuslist import MEDIA_TYPE
from authserver.tokens.statuslist import PATH

#: §8.4: "If the Server does not support the additional query parameter, it SHOULD return
#: a status code of 501 (Not Implemented)".
HISTORICAL = {
    "time": "historical status lists (the time query parameter, draft-ietf-oauth-status-list"
    " section 8.4) are not supported: only the current list is served"
}


def register(wsgi: OAuthWSGI, services: Services) -> None:
    lists, clock = services.status_lists, services.clock
    # Keyed by the list ids: a new document only when a list is created.
    aggregations: BoundedCache[tuple[int, ...], Document] = BoundedCache(4)

    def aggregation() -> Document:
        """§9.3: every status list URI, for verifiers that prefetch."""
        ids = tuple(lists.list_ids())
        return aggregations.get_or_build(
            ids,
            lambda: Document.json(
                {"status_lists": [lists.uri(i) for i in ids]}, lists.ttl, negotiated=True
            ),
        )

    def status_list(list_id: int) -> Document | None:
        """§8.2: the signed list, ``application/statuslist+jwt``; ``None`` (404) for a list
        that does not exist."""
        published = lists.published(list_id)
        if published is None:
            return None
        return Document(
            published.token,
            MEDIA_TYPE,
            published.max_age(clock.now()),
            etag=published.etag,
            negotiated=True,
            gzipped=published.gzipped,
        )

    wsgi.add_document(PATH, aggregation)
    wsgi.add_document_family(PATH, "list_id", status_list, unimplemented=HISTORICAL)
