"""The client: a trusted backend allowed to mint tokens for its users."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from typing import NewType

ClientId = NewType("ClientId", str)

#: Claims the server always sets itself; no request and no policy may set them.
#: INTERFACE.md names the first seven; ``scope`` comes from the scope parameter, ``sub``,
#: ``email`` and ``name`` from their own parameters, and ``typ``/``cnf`` are JOSE/RFC 7800
#: members whose meaning a caller must not forge.
RESERVED_CLAIMS = frozenset(
    {"iss", "exp", "iat", "nbf", "jti", "aud", "client_id", "scope", "typ", "cnf"}
)
#: The user-identity claims, given as parameters (or inside a JSON body's ``claims``).
IDENTITY_CLAIMS = frozenset({"sub", "email", "name"})

_CLAIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")


def is_valid_claim_name(name: str) -> bool:
    return bool(_CLAIM_NAME.match(name))


def is_valid_scope_token(token: str) -> bool:
    return bool(_SCOPE_TOKEN.match(token))


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

    @property
    def auth_method(self) -> str:
        """The token endpoint authentication method family this client uses."""
        return "client_secret" if self.secret_hash else "private_key_jwt"
