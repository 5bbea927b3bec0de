"""The Authlib authorization server and every registration (docs/design.md, "Where
Authlib plugs in")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.errors import UnsupportedGrantTypeError
from flask import Response
from flask import g
from flask import request as flask_request

from authserver.audit.service import AuditService
from authserver.clients import auth_methods
from authserver.clients.auth_methods import CLIENT_SECRET_BEARER
from authserver.clients.jwks_fetch import JwksFetcher
from authserver.clients.service import ClientService
from authserver.oauth import client_auth
from authserver.oauth.clients import OAuthClient
from authserver.oauth.endpoints import AuthServerIntrospectionEndpoint
from authserver.oauth.endpoints import AuthServerRevocationEndpoint
from authserver.oauth.errors import UnsupportedGrantError
from authserver.oauth.grants import AuthServerClientCredentialsGrant
from authserver.oauth.grants import AuthServerProfilePathGrant
from authserver.oauth.requests import AuthServerOAuth2Request
from authserver.oauth.requests import parse_body
from authserver.profiles.registry import ProfileRegistry
from authserver.tokens.inspection import TokenInspector
from authserver.tokens.revocations import RevocationStore
from authserver.tokens.service import TokenService

log = logging.getLogger(__name__)

#: RFC 6750 §3 realm of the challenge sent with ``invalid_client``.
REALM = "authserver"


class AuthServerAuthorizationServer(AuthorizationServer):
    """Client-credentials only. ``query_client`` reads the domain ClientService;
    ``create_oauth2_request`` reads form and JSON bodies alike."""

    #: Called with every parsed request to /token, /introspect and /revoke before the client
    #: is authenticated; it may raise to refuse the request (web/limits.py refuses client ids
    #: and addresses over their failed-authentication budget). Exceptions that are not an
    #: ``OAuth2Error`` reach the web layer's error handlers.
    before_client_authentication: Callable[[AuthServerOAuth2Request], None] | None = None

    def __init__(
        self,
        clients: ClientService,
        tokens: TokenService,
        *,
        inspector: TokenInspector,
        revocations: RevocationStore,
        audit: AuditService,
        issuer: str,
        jwks_fetcher: JwksFetcher | None = None,
        profiles: ProfileRegistry | None = None,
    ) -> None:
        super().__init__()
        self.client_service = clients
        self.token_service = tokens
        self.audit = audit
        self.profiles = profiles or ProfileRegistry.load()
        # Flask config is not where authserver keeps configuration; register directly.
        self.register_token_generator("default", self._no_generator)
        self.register_grant(AuthServerClientCredentialsGrant)
        self.register_client_auth_method(
            auth_methods.CLIENT_SECRET_BASIC, client_auth.authenticate_client_secret_basic
        )
        self.register_client_auth_method(
            auth_methods.CLIENT_SECRET_POST, client_auth.authenticate_client_secret_post
        )
        self.register_client_auth_method(
            auth_methods.PRIVATE_KEY_JWT,
            client_auth.PrivateKeyJWT(
                issuer, revocations, client_auth.ClientKeys(jwks_fetcher or JwksFetcher())
            ),
        )
        # Offered only by AuthServerProfilePathGrant, at a profile's own path.
        self.register_client_auth_method(
            CLIENT_SECRET_BEARER,
            client_auth.SecretBearerAuthentication(self._find_by_secret),
        )
        self.register_endpoint(AuthServerIntrospectionEndpoint(self, inspector))
        self.register_endpoint(AuthServerRevocationEndpoint(self, inspector))

    @staticmethod
    def _no_generator(**_: Any) -> dict[str, Any]:
        # The grant asks TokenService directly; nothing may fall back to Authlib's opaque
        # bearer generator by accident.
        raise RuntimeError("authserver issues tokens through TokenService only")

    def query_client(self, client_id: str) -> OAuthClient | None:
        client = self.client_service.find(client_id)
        return OAuthClient(client) if client is not None else None

    def _find_by_secret(self, secret: str) -> OAuthClient | None:
        client = self.client_service.find_by_secret(secret)
        if client is None:
            return None
        profile = self.profiles.get(client.policy.profile)
        # A profile with paths of its own authenticates there by Bearer secret.
        return OAuthClient(client, bearer_secret=profile is not None and bool(profile.paths))

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Access tokens are self-contained JWTs: nothing to store but the audit record
        (identifiers only, never the token)."""
        issued = request.issued
        self.audit.record_issued(
            f"client:{request.client.client_id}",
            client_id=request.client.client_id,
            sub=issued.sub,
            aud=issued.audience,
            jti=issued.jti,
            kid=issued.kid,
            auth_method=request.auth_method,
            # "previous" while a rotation's grace period lets the old secret in: the
            # operator sees which backends still have to switch.
            secret_used=getattr(request.client, "secret_used", None),
            # What revoking every live token of a user or client reads (tokens/statuslist.py).
            status_list=issued.status_list,
            status_idx=issued.status_idx,
            exp=issued.expires_at,
        )

    def create_endpoint_response(self, name: str, request: Any = None) -> Response:
        """Authlib's, with request parsing inside the error handling (a malformed body at
        /introspect or /revoke is ``invalid_request``, not a server error)."""
        endpoint = self._endpoints[name][0]
        oauth_request = None
        try:
            oauth_request = endpoint.create_endpoint_request(request)
            response = self.handle_response(*endpoint(oauth_request))
        except OAuth2Error as error:
            return self.handle_error_response(oauth_request, error)
        revoked = getattr(oauth_request, "revoked", None)
        if revoked is not None:
            self.audit.record(
                f"client:{oauth_request.client.client_id}",
                "token.revoked",
                client_id=revoked.get("client_id"),
                sub=revoked.get("sub"),
                jti=revoked.get("jti"),
            )
        return response

    def create_oauth2_request(self, request: Any) -> AuthServerOAuth2Request:
        oauth_request = AuthServerOAuth2Request(flask_request, parse_body(flask_request))
        if self.before_client_authentication is not None:
            self.before_client_authentication(oauth_request)
        return oauth_request

    def create_token_response(self, request: Any = None) -> Response:
        """RFC 6749 §4.4.2/§5: Authlib's flow, with body parsing inside the error handling
        and a missing ``grant_type`` reported as ``invalid_request`` (§5.2)."""
        oauth_request = None
        try:
            oauth_request = self.create_oauth2_request(request)
            if not oauth_request.payload.grant_type:
                raise InvalidRequestError("missing grant_type parameter")
            grant = self.get_token_grant(oauth_request)
            grant.validate_token_request()
            return self.handle_response(*grant.create_token_response())
        except UnsupportedGrantTypeError:
            return self.handle_error_response(
                oauth_request,
                UnsupportedGrantError("only grant_type=client_credentials is supported"),
            )
        except OAuth2Error as error:
            return self.handle_error_response(oauth_request, error)

    def create_profile_path_response(self) -> Response:
        """A profile's own path (e.g. ``stream``'s ``POST /auth/v1/access-tokens``): the
        client-credentials grant, without ``grant_type`` in the body, authenticated by
        ``Authorization: Bearer <client_secret>``."""
        oauth_request = None
        try:
            oauth_request = self.create_oauth2_request(None)
            grant = AuthServerProfilePathGrant(oauth_request, self)
            grant.validate_token_request()
            return self.handle_response(*grant.create_token_response())
        except OAuth2Error as error:
            return self.handle_error_response(oauth_request, error)

    def handle_error_response(self, request: Any, error: OAuth2Error) -> Response:
        # For the metrics hook in web/ (failures by reason).
        g.authserver_oauth_error = error.error
        if isinstance(error, InvalidClientError):
            # RFC 6749 §5.2 allows 401 for invalid_client and requires it when the client
            # used the Authorization header; RFC 9110 §15.5.2 requires a WWW-Authenticate
            # challenge on every 401. So: always 401, always a Basic challenge (the method
            # we support in the header), one message whatever failed.
            description = (
                error.description
                if error.description == client_auth.MALFORMED_BASIC
                else "client authentication failed"
            )
            status = 401
            body = {"error": "invalid_client", "error_description": description}
            headers = [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                ("Pragma", "no-cache"),
                ("WWW-Authenticate", f'Basic realm="{REALM}", error="invalid_client"'),
            ]
            return self.handle_response(status, body, headers)
        return super().handle_error_response(request, error)
