"""``stream``: a streaming platform's operator API, ``POST /auth/v1/access-tokens`` with
``Authorization: Bearer <operator token>`` (Native Frame, formerly Lively Video).

From the vendor's public integration examples (nativeframe/live-streaming-demo-app-javascript
``api/handlers.js`` and ``public/js/utils/token.js``; the Lively Video examples):

request (JSON)
    ``userId`` (the viewer or broadcaster; may be left out), ``scopes: string[]`` (e.g.
    ``["broadcaster"]``, ``["private-viewer"]``), ``ttl`` (seconds) or, in the older
    examples, ``expire`` (an ISO 8601 date-time), ``data`` (an object: display name,
    stream mirrors) and ``chatUser`` (an object).
response
    ``{token}``: every example reads ``body.token``; here with ``ttl``, the lifetime
    granted in seconds.

Authentication: the operator token is the client secret, sent as a Bearer token, at
``/auth/v1/access-tokens`` (for clients of this profile only); Basic and the body
credentials work at ``/token`` as for any client. ``data`` and ``chatUser`` become claims
of the same names and must be allowed claims of the client.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

from authserver.clients.model import Client
from authserver.profiles import values
from authserver.profiles.base import DialectRequest
from authserver.profiles.base import ProfileError
from authserver.profiles.base import TokenParameters
from authserver.tokens.model import IssuedToken

#: The vendor's path, answered by the same grant as ``/token``.
ACCESS_TOKENS_PATH = "/auth/v1/access-tokens"


class StreamProfile:
    name: ClassVar[str] = "stream"
    fields: ClassVar[frozenset[str]] = frozenset(
        {"userId", "scopes", "ttl", "expire", "data", "chatUser"}
    )
    paths: ClassVar[tuple[str, ...]] = (ACCESS_TOKENS_PATH,)

    def translate(self, request: DialectRequest, client: Client) -> TokenParameters:
        f = request.fields
        if not request.is_json:
            raise ProfileError(
                "the stream profile takes a JSON body (Content-Type: application/json)"
            )
        out: TokenParameters = {}
        if "userId" in f:
            out["sub"] = values.user(f["userId"], "userId")
        if "scopes" in f:
            out["scope"] = values.string_list(f["scopes"], "scopes")
        if "ttl" in f and "expire" in f:
            raise ProfileError("give either ttl or expire, not both")
        if "ttl" in f:
            out["expires_in"] = values.seconds(f["ttl"], "ttl")
        if "expire" in f:
            out["expires_in"] = values.until(f["expire"], "expire", request.now)
        claims = {
            name: values.json_object(f[name], name) for name in ("data", "chatUser") if name in f
        }
        if claims:
            out["claims"] = claims
        return out

    def render(self, issued: IssuedToken, request: DialectRequest) -> dict[str, Any]:
        return {"token": issued.access_token, "ttl": issued.expires_in}
