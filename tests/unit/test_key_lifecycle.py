"""The signing-key lifecycle (authserver.keys.service.KeyService), as the key ring
(authserver.keys.ring.KeyRing) serves it, on a fixed clock.

next (published, signs nothing) -> current (the one signing key) -> previous (published
until its tokens expired) -> gone (out of the JWKS). docs/reference.md "Signing keys and
rotation": a new key is in the JWKS at least the JWKS max-age before it signs, exactly
one key signs at any moment, and a retired key leaves the JWKS at once.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey

from authserver.clock import FixedClock
from authserver.errors import Conflict
from authserver.errors import KeyStoreError
from authserver.errors import NotFound
from authserver.keys import crypto
from authserver.keys.model import KeyState
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.plan import KeyPolicy
from authserver.keys.ring import KeyRing
from authserver.keys.service import KeyService
from authserver.storage.files.keys import CHANGING
from authserver.storage.files.keys import FileKeyStore
from authserver.storage.memory import InMemoryKeyStore

START = 1_700_000_000.0
PUBLISH_AHEAD = 3600
JWKS_MAX_AGE = 300
ROTATION_INTERVAL = 86400
RETENTION = 7200

POLICY = KeyPolicy(
    key_size=2048,
    publish_ahead=PUBLISH_AHEAD,
    jwks_max_age=JWKS_MAX_AGE,
    rotation_interval=ROTATION_INTERVAL,
    retention=RETENTION,
    cache_seconds=0,
)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def store() -> InMemoryKeyStore:
    return InMemoryKeyStore()


@pytest.fixture
def ring(store: InMemoryKeyStore, clock: FixedClock) -> KeyRing:
    return KeyRing(store, clock, POLICY)


@pytest.fixture
def svc(store: InMemoryKeyStore, ring: KeyRing, clock: FixedClock) -> KeyService:
    return KeyService(store, ring, clock)


# -- helpers ---------------------------------------------------------------------------------


def jwks_kids(ring: KeyRing) -> list[str]:
    return [k["kid"] for k in ring.published_jwks()["keys"]]


def stored(store: InMemoryKeyStore, kid: str) -> SigningKey:
    [key] = [k for k in store.list() if k.kid == kid]
    return key


def state_of(store: InMemoryKeyStore, kid: str, now: float) -> KeyState:
    return stored(store, kid).state(now, RETENTION)


def signing_kid(ring: KeyRing) -> str:
    kid, key = ring.current()
    assert key.is_private
    assert key.thumbprint() == kid
    return kid


def current_keys(store: InMemoryKeyStore, now: float) -> list[SigningKey]:
    return [k for k in store.list() if k.state(now, RETENTION) is KeyState.CURRENT]


def bootstrap(svc: KeyService) -> SigningKey:
    created = svc.ensure_current()
    assert created is not None
    return created


# -- bootstrap -------------------------------------------------------------------------------


def test_empty_store_has_no_current_key(svc: KeyService, ring: KeyRing) -> None:
    with pytest.raises(KeyStoreError):
        ring.current()
    assert ring.published_jwks() == {"keys": []}


def test_ensure_current_creates_exactly_one_current_key(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    created = svc.ensure_current()
    assert created is not None
    assert [k.kid for k in store.list()] == [created.kid]
    assert created.state(clock.now(), RETENTION) is KeyState.CURRENT
    assert created.activate_at <= clock.now()
    assert created.deactivate_at is None
    assert created.private_pem is not None
    assert signing_kid(ring) == created.kid
    assert jwks_kids(ring) == [created.kid]
    # Idempotent: a second call (another worker, a restart) creates nothing.
    assert svc.ensure_current() is None
    clock.advance(10)
    assert svc.ensure_current() is None
    assert len(store.list()) == 1


def test_published_jwks_holds_public_members_only(svc: KeyService, ring: KeyRing) -> None:
    bootstrap(svc)
    svc.rotate()
    keys = ring.published_jwks()["keys"]
    assert len(keys) == 2
    for jwk in keys:
        assert set(jwk) == {"kty", "kid", "use", "alg", "n", "e"}
        assert jwk["use"] == "sig"
        assert jwk["alg"] == "RS256"
        assert jwk["kty"] == "RSA"
        assert RSAKey.import_key(jwk).thumbprint() == jwk["kid"]


# -- rotation --------------------------------------------------------------------------------


def test_rotation_next_current_previous_gone(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    old = bootstrap(svc)
    clock.advance(1000)
    result = svc.rotate()
    assert result.created
    new = result.key
    rotated_at = clock.now()
    assert new.kid != old.kid
    assert new.created_at == rotated_at
    assert new.activate_at == rotated_at + PUBLISH_AHEAD

    # next: published at once, signs nothing yet.
    assert state_of(store, new.kid, clock.now()) is KeyState.NEXT
    assert set(jwks_kids(ring)) == {old.kid, new.kid}
    assert signing_kid(ring) == old.kid

    clock.set(new.activate_at - 0.001)
    assert signing_kid(ring) == old.kid
    assert state_of(store, new.kid, clock.now()) is KeyState.NEXT

    # current: the new key signs from activate_at; the old one is previous, still published.
    clock.set(new.activate_at)
    assert signing_kid(ring) == new.kid
    assert state_of(store, new.kid, clock.now()) is KeyState.CURRENT
    assert state_of(store, old.kid, clock.now()) is KeyState.PREVIOUS
    assert stored(store, old.kid).deactivate_at == new.activate_at
    assert set(jwks_kids(ring)) == {old.kid, new.kid}
    assert len(current_keys(store, clock.now())) == 1

    # previous stays published for the whole retention (longest token lifetime + leeway).
    clock.set(new.activate_at + RETENTION - 0.001)
    assert state_of(store, old.kid, clock.now()) is KeyState.PREVIOUS
    assert old.kid in jwks_kids(ring)
    assert ring.verification_key(old.kid) is not None

    # gone: out of the JWKS, and the scheduler destroys its private half.
    clock.set(new.activate_at + RETENTION)
    assert state_of(store, old.kid, clock.now()) is KeyState.GONE
    assert jwks_kids(ring) == [new.kid]
    assert ring.verification_key(old.kid) is None
    assert signing_kid(ring) == new.kid
    assert svc.due()
    assert svc.tick()
    assert stored(store, old.kid).private_pem is None
    assert not svc.due()


def test_jwks_lists_newest_first(svc: KeyService, ring: KeyRing, clock: FixedClock) -> None:
    old = bootstrap(svc)
    new = svc.rotate().key
    assert jwks_kids(ring) == [new.kid, old.kid]


def test_rotate_is_idempotent_while_a_next_key_is_pending(
    svc: KeyService, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    bootstrap(svc)
    first = svc.rotate()
    assert first.created
    clock.advance(PUBLISH_AHEAD - 1)
    again = svc.rotate()
    assert not again.created
    assert again.key.kid == first.key.kid
    assert again.key.activate_at == first.key.activate_at
    assert len(store.list()) == 2
    # Once the next key signs, a new rotation schedules another one.
    clock.advance(1)
    third = svc.rotate()
    assert third.created
    assert third.key.kid not in (first.key.kid,)
    assert len(store.list()) == 3


def test_rotate_does_not_change_the_signing_key_now(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    old = bootstrap(svc)
    svc.rotate()
    assert signing_kid(ring) == old.kid
    assert len(current_keys(store, clock.now())) == 1


def test_a_new_key_is_published_ahead_for_the_workers_cache_as_well(
    store: InMemoryKeyStore, clock: FixedClock
) -> None:
    """A worker may serve a JWKS read up to ``cache_seconds`` before a new key existed: the
    key is written ``publish_ahead + cache_seconds`` before it signs, by ``rotate`` and by
    the schedule alike, so every worker has published it for the full publish-ahead."""
    cached = dataclasses.replace(POLICY, cache_seconds=7.5)
    svc = KeyService(store, KeyRing(store, clock, cached), clock)
    first = bootstrap(svc)
    rotated = svc.rotate().key
    assert rotated.activate_at - rotated.created_at == PUBLISH_AHEAD + 7.5
    clock.set(rotated.activate_at + ROTATION_INTERVAL - PUBLISH_AHEAD - 7.5 - 1)
    svc.tick()  # the first key's private half goes; nothing is scheduled yet
    assert len(store.list()) == 2
    clock.advance(1)
    svc.tick()
    [scheduled] = [k for k in store.list() if k.kid not in (first.kid, rotated.kid)]
    assert scheduled.activate_at - scheduled.created_at == PUBLISH_AHEAD + 7.5
    assert scheduled.activate_at == rotated.activate_at + ROTATION_INTERVAL


def test_views_show_states_newest_first(svc: KeyService, clock: FixedClock) -> None:
    old = bootstrap(svc)
    new = svc.rotate().key
    views = svc.views()
    assert [(v.key.kid, v.state) for v in views] == [
        (new.kid, KeyState.NEXT),
        (old.kid, KeyState.CURRENT),
    ]
    assert views[1].drop_at == new.activate_at + RETENTION
    assert views[0].drop_at is None


# -- the schedule --------------------------------------------------------------------------------


def test_tick_does_nothing_before_the_rotation_is_due(
    svc: KeyService, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    bootstrap(svc)
    assert not svc.due()
    assert svc.tick() == []
    clock.advance(ROTATION_INTERVAL - PUBLISH_AHEAD - 1)
    assert not svc.due()
    assert svc.tick() == []
    assert len(store.list()) == 1


def test_tick_rotates_when_interval_minus_publish_ahead_has_passed(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    first = bootstrap(svc)
    clock.set(first.activate_at + ROTATION_INTERVAL - PUBLISH_AHEAD)
    assert svc.due()
    done = svc.tick()
    assert done
    assert len(store.list()) == 2
    [pending] = [k for k in store.list() if k.kid != first.kid]
    assert pending.state(clock.now(), RETENTION) is KeyState.NEXT
    # The new key takes over exactly when the old one has served its interval.
    assert pending.activate_at == first.activate_at + ROTATION_INTERVAL
    assert pending.activate_at - pending.created_at >= JWKS_MAX_AGE
    # Nothing more to do until then; every other worker's tick is a no-op.
    assert not svc.due()
    assert svc.tick() == []
    assert len(store.list()) == 2
    clock.set(pending.activate_at)
    assert signing_kid(ring) == pending.kid
    assert not svc.due()
    assert svc.tick() == []


def test_tick_after_a_long_pause_rotates_once(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    first = bootstrap(svc)
    clock.advance(5 * ROTATION_INTERVAL)  # the server was down for days
    assert svc.due()
    svc.tick()
    assert signing_kid(ring) == first.kid  # still signs until the next key is old enough
    assert len(store.list()) == 2
    assert svc.tick() == []


def test_due_matches_tick(svc: KeyService, clock: FixedClock) -> None:
    bootstrap(svc)
    step = 1800
    for _ in range(int(4 * ROTATION_INTERVAL / step)):
        clock.advance(step)
        due = svc.due()
        done = svc.tick()
        assert due == bool(done), (clock.now() - START, done)
        assert not svc.due()


def test_tick_creates_a_key_on_an_empty_store(svc: KeyService, store: InMemoryKeyStore) -> None:
    assert svc.due()
    assert svc.tick()
    assert len(current_keys(store, START)) == 1


# -- retire ----------------------------------------------------------------------------------


def assert_retired(ring: KeyRing, store: InMemoryKeyStore, kid: str, now: float) -> None:
    key = stored(store, kid)
    assert key.retired_at == now
    assert key.private_pem is None
    assert key.state(now, RETENTION) is KeyState.GONE
    assert kid not in jwks_kids(ring)
    assert ring.verification_key(kid) is None
    assert signing_kid(ring) != kid


def test_retire_previous(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    old = bootstrap(svc)
    new = svc.rotate().key
    clock.set(new.activate_at + 60)
    assert state_of(store, old.kid, clock.now()) is KeyState.PREVIOUS
    retired = svc.retire(old.kid)
    assert retired.kid == old.kid
    assert_retired(ring, store, old.kid, clock.now())
    assert signing_kid(ring) == new.kid
    assert jwks_kids(ring) == [new.kid]


def test_retire_next(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    old = bootstrap(svc)
    new = svc.rotate().key
    clock.advance(60)
    svc.retire(new.kid)
    assert_retired(ring, store, new.kid, clock.now())
    assert signing_kid(ring) == old.kid
    # The old key keeps signing past the retired key's activation...
    clock.set(new.activate_at + 1)
    assert signing_kid(ring) == old.kid
    assert len(current_keys(store, clock.now())) == 1
    # ...and a rotation schedules a fresh next key.
    replacement = svc.rotate()
    assert replacement.created
    assert replacement.key.kid != new.kid


def test_retire_current_promotes_a_next_key_old_enough(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    old = bootstrap(svc)
    new = svc.rotate().key
    clock.advance(JWKS_MAX_AGE)  # every cached JWKS now holds the next key
    svc.retire(old.kid)
    assert_retired(ring, store, old.kid, clock.now())
    assert signing_kid(ring) == new.kid
    assert stored(store, new.kid).activate_at == clock.now()
    assert len(store.list()) == 2  # no key created
    assert len(current_keys(store, clock.now())) == 1
    assert jwks_kids(ring) == [new.kid]


def test_retire_current_with_a_too_young_next_key_creates_one_signing_at_once(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    old = bootstrap(svc)
    young = svc.rotate().key
    clock.advance(JWKS_MAX_AGE - 1)
    svc.retire(old.kid)
    assert_retired(ring, store, old.kid, clock.now())
    emergency = signing_kid(ring)
    assert emergency not in (old.kid, young.kid)
    key = stored(store, emergency)
    assert key.activate_at == clock.now() == key.created_at
    assert emergency in jwks_kids(ring)
    # The young key keeps its schedule and takes over when it was meant to.
    assert state_of(store, young.kid, clock.now()) is KeyState.NEXT
    assert stored(store, young.kid).activate_at == young.activate_at
    clock.set(young.activate_at)
    assert signing_kid(ring) == young.kid
    assert len(current_keys(store, clock.now())) == 1


def test_retire_current_without_a_next_key_creates_one_signing_at_once(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    old = bootstrap(svc)
    clock.advance(100)
    svc.retire(old.kid)
    assert_retired(ring, store, old.kid, clock.now())
    new = signing_kid(ring)
    assert new != old.kid
    assert stored(store, new).activate_at == clock.now()
    assert jwks_kids(ring) == [new]
    assert len(current_keys(store, clock.now())) == 1


def test_retire_current_generates_its_successor_before_writing_anything(
    clock: FixedClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers of the file store wait while a change is being written (its ``.version``
    says ``changing``): the retire's new key is generated (40-200 ms at 2048 bits,
    seconds at 4096) before its first write, so token requests wait for a few file
    writes, not for key generation."""
    store = FileKeyStore(tmp_path / "keys")
    ring = KeyRing(store, clock, POLICY)
    svc = KeyService(store, ring, clock)
    old = bootstrap(svc)
    clock.advance(100)
    during_generation: list[str] = []
    generate = crypto.generate

    def watched(key_size: int) -> tuple[RSAKey, Kid]:
        during_generation.append(store.version())
        return generate(key_size)

    monkeypatch.setattr(crypto, "generate", watched)
    svc.retire(old.kid)
    assert len(during_generation) == 1
    assert not during_generation[0].startswith(CHANGING), during_generation
    assert not store.version().startswith(CHANGING)
    assert signing_kid(ring) != old.kid


def test_retire_unknown_kid_is_not_found(svc: KeyService) -> None:
    bootstrap(svc)
    with pytest.raises(NotFound):
        svc.retire("no-such-kid")


def test_retire_twice_is_a_conflict(svc: KeyService, ring: KeyRing, clock: FixedClock) -> None:
    old = bootstrap(svc)
    new = svc.rotate().key
    svc.retire(new.kid)
    clock.advance(5)
    with pytest.raises(Conflict):
        svc.retire(new.kid)
    assert signing_kid(ring) == old.kid


def test_retired_key_signs_nothing_even_after_its_activation_time(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    bootstrap(svc)
    nxt = svc.rotate().key
    svc.retire(nxt.kid)
    for offset in (0, 1, PUBLISH_AHEAD, ROTATION_INTERVAL, 3 * ROTATION_INTERVAL):
        clock.set(nxt.activate_at + offset)
        svc.tick()
        assert signing_kid(ring) != nxt.kid
        assert nxt.kid not in jwks_kids(ring)


# -- invariants over time --------------------------------------------------------------------


class Walker:
    """Moves the clock in small steps, like a scheduler, checking the invariants at every
    step and at every lifecycle boundary in between."""

    def __init__(
        self, svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
    ) -> None:
        self.svc, self.ring, self.store, self.clock = svc, ring, store, clock
        self.first_in_jwks: dict[str, float] = {}
        self.first_signing: dict[str, float] = {}
        self.bootstrap_kid: str | None = None
        self.emergency: set[str] = set()

    def observe(self) -> None:
        """After the actions of this instant: what the service serves now."""
        now = self.clock.now()
        published = jwks_kids(self.ring)
        for kid in published:
            self.first_in_jwks.setdefault(kid, now)
        keys = self.store.list()
        # The JWKS is exactly the keys that are not gone.
        assert set(published) == {
            k.kid for k in keys if k.state(now, RETENTION) is not KeyState.GONE
        }
        # A key that stopped signing stays published until its tokens have expired.
        for key in keys:
            if (
                key.retired_at is None
                and key.deactivate_at is not None
                and (key.deactivate_at <= now < key.deactivate_at + RETENTION)
            ):
                assert key.kid in published, "previous key dropped before its tokens expired"
        kid = signing_kid(self.ring)
        [current] = current_keys(self.store, now)
        assert current.kid == kid
        assert kid in published
        self.first_signing.setdefault(kid, now)

    def check_interval(self, until: float) -> None:
        """Nothing changes in the store between steps: check exact boundaries in between."""
        start = self.clock.now()
        keys = self.store.list()
        instants = {start}
        for key in keys:
            for t in (key.activate_at, key.deactivate_at, key.retired_at, key.drop_at(RETENTION)):
                if t is not None and start < t < until:
                    instants.update({t - 0.001, t, t + 0.001})
        for t in sorted(i for i in instants if start <= i < until):
            signing = [k for k in keys if k.state(t, RETENTION) is KeyState.CURRENT]
            assert len(signing) == 1, (t - START, [k.kid for k in signing])
            self.first_signing.setdefault(signing[0].kid, t)

    def step(self, seconds: float) -> None:
        self.check_interval(self.clock.now() + seconds)
        self.clock.advance(seconds)
        self.svc.tick()
        self.observe()

    def retire(self, kid: str) -> None:
        self.svc.retire(kid)
        self.observe()

    def pending(self) -> list[SigningKey]:
        now = self.clock.now()
        return sorted(
            (k for k in self.store.list() if k.state(now, RETENTION) is KeyState.NEXT),
            key=lambda k: k.activate_at,
        )

    def can_retire_current_safely(self) -> bool:
        pending = self.pending()
        return bool(pending) and pending[0].created_at + JWKS_MAX_AGE <= self.clock.now()

    def assert_published_ahead(self) -> None:
        for kid, first_signed in self.first_signing.items():
            if kid == self.bootstrap_kid or kid in self.emergency:
                continue
            assert kid in self.first_in_jwks, kid
            ahead = first_signed - self.first_in_jwks[kid]
            assert ahead >= JWKS_MAX_AGE, (kid, ahead)


def test_invariants_through_scheduled_and_manual_rotations(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    walker = Walker(svc, ring, store, clock)
    walker.bootstrap_kid = bootstrap(svc).kid
    walker.observe()
    step = 47.0  # not a divisor of any policy number: boundaries fall between steps
    elapsed = 0.0
    events_done: set[str] = set()
    while elapsed < 5 * ROTATION_INTERVAL:
        walker.step(step)
        elapsed += step
        day = elapsed / ROTATION_INTERVAL
        if day > 0.5 and "manual-rotate" not in events_done:
            events_done.add("manual-rotate")
            svc.rotate()
            walker.observe()
        if day > 0.6 and "retire-current" not in events_done and walker.can_retire_current_safely():
            events_done.add("retire-current")
            walker.retire(signing_kid(ring))
        if day > 1.2 and "retire-previous" not in events_done:
            previous = [
                k for k in store.list() if k.state(clock.now(), RETENTION) is KeyState.PREVIOUS
            ]
            if previous:
                events_done.add("retire-previous")
                walker.retire(previous[0].kid)
        if day > 2.0 and "retire-next" not in events_done and walker.pending():
            events_done.add("retire-next")
            walker.retire(walker.pending()[0].kid)
        if day > 3.0 and "rotate-twice" not in events_done:
            events_done.add("rotate-twice")
            first = svc.rotate()
            walker.observe()
            second = svc.rotate()
            assert not second.created
            assert second.key.kid == first.key.kid
            walker.observe()
    assert events_done == {
        "manual-rotate",
        "retire-current",
        "retire-previous",
        "retire-next",
        "rotate-twice",
    }
    # Several keys took over along the way, each published long enough ahead.
    assert len(walker.first_signing) >= 5
    walker.assert_published_ahead()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_invariants_with_random_operator_actions(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock, seed: int
) -> None:
    rng = random.Random(seed)
    walker = Walker(svc, ring, store, clock)
    walker.bootstrap_kid = bootstrap(svc).kid
    walker.observe()
    for _ in range(1500):
        walker.step(rng.choice([13.0, 61.0, 299.0, 301.0, 997.0]))
        roll = rng.random()
        now = clock.now()
        if roll < 0.01:
            svc.rotate()
            walker.observe()
        elif roll < 0.015:
            candidates = [
                k
                for k in store.list()
                if k.state(now, RETENTION) in (KeyState.NEXT, KeyState.PREVIOUS)
            ]
            if candidates:
                walker.retire(rng.choice(candidates).kid)
        elif roll < 0.02 and walker.can_retire_current_safely():
            walker.retire(signing_kid(ring))
        elif roll < 0.022:
            # The emergency path without a ready next key: a new key signs at once
            # (documented in KeyService.retire); it is exempt from the publish-ahead rule.
            before = {k.kid for k in store.list()}
            walker.retire(signing_kid(ring))
            walker.emergency |= {k.kid for k in store.list()} - before
    assert len(walker.first_signing) >= 3
    walker.assert_published_ahead()


def test_future_windows_tile_time_after_many_operations(
    svc: KeyService, ring: KeyRing, store: InMemoryKeyStore, clock: FixedClock
) -> None:
    """Check the stored windows analytically: from now on, every boundary of every
    signing window has exactly one current key on both sides."""
    bootstrap(svc)
    for offset in (100, 400, PUBLISH_AHEAD + 50, 2 * PUBLISH_AHEAD, 3 * PUBLISH_AHEAD):
        clock.set(START + offset)
        svc.rotate()
        svc.tick()
    clock.advance(JWKS_MAX_AGE)
    svc.retire(signing_kid(ring))
    svc.rotate()
    now = clock.now()
    keys = store.list()
    boundaries = sorted(
        {t for k in keys for t in (k.activate_at, k.deactivate_at) if t is not None and t >= now}
    )
    probes = [now] + [p for t in boundaries for p in (t - 0.001, t, t + 0.001) if p >= now]
    probes.append(max(probes) + 10 * ROTATION_INTERVAL)
    for probe in probes:
        signing = [k for k in keys if k.state(probe, RETENTION) is KeyState.CURRENT]
        assert len(signing) == 1, (probe - START, [k.kid for k in signing])
