"""Client identifiers and secrets.

Why SHA-256 and not bcrypt/argon2: the secrets are generated here, from 256 bits of
``secrets.token_bytes``, never chosen by a person. A password hash exists to make guessing
a low-entropy password expensive; there is nothing to guess in 2**256 possibilities, so a
fast digest is exactly as safe against an attacker holding the database, and it keeps
``/token`` at RSA-signing speed instead of spending 50-300 ms of CPU per request (the cost
that holds password-hashing OAuth servers to single-digit tokens/s). Indico and
django-oauth-toolkit hash their server-generated tokens the same way. Operator-chosen
secrets are never accepted, which is what keeps this argument true.

Comparison is constant-time (``hmac.compare_digest``) on the digests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from authserver.clients.model import ClientId

#: A recognisable prefix lets secret scanners (GitHub, gitleaks) flag leaked secrets.
SECRET_PREFIX = "as_secret_"  # noqa: S105 - a public prefix, not a secret
CLIENT_ID_PREFIX = "as_client_"
SECRET_BYTES = 32  # 256 bits


def new_client_id() -> ClientId:
    return ClientId(CLIENT_ID_PREFIX + secrets.token_urlsafe(16))


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


#: What logs, the failure counters and events carry instead of a presented client id that
#: holds a client secret.
WITHHELD_ID = "<withheld: a client secret>"


def presentable_client_id(presented: str) -> str:
    """A client id a request *presented*, as it may be logged, counted and reported: the
    id itself, unless it holds a client secret (a backend that swapped its id and its
    secret sends its secret as the id), which is replaced by :data:`WITHHELD_ID`. No
    client id authserver makes holds the secret prefix."""
    return WITHHELD_ID if SECRET_PREFIX in presented else presented


#: A client secret anywhere in a text: SECRET_PREFIX, then token_urlsafe characters.
_SECRET_IN_TEXT = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_-]+")
WITHHELD_SECRET = SECRET_PREFIX + "<withheld>"


def withhold_secrets(text: str) -> str:
    """*text* with every client secret in it replaced by :data:`WITHHELD_SECRET`.

    What a request controls (a parameter or claim name, a request id, a path, a client id)
    is logged and named in error descriptions as sent; a backend that puts its secret in
    the wrong place would have it written to the log. The log formatters and the error
    answers pass their text through here last. A secret stripped of its prefix cannot be
    told from any other string."""
    return _SECRET_IN_TEXT.sub(WITHHELD_SECRET, text) if SECRET_PREFIX in text else text


def hash_secret(secret: str) -> str:
    """Return the stored form of *secret*: ``sha256$<hex digest>``."""
    digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256${digest}"


def verify_secret(secret: str, stored: str | None) -> bool:
    """Compare *secret* with a stored digest in constant time."""
    if not stored:
        return False
    return hmac.compare_digest(hash_secret(secret), stored)
