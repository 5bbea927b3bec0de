"""The read side of the signing keys: the key set as this process sees it.

:class:`KeyRing` answers the questions asked on every request (which key signs now, which
keys are published, the public key of a ``kid``) from a snapshot of the store, and parses
each private key once. It never writes: the lifecycle commands (``keys/service.py``) change
the store and then drop the snapshot with :meth:`KeyRing.invalidate`; changes made by other
processes are seen through the store's version token, or through the change feed when one
is live.

The signer is handed exactly one key, the current one (docs/design.md, Authlib item 1:
never a key set, from which joserfc would pick a random key).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Hashable
from collections.abc import Iterable
from typing import Any
from typing import Generic
from typing import NamedTuple
from typing import TypeVar

from joserfc.jwk import RSAKey

from authserver.cache import ChangeFeed
from authserver.clock import Clock
from authserver.errors import KeyStoreError
from authserver.keys import crypto
from authserver.keys.model import KeyState
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.plan import KeyPolicy
from authserver.keys.plan import signing_key
from authserver.keys.store import KeyStore
from authserver.records import ReportOnce
from authserver.records import UnreadableRecord

log = logging.getLogger(__name__)

#: The change-feed name of signing-key changes (the SQL key store announces it).
CHANGE_NAME = "signing_keys"


V = TypeVar("V")


class _Answer(NamedTuple, Generic[V]):
    """An answer worked out from one snapshot at *since*, and the moment *until* when a
    key of that snapshot may next change the answer: within ``[since, until)``, and while
    the snapshot is the same list, the ring returns it without looking at the keys again
    (the signing key on every token request, the JWK set on every JWKS GET)."""

    keys: list[SigningKey]
    since: float
    until: float
    value: V

    def holds(self, keys: list[SigningKey], now: float) -> bool:
        return self.keys is keys and self.since <= now < self.until


class KeyRing:
    """The cached key set the token endpoint signs with and the JWKS publishes."""

    def __init__(
        self,
        store: KeyStore,
        clock: Clock,
        policy: KeyPolicy,
        changes: ChangeFeed | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._policy = policy
        #: With a live feed the snapshot is re-read only when a change is announced, not
        #: checked against the store's version every ``cache_seconds``.
        self._changes = changes
        if changes is not None:
            changes.subscribe(CHANGE_NAME, self.invalidate)
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self._version: str | None = None
        #: The store's stamp when the snapshot was read (see _snapshot).
        self._stamp: Hashable | None = None
        self._checked_at = float("-inf")
        #: Whether the snapshot was read after the last invalidation (see _snapshot).
        self._fresh = False
        self._generation = 0
        self._parsed: dict[Kid, RSAKey] = {}
        self._signer: _Answer[tuple[Kid, RSAKey]] | None = None
        self._published: _Answer[dict[str, Any]] | None = None
        self._report = ReportOnce(log, "signing key record")

    @property
    def policy(self) -> KeyPolicy:
        return self._policy

    # -- fresh reads ---------------------------------------------------------------------

    def read(self) -> list[SigningKey]:
        """The readable keys of the store, read now. A record that cannot be read is
        logged once by name and otherwise ignored: it signs nothing and is not published,
        and the lifecycle goes on without it (if it was the current key, the next tick or
        start makes a new one, as for a retired key)."""
        scan = self._store.scan()
        if scan.unreadable:
            self._report(scan.unreadable)
        return scan.records

    def unreadable(self) -> list[UnreadableRecord]:
        """The key records that cannot be read right now (read fresh)."""
        scan = self._store.scan()
        self._report(scan.unreadable)
        return scan.unreadable

    def verification_key(self, kid: str) -> RSAKey | None:
        """The public key for *kid* if it is published right now (read fresh, not cached,
        so a retire is seen at once by introspection)."""
        now = self._clock.now()
        for key in self.read():
            if key.kid == kid and key.state(now, self._policy.retention) is not KeyState.GONE:
                return RSAKey.import_key(key.public_jwk)
        return None

    def check_readable(self) -> None:
        """Parse every key that may still sign, so a wrong passphrase stops start-up."""
        now = self._clock.now()
        for key in self.read():
            if key.private_pem is None:
                continue
            if key.state(now, self._policy.retention) in (KeyState.NEXT, KeyState.CURRENT):
                self.private_key(key)
            elif crypto.is_encrypted(key.private_pem) and not self._policy.passphrase:
                self.private_key(key)  # raises the clear passphrase error

    def private_key(self, key: SigningKey) -> RSAKey:
        """The parsed private half of *key*, parsed (and decrypted) once per process, not
        on every token. Raises :class:`KeyStoreError` when it cannot be read."""
        parsed = self._parsed.get(key.kid)
        if parsed is None:
            if key.private_pem is None:
                raise KeyStoreError(f"signing key {key.kid} has no private key material")
            parsed = crypto.load_private(key.private_pem, self._policy.passphrase, key.kid)
            self._parsed[key.kid] = parsed
        return parsed

    # -- the cached snapshot (hot path) ----------------------------------------------------

    def _snapshot(self) -> list[SigningKey]:
        """The key set as the store holds it now, re-read only when it changed.

        A store with a stamp (the key directory: one ``stat``; a SQLite file: ``PRAGMA
        data_version``) is asked on every call, so a change made by any process (``keys
        retire`` in another worker or on the command line) is seen by the next request,
        and its version is read every ``cache_seconds`` as well. Otherwise (PostgreSQL)
        the change feed announces changes, and while it is down the version is read at
        most every ``cache_seconds``. Either way the full list is re-read only when the
        version moved. Lifecycle transitions driven by time need no
        re-read at all: states are computed from timestamps at each call.
        """
        stamp = self._store.stamp()
        mono = time.monotonic()
        if stamp is not None:
            if self._unchanged(stamp, mono):
                return self._keys
            with self._lock:
                if self._unchanged(stamp, mono):
                    return self._keys  # another thread read it meanwhile
                return self._reread(stamp)
        if mono - self._checked_at < self._policy.cache_seconds:
            return self._keys
        feed = self._changes
        if feed is not None and feed.live() and self._fresh:
            # Nothing announced since the last read: no round trip.
            return self._keys
        with self._lock:
            if mono - self._checked_at < self._policy.cache_seconds:
                return self._keys
            return self._reread(None)

    def _unchanged(self, stamp: Hashable, mono: float) -> bool:
        """Whether the snapshot still holds for a store that gave *stamp*. The version is
        read every cache_seconds all the same: a key directory shared over a network file
        system may answer stat from a cache of the file's attributes, while opening the
        file (version()) asks the server."""
        return (
            self._fresh
            and stamp == self._stamp
            and mono - self._checked_at < self._policy.cache_seconds
        )

    def _reread(self, stamp: Hashable | None) -> list[SigningKey]:
        """Under the lock: read the store's version, and the key set when the version
        moved. *stamp* was taken before (a change after it makes the next stamp differ:
        read again then)."""
        generation = self._generation
        version = self._store.version()
        if version != self._version:
            self._keys = self.read()
            self._version = version
            live = {k.kid for k in self._keys}
            self._parsed = {kid: key for kid, key in self._parsed.items() if kid in live}
        # An invalidation that arrived while reading keeps the snapshot stale: it may
        # announce a change the read did not see.
        if generation == self._generation:
            self._stamp = stamp
            self._checked_at = time.monotonic()
            self._fresh = True
        return self._keys

    def invalidate(self) -> None:
        """Forget the cached snapshot (after a change made by this process, or announced by
        the change feed)."""
        self._generation += 1
        self._fresh = False
        self._checked_at = float("-inf")

    def current(self) -> tuple[Kid, RSAKey]:
        """The one key that signs now, parsed. Raises :class:`KeyStoreError` if none."""
        now = self._clock.now()
        keys = self._snapshot()
        signer = self._signer
        if signer is not None and signer.holds(keys, now):
            return signer.value
        key = signing_key(keys, now, self._policy.retention)
        if key is None:
            # The snapshot may predate a key made current by another process (within
            # cache_seconds, or before the change feed's notice arrived): check again.
            self.invalidate()
            keys = self._snapshot()
            key = signing_key(keys, now, self._policy.retention)
        if key is None:
            raise KeyStoreError("no current signing key")
        parsed = self.private_key(key)
        # A start, an end or a retire of any window may change which key is current, and
        # the clock passing a key's creation which key signs for a clock behind the store.
        windows = (
            t for k in keys for t in (k.created_at, k.activate_at, k.deactivate_at, k.retired_at)
        )
        self._signer = _Answer(keys, now, _first_after(now, windows), (key.kid, parsed))
        return key.kid, parsed

    def published_jwks(self) -> dict[str, Any]:
        """The JWK set to publish: public halves of next, current and previous keys. The
        same object until the snapshot changes or a key of it leaves the set
        (:meth:`SigningKey.drop_at`), so callers can keep what they build from it by
        identity (every JWKS GET asks; treat it as read-only)."""
        now = self._clock.now()
        snapshot = self._snapshot()
        memo = self._published
        if memo is not None and memo.holds(snapshot, now):
            return memo.value
        retention = self._policy.retention
        keys = [k for k in snapshot if k.state(now, retention) is not KeyState.GONE]
        keys.sort(key=lambda k: k.activate_at, reverse=True)
        jwks = {"keys": [dict(k.public_jwk) for k in keys]}
        until = _first_after(now, (k.drop_at(retention) for k in keys))
        self._published = _Answer(snapshot, now, until, jwks)
        return jwks


def _first_after(now: float, moments: Iterable[float | None]) -> float:
    """The first of *moments* after *now* (infinity if none is)."""
    return min((t for t in moments if t is not None and t > now), default=math.inf)
