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

    def state(self, now: float, retention: float) -> KeyState:
        """The lifecycle state at *now*; *retention* is how long a key stays published
        after it stopped signing (the longest token lifetime plus leeway)."""
        if self.retired_at is not None and self.retired_at <= now:
            return KeyState.GONE
        if now < self.activate_at:
            return KeyState.NEXT
        if self.deactivate_at is None or now < self.deactivate_at:
            return KeyState.CURRENT
        if now < self.deactivate_at + retention:
            return KeyState.PREVIOUS
        return KeyState.GONE

    def drop_at(self, retention: float) -> float | None:
        """When the key leaves the JWKS (``None`` while its end of signing is unknown)."""
        if self.retired_at is not None:
            return self.retired_at
        if self.deactivate_at is None:
            return None
        return self.deactivate_at + retention
