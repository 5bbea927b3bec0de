"""The small WSGI integration of the authorization server: ``POST /token``, ``/introspect``,
``/revoke`` and the prepared well-known documents, answered below Flask.

Why not Flask for these: its per-request machinery (request and app contexts, URL
matching, before/after hooks, the response object) costs more CPU than everything
authserver itself does for a token, bar the RSA signature. Here a request is one dict
lookup on ``PATH_INFO`` (a prefix check for a document family such as
``/statuslists/<n>``); every other path goes to the *fallback* application (the Flask app:
admin API, health, metrics, and the JSON errors for unknown paths).

What a request gets, in order (``OAuthWSGI.__call__``):

1. the route (exact path, or a family's prefix and integer id) and method check:
   ``OPTIONS`` answers ``Allow``, any other unsupported method 405, in the same RFC 6749
   §5.2-shaped body as every error; a query parameter a document family does not
   implement (a status list's ``time``) 501;
2. one unit of work (the database transaction, opened only if a store needs it),
   committed when the handler returns, rolled back when it raises;
3. the handler: Authlib's token or endpoint flow (``oauth/server.py``) for the POST
   routes, a :class:`Document` for the GET routes (strong ETag, ``If-Match`` 412,
   ``If-None-Match`` 304, ``Cache-Control``, CORS for anyone: the one conditional-GET
   implementation of the server), or a 404 JSON error when a family has no document of
   that id;
4. the security headers every response carries (``X-Content-Type-Options: nosniff``,
   ``Cache-Control: no-store`` unless the handler set its own);
5. :class:`~authserver.oauth.events.RequestServed`: the one per-request hook, where
   metrics (latency by route, failures by reason) and an access log subscribe.

Exceptions that are not OAuth errors (the database or the key store unavailable, bugs) are
rendered by the *on_error* function the composition root passes in (``web/errors.py``), so
every error body has one shape whichever layer answered.

Transport rules: ``ProxyFix`` wraps this application when ``AUTHSERVER_PROXY_HOPS`` is set,
so ``wsgi.url_scheme``, ``HTTP_HOST`` and ``REMOTE_ADDR`` are already the trusted ones here;
Authlib's ``OAuth2Request`` refuses plain http off loopback (``insecure_transport``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Iterable
from contextlib import AbstractContextManager
from http import HTTPStatus
from typing import Any
from typing import ClassVar
from typing import NamedTuple
from urllib.parse import parse_qsl

from authlib.oauth2 import OAuth2Error
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header
from werkzeug.http import parse_etags

from authserver.clients.secrets import withhold_secrets
from authserver.oauth.events import Events
from authserver.oauth.events import RequestServed
from authserver.oauth.server import AuthServerAuthorizationServer
from authserver.oauth.server import OAuthResponse

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: ``(status, body, headers)`` for an exception, or ``None`` to let it propagate.
ErrorRenderer = Callable[[Exception], tuple[int, dict[str, Any], list[tuple[str, str]]]]
#: An error answer's RFC 6749 code and description, for the event (metrics, access log).
_Refusal = tuple[str, str]
#: A handler's answer: status, headers, body bytes, and the refusal for the event.
_Answer = tuple[int, list[tuple[str, str]], bytes, _Refusal | None]

#: The handler name of a profile's own token path.
PROFILE_PATH = "profile"
_SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"),)
_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _json(body: dict[str, Any]) -> bytes:
    return _encode(body).encode()


def _error(
    status: int, error: str, description: str, extra: Iterable[tuple[str, str]] = ()
) -> _Answer:
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), *extra]
    description = withhold_secrets(description)
    body = _json({"error": error, "error_description": description})
    return status, headers, body, (error, description)


#: The 412 answered to an ``If-Match`` naming no current version of a document.
_NOT_THIS_VERSION = "If-Match names no current version of this document"


class _Representation(NamedTuple):
    """One representation of a :class:`Document` as sent: its body, its strong ETag, the
    headers of a 304 and those of a 200."""

    body: bytes
    etag: str
    headers: list[tuple[str, str]]
    headers_with_type: list[tuple[str, str]]

    @classmethod
    def of(
        cls,
        body: bytes,
        etag: str,
        content_type: str,
        common: list[tuple[str, str]],
        coding: list[tuple[str, str]] | None = None,
    ) -> _Representation:
        headers = [("ETag", f'"{etag}"'), *common]
        return cls(body, etag, headers, [("Content-Type", content_type), *(coding or []), *headers])


class Document:
    """A document as sent: body, strong ETag and cache headers, prepared once.

    The source that builds it chooses ``max_age`` (for the JWKS it never exceeds the key
    publish-ahead time, ``Settings.validate``; for a status list it is what is left of the
    list's ``ttl``). *etag* is the body's own hash unless the caller already has one.

    *negotiated*: the request's ``Accept`` decides whether the document is served (RFC
    9110 §12.5.1), for a document whose media type is one of several a client may ask
    for (a status list: ``application/statuslist+jwt``, never ``+cwt`` here), and for
    one served beside such documents (the status list aggregation, so that both answer
    one ``Accept`` alike). Every answer then says ``Vary: Accept``.
    """

    __slots__ = ("coded", "content_type", "negotiated", "plain")

    def __init__(
        self,
        body: bytes,
        content_type: str,
        max_age: int,
        etag: str | None = None,
        *,
        negotiated: bool = False,
        gzipped: bytes | None = None,
    ) -> None:
        self.content_type = content_type
        self.negotiated = negotiated
        etag = etag or hashlib.sha256(body).hexdigest()[:32]
        vary = ", ".join(
            name
            for name, on in (("Accept", negotiated), ("Accept-Encoding", gzipped is not None))
            if on
        )
        common = [
            ("Cache-Control", f"public, max-age={max_age}"),
            ("Access-Control-Allow-Origin", "*"),
            *([("Vary", vary)] if vary else []),
        ]
        self.plain = _Representation.of(body, etag, content_type, common)
        #: *gzipped* is *body* gzip-compressed, when the document is also served with that
        #: content coding (a status list: draft-ietf-oauth-status-list §8.2, "SHOULD use
        #: Content-Encoding"), to a request whose Accept-Encoding takes it (RFC 9110
        #: §12.5.3). A representation of its own, so its own strong ETag (§8.8.3).
        self.coded = (
            None
            if gzipped is None
            else _Representation.of(
                gzipped, f"{etag}-gzip", content_type, common, [("Content-Encoding", "gzip")]
            )
        )

    @classmethod
    def json(cls, document: dict[str, Any], max_age: int, *, negotiated: bool = False) -> Document:
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        return cls(body, "application/json", max_age, negotiated=negotiated)

    def answer(self, environ: dict[str, Any]) -> _Answer:
        """200 with the body, 412 when ``If-Match`` does not name this ETag (RFC 9110
        §13.1.1: strong comparison, a ``W/`` tag never matches; ``*`` matches), or 304 when
        ``If-None-Match`` names it (§13.1.2: weak comparison, a ``W/`` prefix is ignored;
        ``*`` matches); in that order (§13.2.2). Before them, for a *negotiated*
        document, 406 when ``Accept`` names media ranges and none of them, q-values
        honoured, takes this document's type (§15.5.7): a client that asked only for
        another format gets no body it would have to tell apart."""
        if self.negotiated and not self._acceptable(environ.get("HTTP_ACCEPT")):
            return _error(
                406,
                "not_acceptable",
                f"this document is served only as {self.content_type}",
                [("Vary", "Accept")],
            )
        sent = self.plain
        if self.coded is not None and _takes_gzip(environ.get("HTTP_ACCEPT_ENCODING")):
            sent = self.coded
        required = environ.get("HTTP_IF_MATCH")
        if required and not parse_etags(required).contains(sent.etag):
            # §13.2.2 step 1: "if false, respond 412 (Precondition Failed)".
            return _error(412, "precondition_failed", _NOT_THIS_VERSION)
        condition = environ.get("HTTP_IF_NONE_MATCH")
        if condition and parse_etags(condition).contains_weak(sent.etag):
            return 304, list(sent.headers), b"", None
        return 200, list(sent.headers_with_type), sent.body, None

    def _acceptable(self, accept: str | None) -> bool:
        """Whether *accept* takes this document's media type: yes without the header or
        with one naming no media range (RFC 9110 §12.5.1: any type is acceptable)."""
        if not accept:
            return True
        ranges = parse_accept_header(accept, MIMEAccept)
        return not ranges or ranges.quality(self.content_type) > 0


def _takes_gzip(accept_encoding: str | None) -> bool:
    """Whether *accept_encoding* takes the gzip content coding (RFC 9110 §12.5.3: named,
    or ``*``, with a q-value above 0; no header at all asks for none)."""
    if not accept_encoding:
        return False
    return parse_accept_header(accept_encoding).quality("gzip") > 0


def allow_header(methods: Iterable[str]) -> str:
    """The ``Allow`` of an endpoint answering *methods*: those and ``OPTIONS``, in
    alphabetical order, as every 405 and ``OPTIONS`` answer of both layers lists them."""
    return ", ".join(sorted({*methods, "OPTIONS"}))


def _unimplemented(environ: dict[str, Any], unimplemented: dict[str, str]) -> _Answer | None:
    """501 when the query names a parameter of *unimplemented* (RFC 9110 §15.6.2: "the
    server does not support the functionality required to fulfill the request"), else
    ``None``. Only a request with a query string pays for parsing it."""
    query = environ.get("QUERY_STRING")
    if not query:
        return None
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name in unimplemented:
            return _error(501, "not_implemented", unimplemented[name])
    return None


#: A GET route: returns the current document (cheaply: normally from a ``BoundedCache``
#: keyed by what the document is built from), or ``None`` for 404.
DocumentSource = Callable[[], Document | None]
#: A family of GET routes ``<prefix>/<id>``: the document of a non-negative integer id.
DocumentFamily = Callable[[int], Document | None]
#: Longest id a family accepts (digits): a longer one is no route (the fallback's 404),
#: never an integer a store has to cope with.
_MAX_ID_DIGITS = 9


class OAuthWSGI:
    """The WSGI application in front of the Flask app (see the module docstring).

    ``add_document(path, source)`` publishes another GET document, and
    ``add_document_family(prefix, name, source)`` one per integer id below *prefix* (the
    status lists): one line where the application is composed (``web/app.py``).
    """

    POST_ROUTES: ClassVar[dict[str, str]] = {
        "/token": "token",
        "/introspect": "introspection",
        "/revoke": "revocation",
    }

    def __init__(
        self,
        server: AuthServerAuthorizationServer,
        fallback: WSGIApp,
        *,
        events: Events,
        unit_of_work: Callable[[], AbstractContextManager[Any]],
        on_error: ErrorRenderer,
    ) -> None:
        self.server = server
        self.fallback = fallback
        self.events = events
        self._unit_of_work = unit_of_work
        self._on_error = on_error
        self._documents: dict[str, DocumentSource] = {}
        #: ``(prefix + "/", route template, source, unimplemented query parameters)``
        self._families: list[tuple[str, str, DocumentFamily, dict[str, str]]] = []
        self._post = dict(self.POST_ROUTES)

    def add_token_path(self, path: str) -> None:
        """Serve a profile's own token path (the same grant as ``/token``, see
        ``AuthServerAuthorizationServer.create_profile_path_response``)."""
        self._post[path] = PROFILE_PATH

    def add_document(self, path: str, source: DocumentSource) -> None:
        self._documents[path] = source

    def add_document_family(
        self,
        prefix: str,
        name: str,
        source: DocumentFamily,
        *,
        unimplemented: dict[str, str] | None = None,
    ) -> None:
        """Serve ``<prefix>/<id>`` for every non-negative integer id of at most
        :data:`_MAX_ID_DIGITS` digits, written without leading zeros: *source(id)*, or 404
        when it returns ``None``. Any other path below *prefix* is left to the fallback
        (its 404). The route template, in Flask's rule syntax (``<prefix>/<int:name>``),
        is the route listing's key and the metrics label: bounded, never the path sent.

        *unimplemented* maps a query parameter that a standard defines for these documents,
        but this server does not implement, to the description of the 501 answered when a
        request names it (a parameter nobody defined is ignored, as HTTP does)."""
        self._families.append(
            (f"{prefix}/", f"{prefix}/<int:{name}>", source, dict(unimplemented or {}))
        )

    def routes(self) -> dict[str, set[str]]:
        """Path -> methods served here (for the route listing and the OpenAPI check)."""
        out = {path: {"POST"} for path in self._post}
        out.update({path: {"GET", "HEAD"} for path in self._documents})
        out.update({template: {"GET", "HEAD"} for _, template, _, _ in self._families})
        return out

    def _family_document(self, path: str) -> tuple[str, DocumentSource, dict[str, str]] | None:
        """The route template, document source and unimplemented query parameters of a
        family path, ``None`` if none."""
        for prefix, template, source, unimplemented in self._families:
            if path.startswith(prefix):
                tail = path[len(prefix) :]
                digits = tail.isascii() and tail.isdigit() and len(tail) <= _MAX_ID_DIGITS
                # Canonical decimal only ("01" is not "1"): one URL per document.
                if digits and (tail == "0" or tail[0] != "0"):
                    return template, functools.partial(source, int(tail)), unimplemented
        return None

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        endpoint = self._post.get(path)
        document = self._documents.get(path) if endpoint is None else None
        route = path
        unimplemented: dict[str, str] | None = None
        if endpoint is None and document is None:
            family = self._family_document(path) if self._families else None
            if family is None:
                return self.fallback(environ, start_response)
            route, document, unimplemented = family
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        allowed = ("POST",) if endpoint is not None else ("GET", "HEAD")
        if method in allowed:
            refused = _unimplemented(environ, unimplemented) if unimplemented else None
            status, headers, body, refusal = refused or self._handle(environ, endpoint, document)
        elif method == "OPTIONS":
            # No CORS preflight answer: the credentialed endpoints are for backends
            # (RFC 9700 §2.6) and the documents need none (a simple GET).
            allow = allow_header(allowed)
            status, headers, body, refusal = 200, [("Allow", allow)], b"", None
        else:
            allow = allow_header(allowed)
            # The OAuth endpoints answer in RFC 6749 §5.2's codes (a request in the wrong
            # method is a malformed request); the documents in the generic HTTP one.
            code = "invalid_request" if endpoint is not None else "method_not_allowed"
            status, headers, body, refusal = _error(
                405, code, f"method not allowed on this endpoint; use {allow}", [("Allow", allow)]
            )
        for name, value in _SECURITY_HEADERS:
            headers.append((name, value))
        if not any(name == "Cache-Control" for name, _ in headers):
            headers.append(("Cache-Control", "no-store"))
        # RFC 9110 §8.6: a HEAD answer's Content-Length is the GET answer's (it said 0), and
        # a 304 sends none rather than a length its 200 would not have.
        if status != 304:
            headers.append(("Content-Length", str(len(body))))
        if method == "HEAD":
            body = b""
        start_response(_STATUS_LINES.get(status, f"{status} Unknown"), headers)
        self.events.emit(
            RequestServed(
                route=route,
                method=method,
                status=status,
                error=refusal[0] if refusal else None,
                seconds=time.perf_counter() - started,
                remote_addr=environ.get("REMOTE_ADDR"),
                environ=environ,
                description=refusal[1] if refusal else None,
            )
        )
        return [body]

    def _handle(
        self, environ: dict[str, Any], endpoint: str | None, document: DocumentSource | None
    ) -> _Answer:
        try:
            with self._unit_of_work():
                if document is not None:
                    current = document()
                    if current is None:
                        return _error(404, "not_found", "no such document")
                    return current.answer(environ)
                assert endpoint is not None
                response = self._oauth(environ, endpoint)
        except Exception as exc:
            status, body, headers = self._on_error(exc)
            # One error shape whichever layer answers: JSON, never cached.
            return _error(status, str(body["error"]), str(body["error_description"]), headers)
        refusal = None
        body = response.body
        if response.status >= 400:
            description = withhold_secrets(str(body.get("error_description", "")))
            refusal = (str(body.get("error")), description)
            if "error_description" in body:
                body = {**body, "error_description": description}
        return response.status, response.headers, _json(body), refusal

    def _oauth(self, environ: dict[str, Any], endpoint: str) -> OAuthResponse:
        server = self.server
        try:
            # Parsed once, here: Authlib's flows get this very request back.
            request = server.create_oauth2_request(environ)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        if endpoint == "token":
            return server.create_token_response(request)
        if endpoint == PROFILE_PATH:
            return server.create_profile_path_response(request)
        return server.create_endpoint_response(endpoint, request)
