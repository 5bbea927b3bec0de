"""The signing-key lifecycle when clocks disagree with the key store: a clock stepped back
(NTP, a host whose clock was set wrong at boot), two instances on one store whose clocks
are minutes apart, a server started after days down (docs/operations.md, "Clocks").

Each case runs on a real file key store, with a fresh ring and service standing in for a
process started (or another instance running) with the clock given; what signs must
always be a key the JWKS publishes at that moment, and no clock reading may create a key
that no verifier has seen while a published one can sign.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from authserver.clock import FixedClock
from authserver.keys.model import KeyState
from authserver.keys.plan import KeyPolicy
from authserver.keys.ring import KeyRing
from authserver.keys.service import KeyService
from authserver.storage.files.keys import FileKeyStore

START = 1_700_000_000.0
DAY = 86400.0
POLICY = KeyPolicy(
    publish_ahead=3600,
    jwks_max_age=300,
    rotation_interval=int(DAY),
    retention=7200,
    cache_seconds=0,
)


@dataclasses.dataclass
class Process:
    """A ring and a service over one key directory, on its own clock."""

    directory: Path
    clock: FixedClock

    def __post_init__(self) -> None:
        self.store = FileKeyStore(self.directory)
        self.ring = KeyRing(self.store, self.clock, POLICY)
        self.keys = KeyService(self.store, self.ring, self.clock)

    def signing(self) -> str:
        kid, key = self.ring.current()
        assert key.is_private
        return kid

    def published(self) -> set[str]:
        return {k["kid"] for k in self.ring.published_jwks()["keys"]}

    def stored(self) -> set[str]:
        return {k.kid for k in self.store.list()}

    def listed_current(self) -> list[str]:
        """The keys ``keys list`` (and doctor, /metrics, ``current_kid``) call current."""
        return [v.key.kid for v in self.keys.views() if v.state is KeyState.CURRENT]


def test_a_clock_stepped_back_before_the_first_key_signs_with_it_and_makes_no_key(
    tmp_path: Path,
) -> None:
    """A server bootstrapped with a clock hours ahead (a hardware clock in local time),
    then stepped back by NTP: its only key starts "in the future". It goes on signing with
    it, published, and the schedule creates no key that would sign unannounced."""
    first = Process(tmp_path, FixedClock(START)).keys.ensure_current()
    assert first is not None
    for back in (60.0, 3600.0, 5 * 3600.0):
        later = Process(tmp_path, FixedClock(START - back))  # a start after the step
        assert later.keys.ensure_current() is None
        assert later.signing() == first.kid
        assert first.kid in later.published()
        assert later.listed_current() == [first.kid]
        assert not later.keys.due()
        assert later.keys.tick() == []
        assert later.stored() == {first.kid}


def test_a_clock_stepped_back_past_a_destroyed_key_signs_with_a_published_one(
    tmp_path: Path,
) -> None:
    """Rotations ran, the first key's retention ended and its private half was destroyed;
    then the clock is stepped back two days, to a moment that key's window holds again. A
    process (re)started then signs with the next published key that can sign, instead of
    failing every token request until the clock passes that window."""
    clock = FixedClock(START)
    here = Process(tmp_path, clock)
    first = here.keys.ensure_current()
    assert first is not None
    for _ in range(12):
        clock.advance(DAY / 4)
        here.keys.tick()
    [destroyed] = [k for k in here.store.list() if k.kid == first.kid]
    assert destroyed.private_pem is None
    for moment in (START + 1, START + DAY / 2, clock.now() - 2 * DAY):
        later = Process(tmp_path, FixedClock(moment))
        before = later.stored()
        kid = later.signing()
        assert kid != first.kid
        assert kid in later.published()
        assert later.listed_current() == [kid]
        assert later.keys.tick() == []
        assert later.stored() == before


def test_an_instance_whose_clock_is_behind_stops_signing_with_a_retired_key_at_once(
    tmp_path: Path,
) -> None:
    """Instance A, its clock three minutes ahead of B's, retires the key both sign with (a
    compromise). B must neither sign with it (its ring still holds the parsed private key)
    nor publish it for the three minutes until its clock reaches the retire's time."""
    a = Process(tmp_path, FixedClock(START + 180))
    b = Process(tmp_path, FixedClock(START))
    a.keys.ensure_current()
    a.clock.advance(DAY / 2)
    b.clock.advance(DAY / 2)
    compromised = b.signing()
    assert a.signing() == compromised
    a.keys.retire(compromised)
    for process in (a, b):
        assert process.signing() != compromised
        assert compromised not in process.published()
        view = next(v for v in process.keys.views() if v.key.kid == compromised)
        assert view.state is KeyState.GONE
    assert a.signing() == b.signing()


def test_an_instance_whose_clock_is_behind_signs_with_the_next_key_a_retire_promoted(
    tmp_path: Path,
) -> None:
    """As above, but the retire comes while the next key has been published for longer than
    the JWKS max-age, so A promotes that key (written an hour before) to sign at its own
    now. B, three minutes behind, must sign with it at once: it saw no current key and a
    key created before its now, took that for a broken store, and failed every token
    request ("no current signing key") until its schedule moved the key's window."""
    a = Process(tmp_path, FixedClock(START + 180))
    b = Process(tmp_path, FixedClock(START))
    a.keys.ensure_current()
    for process in (a, b):
        process.clock.advance(DAY - POLICY.publish_ahead / 2)
    assert a.keys.tick()  # the next key is scheduled and published
    for process in (a, b):
        process.clock.advance(2 * POLICY.jwks_max_age)
    compromised = b.signing()
    [published] = [k for k in a.store.list() if k.kid != compromised]
    a.keys.retire(compromised)
    before = b.stored()
    assert a.signing() == published.kid
    assert b.signing() == published.kid
    assert b.listed_current() == [published.kid]
    assert published.kid in b.published()
    assert b.keys.tick() == []
    assert b.stored() == before


def test_two_instances_whose_clocks_are_minutes_apart_bootstrap_one_key(
    tmp_path: Path,
) -> None:
    """Two instances start on an empty store at once, the one that gets the lock first with
    its clock three minutes ahead: the other signs with the key it made (published for
    both) rather than making a second key."""
    ahead = Process(tmp_path, FixedClock(START + 180))
    behind = Process(tmp_path, FixedClock(START))
    made = ahead.keys.ensure_current()
    assert made is not None
    assert behind.keys.ensure_current() is None
    assert behind.keys.tick() == []
    assert behind.signing() == ahead.signing() == made.kid
    assert behind.stored() == {made.kid}


def test_rotation_with_clocks_minutes_apart_happens_once(tmp_path: Path) -> None:
    """Both instances tick every 30 s across the rotation, one five minutes ahead: one key
    is scheduled, both sign with the same key at every tick and it is published by both."""
    ahead = Process(tmp_path, FixedClock(START + 300))
    behind = Process(tmp_path, FixedClock(START))
    first = ahead.keys.ensure_current()
    assert first is not None
    due = first.activate_at + DAY - 2 * POLICY.publish_ahead
    for process, skew in ((ahead, 300.0), (behind, 0.0)):
        process.clock.set(due + skew)
    for _ in range(6 * 3600 // 30):
        for process in (ahead, behind):
            process.clock.advance(30)
            process.keys.tick()
            signing = process.signing()
            assert signing in ahead.published()
            assert signing in behind.published()
    assert len(ahead.stored()) == 2


def test_the_first_start_after_days_down_rotates_once_and_always_has_a_signing_key(
    tmp_path: Path,
) -> None:
    """Down for 70 days (two rotation intervals missed): the first start keeps signing
    with the old key, schedules one new key publish-ahead ahead, and every later tick
    adds nothing until that key has served its interval."""
    first = Process(tmp_path, FixedClock(START)).keys.ensure_current()
    assert first is not None
    clock = FixedClock(START + 70 * DAY)
    here = Process(tmp_path, clock)
    assert here.keys.ensure_current() is None
    assert here.signing() == first.kid
    done = here.keys.tick()
    assert len(done) == 1
    assert done[0].startswith("scheduled key")
    [new] = here.stored() - {first.kid}
    for _ in range(2 * 3600 // 60):
        assert here.signing() in here.published()
        clock.advance(60)
        assert here.keys.tick() == []
    assert here.signing() == new
    assert here.stored() == {first.kid, new}
