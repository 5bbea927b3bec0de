"""RFC 7662 introspection and RFC 7009 revocation, on Authlib's endpoint classes.

Who may ask: any enabled, authenticated client, about tokens issued to itself or tokens
whose audience is one of its registered audiences (a sync server registered as a client).
For any other token introspection answers ``{"active": false}`` (RFC 7662 §2.2: the
server may do so rather than reveal why) and revocation does nothing (RFC 7009 §2.2).
"""

from __future__ import annotations

from typing import Any

from authlib.consts import default_json_headers
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


def _token_param(request: Any) -> str:
    token = request.form.get("token")
    if not token:
        raise InvalidRequestError("missing token parameter")
    return str(token)


def may_see(claims: dict[str, Any], client: OAuthClient) -> bool:
    if claims.get("client_id") == client.client_id:
        return True
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    return any(a in client.domain.policy.audiences for a in audiences)


class _TokenEndpointMixin:
    """What both endpoints share: client authentication methods, the inspector, and the
    authenticated (client, token) pair of a request."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = SUPPORTED_TOKEN_TYPES

    def __init__(self, server: Any, inspector: TokenInspector) -> None:
        super().__init__(server)  # type: ignore[call-arg]
        self.inspector = inspector

    def _client_and_token(self, request: Any) -> tuple[OAuthClient, str]:
        client = self.authenticate_endpoint_client(request)  # type: ignore[attr-defined]
        return client, _token_param(request)


class AuthServerIntrospectionEndpoint(_TokenEndpointMixin, IntrospectionEndpoint):
    def create_endpoint_response(self, request: Any) -> tuple[int, dict[str, Any], Any]:
        client, token = self._client_and_token(request)
        claims = self.inspector.active_claims(token)
        if claims is None or not may_see(claims, client):
            return 200, {"active": False}, default_json_headers
        # RFC 7662 §2.2: "active" plus the token's own claims.
        body: dict[str, Any] = {"active": True, "token_type": "Bearer", **claims}
        return 200, body, default_json_headers


class AuthServerRevocationEndpoint(_TokenEndpointMixin, RevocationEndpoint):
    def create_endpoint_response(self, request: Any) -> tuple[int, dict[str, Any], Any]:
        client, token = self._client_and_token(request)
        claims = self.inspector.verify(token)
        # RFC 7009 §2.2: invalid tokens, and tokens of other clients, are not an error.
        if claims is not None and claims.get("client_id") == client.client_id:
            self.inspector.revoke(claims)
            request.revoked = claims
        return 200, {}, default_json_headers
