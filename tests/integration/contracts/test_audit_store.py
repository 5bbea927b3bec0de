"""One contract suite for ``authserver.audit.store.AuditStore``, run against every
implementation: in memory, and SQL on SQLite and PostgreSQL (through ``db_url``).

Every operation runs in ``harness.uow()`` (the SQL unit of work; a no-op in memory), each
in its own transaction, so what is read back went through the database.
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import nullcontext
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy import text

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.audit.store import AuditStore
from authserver.storage.memory import InMemoryAuditStore
from authserver.storage.sql.audit import SqlAuditStore
from authserver.storage.sql.engine import Database
from authserver.storage.sql.tables import AUDIT_EVENTS
from tests.integration.contracts.harness import StoreHarness

T0 = 1_700_000_000.125


class Harness(StoreHarness[AuditStore]):
    def add(self, *events: AuditEvent) -> None:
        for event in events:

            def add_one(s: AuditStore, event: AuditEvent = event) -> None:
                s.add(event)

            self.run(add_one)

    def query(self, **kwargs: Any) -> list[AuditEvent]:
        return self.run(lambda s: s.query(AuditQuery(**kwargs)))  # type: ignore[no-any-return]


def event(n: int, **changes: Any) -> AuditEvent:
    base = AuditEvent(
        at=T0 + n,
        actor=f"client:as_client_{n % 3}",
        action="token.issued",
        client_id=f"as_client_{n % 3}",
        sub=f"user-{n % 2}",
        aud="https://sync.example.com",
        jti=f"jti-{n}",
        detail={"n": n},
    )
    return dataclasses.replace(base, **changes)


def without_id(e: AuditEvent) -> AuditEvent:
    return dataclasses.replace(e, id=None)


class AuditStoreContract:
    """What every AuditStore promises (audit/store.py)."""

    def test_empty(self, harness: Harness) -> None:
        assert harness.query() == []
        assert harness.run(lambda s: s.purge(T0 + 10**6)) == 0

    def test_every_field_round_trips_and_an_id_is_assigned(self, harness: Harness) -> None:
        original = AuditEvent(
            at=T0 + 0.654321,
            actor="admin-api",
            action="client.updated",
            client_id="as_client_x",
            sub="user@example.com",
            aud="https://api.example.com",
            jti="0f3c2b1a",
            detail={"changed": ["name", "scopes"], "enabled": False, "ttl": 900, "why": "ü"},
        )
        harness.add(original)
        (got,) = harness.query()
        assert got.id is not None
        assert without_id(got) == original

    def test_optional_fields_round_trip_as_none_and_empty_detail(self, harness: Harness) -> None:
        bare = AuditEvent(at=T0, actor="scheduler", action="key.rotated")
        harness.add(bare)
        (got,) = harness.query()
        assert without_id(got) == bare
        assert got.detail == {}

    def test_newest_first_and_ties_in_reverse_insertion_order(self, harness: Harness) -> None:
        a, b, c = event(1), event(5), event(3)
        same_1, same_2 = event(7, jti="same-1"), event(7, jti="same-2")
        harness.add(a, b, c, same_1, same_2)
        assert [e.jti for e in harness.query()] == ["same-2", "same-1", "jti-5", "jti-3", "jti-1"]
        ids = [e.id for e in harness.query()]
        assert len(set(ids)) == 5

    def test_add_many_stores_every_event_once(self, harness: Harness) -> None:
        events = [event(n) for n in range(25)]
        harness.run(lambda s: s.add_many(events))
        harness.run(lambda s: s.add_many([]))
        got = harness.query(limit=1000)
        assert [without_id(e) for e in reversed(got)] == events

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ({"client_id": "as_client_1"}, [7, 4, 1]),
            ({"sub": "user-0"}, [8, 6, 4, 2, 0]),
            ({"action": "client.created"}, [5]),
            ({"since": T0 + 6}, [8, 7, 6]),  # since is inclusive
            ({"until": T0 + 2}, [1, 0]),  # until is exclusive
            ({"since": T0 + 2, "until": T0 + 5}, [4, 3, 2]),
            ({"client_id": "as_client_1", "sub": "user-0"}, [4]),
            ({"client_id": "as_client_2", "action": "token.issued"}, [8, 2]),
            ({"limit": 3}, [8, 7, 6]),
            ({"sub": "user-1", "limit": 2}, [7, 5]),
            ({"client_id": "as_client_missing"}, []),
        ],
    )
    def test_query_filters(
        self, harness: Harness, query: dict[str, Any], expected: list[int]
    ) -> None:
        events = [event(n) for n in range(9)]
        events[5] = event(5, action="client.created")
        harness.run(lambda s: s.add_many(events))
        assert [e.detail["n"] for e in harness.query(**query)] == expected

    def test_pages_by_the_last_id_neither_skip_nor_repeat_events_at_one_instant(
        self, harness: Harness
    ) -> None:
        # Three events share an instant and two more another: a page may end among them.
        ats = [1, 2, 2, 2, 3, 3, 4]
        harness.run(lambda s: s.add_many([event(n, at=T0 + at) for n, at in enumerate(ats)]))
        whole = [e.detail["n"] for e in harness.query(limit=100)]
        assert whole == [6, 5, 4, 3, 2, 1, 0]
        for size in (1, 2, 3):
            pages: list[int] = []
            page = harness.query(limit=size)
            while page:
                pages += [e.detail["n"] for e in page]
                page = harness.query(limit=size, before=page[-1].id)
            assert pages == whole, size
        # With the filters: the user-0 events after event 4 (n=4 is user-0 itself).
        (cursor,) = [e for e in harness.query(limit=100) if e.detail["n"] == 4]
        assert [e.detail["n"] for e in harness.query(sub="user-0", before=cursor.id)] == [2, 0]
        # A cursor no event has (purged, with every event listed after it): nothing.
        assert harness.query(before=10**12) == []

    def test_filters_match_exactly(self, harness: Harness) -> None:
        harness.add(event(0, client_id="as_client_10", sub="user"))
        assert harness.query(client_id="as_client_1") == []
        assert harness.query(sub="use") == []
        assert harness.query(action="token") == []

    def test_purge_deletes_only_events_before_the_cut(self, harness: Harness) -> None:
        harness.run(lambda s: s.add_many([event(n) for n in range(6)]))
        assert harness.run(lambda s: s.purge(T0 + 3)) == 3
        # An event exactly at the cut is kept.
        assert [e.detail["n"] for e in harness.query()] == [5, 4, 3]
        assert harness.run(lambda s: s.purge(T0 + 3)) == 0

    def test_purge_with_a_limit_deletes_the_oldest_first(self, harness: Harness) -> None:
        harness.run(lambda s: s.add_many([event(n) for n in (4, 0, 5, 2, 1, 3)]))
        assert harness.run(lambda s: s.purge(T0 + 4, limit=3)) == 3
        assert [e.detail["n"] for e in harness.query()] == [5, 4, 3]
        assert harness.run(lambda s: s.purge(T0 + 4, limit=3)) == 1
        assert harness.run(lambda s: s.purge(T0 + 4, limit=3)) == 0
        assert [e.detail["n"] for e in harness.query()] == [5, 4]

    def test_stored_event_is_not_changed_by_its_caller(self, harness: Harness) -> None:
        detail: dict[str, Any] = {"changed": ["name"]}
        harness.add(AuditEvent(at=T0, actor="cli", action="client.updated", detail=detail))
        detail["changed"] = ["secret"]
        detail["extra"] = 1
        (got,) = harness.query()
        assert got.detail == {"changed": ["name"]}

    def test_key_events_are_the_key_events_only(self, harness: Harness) -> None:
        harness.run(lambda s: s.add_many([event(n) for n in range(5)]))
        harness.add(
            key_event(10, "kid-a", action="key.created"),
            key_event(11, "kid-b", action="key.rotated"),
            key_event(12, "kid-a", action="key.retired"),
            event(13, action="client.created"),
        )
        got = harness.run(lambda s: s.key_events())
        assert sorted((e.action, e.detail["kid"]) for e in got) == [
            ("key.created", "kid-a"),
            ("key.retired", "kid-a"),
            ("key.rotated", "kid-b"),
        ]
        assert all(e.id is not None for e in got)

    def test_add_key_events_once_adds_only_what_is_not_on_record(self, harness: Harness) -> None:
        harness.add(key_event(1, "kid-a", action="key.rotated"), key_event(2, "kid-x"))
        # A retirement names a kid, but records no creation; a creation, no retirement.
        harness.add(key_event(3, "kid-c", action="key.retired"))
        wanted = [key_event(5, kid, recovered=True) for kid in ("kid-a", "kid-b", "kid-c")]
        wanted += [key_event(6, kid, "key.retired", recovered=True) for kid in ("kid-a", "kid-c")]
        added = harness.run(lambda s: s.add_key_events_once(wanted))
        assert [(e.action, e.detail["kid"]) for e in added] == [
            ("key.created", "kid-b"),
            ("key.created", "kid-c"),
            ("key.retired", "kid-a"),
        ]
        assert harness.run(lambda s: s.add_key_events_once(wanted)) == []
        created = harness.query(action="key.created")
        assert sorted(e.detail["kid"] for e in created) == ["kid-b", "kid-c", "kid-x"]
        assert [without_id(e) for e in created if e.detail.get("recovered")] == [
            wanted[2],
            wanted[1],
        ]
        retired = harness.query(action="key.retired")
        assert [without_id(e) for e in retired] == [wanted[3], key_event(3, "kid-c", "key.retired")]


def key_event(n: int, kid: str, action: str = "key.created", **detail: Any) -> AuditEvent:
    return AuditEvent(
        at=T0 + n, actor="scheduler", action=action, detail={"kid": kid, "signs_from": T0, **detail}
    )


class TestInMemoryAuditStore(AuditStoreContract):
    @pytest.fixture
    def harness(self) -> Harness:
        return Harness(InMemoryAuditStore(), nullcontext)


class TestSqlAuditStore(AuditStoreContract):
    @pytest.fixture
    def harness(self, database: Database) -> Harness:
        return Harness(SqlAuditStore(database), database.unit_of_work)

    def test_rolled_back_unit_of_work_records_nothing(self, database: Database) -> None:
        store = SqlAuditStore(database)

        class Boom(Exception):
            pass

        def add_then_fail() -> None:
            with database.unit_of_work():
                store.add_many([event(0), event(1)])
                raise Boom

        with pytest.raises(Boom):
            add_then_fail()
        with database.unit_of_work():
            assert store.query(AuditQuery()) == []

    def test_ids_go_past_32_bits(self, database: Database) -> None:
        """Ids are never reused, and every issued token takes one: PostgreSQL's ``serial``
        stopped at 2^31 - 1 (a year or two of a busy server), after which every audit
        write failed there, batched ``token.issued`` records and operator actions alike,
        while SQLite's rowid went on."""
        store = SqlAuditStore(database)
        last_32_bit = 2**31 - 1
        with database.unit_of_work():
            conn = database.connection()
            conn.execute(
                insert(AUDIT_EVENTS).values(
                    id=last_32_bit, at=T0, actor="cli", action="key.created"
                )
            )
            if conn.dialect.name == "postgresql":
                # Where a sequence at its 32-bit end stands: as if 2^31 - 1 ids were taken.
                conn.execute(
                    text("SELECT setval(pg_get_serial_sequence('audit_events', 'id'), :last)"),
                    {"last": last_32_bit},
                )
        with database.unit_of_work():
            store.add_many([event(1), event(2)])  # the batched token.issued path
        with database.unit_of_work():
            store.add(event(3, action="client.created"))  # an operator action
        with database.unit_of_work():
            got = store.query(AuditQuery())
        assert [e.jti for e in got] == ["jti-3", "jti-2", "jti-1", None]
        assert all(e.id is not None and e.id > last_32_bit for e in got[:3])

    def test_add_key_events_once_waits_for_another_adding_the_same_kid(
        self, database: Database
    ) -> None:
        """Two processes recovering one key's record at once: the second waits for the
        first's transaction and then finds the record (the re-check is under a lock, not a
        read that both make before either writes)."""
        first, second = SqlAuditStore(database), SqlAuditStore(database)
        holding = threading.Event()
        release = threading.Event()
        results: dict[str, list[AuditEvent]] = {}

        def hold_open() -> None:
            with database.unit_of_work():
                results["first"] = first.add_key_events_once([key_event(1, "kid-a")])
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold_open)
        holder.start()
        try:
            assert holding.wait(30)

            def add_second() -> None:
                with database.unit_of_work():
                    results["second"] = second.add_key_events_once([key_event(2, "kid-a")])

            adder = threading.Thread(target=add_second)
            adder.start()
            # The second waits for the lock while the first's transaction is open.
            adder.join(0.5)
            assert adder.is_alive()
        finally:
            release.set()
            holder.join(30)
        adder.join(30)
        assert not adder.is_alive()
        assert [e.detail["kid"] for e in results["first"]] == ["kid-a"]
        assert results["second"] == []
        with database.unit_of_work():
            assert len(first.key_events()) == 1
