"""RFC 7662 introspection and RFC 7009 revocation, on Authlib's endpoint classes.

Who may ask: any enabled, authenticated client, about tokens issued to itself or tokens
whose audience is one of its registered audiences (a sync server registered as a client).
For any other token introspection answers ``{"active": false}`` (RFC 7662 §2.2: the
server may do so rather than reveal why). Revocation revokes tokens issued to the client
asking; an invalid, expired or revoked token is no error (RFC 7009 §2.2), and a live token
of another client is refused with ``invalid_grant`` (§2.1).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidGrantError
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from authserver.clients import auth_methods
from authserver.oauth.clients import OAuthClient
from authserver.tokens.inspection import TokenInspector

CLIENT_AUTH_METHODS = list(auth_methods.ALL_METHODS)
#: RFC 7009 §2.1 / RFC 7662 §2.1: only access tokens exist here, but a hint naming another
#: registered type is not an error; the server simply searches its tokens.
SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")


class InspectedToken:
    """A token this server issued, as the endpoints see it: its verified claims. Only
    tokens that are active (introspection) or verified (revocation) are ever built, so
    Authlib's expiry and revocation checks have nothing left to find."""

    __slots__ = ("claims",)

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False

    def check_client(self, client: OAuthClient) -> bool:
        return bool(self.claims.get("client_id") == client.client_id)


def may_see(claims: dict[str, Any], client: OAuthClient) -> bool:
    if claims.get("client_id") == client.client_id:
        return True
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    return any(a in client.domain.policy.audiences for a in audiences)


class _TokenEndpoint:
    """What both endpoints share: the client authentication methods, the token types,
    the inspector and the parameter check."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = SUPPORTED_TOKEN_TYPES

    def __init__(self, server: Any, inspector: TokenInspector) -> None:
        super().__init__(server)  # type: ignore[call-arg]
        self.inspector = inspector

    def check_params(self, request: Any, client: OAuthClient) -> None:
        # Authlib's check_params answers a missing token with a bare invalid_request and an
        # unknown hint with unsupported_token_type; RFC 7009 §2.1 / RFC 7662 §2.1 let a
        # server search all its tokens whatever the hint, and ours says which parameter.
        if not request.form.get("token"):
            raise InvalidRequestError("missing token parameter")


class AuthServerIntrospectionEndpoint(_TokenEndpoint, IntrospectionEndpoint):
    def query_token(self, token_string: str, token_type_hint: str | None) -> InspectedToken | None:
        claims = self.inspector.active_claims(token_string)
        return InspectedToken(claims) if claims is not None else None

    def check_permission(self, token: InspectedToken, client: OAuthClient, request: Any) -> bool:
        return may_see(token.claims, client)

    def introspect_token(self, token: InspectedToken) -> dict[str, Any]:
        # RFC 7662 §2.2: the token's own claims, and "active" and "token_type", which are
        # the server's: an allowed extra claim of either name must not override them.
        answer: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        answer.update((k, v) for k, v in token.claims.items() if k not in answer)
        return answer


class AuthServerRevocationEndpoint(_TokenEndpoint, RevocationEndpoint):
    def authenticate_token(self, request: Any, client: OAuthClient) -> InspectedToken | None:
        """Authlib's check, with the words its ``InvalidGrantError`` leaves out: RFC 7009
        §2.1, a live token issued to another client is refused, and nothing is revoked
        (``invalid_grant``: RFC 6749 §5.2's code for a grant "issued to another client");
        an invalid token is no error (§2.2: ``query_token`` finds nothing, 200)."""
        try:
            return super().authenticate_token(request, client)
        except InvalidGrantError:
            raise InvalidGrantError("the token was issued to another client") from None

    def query_token(self, token_string: str, token_type_hint: str | None) -> InspectedToken | None:
        # A token revoked already (by jti, or with its user or client) is nothing to
        # revoke: 200 as for any invalid token, and no second audit record.
        claims = self.inspector.active_claims(token_string)
        return InspectedToken(claims) if claims is not None else None

    def revoke_token(self, token: InspectedToken, request: Any) -> None:
        self.inspector.revoke(token.claims)
