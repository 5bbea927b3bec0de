"""Revoked access tokens (RFC 7009) and replayed client assertions (RFC 7523 §3).

Both are remembered by ``jti`` only until the token or assertion expires: after that,
``exp`` refuses it anyway, so the tables stay small. They live in the database, so every
instance sees a revocation at once.
"""

from __future__ import annotations

from typing import Protocol


class RevocationStore(Protocol):
    def revoke(self, jti: str, client_id: str, expires_at: float, now: float) -> None:
        """Remember *jti* as revoked until *expires_at* (idempotent)."""

    def is_revoked(self, jti: str) -> bool: ...

    def use_assertion(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Record a client assertion's jti; ``False`` if it was already used (a replay).

        Durable at once, independent of the caller's unit of work: an assertion that
        authenticated a request is spent even if that request then fails."""

    def purge(self, now: float) -> int:
        """Forget entries that expired before *now*; returns how many."""
