"""The key schedule as a pure function: what :meth:`KeyService.tick` must do, from the
stored keys, the time and the policy, with no I/O (tested exhaustively in
tests/unit/test_key_plan.py). The service applies a :class:`Plan` under the store lock.

The rules every function here encodes (docs/keys.md): the signing windows of the keys that
are not retired chain, each ending where the next begins, so exactly one key is current;
a new key is written ``publish_ahead + cache_seconds`` before it signs; a key stays
published ``retention`` after it stopped signing (the longest retention of the
configurations that could sign with it, recorded with the key), then loses its private
half, and its record is deleted :data:`KEEP_GONE_RECORDS` later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from authserver.errors import KeyStoreError
from authserver.keys.model import KeyState
from authserver.keys.model import SigningKey

#: How long the record of a gone key is kept (for ``keys list`` and audit) before deletion.
#: Its private half is destroyed as soon as it is gone.
KEEP_GONE_RECORDS = 30 * 86400


@dataclass(frozen=True)
class KeyPolicy:
    """The settings the lifecycle needs (see ``settings.FIELDS`` for their meaning)."""

    key_size: int = 2048
    passphrase: str | None = None
    rotation_interval: int = 30 * 86400
    publish_ahead: int = 3600
    jwks_max_age: int = 300
    retention: int = 86400 + 300
    cache_seconds: float = 1.0


def lead(policy: KeyPolicy) -> float:
    """How long before signing a new key is written: the publish-ahead, plus the time a
    worker may keep serving a JWKS read before the key existed (``cache_seconds``), so
    every worker has published it for the full publish-ahead before it signs."""
    return policy.publish_ahead + policy.cache_seconds


class Cleanup(enum.Enum):
    DELETE = "delete"  #: forget the record of a key gone for KEEP_GONE_RECORDS
    DESTROY = "destroy"  #: drop the private half of a gone key


@dataclass(frozen=True)
class Plan:
    """What the schedule must do now. Empty (false) when there is nothing to do."""

    #: No key signs now, or the windows do not chain: the service rechains (promoting an
    #: old-enough next key, or creating one that signs at once).
    repair: bool = False
    #: The current key has served its interval and no next key is waiting: write one.
    rotate: bool = False
    #: Gone keys and what to do with each.
    cleanup: tuple[tuple[SigningKey, Cleanup], ...] = ()
    #: Live keys (next or current) recorded with a shorter retention than the configured
    #: one (or none): this configuration may sign with them, so their record is raised.
    record_retention: tuple[SigningKey, ...] = ()

    def __bool__(self) -> bool:
        return self.repair or self.rotate or bool(self.cleanup) or bool(self.record_retention)


def plan(keys: list[SigningKey], now: float, policy: KeyPolicy) -> Plan:
    """What :meth:`KeyService.tick` must do with *keys* at *now*."""
    retention = policy.retention
    todo = tuple((k, c) for k in keys if (c := cleanup(k, now, retention)) is not None)
    short = tuple(k for k in live(keys, now) if (k.retention or 0) < retention)
    if chain_broken(keys, now):
        return Plan(repair=True, cleanup=todo, record_retention=short)
    current = signing_key(keys, now, retention)
    if current is None:
        return Plan(repair=True, cleanup=todo, record_retention=short)
    rotate = not pending(keys, now) and now >= rotation_due(current, policy) - lead(policy)
    return Plan(rotate=rotate, cleanup=todo, record_retention=short)


def rotation_due(current: SigningKey, policy: KeyPolicy) -> float:
    """When *current* has signed for ``rotation_interval``: the schedule writes its
    successor :func:`lead` before then, to start signing then (the next tick after, if a
    tick comes late)."""
    return current.activate_at + policy.rotation_interval


def live(keys: list[SigningKey], now: float) -> list[SigningKey]:
    """Keys whose signing window has not ended and that are not retired, by start."""
    return sorted(
        (
            k
            for k in keys
            if k.retired_at is None and (k.deactivate_at is None or k.deactivate_at > now)
        ),
        key=lambda k: (k.activate_at, k.created_at),
    )


def chain_broken(keys: list[SigningKey], now: float) -> bool:
    """True when the signing windows of the live keys are not contiguous, which only a
    crash part-way through a change of a store without transactions (the file store)
    can leave: e.g. a new key written, the current key's window not yet ended, so both
    would be current once the new one activates."""
    return any(key.deactivate_at != end for key, end in chained_ends(live(keys, now)))


def chained_ends(live: list[SigningKey]) -> list[tuple[SigningKey, float | None]]:
    """Each live key (as :func:`live` orders them) with the end its signing window must
    have for the windows to chain: the next key's start; the last key's is open."""
    ends: list[float | None] = [k.activate_at for k in live[1:]]
    return list(zip(live, [*ends, None][: len(live)], strict=True))


def cleanup(key: SigningKey, now: float, retention: float) -> Cleanup | None:
    """What the schedule does with *key* now: delete its record once it has been gone for
    :data:`KEEP_GONE_RECORDS`, destroy the private half of a gone key that still has one,
    else nothing."""
    if key.state(now, retention) is not KeyState.GONE:
        return None
    if now >= (key.drop_at(retention) or now) + KEEP_GONE_RECORDS:
        return Cleanup.DELETE
    return Cleanup.DESTROY if key.private_pem is not None else None


def current_key(keys: list[SigningKey], now: float, retention: float) -> SigningKey | None:
    current = [k for k in keys if k.state(now, retention) is KeyState.CURRENT]
    if len(current) > 1:
        # Cannot happen while the service's rechaining is the only writer of windows;
        # refuse to guess.
        raise KeyStoreError("more than one current signing key (inconsistent key store)")
    return current[0] if current else None


def signing_key(keys: list[SigningKey], now: float, retention: float) -> SigningKey | None:
    """The key that signs at *now*: the current key, unless the clock reads earlier than
    the store says it once was (stepped back, or slower than the instance that wrote the
    store), so that no key is current at *now* yet or the current one's private half was
    already destroyed (its retention once ended). Then the first key after it in the chain
    that still has its private half signs: a key published at *now* (it is ``next``), the
    one that signed when the store was written, where a new key would be one no verifier
    has seen and the destroyed one cannot sign at all.

    ``None`` when nothing can sign: an empty store, or no current key while the clock is
    not behind (:func:`clock_behind`; the current key's record unreadable, a crash): the
    schedule repairs that.
    """
    current = current_key(keys, now, retention)
    if current is not None and current.private_pem is not None:
        return current
    later = [k for k in pending(keys, now) if k.private_pem is not None]
    if not later:
        return current
    if current is None and not clock_behind(keys, now):
        return None  # no current key, and not for a clock behind the store: a repair
    return later[0]


def clock_behind(keys: list[SigningKey], now: float) -> bool:
    """Whether *now* is earlier than a moment the store records as past: a key's creation
    or its retire, each written as its writer's now. A retire counts too: it promotes a
    ``next`` key written long before (:meth:`KeyService.retire`), so after it, on a clock
    behind the retirer's, no key is current and the one that signs was created before
    *now*, yet nothing needs repairing."""
    return any(
        k.created_at > now or (k.retired_at is not None and k.retired_at > now) for k in keys
    )


def pending(keys: list[SigningKey], now: float) -> list[SigningKey]:
    return sorted(
        (k for k in keys if k.retired_at is None and k.activate_at > now),
        key=lambda k: k.activate_at,
    )
