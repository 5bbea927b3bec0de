"""The client: a trusted backend allowed to mint tokens for its users."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import NewType

from authserver.clients import auth_methods

ClientId = NewType("ClientId", str)

#: The profile (request/response dialect) of a client registered without one, and of a
#: record written before profiles existed.
DEFAULT_PROFILE = "oauth2"

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")


def is_valid_scope_token(token: str) -> bool:
    return bool(_SCOPE_TOKEN.fullmatch(token))


@dataclass(frozen=True)
class ClientPolicy:
    """What tokens a client may obtain."""

    #: Audiences (RFC 8707 resource indicators) the client may ask for; a single one is
    #: the default when the request names none.
    audiences: tuple[str, ...] = ()
    #: Scopes the client may ask for; all of them when the request names none.
    scopes: tuple[str, ...] = ()
    #: Names of extra claims the client may put in tokens through ``claims``.
    allowed_claims: tuple[str, ...] = ()
    #: Token lifetime in seconds; ``None`` means the server's default.
    token_ttl: int | None = None
    #: Every token request must name a user (``sub``): for backends that only ever act
    #: for a user, so a request that forgot the user fails instead of getting a token
    #: whose subject is the client itself.
    require_sub: bool = False
    #: The request/response dialect of this client (``authserver.profiles``).
    profile: str = DEFAULT_PROFILE
    #: Claims every token of this client carries, set by the operator; a request can
    #: repeat one with the same value but never change it.
    fixed_claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Client:
    """A registered client. Secrets are held only as a digest (see ``clients.secrets``)."""

    client_id: ClientId
    name: str
    policy: ClientPolicy
    enabled: bool
    created_at: float
    updated_at: float
    #: SHA-256 digest of the client secret, or ``None`` for private_key_jwt clients.
    secret_hash: str | None = None
    #: Public JWK set (RFC 7517) for private_key_jwt clients.
    jwks: dict[str, Any] | None = None
    #: Where to fetch the public JWK set of a private_key_jwt client.
    jwks_uri: str | None = None
    #: After ``rotate-secret --grace``: the digest of the secret before the rotation, still
    #: accepted until :attr:`previous_secret_expires_at` (zero-downtime rotation).
    previous_secret_hash: str | None = None
    previous_secret_expires_at: float | None = None

    @property
    def auth_method(self) -> str:
        """The token endpoint authentication method family this client uses."""
        return "client_secret" if self.secret_hash else auth_methods.PRIVATE_KEY_JWT

    @property
    def auth_methods(self) -> tuple[str, ...]:
        """The token endpoint authentication methods this client may use."""
        return auth_methods.SECRET_METHODS if self.secret_hash else auth_methods.JWT_METHODS


def listing_order(client: Client) -> tuple[float, str]:
    """Where *client* stands in a list of clients: oldest first, a tie broken by the client
    id compared by code points, as Python compares strings. Every store sorts by this key
    itself: a database's ``ORDER BY`` follows its collation, and a linguistic one (such as
    ``en_US.utf8``) puts ``as_client__z`` before ``as_client_-b`` and ``as_client_ab``
    before ``as_client_B``."""
    return (client.created_at, str(client.client_id))
