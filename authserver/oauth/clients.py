"""OAuthClient: Authlib's ClientMixin as an adapter over the domain Client, so domain
classes never inherit Authlib mixins."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import ClientMixin

from authserver.clients.auth_methods import CLIENT_SECRET_BEARER
from authserver.clients.model import Client
from authserver.clients.service import ClientService

GRANT_TYPE = "client_credentials"
#: Endpoints a client authenticates at.
ENDPOINTS = ("token", "introspection", "revocation")


class OAuthClient(ClientMixin):
    def __init__(
        self, client: Client, clients: ClientService, *, bearer_secret: bool = False
    ) -> None:
        self.domain = client
        #: Judges a presented secret at the services' clock (a previous secret's grace).
        self._clients = clients
        #: Found by the digest of a Bearer secret, for a profile that authenticates so
        #: (client_auth.SecretBearerAuthentication); never for a lookup by id.
        self.bearer_secret = bearer_secret
        self.secret_used: str | None = None

    @property
    def client_id(self) -> str:
        return str(self.domain.client_id)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        # Scope policy is enforced in tokens.claims, with the right error code.
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        #: Which secret authenticated the client ("current" or "previous", during a
        #: rotation's grace period), for the audit trail.
        self.secret_used = self._clients.which_secret(self.domain, client_secret)
        return self.secret_used is not None

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint not in ENDPOINTS or not self.domain.enabled:
            return False
        if method == CLIENT_SECRET_BEARER:
            return self.bearer_secret and self.domain.secret_hash is not None
        return method in self.domain.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == GRANT_TYPE
