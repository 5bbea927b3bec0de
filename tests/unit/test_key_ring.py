"""The read side of the signing keys (``authserver.keys.ring.KeyRing``): the snapshot it
serves is kept while the store's version is unchanged and dropped when it changes (asked
through the store's stamp on every call, or every ``cache_seconds`` for a store without
one), the token path's ``current()`` reads no key while the snapshot is fresh, and
``current()`` only ever returns a key the ring publishes at that moment.

The cache tests run on a real file key store (``storage/files/keys.py``), with a second
ring and service on the same directory standing in for another process."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from authserver.clock import FixedClock
from authserver.errors import KeyStoreError
from authserver.keys.model import KeyState
from authserver.keys.model import SigningKey
from authserver.keys.plan import KeyPolicy
from authserver.keys.plan import signing_key
from authserver.keys.ring import KeyRing
from authserver.keys.service import KeyService
from authserver.records import Scan
from authserver.storage.files.keys import SETTLED_NS
from authserver.storage.files.keys import FileKeyStore
from authserver.storage.memory import InMemoryKeyStore
from tests.factories import signing_key_sets

START = 1_700_000_000.0
#: cache_seconds=0: the version is checked on every read of the snapshot.
CHECK_EVERY_TIME = KeyPolicy(publish_ahead=3600, jwks_max_age=300, retention=7200, cache_seconds=0)
#: The version is not even checked within the hour: only invalidate() makes the ring look.
CHECK_HOURLY = dataclasses.replace(CHECK_EVERY_TIME, cache_seconds=3600)


class CountingStore(FileKeyStore):
    """A real file store that counts what the ring asks of it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.versions = 0
        self.scans = 0

    def version(self) -> str:
        self.versions += 1
        return super().version()

    def scan(self) -> Scan[SigningKey]:
        self.scans += 1
        return super().scan()


class StamplessStore(CountingStore):
    """The same store without a stamp, as the SQL store on PostgreSQL is: the ring checks
    its version every ``cache_seconds`` (or follows the change feed)."""

    def stamp(self) -> None:
        return None


class Process:
    """A ring and a service over one key directory, as one server process has them."""

    def __init__(
        self,
        directory: Path,
        clock: FixedClock,
        policy: KeyPolicy,
        store: type[CountingStore] = CountingStore,
    ) -> None:
        self.store = store(directory)
        self.ring = KeyRing(self.store, clock, policy)
        self.keys = KeyService(self.store, self.ring, clock)

    def published(self) -> list[str]:
        return [k["kid"] for k in self.ring.published_jwks()["keys"]]

    def signing(self) -> str:
        kid, key = self.ring.current()
        assert key.is_private
        assert key.thumbprint() == kid
        return kid


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def _signs_without_reading(here: Process, clock: FixedClock, kid: str) -> None:
    """A thousand calls of current(), a second apart, each answer *kid* without a read of
    the store's version or keys."""
    versions, scans = here.store.versions, here.store.scans
    for _ in range(1000):
        clock.advance(1)
        assert here.ring.current()[0] == kid
    assert (here.store.versions, here.store.scans) == (versions, scans)


def test_the_snapshot_is_kept_while_the_version_is_unchanged_and_dropped_when_it_changes(
    tmp_path: Path, clock: FixedClock
) -> None:
    here = Process(tmp_path, clock, CHECK_EVERY_TIME)
    first = here.keys.ensure_current()
    assert first is not None
    assert here.published() == [first.kid]
    # Another process adds a key; the version file is put back as it was, so the key set
    # changed while its version did not.
    version = (tmp_path / ".version").read_bytes()
    new = Process(tmp_path, clock, CHECK_EVERY_TIME).keys.rotate().key
    (tmp_path / ".version").write_bytes(version)
    scans = here.store.scans
    assert here.published() == [first.kid]
    assert here.signing() == first.kid
    assert here.store.scans == scans, "re-read although the version did not change"
    # A new version: the snapshot is dropped and the store read once.
    (tmp_path / ".version").write_bytes(b"another version")
    assert here.published() == [new.kid, first.kid]
    assert here.published() == [new.kid, first.kid]
    assert here.store.scans == scans + 1


def test_without_a_stamp_only_invalidate_makes_the_ring_look_within_cache_seconds(
    tmp_path: Path, clock: FixedClock
) -> None:
    here = Process(tmp_path, clock, CHECK_HOURLY, StamplessStore)
    first = here.keys.ensure_current()
    assert first is not None
    assert here.published() == [first.kid]
    new = Process(tmp_path, clock, CHECK_HOURLY).keys.rotate().key
    assert here.published() == [first.kid]
    here.ring.invalidate()
    assert here.published() == [new.kid, first.kid]


def test_a_command_of_this_process_is_served_at_once(tmp_path: Path, clock: FixedClock) -> None:
    here = Process(tmp_path, clock, CHECK_HOURLY)
    first = here.keys.ensure_current()
    assert first is not None
    assert here.signing() == first.kid
    new = here.keys.rotate().key
    assert here.published() == [new.kid, first.kid]
    clock.advance(1)
    here.keys.retire(first.kid)
    took_over = here.signing()
    assert took_over not in (first.kid, new.kid)  # new is too young to be promoted
    assert here.published() == [new.kid, took_over]


def test_without_a_stamp_current_reads_nothing_while_the_snapshot_is_fresh(
    tmp_path: Path, clock: FixedClock
) -> None:
    here = Process(tmp_path, clock, CHECK_HOURLY, StamplessStore)
    here.keys.ensure_current()
    kid = here.signing()
    _signs_without_reading(here, clock, kid)


def test_with_a_stamp_a_change_elsewhere_is_seen_by_the_next_call(
    tmp_path: Path, clock: FixedClock
) -> None:
    """The key directory's stamp (one stat of ``.version``) is asked on every call, so a
    retire made by another process (the CLI, another worker) is seen at once, however
    long ``cache_seconds`` is."""
    here = Process(tmp_path, clock, CHECK_HOURLY)
    first = here.keys.ensure_current()
    assert first is not None
    assert here.signing() == first.kid
    elsewhere = Process(tmp_path, clock, CHECK_HOURLY)
    new = elsewhere.keys.rotate().key
    assert here.published() == [new.kid, first.kid]
    clock.advance(1)
    elsewhere.keys.retire(first.kid)
    took_over = here.signing()
    assert took_over not in (first.kid, new.kid)
    assert first.kid not in here.published()


def test_with_a_settled_stamp_current_reads_no_version_and_no_key(
    tmp_path: Path, clock: FixedClock
) -> None:
    """Once ``.version`` was written longer ago than the file system's timestamps can
    tell apart (SETTLED_NS), an unchanged stamp is trusted: no read of the version file,
    no scan. Until then each call reads the version (a write within the same tick could
    share the stamp), and the keys only if it moved."""
    here = Process(tmp_path, clock, CHECK_HOURLY)
    here.keys.ensure_current()
    kid = here.signing()
    # A .version written "now" (its time set ahead, so however slow this test runs)
    # gives a stamp equal to nothing.
    version_file = tmp_path / ".version"
    ahead = time.time_ns() + 10 * SETTLED_NS
    os.utime(version_file, ns=(ahead, ahead))
    assert here.store.stamp() != here.store.stamp(), "a fresh .version's stamp was trusted"
    settled = time.time_ns() - 2 * SETTLED_NS
    os.utime(version_file, ns=(settled, settled))
    assert here.store.stamp() == here.store.stamp()
    here.signing()
    _signs_without_reading(here, clock, kid)


def test_a_key_that_took_over_elsewhere_is_found_with_one_fresh_read(
    tmp_path: Path, clock: FixedClock
) -> None:
    here = Process(tmp_path, clock, CHECK_HOURLY)
    with pytest.raises(KeyStoreError, match="no current signing key"):
        here.ring.current()  # an empty store, now cached for the hour
    created = Process(tmp_path, clock, CHECK_HOURLY).keys.ensure_current()
    assert created is not None
    assert here.signing() == created.kid


def test_the_signing_key_follows_a_change_of_the_key_set_inside_its_window(
    tmp_path: Path, clock: FixedClock
) -> None:
    """current() remembers its answer until the next start, end or retire in the snapshot;
    a retire made elsewhere is a new snapshot, seen at the next version check."""
    here = Process(tmp_path, clock, CHECK_EVERY_TIME)
    first = here.keys.ensure_current()
    assert first is not None
    assert here.signing() == first.kid
    clock.advance(1)
    Process(tmp_path, clock, CHECK_EVERY_TIME).keys.retire(first.kid)
    took_over = here.signing()
    assert took_over != first.kid
    assert here.published() == [took_over]


def test_the_signing_key_changes_at_the_boundary_and_back_when_the_clock_does(
    tmp_path: Path, clock: FixedClock
) -> None:
    here = Process(tmp_path, clock, CHECK_HOURLY)
    first = here.keys.ensure_current()
    assert first is not None
    new = here.keys.rotate().key
    clock.set(new.activate_at - 0.001)
    assert here.signing() == first.kid
    clock.set(new.activate_at)
    assert here.signing() == new.kid
    clock.set(new.activate_at - 0.001)  # a clock set back
    assert here.signing() == first.kid


# -- current() never returns a key that is not published -----------------------------------

NOW = START
POLICY = KeyPolicy(retention=300, cache_seconds=3600)
OFFSETS = [-1000.0, -400.0, -300.0, -60.0, -1.0, 0.0, 30.0, 101.0, 2000.0]
#: Moments around every offset a key set below can have a boundary at.
MOMENTS = sorted({NOW + o + d for o in OFFSETS for d in (-0.5, 0.0, 0.5)} | {NOW + 10_000.0})


def key_sets() -> st.SearchStrategy[list[SigningKey]]:
    """Up to three keys with starts, ends and retirements around NOW, chained or not."""
    return signing_key_sets(now=NOW, offsets=OFFSETS, retired_offsets=OFFSETS, created_before=100.0)


@settings(max_examples=200, deadline=None)
@given(key_sets(), st.lists(st.sampled_from(MOMENTS), min_size=1, max_size=12))
def test_current_is_the_one_current_key_and_is_published_at_every_moment(
    keys: list[SigningKey], moments: list[float]
) -> None:
    """One snapshot (the ring reads the store once), asked at moments in any order: the
    answer is what the lifecycle rules say at that moment (the current key, or for a
    moment before the store was written the key that signed then: plan.signing_key),
    never a key out of the JWKS."""
    store = InMemoryKeyStore()
    for key in keys:
        store.add(key)
    clock = FixedClock(moments[0])
    ring = KeyRing(store, clock, POLICY)
    for moment in moments:
        clock.set(moment)
        published = {k["kid"] for k in ring.published_jwks()["keys"]}
        # The set the lifecycle rules publish at that moment, however the clock moved.
        assert published == {
            k.kid for k in keys if k.state(moment, POLICY.retention) is not KeyState.GONE
        }, moment - NOW
        try:
            expected = signing_key(keys, moment, POLICY.retention)
        except KeyStoreError:
            expected = None  # two open windows: the ring refuses to guess too
        try:
            kid, _ = ring.current()
        except KeyStoreError:
            assert expected is None, moment - NOW
            continue
        assert expected is not None
        assert kid == expected.kid, moment - NOW
        assert kid in published, moment - NOW
