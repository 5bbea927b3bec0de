"""The ``Host`` header is required and must name one host (RFC 9112 §3.2).

"A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
message that lacks a Host header field and to any request message that contains more than
one Host header field line or a Host header field with an invalid field value." granian
does not: it serves an HTTP/1.1 request without ``Host``, and hands the application the
values of several ``Host`` lines joined by commas (``a,b``), a value with a byte outside
ASCII as an empty one. Each layer behind then reads ``Host`` its own way: the transport
rule took a missing one for the server's own loopback address, Werkzeug took ``a,b`` as
one name.

granian gives an HTTP/1.0 request without ``Host`` an empty one: HTTP/1.0 needs none, so
an empty value is refused only on HTTP/1.1.

Behind a trusted proxy (``AUTHSERVER_PROXY_HOPS``) the host the application uses is not the
``Host`` line but what ``ProxyFix`` takes from ``X-Forwarded-Host`` (and ``-Port``), and the
scheme is ``X-Forwarded-Proto``'s: these are judged by the same rules, as ProxyFix will
read them (the very ProxyFix, run on a copy of the request). A quoted ``"a,b"`` is one
list item to ProxyFix, a port ``abc`` makes ``host:abc``, a scheme ``ftp`` is neither
http nor https, and a forwarded value that is present but empty (granian's rendering of a
value with a byte outside ASCII) would leave the ``Host`` of the proxy's own connection,
often a loopback address, in charge of the transport rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from authserver.settings import is_port_number
from authserver.web.bodies import json_answer

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: RFC 3986 §3.2.2 ``host [":" port]``: a registered name or IPv4 address (letters,
#: digits, ``-._~`` and percent-encoding; no comma: two ``Host`` lines arrive joined by
#: one), or an IP literal in brackets.
_HOST = re.compile(r"(?:[A-Za-z0-9._~%-]+|\[[0-9A-Za-z:.%_~-]+\])(?::([0-9]{0,5}))?")

#: RFC 3986 §3.3 path characters, for ``X-Forwarded-Prefix`` (the ``SCRIPT_NAME``).
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~%!$&'()*+,;=:@-]*)*")

#: The ``X-Forwarded-*`` headers ProxyFix reads, as WSGI names.
_FORWARDED = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
)


def _refusal(description: str) -> bytes:
    body = {"error": "invalid_request", "error_description": description}
    return json.dumps(body, separators=(",", ":")).encode()


_BAD_HOST = _refusal("the request needs one Host header naming one host (RFC 9112 section 3.2)")
_BAD_FORWARDED = _refusal(
    "the trusted proxy's X-Forwarded-Host, -Port, -Proto and -Prefix must name one host,"
    " a port number, http or https, and a path"
)


def _one_host(host: str) -> bool:
    """*host* is ``host [":" port]`` naming one host, its port (when given) a port number
    (:func:`authserver.settings.is_port_number`): the same rule for the ``Host`` line and
    for what a trusted proxy forwards (a forwarded port of 99999 was refused, a ``Host``
    line's served)."""
    match = _HOST.fullmatch(host)
    return match is not None and is_port_number(match.group(1) or "0")


def _unused(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    return []


class RequireHost:
    """WSGI middleware: a request with a missing (HTTP/1.1), repeated or malformed
    ``Host``, or behind *proxy_hops* trusted proxies with a forwarded host, port, scheme or
    prefix the application cannot use, is answered 400 ``invalid_request`` and its
    connection closed (its body, if any, is not read)."""

    def __init__(self, app: WSGIApp, proxy_hops: int = 0) -> None:
        self.app = app
        hops = proxy_hops
        #: The ProxyFix the application is behind, configured alike, run on a copy of the
        #: environ to see the values it will hand the application.
        self._proxy_fix = (
            ProxyFix(_unused, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
            if hops
            else None
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        host = environ.get("HTTP_HOST", "")
        valid = _one_host(host) if host else environ.get("SERVER_PROTOCOL") != "HTTP/1.1"
        if not valid:
            return self._refuse(start_response, _BAD_HOST)
        if self._proxy_fix is not None and not self._forwarded_valid(environ, start_response):
            return self._refuse(start_response, _BAD_FORWARDED)
        return self.app(environ, start_response)

    def _forwarded_valid(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> bool:
        """Whether the values ProxyFix takes from the trusted proxy's headers are ones the
        application can use (*start_response* is not called)."""
        if not any(name in environ for name in _FORWARDED):
            return True
        if any(environ.get(name) == "" for name in _FORWARDED[1:]):
            return False
        seen = dict(environ)
        assert self._proxy_fix is not None
        self._proxy_fix(seen, start_response)
        host = seen.get("HTTP_HOST") or ""
        if host and not _one_host(host):
            return False
        port = str(seen.get("SERVER_PORT", ""))
        return (
            seen.get("wsgi.url_scheme") in ("http", "https")
            and (not port or is_port_number(port))
            and _PREFIX.fullmatch(str(seen.get("SCRIPT_NAME", ""))) is not None
        )

    @staticmethod
    def _refuse(start_response: Callable[..., Any], body: bytes) -> Any:
        return json_answer(start_response, "400 Bad Request", body, [("Connection", "close")])
