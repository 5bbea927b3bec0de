"""Lock waits and statements on PostgreSQL have an end (storage/sql/engine.py,
POSTGRES_LOCK_TIMEOUT_S and POSTGRES_STATEMENT_TIMEOUT_S).

Another session holding a lock on authserver's tables (an operator's ``LOCK TABLE`` in
psql, a long ``ALTER TABLE``) used to hang ``authserver clients update`` until it was
killed, and every request needing those tables as long. Now such a wait ends as the
product's "database unavailable" answer: 503 with the OAuth error shape, or the CLI's
one-line error and a non-zero exit. The deliberate waits keep waiting: the migration lock
(several instances starting at once) and the key lock (another process making a key).

A statement made slow by something else (a trigger calling ``pg_sleep`` here) is
cancelled the same way; the work that may rightly run long (migrations, ``db copy``, the
purges) is not.

Real PostgreSQL sessions hold real locks, each for a bounded time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy import text

from authserver import container
from authserver.errors import StorageUnavailable
from authserver.settings import Settings
from authserver.storage.sql import engine
from authserver.storage.sql import migrate
from authserver.storage.sql.audit import SqlAuditStore
from authserver.storage.sql.copy import copy_database
from authserver.storage.sql.migrate import MIGRATION_LOCK_ID
from authserver.storage.sql.migrate import upgrade_to_head
from authserver.storage.sql.revocations import SqlRevocationStore
from authserver.storage.sql.statuslist import SqlStatusListStore
from authserver.tokens.statuslist import StatusEntry
from tests.conftest import PG_URL
from tests.conftest import fresh_pg_schema
from tests.conftest import require_postgres
from tests.factories import issue_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import run_cli

pytestmark = [pytest.mark.integration]

#: The longest a blocked command or request may take: the lock timeout, plus slack for a
#: loaded test machine (the CLI's start-up included).
BOUND_S = engine.POSTGRES_LOCK_TIMEOUT_S + 7
#: The same for a statement that runs long: the statement timeout, plus the same slack.
STATEMENT_BOUND_S = engine.POSTGRES_STATEMENT_TIMEOUT_S + 7


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_postgres()
    with fresh_pg_schema() as url:
        yield url


def _schema(url: str) -> str:
    return url.rsplit("search_path%3D", 1)[1]


@contextmanager
def _holding(sql: str) -> Iterator[None]:
    """Another session, as an operator's psql, with *sql* run in an open transaction."""
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(sql)
        try:
            yield
        finally:
            conn.rollback()


def _hold_for(sql: str, seconds: float) -> threading.Thread:
    """*sql* held by another session for *seconds*, from a thread; started and holding."""
    held = threading.Event()

    def hold() -> None:
        with _holding(sql):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


def test_a_table_lock_ends_in_503_and_a_cli_error_not_a_hang(
    pg_url: str, env_for: object, tmp_path: Path
) -> None:
    env = env_for(pg_url)  # type: ignore[operator]
    with ServerProcess(env) as server:
        client = cli_json_here(env, "clients", "create", "--name", "locked")

        def post_token(who: dict[str, str]) -> requests.Response:
            return requests.post(
                server.base_url + "/token",
                data={"grant_type": "client_credentials"},
                auth=(who["client_id"], who["client_secret"]),
                timeout=BOUND_S + 5,
            )

        assert post_token(client).status_code == 200
        # Not asked for yet: its token request must read its row, under the lock.
        other = cli_json_here(env, "clients", "create", "--name", "uncached")
        schema = _schema(pg_url)
        lock = f'LOCK TABLE "{schema}".clients, "{schema}".locks IN ACCESS EXCLUSIVE MODE'
        with _holding(lock):
            answers: dict[str, object] = {}

            def token() -> None:
                start = time.monotonic()
                answers["token"] = post_token(other)
                answers["token_s"] = time.monotonic() - start

            asking = threading.Thread(target=token)
            asking.start()
            start = time.monotonic()
            update = run_cli(
                env, "clients", "update", client["client_id"], "--name", "x", timeout=BOUND_S + 5
            )
            took = time.monotonic() - start
            asking.join(BOUND_S + 10)
        assert took < BOUND_S, took
        assert update.returncode != 0
        assert update.stdout == ""
        lines = update.stderr.strip().splitlines()
        assert len(lines) == 1, update.stderr
        assert "lock timeout" in lines[0]
        assert "Traceback" not in update.stderr
        response = answers["token"]
        assert isinstance(response, requests.Response)
        assert answers["token_s"] < BOUND_S  # type: ignore[operator]
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        # The lock gone, both work again; the refused update changed nothing.
        assert post_token(other).status_code == 200
        shown = cli_json_here(env, "clients", "show", client["client_id"])
        assert shown["name"] == "locked"


@contextmanager
def _slow(schema: str, table: str, event: str, seconds: float) -> Iterator[None]:
    """Every *event* (INSERT, UPDATE, DELETE) statement on *table* first sleeps *seconds*
    (a trigger), until the block ends: a statement that runs long, not one waiting for a
    lock."""
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(
            f'CREATE OR REPLACE FUNCTION "{schema}".slow() RETURNS trigger LANGUAGE plpgsql AS '
            f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$"
        )
        conn.execute(
            f'CREATE TRIGGER slow BEFORE {event} ON "{schema}".{table} '
            f'FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".slow()'
        )
        try:
            yield
        finally:
            conn.execute(f'DROP TRIGGER slow ON "{schema}".{table}')


def test_a_long_statement_ends_in_503_and_the_worker_recovers(pg_url: str, env_for: object) -> None:
    admin_token = "admin-token-for-tests-3f9a1c0b7d2e4f6a"
    env = env_for(pg_url, AUTHSERVER_ADMIN_TOKEN=admin_token)  # type: ignore[operator]
    with ServerProcess(env) as server:
        client = cli_json_here(env, "clients", "create", "--name", "slow")
        credentials = (client["client_id"], client["client_secret"])
        token = issue_token(server, credentials)

        def revoke() -> requests.Response:
            return requests.post(
                server.base_url + "/revoke",
                data={"token": token},
                auth=credentials,
                timeout=STATEMENT_BOUND_S + 5,
            )

        def create_client() -> requests.Response:
            return requests.post(
                server.base_url + "/admin/clients",
                json={"name": "by the operator API"},
                headers={"Authorization": f"Bearer {admin_token}"},
                timeout=STATEMENT_BOUND_S + 5,
            )

        schema = _schema(pg_url)
        for table, ask in (("revoked_tokens", revoke), ("clients", create_client)):
            with _slow(schema, table, "INSERT", 3 * STATEMENT_BOUND_S):
                start = time.monotonic()
                response = ask()
                took = time.monotonic() - start
            assert took < STATEMENT_BOUND_S, (table, took)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "temporarily_unavailable"
            assert response.headers["Retry-After"]
        # The statements were cancelled, not left running: the same server answers both.
        assert revoke().status_code == 200
        assert create_client().status_code == 201
        introspected = requests.post(
            server.base_url + "/introspect", data={"token": token}, auth=credentials, timeout=10
        )
        assert introspected.json() == {"active": False}


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> float:
    """A 1 s lock timeout and a 1.5 s statement timeout for the connections made from here
    on (this process only); returns the longer."""
    monkeypatch.setattr(engine, "POSTGRES_LOCK_TIMEOUT_S", 1)
    monkeypatch.setattr(engine, "POSTGRES_STATEMENT_TIMEOUT_S", 1.5)
    return 1.5


def test_a_migration_waits_for_another_ones_lock_past_the_lock_timeout(
    pg_url: str, tmp_path: Path, short_bounds: float
) -> None:
    # Another instance migrating holds the advisory lock longer than the lock timeout.
    holder = _hold_for(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})", 2 * short_bounds)
    db = engine.Database(pg_url)
    try:
        before, after = upgrade_to_head(db)
    finally:
        db.dispose()
    holder.join()
    assert before is None
    assert after is not None


def test_the_key_lock_waits_for_its_holder_past_the_lock_timeout(
    pg_url: str, tmp_path: Path, short_bounds: float
) -> None:
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": pg_url,
            "AUTHSERVER_KEY_STORE": "sql",
            "AUTHSERVER_ISSUER": "http://localhost:8000",
        }
    )
    db = engine.Database(pg_url)
    try:
        upgrade_to_head(db)
    finally:
        db.dispose()
    services = container.build(settings)
    try:
        with services.unit_of_work():
            services.keys.ensure_current()
        # Another process rotating: it holds the key lock's row while it makes a key.
        schema = _schema(pg_url)
        holder = _hold_for(
            f"UPDATE \"{schema}\".locks SET counter = counter WHERE name = 'signing_keys'",  # noqa: S608
            2 * short_bounds,
        )
        with services.unit_of_work():
            result = services.keys.rotate()
        holder.join()
        assert result.created
        # Any other lock wait still ends: the key lock's wider wait stopped at its row.
        with _holding(f'LOCK TABLE "{schema}".clients IN ACCESS EXCLUSIVE MODE'):
            with services.unit_of_work():
                services.keys.rotate()
            with pytest.raises(StorageUnavailable, match="lock timeout"), services.unit_of_work():
                services.clients.list()
    finally:
        services.close()


def test_a_lock_timeout_in_the_url_wins(pg_url: str) -> None:
    """Every connection of both engines gets the bounds, unless the URL's options set one."""
    for url, lock, statement in (
        (pg_url, "5s", "10s"),
        (f"{pg_url}%20-clock_timeout%3D1500ms", "1500ms", "10s"),
        (f"{pg_url}%20-cstatement_timeout%3D1min", "5s", "1min"),
    ):
        db = engine.Database(url)
        try:
            with db.unit_of_work():  # the main engine
                conn = db.connection()
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == lock
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == statement
            # The autocommit engine
            assert db.read_one("SHOW lock_timeout") == (lock,)
            assert db.read_one("SHOW statement_timeout") == (statement,)
        finally:
            db.dispose()


def _expired_revocation(db: engine.Database) -> None:
    SqlRevocationStore(db).revoke("jti-1", "client-1", time.time() - 100, time.time() - 200)


def _expired_status_revocation(db: engine.Database) -> None:
    SqlStatusListStore(db).revoke([StatusEntry(1, 3, time.time() - 100)], time.time() - 200)


@pytest.mark.parametrize(
    ("table", "seed", "store", "purged"),
    [
        (
            "revoked_tokens",
            _expired_revocation,
            lambda db: SqlRevocationStore(db).purge(time.time()),
            1,
        ),
        (
            "status_revocations",
            _expired_status_revocation,
            lambda db: SqlStatusListStore(db).purge(time.time()),
            1,
        ),
        (
            "audit_events",
            lambda db: None,
            lambda db: SqlAuditStore(db).purge(time.time(), limit=10),
            0,
        ),
    ],
)
def test_a_purge_runs_past_the_statement_timeout(
    pg_url: str, short_bounds: float, table: str, seed: Any, store: Any, purged: int
) -> None:
    """Housekeeping, never a request: a purge through a backlog is not cut; a request's
    statement on the same table still is. There is an expired row to purge: a purge that
    finds none runs no DELETE, and the slow trigger would never fire."""
    db = engine.Database(pg_url)
    try:
        upgrade_to_head(db)
        with db.unit_of_work():
            seed(db)
        with _slow(_schema(pg_url), table, "DELETE", 2 * short_bounds):
            with db.unit_of_work():
                assert store(db) == purged
            with (
                pytest.raises(StorageUnavailable, match="statement timeout"),
                engine.storage_errors(db.url),
                db.unit_of_work(),
            ):
                db.connection().execute(text(f"DELETE FROM {table}"))  # noqa: S608
    finally:
        db.dispose()


def test_revoking_every_live_token_runs_past_the_statement_timeout(
    pg_url: str, short_bounds: float
) -> None:
    """An operator's revocation of every live token of a client (its disable) or a user
    reads the audit trail and writes a revocation row per token: for a busy client, millions
    of records, as long as they take. Written here as one slow INSERT after the read."""
    db = engine.Database(pg_url)
    try:
        upgrade_to_head(db)
        store = SqlStatusListStore(db)
        with _slow(_schema(pg_url), "status_revocations", "INSERT", 2 * short_bounds):
            with db.unit_of_work():
                assert store.issued(since=0.0, client_id="busy-client") == []
                entry = StatusEntry(0, 7, time.time() + 600)
                assert store.revoke([entry], time.time()) == 1
            # A request's write to the same table is still cut.
            with (
                pytest.raises(StorageUnavailable, match="statement timeout"),
                engine.storage_errors(db.url),
                db.unit_of_work(),
            ):
                store.revoke([StatusEntry(0, 8, time.time() + 600)], time.time())
    finally:
        db.dispose()


def test_migrations_run_past_the_statement_timeout(pg_url: str, short_bounds: float) -> None:
    db = engine.Database(pg_url)
    try:
        upgrade_to_head(db)
        head = migrate.current_revision(db)
        # Every migration writes its revision: each one here is as slow as a long one.
        with _slow(_schema(pg_url), "alembic_version", "UPDATE", 2 * short_bounds):
            migrate.downgrade(db, "-1")
            assert migrate.current_revision(db) != head
            assert upgrade_to_head(db)[1] == head
    finally:
        db.dispose()


def test_db_copy_runs_past_the_statement_timeout(
    pg_url: str, tmp_path: Path, short_bounds: float
) -> None:
    source = engine.Database(f"sqlite:///{tmp_path / 'source.db'}")
    target = engine.Database(pg_url)
    try:
        upgrade_to_head(source)
        with source.unit_of_work():
            SqlRevocationStore(source).revoke("jti-1", "client-1", time.time() + 3600, time.time())
        upgrade_to_head(target)
        with _slow(_schema(pg_url), "revoked_tokens", "INSERT", 2 * short_bounds):
            result = copy_database(source, pg_url)
        assert result.rows["revoked_tokens"] == 1
    finally:
        source.dispose()
        target.dispose()
