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
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from authserver.web.bodies import json_answer

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: RFC 3986 §3.2.2 ``host [":" port]``: a registered name or IPv4 address (letters,
#: digits, ``-._~`` and percent-encoding; no comma: two ``Host`` lines arrive joined by
#: one), or an IP literal in brackets.
_HOST = re.compile(r"(?:[A-Za-z0-9._~%-]+|\[[0-9A-Za-z:.%_~-]+\])(?::[0-9]{0,5})?")

_BAD_HOST = json.dumps(
    {
        "error": "invalid_request",
        "error_description": (
            "the request needs one Host header naming one host (RFC 9112 section 3.2)"
        ),
    },
    separators=(",", ":"),
).encode()


class RequireHost:
    """WSGI middleware: a request with a missing (HTTP/1.1), repeated or malformed
    ``Host`` is answered 400 ``invalid_request`` and its connection closed (its body, if
    any, is not read)."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        host = environ.get("HTTP_HOST", "")
        if host:
            valid = _HOST.fullmatch(host) is not None
        else:
            valid = environ.get("SERVER_PROTOCOL") != "HTTP/1.1"
        if valid:
            return self.app(environ, start_response)
        return json_answer(start_response, "400 Bad Request", _BAD_HOST, [("Connection", "close")])
