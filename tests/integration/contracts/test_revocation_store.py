"""One contract suite for ``authserver.tokens.revocations.RevocationStore``, run against
every implementation: in memory, and SQL on SQLite and PostgreSQL (through ``db_url``).

Every operation runs in ``harness.uow()`` (the SQL unit of work; a no-op in memory), each
in its own transaction, so what is read back went through the database.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any

import pytest
from sqlalchemy import event

from authserver.storage.memory import InMemoryRevocationStore
from authserver.storage.sql.engine import Database
from authserver.storage.sql.revocations import SqlRevocationStore
from authserver.tokens.revocations import RevocationStore
from tests.integration.contracts.harness import StoreHarness

T0 = 1_700_000_000.25


Harness = StoreHarness[RevocationStore]


class RevocationStoreContract:
    """What every RevocationStore promises (tokens/revocations.py)."""

    def test_unknown_jti_is_not_revoked(self, harness: Harness) -> None:
        assert harness.run(lambda s: s.is_revoked("never-seen")) is False

    def test_revoke_is_seen_and_only_for_that_jti(self, harness: Harness) -> None:
        harness.run(lambda s: s.revoke("jti-a", "as_client_1", T0 + 900, T0))
        assert harness.run(lambda s: s.is_revoked("jti-a")) is True
        assert harness.run(lambda s: s.is_revoked("jti-b")) is False
        # Exact match: no prefix or case folding.
        assert harness.run(lambda s: s.is_revoked("jti-")) is False
        assert harness.run(lambda s: s.is_revoked("JTI-A")) is False

    def test_revoke_is_idempotent(self, harness: Harness) -> None:
        harness.run(lambda s: s.revoke("jti-a", "as_client_1", T0 + 900, T0))
        harness.run(lambda s: s.revoke("jti-a", "as_client_1", T0 + 900, T0 + 5))
        # A second revocation by another client (a stolen jti) neither fails nor undoes it.
        harness.run(lambda s: s.revoke("jti-a", "as_client_2", T0 + 10, T0 + 6))
        assert harness.run(lambda s: s.is_revoked("jti-a")) is True

    def test_a_repeated_revocation_keeps_the_first_expiry(self, harness: Harness) -> None:
        """The first revocation wins: a later one with an earlier expiry must not make the
        record purgeable before the token really expires."""
        harness.run(lambda s: s.revoke("jti-a", "as_client_1", T0 + 900, T0))
        harness.run(lambda s: s.revoke("jti-a", "as_client_1", T0 + 10, T0 + 1))
        assert harness.run(lambda s: s.purge(T0 + 100)) == 0
        assert harness.run(lambda s: s.is_revoked("jti-a")) is True

    def test_revoked_until_purged_even_after_expiry(self, harness: Harness) -> None:
        """is_revoked does not look at the clock: an expired token is refused by ``exp``
        anyway, and the entry stays revoked until purge removes it."""
        harness.run(lambda s: s.revoke("jti-a", "as_client_1", T0 + 1, T0))
        assert harness.run(lambda s: s.is_revoked("jti-a")) is True

    def test_first_assertion_use_is_accepted_and_a_replay_refused(self, harness: Harness) -> None:
        assert harness.run(lambda s: s.use_assertion("as_client_1", "a-1", T0 + 60)) is True
        assert harness.run(lambda s: s.use_assertion("as_client_1", "a-1", T0 + 60)) is False
        assert harness.run(lambda s: s.use_assertion("as_client_1", "a-1", T0 + 999)) is False

    def test_assertion_jti_is_scoped_to_the_client(self, harness: Harness) -> None:
        """RFC 7523: a jti is unique per issuer; another client using the same value is
        not a replay (a stranger must not be able to burn a client's jti values)."""
        assert harness.run(lambda s: s.use_assertion("as_client_1", "a-1", T0 + 60)) is True
        assert harness.run(lambda s: s.use_assertion("as_client_2", "a-1", T0 + 60)) is True
        assert harness.run(lambda s: s.use_assertion("as_client_2", "a-1", T0 + 60)) is False

    def test_assertions_and_revocations_are_separate(self, harness: Harness) -> None:
        assert harness.run(lambda s: s.use_assertion("as_client_1", "shared", T0 + 60)) is True
        assert harness.run(lambda s: s.is_revoked("shared")) is False
        harness.run(lambda s: s.revoke("shared", "as_client_1", T0 + 60, T0))
        assert harness.run(lambda s: s.use_assertion("as_client_1", "shared", T0 + 60)) is False

    def test_purge_forgets_only_what_expired_before_now(self, harness: Harness) -> None:
        harness.run(lambda s: s.revoke("old", "as_client_1", T0 - 1, T0 - 100))
        harness.run(lambda s: s.revoke("boundary", "as_client_1", T0, T0 - 100))
        harness.run(lambda s: s.revoke("live", "as_client_1", T0 + 1, T0 - 100))
        assert harness.run(lambda s: s.use_assertion("as_client_1", "old-a", T0 - 1)) is True
        assert harness.run(lambda s: s.use_assertion("as_client_1", "live-a", T0 + 1)) is True

        assert harness.run(lambda s: s.purge(T0)) == 2  # "old" and "old-a"
        assert harness.run(lambda s: s.is_revoked("old")) is False
        # Expiring exactly at *now* is not "before now": kept.
        assert harness.run(lambda s: s.is_revoked("boundary")) is True
        assert harness.run(lambda s: s.is_revoked("live")) is True
        # A purged assertion jti may be used again; a live one is still a replay.
        assert harness.run(lambda s: s.use_assertion("as_client_1", "old-a", T0 + 60)) is True
        assert harness.run(lambda s: s.use_assertion("as_client_1", "live-a", T0 + 60)) is False

        assert harness.run(lambda s: s.purge(T0)) == 0
        assert harness.run(lambda s: s.purge(T0 + 2)) == 3  # boundary, live, live-a

    def test_what_expires_by_the_latest_purged_exp_counts_as_expired_after_it(
        self, harness: Harness
    ) -> None:
        """A clock stepped back after a purge reads the purged entries' ``exp`` as ahead
        again: whatever expires at or before the latest ``exp`` a purge forgot counts as
        revoked, and an assertion as spent, whether or not its record is gone."""
        harness.run(lambda s: s.revoke("old", "as_client_1", T0 - 20, T0 - 100))
        assert harness.run(lambda s: s.use_assertion("as_client_1", "old-a", T0 - 10)) is True
        assert harness.run(lambda s: s.purge(T0)) == 2
        # A later purge by a clock behind the first one does not lower the horizon.
        harness.run(lambda s: s.revoke("older", "as_client_1", T0 - 30, T0 - 100))
        assert harness.run(lambda s: s.purge(T0 - 25)) == 1
        assert harness.run(lambda s: s.is_revoked("old", T0 - 20)) is True
        assert harness.run(lambda s: s.is_revoked("never-seen", T0 - 10)) is True
        assert harness.run(lambda s: s.is_revoked("never-seen", T0 - 9)) is False
        assert harness.run(lambda s: s.is_revoked("never-seen")) is False
        assert harness.run(lambda s: s.use_assertion("as_client_1", "old-a", T0 - 10)) is False
        assert harness.run(lambda s: s.use_assertion("as_client_1", "new-a", T0 - 10)) is False
        assert harness.run(lambda s: s.horizon()) == T0 - 10
        assert harness.run(lambda s: s.use_assertion("as_client_1", "new-b", T0 - 9)) is True


class TestInMemoryRevocationStore(RevocationStoreContract):
    @pytest.fixture
    def harness(self) -> Harness:
        return Harness(InMemoryRevocationStore(), nullcontext)


class TestSqlRevocationStore(RevocationStoreContract):
    @pytest.fixture
    def harness(self, database: Database) -> Harness:
        return Harness(SqlRevocationStore(database), database.unit_of_work)

    def test_rolled_back_unit_of_work_revokes_nothing_but_an_assertion_stays_spent(
        self, database: Database
    ) -> None:
        """A revocation belongs to the request's unit of work; an assertion's jti is
        spent once it authenticated, even if the request then fails (its own commit)."""
        store = SqlRevocationStore(database)

        class Boom(Exception):
            pass

        def authenticate_revoke_then_fail() -> None:
            with database.unit_of_work():
                assert store.use_assertion("as_client_1", "a-1", T0 + 60) is True
                store.revoke("jti-a", "as_client_1", T0 + 900, T0)
                raise Boom

        with pytest.raises(Boom):
            authenticate_revoke_then_fail()
        with database.unit_of_work():
            assert store.is_revoked("jti-a") is False
            assert store.use_assertion("as_client_1", "a-1", T0 + 60) is False

    def test_every_introspection_runs_one_statement_built_once(self, database: Database) -> None:
        """is_revoked runs on every /introspect: building its statement (two subqueries)
        and computing SQLAlchemy's cache key for it anew each time made the whole request
        a tenth slower in-process on SQLite than before the horizon was read with it. One
        statement, the same object on every call; likewise the horizon's read after a
        client assertion's use."""
        store = SqlRevocationStore(database)
        executed: list[Any] = []

        def seen(_conn: Any, clause: Any, *_: Any) -> None:
            executed.append(clause)

        event.listen(database.engine, "before_execute", seen)
        try:
            for jti in ("jti-a", "jti-b", "jti-a"):
                with database.unit_of_work():
                    assert store.is_revoked(jti, T0 + 60) is False
        finally:
            event.remove(database.engine, "before_execute", seen)
        queries = [c for c in executed if "revoked_tokens" in str(c)]
        assert len(queries) == 3, executed
        assert all(q is queries[0] for q in queries)
        # So is the horizon's read after each use of a client assertion (private_key_jwt).
        executed.clear()
        event.listen(database.engine, "before_execute", seen)
        try:
            for jti in ("a-1", "a-2"):
                with database.unit_of_work():
                    assert store.use_assertion("as_client_1", jti, T0 + 60) is True
        finally:
            event.remove(database.engine, "before_execute", seen)
        reads = [c for c in executed if str(c).lstrip().startswith("SELECT")]
        assert len(reads) == 2, executed
        assert reads[0] is reads[1]

    def test_concurrent_uses_of_one_assertion_admit_exactly_one(self, database: Database) -> None:
        """Replay protection holds across connections (two workers, two instances): of N
        simultaneous uses of the same jti, exactly one is accepted."""
        store = SqlRevocationStore(database)
        n = 6
        barrier = threading.Barrier(n)
        results: list[bool] = []
        errors: list[BaseException] = []

        def use() -> None:
            try:
                barrier.wait(10)
                with database.unit_of_work():
                    results.append(store.use_assertion("as_client_1", "raced", T0 + 60))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=use) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        assert sorted(results) == [False] * (n - 1) + [True]

    def test_the_horizon_is_shared_by_every_instance(self, database: Database) -> None:
        """One instance's purge holds for another that has never purged nor read the
        horizon (workers and instances on one database)."""
        purger, other = SqlRevocationStore(database), SqlRevocationStore(database)
        with database.unit_of_work():
            assert other.use_assertion("as_client_1", "a-1", T0 - 10) is True
            other.revoke("jti-a", "as_client_1", T0 - 10, T0 - 100)
        with database.unit_of_work():
            assert purger.purge(T0) == 2
        assert other.horizon() == 0.0
        with database.unit_of_work():
            assert other.use_assertion("as_client_1", "a-1", T0 - 10) is False
        assert other.horizon() == T0 - 10
        fresh = SqlRevocationStore(database)
        with database.unit_of_work():
            assert fresh.is_revoked("jti-a", T0 - 10) is True

    def test_operations_outside_a_unit_of_work_are_refused(self, database: Database) -> None:
        with pytest.raises(RuntimeError, match="unit of work"):
            SqlRevocationStore(database).is_revoked("jti-a")
