"""The raw DB-API reads of the hot path (``authserver/storage/sql/raw.py``), on SQLite and
PostgreSQL: what they return is what SQLAlchemy's typed reads return, they see the unit of
work's own writes and other connections' commits at once, and a dead pooled connection is
retried."""

from __future__ import annotations

import secrets
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from authserver.clients.model import ClientId
from authserver.storage.sql.clients import SqlClientStore
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.tables import LOCKS
from tests.integration.contracts.test_client_store import PUBLIC_JWKS
from tests.integration.contracts.test_client_store import make_client


def _typed_counter(db: Database, name: str) -> int:
    with db.unit_of_work():
        conn = db.connection()
        value = conn.scalar(select(LOCKS.c.counter).where(LOCKS.c.name == name))
    return int(value or 0)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"jwks": PUBLIC_JWKS, "secret_hash": None, "enabled": False},
        {"previous_secret_hash": "sha256$" + "0" * 64, "previous_secret_expires_at": 1.5e9},
    ],
    ids=["secret", "jwks-disabled", "previous-secret"],
)
def test_the_raw_client_read_equals_the_typed_read(database: Database, changes: Any) -> None:
    store = SqlClientStore(database)
    client = make_client(7, **changes)
    with database.unit_of_work():
        store.add(client)
    with database.unit_of_work():
        (through_sqlalchemy,) = (
            store.list()
        )  # SELECT through SQLAlchemy, decoded by the same builder
    with database.unit_of_work():
        raw = store.get(ClientId(client.client_id))  # no connection opened: the raw path
    assert raw == through_sqlalchemy == client


def test_two_placeholders_in_the_driver_paramstyle(database: Database) -> None:
    store = SqlClientStore(database)
    client = make_client(8)
    with database.unit_of_work():
        store.add(client)
    assert client.secret_hash is not None
    assert store.get_by_secret_hash(client.secret_hash) == client
    assert store.get_by_secret_hash("sha256$" + "1" * 64) is None


def test_counters_follow_every_commit_at_once(database: Database, db_url: str) -> None:
    other = Database(db_url)
    try:
        assert database.read_counter("raw-test") == 0
        for expected in (1, 2, 3):
            with other.unit_of_work():
                conn = other.connection()
                bump_counter(conn, "raw-test")
            assert (
                database.read_counter("raw-test") == expected == _typed_counter(other, "raw-test")
            )
        with database.unit_of_work():
            conn = database.connection()
            bump_counter(conn, "raw-test")
            # In the unit of work that wrote it, before its commit.
            assert database.read_counter("raw-test") == 4
        assert database.read_counter("raw-test") == 4 == _typed_counter(other, "raw-test")
    finally:
        other.dispose()


def test_a_rolled_back_write_is_never_read(database: Database) -> None:
    with database.unit_of_work():
        conn = database.connection()
        bump_counter(conn, "raw-test")
    before = database.read_counter("raw-test")

    def abandoned() -> None:
        with database.unit_of_work():
            conn = database.connection()
            bump_counter(conn, "raw-test")
            raise RuntimeError("abandon the unit of work")

    with pytest.raises(RuntimeError):
        abandoned()
    assert database.read_counter("raw-test") == before


def test_a_dead_pooled_connection_is_retried_once(database: Database, db_url: str) -> None:
    """The server ended every connection of the read pool (a restart): the next read
    still answers, on a fresh connection."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to lose")
    # Connections named for this test alone: the end below reaches only them, not the idle
    # connections of the servers other tests run on the same PostgreSQL server.
    name = f"raw-reads-{secrets.token_hex(4)}"
    database = Database(f"{db_url}&application_name={name}")  # the schema migrated above
    store = SqlClientStore(database)
    client = make_client(9)
    with database.unit_of_work():
        store.add(client)
    assert store.get(ClientId(client.client_id)) == client  # the pool now holds a connection
    plain = db_url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    with psycopg.connect(plain, autocommit=True) as admin:
        # The idle pooled connection whose last statement was that read.
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND state = 'idle' AND query LIKE %s",
            (name, "%FROM clients WHERE client_id = %"),
        ).fetchone()
    try:
        assert ended is not None
        assert ended[0] >= 1
        assert store.get(ClientId(client.client_id)) == client
    finally:
        database.dispose()
