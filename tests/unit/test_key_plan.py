"""The key schedule's planner (``authserver.keys.plan.plan``), a pure function: every
situation a key set can be in, checked without a store, a clock or a key generator; then,
over generated key sets, that applying a plan leaves nothing more to do."""

from __future__ import annotations

import itertools

from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from authserver.clock import FixedClock
from authserver.keys.model import KeyState
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.plan import KEEP_GONE_RECORDS
from authserver.keys.plan import Cleanup
from authserver.keys.plan import KeyPolicy
from authserver.keys.plan import Plan
from authserver.keys.plan import lead
from authserver.keys.plan import plan
from authserver.keys.plan import signing_key
from authserver.keys.ring import KeyRing
from authserver.keys.service import KeyService
from authserver.storage.memory import InMemoryKeyStore
from tests.factories import signing_key_sets

POLICY = KeyPolicy(
    rotation_interval=1000, publish_ahead=100, jwks_max_age=50, retention=300, cache_seconds=1
)
NOW = 1_000_000.0
LEAD = lead(POLICY)
_kids = itertools.count()


def key(
    activate_at: float,
    deactivate_at: float | None = None,
    *,
    retired_at: float | None = None,
    pem: bool = True,
    created_at: float | None = None,
    retention: float | None = POLICY.retention,
) -> SigningKey:
    """A key record; the planner never reads key material, so the PEM is a placeholder.
    Written, like every key this version makes, with the configured retention."""
    return SigningKey(
        kid=Kid(f"k{next(_kids)}"),
        private_pem=b"-----BEGIN PRIVATE KEY-----" if pem else None,
        public_jwk={"kty": "RSA", "n": "x", "e": "AQAB"},
        created_at=activate_at - LEAD if created_at is None else created_at,
        activate_at=activate_at,
        deactivate_at=deactivate_at,
        retired_at=retired_at,
        retention=retention,
    )


# -- repair: no key signs now, or the windows do not chain ---------------------------------


def test_an_empty_store_needs_a_key() -> None:
    assert plan([], NOW, POLICY) == Plan(repair=True)


def test_a_sound_young_key_needs_nothing() -> None:
    assert not plan([key(NOW - 10)], NOW, POLICY)


def test_only_a_waiting_next_key_needs_repair() -> None:
    assert plan([key(NOW + 50)], NOW, POLICY) == Plan(repair=True)


def test_a_retired_current_key_needs_repair_and_its_private_half_destroyed() -> None:
    retired = key(NOW - 10, retired_at=NOW - 1)
    assert plan([retired], NOW, POLICY) == Plan(repair=True, cleanup=((retired, Cleanup.DESTROY),))


def test_two_open_windows_need_repair() -> None:
    # A crash between writing the next key and ending the current key's window.
    assert plan([key(NOW - 10), key(NOW + 50)], NOW, POLICY).repair


def test_a_gap_between_windows_needs_repair() -> None:
    assert plan([key(NOW - 10, NOW + 20), key(NOW + 50)], NOW, POLICY).repair


def test_chained_windows_need_nothing() -> None:
    assert not plan([key(NOW - 10, NOW + 50), key(NOW + 50)], NOW, POLICY)


# -- rotation --------------------------------------------------------------------------------


def test_rotation_is_due_lead_seconds_before_the_interval_ends() -> None:
    due_at = NOW - POLICY.rotation_interval + LEAD
    assert plan([key(due_at)], NOW, POLICY) == Plan(rotate=True)
    assert not plan([key(due_at + 0.5)], NOW, POLICY)


def test_no_rotation_while_a_next_key_waits() -> None:
    old = NOW - 2 * POLICY.rotation_interval
    assert not plan([key(old, NOW + 5), key(NOW + 5)], NOW, POLICY)


# -- cleanup of gone keys ----------------------------------------------------------------------


def test_a_previous_key_is_kept_whole_until_its_retention_ends() -> None:
    previous = key(NOW - 500, NOW - 100)
    keys = [previous, key(NOW - 100)]
    assert not plan(keys, NOW, POLICY)
    later = NOW - 100 + POLICY.retention
    assert plan(keys, later, POLICY).cleanup == ((previous, Cleanup.DESTROY),)


def test_a_gone_key_without_private_half_is_left_until_its_record_expires() -> None:
    gone = key(NOW - 5000, NOW - 4000, pem=False)
    keys = [gone, key(NOW - 4000, NOW - 10), key(NOW - 10)]
    assert not plan(keys, NOW, POLICY)
    expires = NOW - 4000 + POLICY.retention + KEEP_GONE_RECORDS
    assert plan(keys, expires, POLICY).cleanup[0] == (gone, Cleanup.DELETE)


def test_a_retired_key_record_is_deleted_after_keep_gone_records() -> None:
    retired = key(NOW - 10, retired_at=NOW - KEEP_GONE_RECORDS, pem=False)
    assert (retired, Cleanup.DELETE) in plan([retired, key(NOW - 5)], NOW, POLICY).cleanup


# -- the planner is pure ---------------------------------------------------------------------------


def test_the_plan_depends_only_on_its_arguments() -> None:
    keys = [key(NOW - 2000, NOW - 900, pem=True), key(NOW - 900)]
    first = plan(keys, NOW, POLICY)
    assert plan(list(reversed(keys)), NOW, POLICY) == first
    assert plan(keys, NOW, POLICY) == first


# -- generated key sets: the service applies a plan, and nothing is left to do ----------------

OFFSETS = [-3000.0, -1000.0, -400.0, -60.0, -1.0, 0.0, 30.0, 101.0, 2000.0]


def key_sets() -> st.SearchStrategy[list[SigningKey]]:
    """Up to three keys with starts, ends, retirements and private halves around NOW, in
    any combination, chained or not (what crashes and operators can leave)."""
    return signing_key_sets(
        now=NOW,
        offsets=OFFSETS,
        retired_offsets=[-100.0, -1.0],
        created_before=LEAD,
        private_optional=True,
    )


@settings(max_examples=25, deadline=None)
@given(key_sets())
def test_ticks_converge_to_one_signing_key_and_nothing_left_to_do(
    keys: list[SigningKey],
) -> None:
    """A repair (rechaining broken windows) and the work it uncovers (a rotation that was
    overdue, a key whose window the repair closed) may take one tick each: within three
    ticks the plan is empty and exactly one key signs."""
    if any(k.private_pem is None and k.retired_at is None for k in keys):
        # A live key without its private half cannot sign: not a state the service makes.
        assume(False)
    store = InMemoryKeyStore()
    for k in keys:
        store.add(k)
    clock = FixedClock(NOW)
    service = KeyService(store, KeyRing(store, clock, POLICY), clock)
    for _ in range(3):
        if not plan(store.list(), NOW, POLICY):
            break
        service.tick()
    after = store.list()
    assert not plan(after, NOW, POLICY), plan(after, NOW, POLICY)
    # The key that signs: the current one, or for keys written at a clock ahead of NOW the
    # first that can sign (plan.signing_key); published either way.
    signing = signing_key(after, NOW, POLICY.retention)
    assert signing is not None
    assert signing.state(NOW, POLICY.retention) is not KeyState.GONE


# -- the retention recorded with each key ----------------------------------------------------


def test_live_keys_with_a_shorter_recorded_retention_are_raised() -> None:
    """A next or current key recorded with less than the configured retention (or with
    none: made before keys carried it) may sign under this configuration, so its record
    is raised; a key that stopped signing never signed under it and is left as it is."""
    previous = key(NOW - 2000, NOW - 10, retention=None)
    current = key(NOW - 10, NOW + 500, retention=None)
    following = key(NOW + 500, retention=POLICY.retention - 1)
    assert plan([previous, current, following], NOW, POLICY) == Plan(
        record_retention=(current, following)
    )
    assert not plan([key(NOW - 10, retention=POLICY.retention + 1)], NOW, POLICY)


def test_a_key_stays_published_for_the_longest_of_its_recorded_and_the_configured_retention() -> (
    None
):
    """AUTHSERVER_MAX_TOKEN_TTL lowered after a key signed under a higher limit: the key
    stays published for the retention recorded with it, not the new, shorter one."""
    old = key(NOW - 5000, NOW - 1000, retention=2000)
    assert old.state(NOW, POLICY.retention).value == "previous"
    assert old.drop_at(POLICY.retention) == NOW - 1000 + 2000
    assert old.state(NOW + 1000, POLICY.retention).value == "gone"
    # Raised configuration: the configured retention wins.
    assert old.drop_at(5000) == NOW - 1000 + 5000
    # A key from before keys carried it: the configuration alone.
    legacy = key(NOW - 5000, NOW - 1000, retention=None)
    assert legacy.state(NOW, POLICY.retention).value == "gone"


def test_the_schedule_records_the_retention_and_a_lower_limit_keeps_the_key() -> None:
    """Through the service on a store: keys made or signing under a retention of 2000 s
    carry it; after a restart configured with 300 s the key that stopped signing is still
    published 1000 s later, and its private half is kept until 2000 s have passed."""
    long = KeyPolicy(
        rotation_interval=1000, publish_ahead=100, jwks_max_age=50, retention=2000, cache_seconds=1
    )
    from dataclasses import replace

    from authserver.keys import crypto

    rsa, kid = crypto.generate(2048)
    legacy = replace(
        key(NOW - 10, retention=None),
        kid=kid,
        private_pem=crypto.to_pem(rsa, None),
        public_jwk=crypto.public_jwk(rsa, kid),
    )
    store = InMemoryKeyStore()
    store.add(legacy)
    clock = FixedClock(NOW)
    KeyService(store, KeyRing(store, clock, long), clock).tick()
    assert [k.retention for k in store.list()] == [2000]
    # The key signs its interval under that configuration, then a next key takes over.
    clock = FixedClock(NOW + 1000)
    KeyService(store, KeyRing(store, clock, long), clock).tick()
    later = NOW + 1000 + LEAD + 10
    clock = FixedClock(later)
    KeyService(store, KeyRing(store, clock, long), clock).tick()
    assert all(k.retention == 2000 for k in store.list())
    # Restarted with a lower limit, 1000 s after the old key stopped signing.
    after = later + 1000
    clock = FixedClock(after)
    lowered = KeyService(store, KeyRing(store, clock, POLICY), clock)
    lowered.tick()
    old = next(k for k in store.list() if k.kid == legacy.kid)
    assert old.deactivate_at is not None
    assert old.deactivate_at + POLICY.retention < after
    assert old.state(after, POLICY.retention).value == "previous"
    assert old.private_pem is not None
    published = {jwk["kid"] for jwk in KeyRing(store, clock, POLICY).published_jwks()["keys"]}
    assert legacy.kid in published
