"""A signing key and its lifecycle state.

The state is derived from timestamps, never stored::

    created_at        activate_at           deactivate_at        deactivate_at + retention
        |  published, signs nothing  |  the one signing key  |  published, signs nothing  |
        |----------- next -----------|------- current -------|--------- previous ---------|-- gone

Because every process computes the state from the same timestamps, the switch from one key
to the next happens at the same instant in every worker and every instance, without any
message between them; only *creating* the next key needs a lock. The service keeps the
signing windows ``[activate_at, deactivate_at)`` of the keys that are not retired contiguous
and non-overlapping, so exactly one key is current at every moment.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import NewType

Kid = NewType("Kid", str)


class KeyState(enum.StrEnum):
    NEXT = "next"
    CURRENT = "current"
    PREVIOUS = "previous"
    GONE = "gone"


@dataclass(frozen=True)
class SigningKey:
    """A stored RSA signing key."""

    #: RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key.
    kid: Kid
    #: PKCS#8 PEM of the private key, encrypted when a passphrase is configured;
    #: ``None`` once the key is gone and its private half destroyed.
    private_pem: bytes | None = field(repr=False)
    #: The public JWK (RFC 7517) as published: kty, kid, use, alg, n, e.
    public_jwk: dict[str, Any]
    #: When the key was created and published in the JWKS.
    created_at: float
    #: When it starts signing.
    activate_at: float
    #: When it stops signing (``None``: not scheduled yet).
    deactivate_at: float | None
    #: When an operator retired it (emergency removal), or ``None``.
    retired_at: float | None = None
    alg: str = "RS256"
    #: The retention recorded with the key (seconds): the longest of the configured
    #: retentions (longest token lifetime plus leeway) of the processes that could sign
    #: with it, so that lowering ``AUTHSERVER_MAX_TOKEN_TTL`` never drops a key before the
    #: tokens it signed under the old limit expire. ``None`` on a key recorded before
    #: keys carried it: the running configuration's alone.
    retention: float | None = None

    def kept_for(self, retention: float) -> float:
        """How long this key stays published after it stopped signing: the configured
        *retention*, or the one recorded with the key if that is longer."""
        return retention if self.retention is None else max(retention, self.retention)

    def state(self, now: float, retention: float) -> KeyState:
        """The lifecycle state at *now*; *retention* is the configured time a key stays
        published after it stopped signing (the longest token lifetime plus leeway), which
        the key's own recorded retention may lengthen (:meth:`kept_for`).

        A retired key is gone whatever *now* is: ``retired_at`` is the retiring process's
        clock, which another instance's (or this one's, stepped back) may not have reached,
        and a retire takes effect at once everywhere."""
        if self.retired_at is not None:
            return KeyState.GONE
        if now < self.activate_at:
            return KeyState.NEXT
        if self.deactivate_at is None or now < self.deactivate_at:
            return KeyState.CURRENT
        if now < self.deactivate_at + self.kept_for(retention):
            return KeyState.PREVIOUS
        return KeyState.GONE

    def signs_until(self) -> float | None:
        """When the key stops (or stopped) signing: the end of its window, or its retire
        when that came first (a retired key keeps the window it was planned with);
        ``None`` while neither is known."""
        ends = [t for t in (self.deactivate_at, self.retired_at) if t is not None]
        return min(ends, default=None)

    def drop_at(self, retention: float) -> float | None:
        """When the key leaves the JWKS (``None`` while neither a retire nor its end of
        signing is known): the first of its retire and the end of its retention, as
        :meth:`state` decides."""
        retention_ends = (
            None if self.deactivate_at is None else self.deactivate_at + self.kept_for(retention)
        )
        ends = [t for t in (self.retired_at, retention_ends) if t is not None]
        return min(ends, default=None)


#: Members of an RSA private JWK (RFC 7518 §6.3.2) that a public JWK must never carry.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


#: The latest moment a key record may name: 2^33 s after the epoch (the year 2242), far
#: past any schedule (settings bound every duration to 2^31 - 1 s) and within what the
#: platform's clock functions represent, which 10^23 was not (``keys list`` failed).
LATEST_TIMESTAMP = 2.0**33


class InvalidStoredKey(ValueError):
    """A key record whose fields do not have their types (see :func:`check_stored`)."""


def _timestamp(value: Any, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidStoredKey(f"{name} is not a timestamp")
    if not 0 <= value <= LATEST_TIMESTAMP:
        raise InvalidStoredKey(f"{name} is not a time this server can have written")


def check_stored(key: SigningKey) -> SigningKey:
    """*key* as read from a store, if every field has its type; else
    :class:`InvalidStoredKey` saying which field is wrong (never its value: it may be key
    material)."""
    if not isinstance(key.kid, str) or not key.kid:
        raise InvalidStoredKey("kid is missing")
    jwk = key.public_jwk
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
        raise InvalidStoredKey("public_jwk is not an RSA JWK")
    if not all(isinstance(jwk.get(m), str) and jwk[m] for m in ("n", "e")):
        raise InvalidStoredKey("public_jwk has no n or e")
    if PRIVATE_MEMBERS & set(jwk):
        raise InvalidStoredKey("public_jwk holds private key members")
    if jwk.get("kid", key.kid) != key.kid:
        raise InvalidStoredKey("public_jwk has another kid")
    if key.private_pem is not None and not isinstance(key.private_pem, bytes):
        raise InvalidStoredKey("private key is not PEM bytes")
    if not isinstance(key.alg, str):
        raise InvalidStoredKey("alg is not a string")
    _timestamp(key.created_at, "created_at")
    _timestamp(key.activate_at, "activate_at")
    _timestamp(key.deactivate_at, "deactivate_at", optional=True)
    _timestamp(key.retired_at, "retired_at", optional=True)
    _timestamp(key.retention, "retention", optional=True)
    if key.retention is not None and key.retention < 0:
        raise InvalidStoredKey("retention is negative")
    return key
