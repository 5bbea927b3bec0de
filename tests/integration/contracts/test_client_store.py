"""One contract suite for ``authserver.clients.store.ClientStore``, run against every
implementation: in memory, and SQL on SQLite and PostgreSQL (through ``db_url``).

Every operation runs in ``harness.uow()`` (the SQL unit of work; a no-op in memory), each
in its own transaction, so what is read back went through the database.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any

import pytest
from sqlalchemy import text

from authserver.clients import secrets as client_secrets
from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.clients.model import ClientPolicy
from authserver.clients.store import ClientStore
from authserver.errors import Conflict
from authserver.errors import NotFound
from authserver.records import UnreadableRecord
from authserver.storage.memory import InMemoryClientStore
from authserver.storage.sql.clients import SqlClientStore
from authserver.storage.sql.engine import Database
from tests.integration.contracts.harness import StoreHarness

T0 = 1_700_000_000.654321

PUBLIC_JWKS = {
    "keys": [
        {
            "kty": "RSA",
            "kid": "backend-1",
            "use": "sig",
            "alg": "RS256",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFx",
            "e": "AQAB",
        }
    ]
}


Harness = StoreHarness[ClientStore]


def make_client(n: int = 0, **changes: Any) -> Client:
    secret = client_secrets.new_secret()
    client = Client(
        client_id=ClientId(f"as_client_contract_{n}"),
        name=f"backend {n}",
        policy=ClientPolicy(
            audiences=("https://api.example.com", "https://sync.example.com"),
            scopes=("read", "write"),
            allowed_claims=("libraryId", "grants"),
            token_ttl=900,
        ),
        enabled=True,
        created_at=T0 + n,
        updated_at=T0 + n + 0.5,
        secret_hash=client_secrets.hash_secret(secret),
    )
    return dataclasses.replace(client, **changes)


class ClientStoreContract:
    """What every ClientStore promises (clients/store.py)."""

    def test_empty(self, harness: Harness) -> None:
        assert harness.run(lambda s: s.list()) == []
        assert harness.run(lambda s: s.get(ClientId("as_client_missing"))) is None

    def test_add_get_preserves_every_field(self, harness: Harness) -> None:
        client = make_client(0)
        harness.run(lambda s: s.add(client))
        got = harness.run(lambda s: s.get(client.client_id))
        assert got == client
        assert isinstance(got.policy.audiences, tuple)
        assert isinstance(got.policy.scopes, tuple)
        assert isinstance(got.policy.allowed_claims, tuple)

    def test_private_key_jwt_client_round_trips(self, harness: Harness) -> None:
        with_jwks = make_client(1, secret_hash=None, jwks=PUBLIC_JWKS)
        with_uri = make_client(2, secret_hash=None, jwks_uri="https://backend.example/jwks.json")
        harness.run(lambda s: s.add(with_jwks))
        harness.run(lambda s: s.add(with_uri))
        assert harness.run(lambda s: s.get(with_jwks.client_id)) == with_jwks
        assert harness.run(lambda s: s.get(with_uri.client_id)) == with_uri
        assert harness.run(lambda s: s.get(with_jwks.client_id)).auth_method == "private_key_jwt"

    @pytest.mark.parametrize(
        "policy",
        [
            ClientPolicy(),
            ClientPolicy(audiences=("https://only.example",)),
            ClientPolicy(audiences=("b", "a", "c"), scopes=("z", "a"), allowed_claims=("y", "x")),
            ClientPolicy(scopes=("read",), token_ttl=None),
            ClientPolicy(allowed_claims=("libraryId",), token_ttl=86400),
            ClientPolicy(
                profile="verdant",
                fixed_claims={"url": "wss://sync.example", "type": 0, "n": {"a": [1, True]}},
            ),
        ],
        ids=["empty", "one-audience", "order-kept", "no-ttl", "max-ttl", "profile-fixed-claims"],
    )
    def test_policy_tuples_round_trip(self, harness: Harness, policy: ClientPolicy) -> None:
        client = make_client(0, policy=policy)
        harness.run(lambda s: s.add(client))
        got = harness.run(lambda s: s.get(client.client_id))
        assert got.policy == policy
        assert type(got.policy.audiences) is tuple
        assert type(got.policy.scopes) is tuple
        assert type(got.policy.allowed_claims) is tuple

    def test_get_by_secret_hash_finds_current_and_previous_secrets(self, harness: Harness) -> None:
        client = make_client(0, previous_secret_hash="sha256$" + "ab" * 32)
        other = make_client(1)
        harness.run(lambda s: s.add(client))
        harness.run(lambda s: s.add(other))
        assert client.secret_hash is not None
        assert harness.run(lambda s: s.get_by_secret_hash(client.secret_hash)) == client
        assert harness.run(lambda s: s.get_by_secret_hash("sha256$" + "ab" * 32)) == client
        assert harness.run(lambda s: s.get_by_secret_hash("sha256$" + "cd" * 32)) is None

    def test_disabled_client_round_trips(self, harness: Harness) -> None:
        client = make_client(0, enabled=False)
        harness.run(lambda s: s.add(client))
        assert harness.run(lambda s: s.get(client.client_id)).enabled is False

    def test_every_field_round_trips(self, harness: Harness) -> None:
        client = make_client(0, jwks=None, jwks_uri="https://backend.example/jwks.json")
        harness.run(lambda s: s.add(client))
        assert harness.run(lambda s: s.get(client.client_id)) == client

    def test_list_is_oldest_first(self, harness: Harness) -> None:
        clients = [make_client(n) for n in (2, 0, 1)]
        for client in clients:

            def add(s: ClientStore, client: Client = client) -> None:
                s.add(client)

            harness.run(add)
        listed = harness.run(lambda s: s.list())
        assert [c.client_id for c in listed] == [
            ClientId("as_client_contract_0"),
            ClientId("as_client_contract_1"),
            ClientId("as_client_contract_2"),
        ]
        assert listed == sorted(clients, key=lambda c: c.created_at)

    def test_clients_created_at_the_same_moment_are_listed_by_id_code_points(
        self, harness: Harness
    ) -> None:
        """A tie in ``created_at`` is broken by the client id, compared by code points (as
        Python compares strings), whatever the database's collation."""
        ids = ["as_client_ab", "as_client__z", "as_client_B", "as_client_-b", "as_client_Ab"]
        for client_id in ids:
            client = make_client(0, client_id=ClientId(client_id))

            def add(s: ClientStore, client: Client = client) -> None:
                s.add(client)

            harness.run(add)
        listed = [c.client_id for c in harness.run(lambda s: s.list())]
        assert listed == sorted(ids)

    def test_add_duplicate_is_a_conflict(self, harness: Harness) -> None:
        original = make_client(0)
        harness.run(lambda s: s.add(original))
        duplicate = dataclasses.replace(original, name="impostor")
        with pytest.raises(Conflict):
            harness.run(lambda s: s.add(duplicate))
        # The original is intact and still the only one.
        assert harness.run(lambda s: s.get(original.client_id)) == original
        assert harness.run(lambda s: s.list()) == [original]

    def test_update_replaces_every_field(self, harness: Harness) -> None:
        client = make_client(0)
        other = make_client(1)
        harness.run(lambda s: s.add(client))
        harness.run(lambda s: s.add(other))
        changed = dataclasses.replace(
            client,
            name="renamed",
            policy=ClientPolicy(
                audiences=("https://new.example",),
                scopes=(),
                allowed_claims=("grants",),
                token_ttl=None,
            ),
            enabled=False,
            updated_at=T0 + 1000.25,
            secret_hash=client_secrets.hash_secret(client_secrets.new_secret()),
        )
        harness.run(lambda s: s.update(changed))
        assert harness.run(lambda s: s.get(client.client_id)) == changed
        assert harness.run(lambda s: s.get(other.client_id)) == other
        # Switching to private_key_jwt clears the secret and keeps the keys.
        switched = dataclasses.replace(changed, secret_hash=None, jwks=PUBLIC_JWKS)
        harness.run(lambda s: s.update(switched))
        assert harness.run(lambda s: s.get(client.client_id)) == switched

    def test_update_unknown_is_not_found(self, harness: Harness) -> None:
        with pytest.raises(NotFound):
            harness.run(lambda s: s.update(make_client(0)))
        assert harness.run(lambda s: s.list()) == []

    def test_delete(self, harness: Harness) -> None:
        a, b = make_client(0), make_client(1)
        harness.run(lambda s: s.add(a))
        harness.run(lambda s: s.add(b))
        harness.run(lambda s: s.delete(a.client_id))
        assert harness.run(lambda s: s.get(a.client_id)) is None
        assert harness.run(lambda s: s.list()) == [b]
        # The id can be registered again after a delete.
        harness.run(lambda s: s.add(a))
        assert harness.run(lambda s: s.get(a.client_id)) == a

    def test_delete_unknown_is_not_found(self, harness: Harness) -> None:
        harness.run(lambda s: s.add(make_client(0)))
        with pytest.raises(NotFound):
            harness.run(lambda s: s.delete(ClientId("as_client_missing")))
        assert len(harness.run(lambda s: s.list())) == 1

    def test_get_returns_a_value_not_a_live_row(self, harness: Harness) -> None:
        client = make_client(0)
        harness.run(lambda s: s.add(client))
        got = harness.run(lambda s: s.get(client.client_id))
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.name = "changed"

    def test_the_list_order_does_not_follow_a_linguistic_collation(
        self, database: Database
    ) -> None:
        """PostgreSQL orders text by the database's collation: with a linguistic one
        (``en_US.utf8``, the default of the official ``postgres`` image that
        docker-compose.yml runs) ``ORDER BY client_id`` put ``as_client__z`` first and
        ``as_client_ab`` before ``as_client_B``, where SQLite and the memory store list
        them by code points. The column is given such a collation here (ICU's root
        locale: the test cluster's own default is C)."""
        if database.engine.dialect.name != "postgresql":
            pytest.skip("SQLite compares text by code points (BINARY) only")
        with database.unit_of_work():
            icu = "SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'"
            if database.connection().scalar(text(icu)) is None:
                pytest.skip("this PostgreSQL was built without ICU collations")
            database.connection().execute(
                text(
                    "ALTER TABLE clients ALTER COLUMN client_id "
                    'TYPE varchar(64) COLLATE "und-x-icu"'
                )
            )
        self.test_clients_created_at_the_same_moment_are_listed_by_id_code_points(
            Harness(SqlClientStore(database), database.unit_of_work)
        )

    def inject_bad_records(self, harness: Harness) -> set[ClientId]:
        """Store client records that cannot be decoded, the way this store can hold them;
        returns their ids. A store that cannot hold a bad record returns nothing."""
        return set()

    def test_unreadable_records_are_skipped_reported_and_deletable(self, harness: Harness) -> None:
        good = make_client(0)
        harness.run(lambda s: s.add(good))
        bad = self.inject_bad_records(harness)
        scan = harness.run(lambda s: s.scan())
        assert scan.records == [good]
        assert {r.name for r in scan.unreadable} == {f"clients row {cid!r}" for cid in bad}
        assert harness.run(lambda s: s.list()) == [good]
        assert harness.run(lambda s: s.get(good.client_id)) == good
        for client_id in bad:
            with pytest.raises(UnreadableRecord) as exc:
                harness.run(lambda s, cid=client_id: s.get(cid))
            assert exc.value.name == f"clients row {client_id!r}"
            harness.run(lambda s, cid=client_id: s.delete(cid))
        assert harness.run(lambda s: s.scan()).unreadable == []


class TestInMemoryClientStore(ClientStoreContract):
    @pytest.fixture
    def harness(self) -> Harness:
        return Harness(InMemoryClientStore(), nullcontext)


class TestSqlClientStore(ClientStoreContract):
    @pytest.fixture
    def harness(self, database: Database) -> Harness:
        return Harness(SqlClientStore(database), database.unit_of_work)

    def inject_bad_records(self, harness: Harness) -> set[ClientId]:
        assert isinstance(harness.store, SqlClientStore)
        database = harness.store._db
        rows = {
            # column -> a value of the wrong shape, valid for the column's SQL type
            "audiences": '"a string"',
            "scopes": '{"a": "b"}',
            "allowed_claims": "[1, 2]",
            "jwks": "[]",
        }
        if database.engine.dialect.name == "sqlite":
            rows["audiences_not_json"] = '["a", '  # PostgreSQL's json type refuses it
        inserted: set[ClientId] = set()
        with database.unit_of_work():
            conn = database.connection()
            for n, (column, value) in enumerate(rows.items(), start=1):
                client = make_client(n)
                row = {
                    "client_id": client.client_id,
                    "audiences": "[]",
                    "scopes": "[]",
                    "allowed_claims": "[]",
                    "jwks": None,
                    column.removesuffix("_not_json"): value,
                }
                cast = "CAST({} AS json)" if database.engine.dialect.name == "postgresql" else "{}"
                json_values = ", ".join(
                    cast.format(f":{c}") for c in ("audiences", "scopes", "allowed_claims", "jwks")
                )
                insert = (
                    "INSERT INTO clients (client_id, name, enabled, created_at, updated_at, "  # noqa: S608 - constant SQL, bound values
                    f"audiences, scopes, allowed_claims, jwks) VALUES (:client_id, 'bad', true, "
                    f":t, :t, {json_values})"
                )
                conn.execute(text(insert), {**row, "t": T0 + n})
                inserted.add(client.client_id)
        return inserted

    def test_several_operations_in_one_unit_of_work(self, database: Database) -> None:
        store = SqlClientStore(database)
        a, b = make_client(0), make_client(1)
        with database.unit_of_work():
            store.add(a)
            store.add(b)
            store.update(dataclasses.replace(a, name="renamed"))
            store.delete(b.client_id)
            assert [c.name for c in store.list()] == ["renamed"]
        with database.unit_of_work():
            assert [c.name for c in store.list()] == ["renamed"]

    def test_rolled_back_unit_of_work_leaves_nothing(self, database: Database) -> None:
        store = SqlClientStore(database)

        class Boom(Exception):
            pass

        def add_then_fail() -> None:
            with database.unit_of_work():
                store.add(make_client(0))
                raise Boom

        with pytest.raises(Boom):
            add_then_fail()
        with database.unit_of_work():
            assert store.list() == []

    def test_conflict_can_be_handled_inside_the_unit_of_work(self, database: Database) -> None:
        """A Conflict is a domain error the caller may catch; the unit of work (and what it
        did before) must survive it, as with the other stores."""
        store = SqlClientStore(database)
        a, b = make_client(0), make_client(1)
        with database.unit_of_work():
            store.add(a)
        with database.unit_of_work():
            store.add(b)
            with pytest.raises(Conflict):
                store.add(dataclasses.replace(a, name="impostor"))
            assert store.get(b.client_id) == b
        with database.unit_of_work():
            assert store.list() == [a, b]


def test_raw_client_read_covers_every_column() -> None:
    """The token path reads a client row without SQLAlchemy (SqlClientStore.get): its
    column list must follow the table, or a new column would silently be dropped."""
    from authserver.storage.sql import clients as sql_clients
    from authserver.storage.sql.tables import CLIENTS

    table_columns = [c.name for c in CLIENTS.columns]
    assert sorted(sql_clients._COLUMNS) == sorted(table_columns)
    assert sql_clients._GET.startswith("SELECT " + ", ".join(sql_clients._COLUMNS) + " FROM")
