"""``oauth2``: authserver's own dialect (RFC 6749 §4.4 with the parameters of ``POST /token``).

The translation is the identity. What this profile adds is the refusal of parameters it
does not know. RFC 6749 §3.1 says a server MUST ignore unrecognised parameters; authserver
departs from that on purpose: a backend that sends another vendor's body (``userId``,
``ttl``, ``scopes``) to ``/token`` would otherwise get a token for the client itself, with
the default lifetime and every registered scope, and nothing would tell it so.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

from authserver.clients.model import Client
from authserver.profiles.base import DialectRequest
from authserver.profiles.base import TokenParameters
from authserver.tokens.model import IssuedToken


class OAuth2Profile:
    name: ClassVar[str] = "oauth2"
    fields: ClassVar[frozenset[str]] = frozenset(
        {"sub", "email", "name", "scope", "audience", "resource", "expires_in", "claims"}
    )
    paths: ClassVar[tuple[str, ...]] = ()

    def translate(self, request: DialectRequest, client: Client) -> TokenParameters:
        return dict(request.fields)

    def render(self, issued: IssuedToken, request: DialectRequest) -> dict[str, Any]:
        # RFC 6749 §5.1; RFC 9068 access tokens are Bearer tokens (RFC 6750).
        body: dict[str, Any] = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        }
        if issued.scope:
            body["scope"] = issued.scope
        return body
