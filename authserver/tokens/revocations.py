"""Revoked access tokens (RFC 7009) and replayed client assertions (RFC 7523 §3).

Both are remembered by ``jti`` only until the token or assertion expires: after that,
``exp`` refuses it anyway, so the tables stay small. They live in the database, so every
instance sees a revocation at once.

"Expired" is by the clock of whoever purges, and a clock may read earlier afterwards (NTP
stepping back a host that ran ahead, an instance behind the one that purged): each purge
raises a *horizon* to the latest ``exp`` it forgot, never lowers it, and a token or
assertion whose ``exp`` is at or before it counts as expired, since its record may be
gone.
"""

from __future__ import annotations

from typing import Protocol


class RevocationStore(Protocol):
    def revoke(self, jti: str, client_id: str, expires_at: float, now: float) -> None:
        """Remember *jti* as revoked until *expires_at* (idempotent)."""

    def is_revoked(self, jti: str, expires_at: float | None = None) -> bool:
        """Whether *jti* is revoked; with *expires_at* (the token's ``exp``), also when
        that is at or before the horizon (its revocation may have been purged)."""

    def use_assertion(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Record a client assertion's jti; ``False`` if it was already used (a replay),
        or if *expires_at* is at or before the horizon (a use may have been purged).

        Durable at once, independent of the caller's unit of work: an assertion that
        authenticated a request is spent even if that request then fails."""

    def horizon(self) -> float:
        """The highest horizon this store has read (``0.0`` before any), without reading
        storage: never above the stored one, so an ``exp`` at or before it surely counts
        as expired. For telling such a refusal from a replay."""

    def purge(self, now: float) -> int:
        """Forget entries that expired before *now* and raise the horizon to the latest
        ``exp`` among them (in the same unit of work); returns how many."""
