"""The authorization server on Authlib's framework-neutral core, and every registration.

Authlib decides every request: its ``AuthorizationServer`` finds the grant, its
``ClientCredentialsGrant`` authenticates the client and issues, its introspection and
revocation endpoints answer RFC 7662 / RFC 7009. What authserver supplies are the template
methods and the integration hooks (``query_client``, ``save_token``, ``send_signal``,
``create_oauth2_request``, ``handle_response``, ``handle_error_response``), and one
extension of ``authenticate_client``, where failed client authentication is counted and
throttled. Outcomes leave as events (``oauth/events.py``); the WSGI integration that feeds
requests in and writes responses out is ``oauth/wsgi.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.errors import UnsupportedGrantTypeError

from authserver.clients import auth_methods
from authserver.clients.auth_methods import CLIENT_SECRET_BEARER
from authserver.clients.jwks_fetch import JwksFetcher
from authserver.clients.secrets import WITHHELD_ID
from authserver.clients.secrets import presentable_client_id
from authserver.clients.service import ClientService
from authserver.oauth import client_auth
from authserver.oauth.clients import OAuthClient
from authserver.oauth.endpoints import AuthServerIntrospectionEndpoint
from authserver.oauth.endpoints import AuthServerRevocationEndpoint
from authserver.oauth.errors import SlowDownError
from authserver.oauth.errors import UnsupportedGrantError
from authserver.oauth.events import ClientAuthenticated
from authserver.oauth.events import ClientAuthFailed
from authserver.oauth.events import Events
from authserver.oauth.events import TokenIssued
from authserver.oauth.events import TokenRevoked
from authserver.oauth.grants import AuthServerClientCredentialsGrant
from authserver.oauth.grants import AuthServerProfilePathGrant
from authserver.oauth.grants import IssuedTokenResponse
from authserver.oauth.requests import AuthServerOAuth2Request
from authserver.oauth.requests import parse_body
from authserver.profiles.registry import ProfileRegistry
from authserver.tokens.inspection import TokenInspector
from authserver.tokens.revocations import RevocationStore
from authserver.tokens.service import TokenService

log = logging.getLogger(__name__)

#: RFC 6750 §3 realm of the challenge sent with ``invalid_client``.
REALM = "authserver"


@dataclass(frozen=True, slots=True)
class OAuthResponse:
    """What ``handle_response`` returns: the WSGI layer serialises it."""

    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]]


class FailureBudget(Protocol):
    """Failed-authentication limits, asked when a client authentication has failed.

    :meth:`exhausted` answers ``(scope, retry_after)`` when the presented client id or the
    source address has no failures left (``scope`` is ``"client"`` or ``"address"``);
    failures are counted by subscribing to :class:`ClientAuthFailed`.
    """

    def exhausted(self, client_id: str | None, address: str | None) -> tuple[str, int] | None: ...


class AuthServerAuthorizationServer(AuthorizationServer):
    """Client credentials only, on Authlib's framework-neutral core."""

    def __init__(
        self,
        clients: ClientService,
        tokens: TokenService,
        *,
        inspector: TokenInspector,
        revocations: RevocationStore,
        events: Events,
        issuer: str,
        max_body_bytes: int,
        failure_budget: FailureBudget | None = None,
        jwks_fetcher: JwksFetcher | None = None,
        profiles: ProfileRegistry | None = None,
    ) -> None:
        super().__init__()
        self.client_service = clients
        self.token_service = tokens
        self.events = events
        self.max_body_bytes = max_body_bytes
        self.failure_budget = failure_budget
        self.profiles = profiles or ProfileRegistry.load()
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
        # The grant signs through TokenService (AuthServerClientCredentialsGrant.
        # generate_token); nothing may fall back to Authlib's opaque bearer generator.
        raise RuntimeError("authserver issues tokens through TokenService only")

    # -- template methods ------------------------------------------------------------------

    def query_client(self, client_id: str) -> OAuthClient | None:
        client = self.client_service.find(client_id)
        return OAuthClient(client, self.client_service) if client is not None else None

    def _find_by_secret(self, secret: str) -> OAuthClient | None:
        client = self.client_service.find_by_secret(secret)
        if client is None:
            return None
        profile = self.profiles.get(client.policy.profile)
        # A profile with paths of its own authenticates there by Bearer secret.
        return OAuthClient(
            client, self.client_service, bearer_secret=profile is not None and bool(profile.paths)
        )

    def save_token(self, token: IssuedTokenResponse, request: Any) -> None:
        """Access tokens are self-contained JWTs: nothing is stored; the issue is reported
        (audit and metrics subscribe)."""
        issued = token.issued
        self.events.emit(
            TokenIssued(
                client_id=request.client.client_id,
                auth_method=request.auth_method,
                sub=issued.sub,
                audience=issued.audience,
                jti=issued.jti,
                kid=issued.kid,
                secret_used=getattr(request.client, "secret_used", None),
                status_list=issued.status_list,
                status_idx=issued.status_idx,
                exp=issued.expires_at,
            )
        )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's signals, as authserver events."""
        if name == "after_revoke_token":
            claims = kwargs["token"].claims
            self.events.emit(
                TokenRevoked(
                    client_id=kwargs["client"].client_id,
                    sub=claims.get("sub"),
                    jti=claims.get("jti"),
                )
            )

    # -- client authentication: where failures are counted and throttled --------------------

    def authenticate_client(
        self, request: AuthServerOAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> OAuthClient:
        """Authlib's client authentication; when it fails, the failure is reported and,
        when the presented id or the address has no failures left, answered with 429.

        The credential is always checked first: a correct one is never refused, whoever
        failed before with the same client id or from the same (possibly spoofed)
        address. Throttling only ever replaces a 401 by a 429.
        """
        try:
            client: OAuthClient = super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            client_id = request.credentials.client_id
            if client_id is not None:
                # Logged, counted and reported from here on: never a secret sent as an id.
                client_id = presentable_client_id(client_id[: client_auth.MAX_ID + 1])
            throttle = (
                self.failure_budget.exhausted(client_id, request.remote_addr)
                if self.failure_budget is not None
                else None
            )
            self.events.emit(
                ClientAuthFailed(
                    endpoint=request.path,
                    client_id=client_id,
                    address=request.remote_addr,
                    throttled=throttle[0] if throttle else None,
                    reason=self._failure_reason(request, client_id, error),
                )
            )
            if throttle is not None:
                raise SlowDownError(retry_after=throttle[1]) from None
            raise
        if self.events.wants(ClientAuthenticated):
            self.events.emit(ClientAuthenticated(request.path, client.client_id))
        return client

    def _failure_reason(
        self, request: AuthServerOAuth2Request, client_id: str | None, error: InvalidClientError
    ) -> str:
        """Why authentication failed, for the operator's log (the client is told only
        "client authentication failed", so it learns nothing about which ids exist)."""
        if error.description == client_auth.MALFORMED_BASIC:
            return "malformed Authorization header"
        if client_id is None and request.form.get("client_assertion"):
            # Refused while it was read, before its subject named a client.
            return f"private_key_jwt assertion refused: {error.description}"
        if client_id is None:
            return "no client credentials"
        if len(client_id) > client_auth.MAX_ID:
            return "client_id too long"
        if client_id == WITHHELD_ID:
            return "the client_id holds a client secret (client_id and client_secret swapped?)"
        client = self.query_client(client_id)
        if client is None:
            return "unknown client_id"
        if not client.domain.enabled:
            return "client disabled"
        if request.form.get("client_assertion"):
            # read_assertion's own words for a defect (expired, wrong audience...), not
            # Authlib's generic "cannot authenticate with methods".
            described = error.description or ""
            if described and not described.startswith("The client cannot authenticate"):
                return f"private_key_jwt assertion refused: {described}"
            return "private_key_jwt assertion refused (signature, issuer or replay)"
        return "wrong secret, or an authentication method this client may not use"

    # -- the framework integration (oauth/wsgi.py calls these) ------------------------------

    def create_oauth2_request(self, request: Any) -> AuthServerOAuth2Request:
        """*request* is a WSGI environ (parsed here, once) or an already built request
        (Authlib's flows call this again with what the WSGI layer passed in)."""
        if isinstance(request, AuthServerOAuth2Request):
            return request
        body = parse_body(request, self.max_body_bytes)
        return AuthServerOAuth2Request(request, request.get("PATH_INFO", ""), body)

    def create_profile_path_response(self, request: AuthServerOAuth2Request) -> OAuthResponse:
        """A profile's own path (e.g. ``stream``'s ``POST /auth/v1/access-tokens``): the
        client-credentials grant, without ``grant_type`` in the body, authenticated by
        ``Authorization: Bearer <client_secret>``. Authlib's token flow, with the grant
        chosen by the path instead of by ``grant_type``."""
        try:
            grant = AuthServerProfilePathGrant(request, self)
            grant.validate_token_request()
            return self.handle_response(*grant.create_token_response())
        except InvalidClientError as error:
            # The path authenticates with a Bearer token, so its challenge is Bearer's
            # (RFC 6750 §3): invalid_token for a token that was sent and is refused, no
            # error code when none was sent. The body stays invalid_client, as at /token.
            return self._invalid_client(error, _bearer_challenge(request))
        except OAuth2Error as error:
            return self.handle_error_response(request, error)

    def handle_response(
        self, status: int, body: dict[str, Any], headers: list[tuple[str, str]]
    ) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def handle_error_response(self, request: Any, error: OAuth2Error) -> OAuthResponse:
        if isinstance(error, UnsupportedGrantTypeError):
            # RFC 6749 §5.2: a missing parameter is invalid_request; Authlib's class also
            # computes a description it never sends.
            grant_type = request.payload.grant_type if request is not None else None
            error = (
                UnsupportedGrantError("only grant_type=client_credentials is supported")
                if grant_type
                else InvalidRequestError("missing grant_type parameter")
            )
        if isinstance(error, InvalidClientError):
            # RFC 6749 §5.2 allows 401 for invalid_client and requires it when the client
            # used the Authorization header; RFC 9110 §15.5.2 requires a WWW-Authenticate
            # challenge on every 401. So: always 401, here always a Basic challenge (the
            # method /token supports in the header).
            return self._invalid_client(error, f'Basic realm="{REALM}", error="invalid_client"')
        return super().handle_error_response(request, error)

    def _invalid_client(self, error: InvalidClientError, challenge: str) -> OAuthResponse:
        """401 ``invalid_client`` with *challenge*, one message whatever failed."""
        description = (
            error.description
            if error.description == client_auth.MALFORMED_BASIC
            else "client authentication failed"
        )
        body = {"error": "invalid_client", "error_description": description}
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("Pragma", "no-cache"),
            ("WWW-Authenticate", challenge),
        ]
        return self.handle_response(401, body, headers)


def _bearer_challenge(request: AuthServerOAuth2Request) -> str:
    """The RFC 6750 §3 challenge refusing *request*: ``invalid_token`` when it sent a Bearer
    token (read as SecretBearerAuthentication reads it), no error code when it sent none."""
    scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'
