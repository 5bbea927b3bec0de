"""The signing-key lifecycle commands: bootstrap, scheduled and manual rotation, emergency
retire.

Rules (docs/keys.md):

* A new key is published ``publish_ahead`` seconds (default one hour, never less than the
  JWKS max-age) before it signs anything, so a verifier holding a cached JWKS already
  knows it when the first token signed with it arrives.
* A key that stopped signing stays published for ``retention`` seconds: the longest token
  lifetime any client can get, plus leeway; the longest such retention of the
  configurations that could sign with the key is recorded with it (on creation and by the
  schedule), so lowering the lifetime limit never drops a key too early.
* Exactly one key is current at every moment: the signing windows of keys that are not
  retired are kept contiguous (each key's ``deactivate_at`` is the next key's
  ``activate_at``) by :meth:`KeyService._rechain`, the only writer of windows.
* Every change happens under :meth:`KeyStore.lock` after re-reading the store, so N workers
  and M instances that decide to rotate at the same moment rotate exactly once.

What the schedule must do is decided by the pure planner (``keys/plan.py``); this module
applies it. Reading keys to sign and publish is the key ring's job (``keys/ring.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from authserver.audit.service import AuditService
from authserver.clock import Clock
from authserver.errors import Conflict
from authserver.errors import KeyStoreError
from authserver.errors import not_found
from authserver.keys import crypto
from authserver.keys.model import KeyState
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.plan import Cleanup
from authserver.keys.plan import KeyPolicy
from authserver.keys.plan import chain_broken
from authserver.keys.plan import chained_ends
from authserver.keys.plan import lead
from authserver.keys.plan import live
from authserver.keys.plan import pending
from authserver.keys.plan import plan
from authserver.keys.plan import signing_key
from authserver.keys.ring import KeyRing
from authserver.keys.store import KeyStore

log = logging.getLogger(__name__)

#: Seconds a key is stored before :meth:`KeyService.recover_records` takes its missing
#: creation record for lost rather than about to be written: the process that wrote the
#: key records it as soon as its key store lock is released, in a transaction that waits
#: at most SQLite's busy timeout (15 s) or PostgreSQL's statement timeout (10 s) for the
#: database; 60 s is four times the longer. The clock difference allowed between
#: instances (``AUTHSERVER_KEY_RETENTION_LEEWAY``) is added to it.
RECORD_WAIT = 60.0


@dataclass(frozen=True)
class KeyView:
    """A key with its state at a given moment (what ``keys list`` shows)."""

    key: SigningKey
    state: KeyState
    drop_at: float | None


@dataclass(frozen=True)
class RotationResult:
    key: SigningKey
    created: bool


class KeyService:
    """The key lifecycle commands. Each reads the store fresh and changes it under
    :meth:`KeyStore.lock`; the cached read side is :class:`~authserver.keys.ring.KeyRing`,
    which every command leaves to re-read the store once it is done."""

    def __init__(
        self,
        store: KeyStore,
        ring: KeyRing,
        clock: Clock,
        audit: AuditService | None = None,
        *,
        clock_skew: float = 0.0,
    ) -> None:
        """*clock_skew*: the most the clocks of the instances sharing the store may differ
        by (``AUTHSERVER_KEY_RETENTION_LEEWAY``)."""
        self._store = store
        self._ring = ring
        self._clock = clock
        self._policy = ring.policy
        self._audit = audit
        self._clock_skew = clock_skew
        #: The key records this process has read (``("created", kid)``, ``("retired",
        #: kid)``): recover_records reads the audit trail only for changes not among them.
        self._on_record: set[tuple[str, str | None]] = set()

    @property
    def policy(self) -> KeyPolicy:
        return self._policy

    def _list(self) -> list[SigningKey]:
        """The store, read now (through the ring, which reports an unreadable record once
        per process)."""
        return self._ring.read()

    def views(self) -> list[KeyView]:
        """Every stored key with its state, newest first (read fresh), as the operator
        commands show them. The key that signs is shown ``current`` even while the clock
        is behind the store (``plan.signing_key``), and a key current by the clock that it
        replaces (its private half destroyed) ``previous``, so every report (``keys
        list``, ``doctor``, ``/metrics``, ``current_kid``) names the key tokens carry."""
        now = self._clock.now()
        retention = self._policy.retention
        keys = sorted(self._list(), key=lambda k: (k.activate_at, k.created_at), reverse=True)
        try:
            signer = signing_key(keys, now, retention)
        except KeyStoreError:  # two open windows: nothing signs until the schedule rechains
            signer = None
        views = []
        for key in keys:
            state = key.state(now, retention)
            if signer is not None and key.kid == signer.kid:
                state = KeyState.CURRENT
            elif signer is not None and state is KeyState.CURRENT:
                state = KeyState.PREVIOUS
            views.append(KeyView(key, state, key.drop_at(retention)))
        return views

    # -- operator and scheduler commands (each changes the store under its lock) ----------

    def ensure_current(self) -> SigningKey | None:
        """Make sure a key signs now and the signing windows chain: create the first key
        on an empty store, or rechain after a crash or when the current key's record
        cannot be read.

        :returns: the key created, or ``None`` when one was already current.
        """
        if self._sound(self._list(), self._clock.now()):
            return None
        with self._store.lock():
            keys = self._list()
            if self._sound(keys, self._clock.now()):
                return None
            self._check_passphrase(keys)
            created = self._rechain(keys, self._clock.now())
        self._ring.invalidate()
        if created:
            self._record("key.created", created)
            log.info("created signing key %s (the store had no current key)", created.kid)
        return created

    def rotate(self) -> RotationResult:
        """Schedule the next key: published now, signing after ``publish_ahead``.

        Idempotent: when a next key is already scheduled, it is returned unchanged, so a
        rotation requested by several operators or instances at once happens once.
        """
        with self._store.lock():
            now = self._clock.now()
            keys = self._list()
            waiting = pending(keys, now)
            if waiting:
                if chain_broken(keys, now):
                    # A crash between writing the new key and ending the current key's
                    # window (file store: no transaction) left two open windows.
                    self._rechain(keys, now)
                    self._ring.invalidate()
                return RotationResult(waiting[-1], created=False)
            self._check_passphrase(keys)
            new = self._new_key(now, lead=lead(self._policy))
            self._store.add(new)
            self._rechain([*keys, new], now)
            new = self._reload(new.kid)
        self._ring.invalidate()
        self._record("key.rotated", new)
        log.info("scheduled signing key %s to start signing at %s", new.kid, _iso(new.activate_at))
        return RotationResult(new, created=True)

    def encrypt_stored(self) -> list[Kid]:
        """Encrypt with the passphrase every stored private key that is not encrypted yet
        (made before ``AUTHSERVER_KEY_PASSPHRASE`` was set), so that setting it protects the
        keys that sign now and those still published, not only the keys made after it.
        ``serve`` runs it at start; other processes re-read the store as after any change.

        :returns: the kids it encrypted (none without a passphrase).
        """
        passphrase = self._policy.passphrase
        if passphrase is None or not _plaintext(self._list()):
            return []
        with self._store.lock():
            plain = _plaintext(self._list())
            for key in plain:
                rsa = crypto.load_private(key.private_pem or b"", None, key.kid)
                self._store.update(
                    dataclasses.replace(key, private_pem=crypto.to_pem(rsa, passphrase))
                )
        self._ring.invalidate()
        return [key.kid for key in plain]

    def retire(self, kid: str) -> SigningKey:
        """Emergency removal: the key leaves the JWKS at once and never signs again.

        Its private half is destroyed. If it was the current key, the earliest next key
        takes over at once when it has been published for at least the JWKS max-age;
        otherwise a new key is created and signs at once. Verifiers that refetch the JWKS
        on an unknown ``kid`` accept its tokens immediately; verifiers that only refresh on
        expiry may reject them until their cache expires, which is the lesser harm than
        signing with a key that must not be trusted.
        """
        with self._store.lock():
            now = self._clock.now()
            keys = self._list()
            target = next((k for k in keys if k.kid == kid), None)
            if target is None:
                raise not_found("signing key", "kid", kid)
            if target.retired_at is not None:
                raise Conflict(f"signing key {kid} is already retired")
            # The keys that stay tell whether this process's passphrase is the servers';
            # when none of them has a private half (the retired key is the only live one,
            # as after every finished rotation), the retired key itself tells: unchecked,
            # a wrong passphrase wrote the new current key with it, and every server
            # answered 503 until someone stepped in.
            if not self._check_passphrase([k for k in keys if k.kid != kid]):
                self._check_passphrase([target])
            retired = dataclasses.replace(target, retired_at=now, private_pem=None)
            keys = [retired if k.kid == kid else k for k in keys]
            created = self._rechain(keys, now, write_first=retired)
        self._ring.invalidate()
        self._record("key.retired", retired)
        if created is not None:
            self._record("key.created", created)
        log.warning("retired signing key %s", kid)
        return retired

    def _sound(self, keys: list[SigningKey], now: float) -> bool:
        """A key signs now and the windows chain (nothing for ensure_current to do)."""
        return not chain_broken(keys, now) and (
            signing_key(keys, now, self._policy.retention) is not None
        )

    def due(self) -> bool:
        """True when :meth:`tick` has something to do (a cheap, unlocked read)."""
        return bool(plan(self._list(), self._clock.now(), self._policy))

    def tick(self) -> list[str]:
        """The scheduled work: rotate when the current key has served its interval, make
        sure a key is current, destroy gone keys' private halves, forget old records.

        Safe to call from every worker of every instance: it re-checks under the lock.
        """
        done: list[str] = []
        with self._store.lock():
            now = self._clock.now()
            keys = self._list()
            todo = plan(keys, now, self._policy)
            if todo.record_retention:
                # First, so that the rechain below writes the keys as raised.
                raised = {
                    k.kid: dataclasses.replace(k, retention=self._policy.retention)
                    for k in todo.record_retention
                }
                for key in raised.values():
                    self._store.update(key)
                keys = [raised.get(k.kid, k) for k in keys]
                done.append(
                    f"recorded a retention of {self._policy.retention} s on {len(raised)} key(s)"
                )
            if todo.rotate or todo.repair:
                self._check_passphrase(keys)
                if todo.rotate:
                    new = self._new_key(now, lead=lead(self._policy))
                    self._store.add(new)
                    keys = [*keys, new]
                    done.append(f"scheduled key {new.kid}")
                    self._record("key.rotated", new)
                created = self._rechain(keys, now)
                if created:
                    done.append(f"created key {created.kid}")
                    self._record("key.created", created)
            # _rechain touches only live keys: the gone keys planned for cleanup are as read.
            for key, action in todo.cleanup:
                if action is Cleanup.DELETE:
                    self._store.delete(key.kid)
                    done.append(f"deleted key {key.kid}")
                else:
                    self._store.update(dataclasses.replace(key, private_pem=None))
                    done.append(f"destroyed private key {key.kid}")
        if done:
            self._ring.invalidate()
            for line in done:
                log.info("key schedule: %s", line)
        return done

    def recover_records(self) -> list[tuple[str, SigningKey]]:
        """Record ``key.created`` for every stored key whose creation the audit trail does
        not record, and ``key.retired`` for every retired one whose retirement it does not,
        each with ``"recovered": true``: a process stopped (``kill -9``), or its database
        refused the record, between changing the key and recording it, which happen in
        that order and outside the key store's lock (the database's write lock taken under
        the file store's lock stalled the processes that wait for the two locks in the
        other order).

        Only changes made within the audit retention (older ones' records are rightly
        purged) and at least :data:`RECORD_WAIT` ago (a writer alive records its change
        sooner), both less the allowed clock difference between instances. Two processes
        recovering the same record write it once: the audit store re-checks under a lock
        of its own, never the key store's. Call it in a unit of work of its own, holding
        no key store lock, as ``Services.recover_key_records`` does for the key schedule,
        ``serve`` at start, the ``keys rotate`` and ``keys retire`` commands and the admin
        API's key rotate and retire.

        :returns: the actions recorded now, each with its key.
        """
        if self._audit is None:
            return []
        now = self._clock.now()
        oldest = now - self._audit.retention + self._clock_skew
        newest = now - RECORD_WAIT - self._clock_skew
        changes: dict[tuple[str, str | None], tuple[str, SigningKey]] = {}
        for key in self._list():
            if oldest <= key.created_at <= newest:
                changes[("created", key.kid)] = ("key.created", key)
            if key.retired_at is not None and oldest <= key.retired_at <= newest:
                changes[("retired", key.kid)] = ("key.retired", key)
        unknown = {r: change for r, change in changes.items() if r not in self._on_record}
        if not unknown:
            return []
        recorded = self._audit.key_records()
        self._on_record.update(r for r in unknown if r in recorded)
        missing = [change for r, change in unknown.items() if r not in recorded]
        if not missing:
            return []
        added = self._audit.record_keys_once(
            [
                (action, {"kid": k.kid, "signs_from": k.activate_at, "recovered": True})
                for action, k in missing
            ]
        )
        written = {(e.action, e.detail["kid"]) for e in added}
        recovered = [(action, k) for action, k in missing if (action, k.kid) in written]
        for action, key in recovered:
            log.warning(
                "signing key %s had no %s record: recorded it with recovered=true (the "
                "process that %s it stopped before recording it)",
                key.kid,
                action,
                "retired" if action == "key.retired" else "created",
            )
        return recovered

    # -- internals -------------------------------------------------------------------------

    def _record(self, action: str, key: SigningKey) -> None:
        if self._audit is not None:
            self._audit.record(None, action, kid=key.kid, signs_from=key.activate_at)

    def _new_key(
        self, now: float, *, activate_at: float | None = None, lead: float | None = None
    ) -> SigningKey:
        """Generate a key: signing at *activate_at*, or *lead* seconds after it is written.

        The clock is read again after generation (a 4096-bit key can take a second), so
        the publish-ahead is counted from when the key can actually be seen.
        """
        rsa, kid = crypto.generate(self._policy.key_size)
        pem = crypto.to_pem(rsa, self._policy.passphrase)
        created_at = max(now, self._clock.now())
        return SigningKey(
            kid=kid,
            private_pem=pem,
            public_jwk=crypto.public_jwk(rsa, kid),
            created_at=created_at,
            activate_at=activate_at if activate_at is not None else created_at + (lead or 0.0),
            deactivate_at=None,
            retention=self._policy.retention,
        )

    def _check_passphrase(self, keys: list[SigningKey]) -> bool:
        """Refuse to write a key that servers configured like this process could not read,
        or that this process could not read back: the configured passphrase must open the
        stored keys (a wrong one raises the ``AUTHSERVER_KEY_PASSPHRASE`` error).

        A passphrase beside a newest key stored unencrypted is refused too: ``serve``
        encrypts the stored keys at start when it has one, so either that key was written
        by servers without it, which could not read a key written with it, or the key
        files were restored from a backup made before the passphrase was set and no
        ``serve`` with it has started since. This process cannot tell which, so the
        message names both. A ``keys retire`` (or ``rotate``) from a shell that has the
        passphrase while the servers do not would otherwise hand them a current key they
        cannot decrypt: every token request then answers 503.

        :returns: whether one of *keys* had a private half to check against."""
        for key in sorted(keys, key=lambda k: k.activate_at, reverse=True):
            if key.private_pem is not None and key.retired_at is None:
                self._ring.private_key(key)
                if self._policy.passphrase is not None and not crypto.is_encrypted(key.private_pem):
                    raise KeyStoreError(
                        f"AUTHSERVER_KEY_PASSPHRASE is set, but signing key {key.kid} is "
                        "stored unencrypted: either the servers run without the passphrase "
                        "(and could not read a key written with it), or the keys were "
                        "restored unencrypted and 'serve' with the passphrase encrypts them "
                        "at its next start; start or restart the servers with the "
                        "passphrase, then run this again (or unset it here if the servers "
                        "are to run without one)"
                    )
                return True
        return False

    def _reload(self, kid: Kid) -> SigningKey:
        for key in self._list():
            if key.kid == kid:
                return key
        raise KeyStoreError(f"signing key {kid} vanished from the store")

    def _rechain(
        self, keys: list[SigningKey], now: float, *, write_first: SigningKey | None = None
    ) -> SigningKey | None:
        """Restore the invariant "exactly one current key, contiguous windows".

        Keys whose signing window has ended (``deactivate_at <= now``) are history and never
        touched; among the others (current and next, not retired), each key's window ends
        where the next one's begins. If none of them signs now, the earliest next key is
        promoted at once when verifiers have had the JWKS max-age to see it, else a new key
        is created that signs at once (the empty store, or a retired current key).

        *write_first* (a key of *keys* changed by the caller, e.g. the one being retired)
        is stored first, but only once the key this may create has been generated: the
        file store's readers wait while a change is being written, so nothing slow
        happens between its first and last write.

        :returns: the key created, if any. Must be called under the store lock.
        """
        chain = live(keys, now)
        created: SigningKey | None = None
        if not chain or chain[0].activate_at > now:
            first = chain[0] if chain else None
            seen_since = self._policy.jwks_max_age + self._policy.cache_seconds
            if first is not None and first.created_at + seen_since <= now:
                chain[0] = dataclasses.replace(first, activate_at=now)
            else:
                created = self._new_key(now, activate_at=now)
                chain.insert(0, created)
        if write_first is not None:
            self._store.update(write_first)
        if created is not None:
            self._store.add(created)
        originals = {k.kid: k for k in keys}
        for key, end in chained_ends(chain):
            updated = dataclasses.replace(key, deactivate_at=end)
            original = originals.get(key.kid)
            if (
                original is None
                or original.activate_at != updated.activate_at
                or original.deactivate_at != updated.deactivate_at
            ):
                self._store.update(updated)
        return created


def _plaintext(keys: list[SigningKey]) -> list[SigningKey]:
    """The keys whose private half is stored unencrypted."""
    return [k for k in keys if k.private_pem is not None and not crypto.is_encrypted(k.private_pem)]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
