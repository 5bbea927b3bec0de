"""One contract suite for ``authserver.tokens.statuslist.StatusListStore``, on SQLite and
PostgreSQL (through ``db_url``): leases, reuse only after expiry, revocations, versions.

Each operation runs in its own unit of work (except ``lease_block``, which commits on its
own by contract), so what is read back went through the database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from authserver.audit.model import AuditEvent
from authserver.storage.sql.audit import SqlAuditStore
from authserver.storage.sql.engine import Database
from authserver.storage.sql.migrate import upgrade_to_head
from authserver.storage.sql.statuslist import SqlStatusListStore
from authserver.tokens.statuslist import BLOCK_SIZE
from authserver.tokens.statuslist import BLOCKS_PER_LIST
from authserver.tokens.statuslist import Block
from authserver.tokens.statuslist import StatusEntry

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    upgrade_to_head(database)
    yield database
    database.dispose()


@pytest.fixture
def store(db: Database) -> SqlStatusListStore:
    return SqlStatusListStore(db)


def test_first_leases_are_consecutive_blocks_of_list_1(store: SqlStatusListStore) -> None:
    first = store.lease_block(T0, T0 + 100, None)
    second = store.lease_block(T0, T0 + 100, None)
    assert first == Block(1, 0)
    assert second == Block(1, 1)
    assert second.first == BLOCK_SIZE
    assert store.list_ids() == [1]


def test_a_held_block_is_not_leased_again_until_its_hold_has_passed(
    store: SqlStatusListStore,
) -> None:
    held = store.lease_block(T0, T0 + 100, None)
    assert store.lease_block(T0 + 99, T0 + 500, None) != held
    # After the hold, the lowest free block is taken again rather than a new one.
    assert store.lease_block(T0 + 101, T0 + 500, None) == held


def test_releasing_shortens_a_hold_but_never_lengthens_it(store: SqlStatusListStore) -> None:
    a = store.lease_block(T0, T0 + 1000, None)
    # Moving on from a to b: a's tokens all expire by T0 + 50.
    b = store.lease_block(T0 + 10, T0 + 1000, (a, T0 + 50))
    assert b != a
    assert store.lease_block(T0 + 51, T0 + 2000, None) == a
    # A release later than the recorded hold does not extend it.
    c = store.lease_block(T0 + 60, T0 + 2000, (b, T0 + 5000))
    assert c not in (a, b)
    assert store.lease_block(T0 + 1001, T0 + 3000, None) == b


def test_a_full_list_continues_in_the_next_list(store: SqlStatusListStore, db: Database) -> None:
    from sqlalchemy import insert

    from authserver.storage.sql.tables import STATUS_BLOCKS

    with db.unit_of_work():
        conn = db.connection()
        conn.execute(
            insert(STATUS_BLOCKS),
            [
                {"list_id": 1, "block": b, "leased_at": T0, "held_until": T0 + 100}
                for b in range(BLOCKS_PER_LIST)
            ],
        )
    version = store.version()
    assert store.lease_block(T0, T0 + 100, None) == Block(2, 0)
    assert store.list_ids() == [1, 2]
    assert store.version() != version  # servers refresh their list of lists


def test_revocations_are_idempotent_and_bump_the_version(
    store: SqlStatusListStore, db: Database
) -> None:
    store.lease_block(T0, T0 + 100, None)
    before = store.version()
    entries = [StatusEntry(1, 5, T0 + 60), StatusEntry(1, 700, T0 + 60)]
    with db.unit_of_work():
        assert store.revoke(entries, T0) == 2
    after = store.version()
    assert after != before
    with db.unit_of_work():
        assert store.revoke(entries[:1], T0 + 1) == 0
    assert store.version() == after  # nothing new: caches stay valid
    assert sorted(store.revoked_indices(1)) == [5, 700]
    with db.unit_of_work():
        assert store.is_revoked(1, 5)
        assert not store.is_revoked(1, 6)
        assert not store.is_revoked(2, 5)


def test_a_revocation_of_many_entries_counts_each_new_one_once(
    store: SqlStatusListStore, db: Database
) -> None:
    """More entries than one statement carries, some revoked already and one named twice
    (the later expiry kept): each new (list, idx) is written and counted once."""
    store.lease_block(T0, T0 + 100, None)
    with db.unit_of_work():
        assert store.revoke([StatusEntry(1, 3, T0 + 60)], T0) == 1
    entries = [StatusEntry(1, i, T0 + 60) for i in range(1200)]
    entries.append(StatusEntry(1, 7, T0 + 90))
    with db.unit_of_work():
        assert store.revoke(entries, T0) == 1199
    assert sorted(store.revoked_indices(1)) == list(range(1200))
    assert store.revoked_indices(1, live_at=T0 + 61) == [7]


def test_two_revocations_of_shared_entries_in_opposite_orders_both_commit(
    db: Database, db_url: str
) -> None:
    """Two operator actions at once (a user's tokens, a client's) revoking the same
    tokens, each gathered in its own order: both commit, every bit set once. Written in
    the order given, on PostgreSQL each INSERT waited for a row the other had written and
    one was aborted as a deadlock."""
    databases = [db, Database(db_url)]  # two processes' worth of engines, one migrated
    errors: list[BaseException] = []
    added: list[int] = []
    try:
        for trial in range(3):
            entries = [StatusEntry(1, trial * 5000 + i, T0 + 60) for i in range(2000)]
            start = threading.Barrier(2)

            def revoke(
                database: Database, given: list[StatusEntry], start: threading.Barrier
            ) -> None:
                store = SqlStatusListStore(database)
                start.wait()
                try:
                    with database.unit_of_work():
                        added.append(store.revoke(given, T0))
                except BaseException as exc:  # reported below
                    errors.append(exc)

            orders = (entries, entries[::-1])
            threads = [
                threading.Thread(target=revoke, args=(database, given, start))
                for database, given in zip(databases, orders, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert not errors, errors
        assert sum(added) == 6000  # each new row counted by the one that wrote it
        assert len(SqlStatusListStore(db).revoked_indices(1)) == 6000
    finally:
        databases[1].dispose()


def test_revoked_indices_live_at_leaves_out_expired_tokens(
    store: SqlStatusListStore, db: Database
) -> None:
    store.lease_block(T0, T0 + 100, None)
    entries = [StatusEntry(1, 5, T0 + 10), StatusEntry(1, 6, T0 + 60)]
    with db.unit_of_work():
        store.revoke(entries, T0)
    assert sorted(store.revoked_indices(1, live_at=T0 + 10)) == [5, 6]
    assert store.revoked_indices(1, live_at=T0 + 11) == [6]
    assert store.revoked_indices(1, live_at=T0 + 61) == []
    assert sorted(store.revoked_indices(1)) == [5, 6]  # the records themselves stay


def test_a_rolled_back_revocation_leaves_no_bit(store: SqlStatusListStore, db: Database) -> None:
    def fail() -> None:
        with db.unit_of_work():
            store.revoke([StatusEntry(1, 9, T0 + 60)], T0)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail()
    assert store.revoked_indices(1) == []


def test_a_lease_survives_the_callers_rollback(store: SqlStatusListStore, db: Database) -> None:
    """Indices are handed out as soon as the lease returns: it must be committed even
    when the request that needed it fails."""
    leased: list[Block] = []

    def fail() -> None:
        with db.unit_of_work():
            leased.append(store.lease_block(T0, T0 + 100, None))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail()
    assert store.lease_block(T0, T0 + 100, None) != leased[0]


def test_leasing_a_block_again_clears_its_old_bits(store: SqlStatusListStore, db: Database) -> None:
    block = store.lease_block(T0, T0 + 100, None)
    other = store.lease_block(T0, T0 + 10_000, None)
    with db.unit_of_work():
        store.revoke(
            [
                StatusEntry(1, block.first + 3, T0 + 90),
                StatusEntry(1, other.first + 3, T0 + 9000),
            ],
            T0,
        )
    assert store.lease_block(T0 + 200, T0 + 300, None) == block
    # The new holder's tokens start VALID; the other block's bit is untouched.
    assert store.revoked_indices(1) == [other.first + 3]


def test_purge_forgets_revocations_of_expired_tokens(
    store: SqlStatusListStore, db: Database
) -> None:
    with db.unit_of_work():
        store.revoke([StatusEntry(1, 1, T0 + 10), StatusEntry(1, 2, T0 + 1000)], T0)
    with db.unit_of_work():
        assert store.purge(T0 + 11) == 1
    assert store.revoked_indices(1) == [2]


def test_what_a_purge_or_a_new_lease_may_have_cleared_counts_as_revoked(
    store: SqlStatusListStore, db: Database
) -> None:
    """A clock stepped back after a purge, or after a block was leased again, reads the
    cleared entries' ``exp`` as ahead again: an entry whose token expires at or before
    the horizon counts as revoked, for every instance on the database."""
    block = store.lease_block(T0, T0 + 100, None)
    with db.unit_of_work():
        store.revoke([StatusEntry(1, block.first + 1, T0 + 50)], T0)
    assert store.is_revoked(1, block.first + 1, T0 + 50)
    # Leased again: the bit is cleared, the horizon is its token's exp.
    assert store.lease_block(T0 + 200, T0 + 300, None) == block
    other = SqlStatusListStore(db)
    assert other.is_revoked(1, block.first + 1, T0 + 50)
    assert not other.is_revoked(1, block.first + 1)
    assert not other.is_revoked(1, block.first + 2, T0 + 51)
    # A purge raises it to the latest exp it forgot; one by a clock behind lowers nothing.
    with db.unit_of_work():
        store.revoke([StatusEntry(1, 3, T0 + 350), StatusEntry(1, 4, T0 + 90)], T0 + 200)
    with db.unit_of_work():
        assert store.purge(T0 + 400) == 2
    with db.unit_of_work():
        store.revoke([StatusEntry(1, 5, T0 + 60)], T0 + 200)
    with db.unit_of_work():
        assert store.purge(T0 + 100) == 1
    assert SqlStatusListStore(db).is_revoked(1, block.first + 2, T0 + 350)
    assert not SqlStatusListStore(db).is_revoked(1, block.first + 2, T0 + 351)


def test_issued_reads_the_token_issued_audit_records(
    store: SqlStatusListStore, db: Database
) -> None:
    audit = SqlAuditStore(db)

    def issued(at: float, client_id: str, sub: str, idx: int) -> AuditEvent:
        detail = {"status_list": 1, "status_idx": idx, "exp": at + 60, "kid": "k"}
        return AuditEvent(
            at=at,
            actor=f"client:{client_id}",
            action="token.issued",
            client_id=client_id,
            sub=sub,
            aud="a",
            jti=f"j{idx}",
            detail=detail,
        )

    with db.unit_of_work():
        audit.add_many(
            [
                issued(T0, "c1", "alice", 1),
                issued(T0 + 5, "c2", "alice", 2),
                issued(T0 + 5, "c1", "bob", 3),
                issued(T0 - 500, "c1", "alice", 4),  # before "since"
            ]
        )
        audit.add(
            AuditEvent(
                at=T0,
                actor="cli",
                action="client.updated",
                client_id="c1",
                sub="alice",
                aud=None,
                jti=None,
                detail={"status_list": 1, "status_idx": 99, "exp": T0},
            )
        )
    with db.unit_of_work():
        alice = store.issued(since=T0 - 10, sub="alice")
        alice_c1 = store.issued(since=T0 - 10, sub="alice", client_id="c1")
        c1 = store.issued(since=T0 - 10, client_id="c1")
    assert sorted(e.idx for e in alice) == [1, 2]
    assert [e.idx for e in alice_c1] == [1]
    assert sorted(e.idx for e in c1) == [1, 3]
    assert alice_c1[0] == StatusEntry(1, 1, T0 + 60)


def test_concurrent_leases_never_share_a_block(db_url: str, db: Database) -> None:
    """Several processes' worth of engines lease at once: every block is leased once."""
    databases = [Database(db_url) for _ in range(4)]
    leased: list[Block] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(database: Database) -> None:
        store = SqlStatusListStore(database)
        try:
            for _ in range(5):
                block = store.lease_block(T0, T0 + 100, None)
                with lock:
                    leased.append(block)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for d in databases:
        d.dispose()
    assert errors == []
    assert len(leased) == 20
    assert len(set(leased)) == 20
