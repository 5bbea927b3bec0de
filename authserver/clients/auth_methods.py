"""Token endpoint client authentication methods (RFC 7591 §2 names; RFC 6749 §2.3.1,
RFC 7523 §2.2): the one place their names are spelled."""

from __future__ import annotations

CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name, not a secret
CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - a method name, not a secret
PRIVATE_KEY_JWT = "private_key_jwt"
#: ``Authorization: Bearer <client_secret>``, the operator-token dialect of the ``stream``
#: profile: only at a profile's own path and only for clients of that profile, so it is
#: not among the methods ``/token`` offers (no registry defines a name for it).
CLIENT_SECRET_BEARER = "client_secret_bearer"  # noqa: S105 - a method name, not a secret

#: What a client registered with a secret may use.
SECRET_METHODS = (CLIENT_SECRET_BASIC, CLIENT_SECRET_POST)
#: What a client registered with a JWK set (inline or ``jwks_uri``) may use.
JWT_METHODS = (PRIVATE_KEY_JWT,)
#: Every method the server supports, in the order metadata lists them.
ALL_METHODS = SECRET_METHODS + JWT_METHODS

#: Algorithms accepted for private_key_jwt client assertions (joserfc's recommended
#: asymmetric set; "none" and HMAC never apply to a public-key method).
ASSERTION_ALGS = ("RS256", "PS256", "ES256")
