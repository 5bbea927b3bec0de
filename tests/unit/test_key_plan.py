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
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.plan import KEEP_GONE_RECORDS
from authserver.keys.plan import Cleanup
from authserver.keys.plan import KeyPolicy
from authserver.keys.plan import Plan
from authserver.keys.plan import current_key
from authserver.keys.plan import lead
from authserver.keys.plan import plan
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
) -> SigningKey:
    """A key record; the planner never reads key material, so the PEM is a placeholder."""
    return SigningKey(
        kid=Kid(f"k{next(_kids)}"),
        private_pem=b"-----BEGIN PRIVATE KEY-----" if pem else None,
        public_jwk={"kty": "RSA", "n": "x", "e": "AQAB"},
        created_at=activate_at - LEAD if created_at is None else created_at,
        activate_at=activate_at,
        deactivate_at=deactivate_at,
        retired_at=retired_at,
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
    assert current_key(after, NOW, POLICY.retention) is not None
