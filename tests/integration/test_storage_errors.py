"""Storage failures leave the storage layer as domain errors (``authserver.errors``):
``StorageUnavailable`` for a database that cannot do it now, ``StorageError`` for the rest.

Each case is a real failure of a real database (a SQLite file locked by another
connection or gone with its directory, a PostgreSQL port where nothing listens, a pool
with no free connection), seen once at the store and once through the app, which answers
the 503 ``temporarily_unavailable`` with ``Retry-After`` it always has.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import stat
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from authserver import container
from authserver import doctor
from authserver.clients.model import ClientId
from authserver.container import Services
from authserver.errors import ConfigError
from authserver.errors import StorageError
from authserver.errors import StorageUnavailable
from authserver.settings import Settings
from authserver.settings import redact_url
from authserver.storage.sql import raw
from authserver.storage.sql.clients import SqlClientStore
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import storage_error
from authserver.storage.sql.migrate import current_revision
from authserver.web.app import create_app
from authserver.web.errors import render_exception
from tests.conftest import PG_URL
from tests.conftest import make_services
from tests.conftest import migrate
from tests.conftest import require_postgres
from tests.factories import issue_token
from tests.factories import request_token
from tests.helpers import free_port
from tests.helpers import run_cli_here

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-token-for-storage-errors-0123456789"
UNAVAILABLE = {
    "error": "temporarily_unavailable",
    "error_description": "the database is unavailable",
}


def _settings(url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": url,
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
            "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
        }
    )


@contextmanager
def _serving(url: str, tmp_path: Path) -> Iterator[tuple[Services, Any, tuple[str, str]]]:
    """Services on a migrated database with a key and a client, the app's test client,
    and that client's credentials; a first token proves the setup serves."""
    svc = make_services(_settings(url, tmp_path))
    try:
        with svc.unit_of_work():
            client, secret = svc.clients.create(name="storage errors")
        assert secret is not None
        http = create_app(services=svc).test_client()
        credentials = (str(client.client_id), secret)
        issue_token(http, credentials)
        yield svc, http, credentials
    finally:
        svc.close()


def _admin_create(http: Any) -> Any:
    return http.post(
        "/admin/clients",
        json={"name": "during the failure"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )


def _assert_every_read_fails(svc: Services, client_id: ClientId, expected: str) -> None:
    """Each way storage is read fails with ``StorageUnavailable`` saying *expected*, with
    the driver's ``OperationalError`` as its cause: the raw read path outside a session,
    an ORM session, the schema check, the ping and the counter read."""

    def in_a_session() -> None:
        with svc.unit_of_work():
            svc.clients.list()

    reads: list[Callable[[], object]] = [
        lambda: svc.clients.get(client_id),  # Database.read_one, outside a session
        in_a_session,
        lambda: current_revision(svc.db),
        svc.db.ping,
        lambda: svc.db.read_counter("clients"),  # the cache version read of every token request
        lambda: svc.db.read_one("SELECT 1"),
    ]
    for read in reads:
        with pytest.raises(StorageUnavailable) as raised:
            read()
        assert str(raised.value) == expected
        assert isinstance(raised.value.__cause__, OperationalError)


def _assert_the_503(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json() == UNAVAILABLE
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_locked_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another connection holds SQLite's write lock past the busy timeout: a write is
    ``StorageUnavailable`` (the driver's "database is locked" is its cause, not its text),
    and the token endpoint (its commit) and the admin API (its INSERT) answer 503."""
    monkeypatch.setattr(raw, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "a.db"
    with _serving(f"sqlite:///{path}", tmp_path) as (svc, http, credentials):
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StorageUnavailable) as raised, svc.unit_of_work():
                svc.clients.create(name="while locked")
            cause = raised.value.__cause__
            assert isinstance(cause, OperationalError)
            assert "database is locked" in str(cause)
            assert str(raised.value) == (
                f"cannot use the database at sqlite:///{path}: the SQLite file stayed locked "
                "by another process past the busy timeout (a long transaction or a backup "
                "holding it?)"
            )
            _assert_the_503(request_token(http, credentials))
            _assert_the_503(_admin_create(http))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        issue_token(http, credentials)
        assert _admin_create(http).status_code == 201


def test_an_unreachable_sqlite_file(tmp_path: Path) -> None:
    """The database's directory is gone (a volume not mounted) when a worker starts:
    reads on the raw path and in a session, the schema check, the ping and the counter
    read are all
    ``StorageUnavailable`` saying the file cannot be opened; /token answers 503."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'a.db'}"
    with _serving(url, tmp_path) as (_svc, _http, credentials):
        pass
    shutil.rmtree(data)
    svc = container.build(_settings(url, tmp_path))
    try:
        expected = (
            f"cannot use the database at {url}: cannot open the SQLite file (does its "
            "directory exist, and may this user write there?)"
        )
        _assert_every_read_fails(svc, ClientId(credentials[0]), expected)
        _assert_the_503(request_token(create_app(services=svc).test_client(), credentials))
    finally:
        svc.close()


def test_a_file_that_is_not_a_sqlite_database_is_named_so(tmp_path: Path) -> None:
    """Overwritten with something else: the operator reads why, not the exception's class."""
    path = tmp_path / "a.db"
    path.write_bytes(b"not a database at all, " * 64)
    db = Database(f"sqlite:///{path}")
    try:
        with pytest.raises(StorageUnavailable) as raised:
            current_revision(db)
        assert str(raised.value) == (
            f"cannot use the database at sqlite:///{path}: the file is not a SQLite database "
            "(overwritten or corrupted)"
        )
    finally:
        db.dispose()


def test_a_removed_sqlite_file_is_not_created_again(tmp_path: Path) -> None:
    """The file alone is gone when a worker starts (a restore done as remove-then-copy):
    the per-request counter read fails instead of leaving an empty file with the
    process umask behind (a copy over it would keep that mode); whatever exists after
    a token request is owner-only."""
    path = tmp_path / "a.db"
    url = f"sqlite:///{path}"
    with _serving(url, tmp_path):
        pass
    for name in ("a.db", "a.db-wal", "a.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    svc = container.build(_settings(url, tmp_path))
    try:
        with pytest.raises(StorageUnavailable):
            svc.db.read_counter("clients")
        assert not path.exists()
        _assert_the_503(request_token(create_app(services=svc).test_client(), ("as_x", "y")))
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        svc.close()


def test_postgres_refusing_connections(tmp_path: Path) -> None:
    """Nothing listens on the port: ``StorageUnavailable`` naming the cause in words and
    the URL without its password, on the raw read path, in a session, for the schema,
    the ping and the counter read; /token and the admin API answer 503."""
    port = free_port()
    url = f"postgresql+psycopg://authserver:pw-5e1d77@127.0.0.1:{port}/authserver"
    svc = container.build(_settings(url, tmp_path))
    try:
        expected = (
            f"cannot use the database at postgresql+psycopg://authserver:***@127.0.0.1:{port}"
            "/authserver: connection refused (is the database server running on that host "
            "and port?)"
        )
        _assert_every_read_fails(svc, ClientId("as_nobody"), expected)
        http = create_app(services=svc).test_client()
        _assert_the_503(request_token(http, ("as_nobody", "secret")))
        _assert_the_503(_admin_create(http))
    finally:
        svc.close()


@contextmanager
def _postgres_database(encoding: str) -> Iterator[str]:
    """A new, empty PostgreSQL database in *encoding* (C locale), dropped afterwards."""
    import psycopg

    require_postgres()
    name = f"authserver_{encoding.lower()}_{secrets.token_hex(4)}"
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    try:
        yield str(make_url(PG_URL).set(drivername="postgresql+psycopg", database=name))
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_postgres_database_not_in_utf8_is_refused_at_the_first_connection(
    tmp_path: Path, encoding: str
) -> None:
    """SQLite stores any Unicode text. A LATIN1 database refused a client name or a user
    id outside Latin-1 with an error that became a traceback in the CLI, a 500 at the
    admin API and a batch of token.issued records no flush could write; from a SQL_ASCII
    one psycopg returns bytes, and even ``db upgrade`` died with a TypeError. Now the first
    connection is refused, saying why and what to do, by the CLI (one line), by ``doctor``
    (a problem) and for the app."""
    with _postgres_database(encoding) as url:
        expected = (
            f"AUTHSERVER_DATABASE_URL: the PostgreSQL database at {redact_url(url)} has the "
            f"encoding {encoding}; authserver stores Unicode text and needs a UTF8 database"
        )
        env = {
            "AUTHSERVER_DATABASE_URL": url,
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
        }
        for args in (("db", "upgrade"), ("clients", "create", "--name", "山田 backend")):
            result = run_cli_here(env, *args)
            assert result.returncode != 0, result.stdout
            assert result.stderr.splitlines()[0].startswith(f"authserver: error: {expected}")
            assert "Traceback" not in result.stderr
        findings = doctor.run(_settings(url, tmp_path), check_issuer=False)
        database = next(f for f in findings if f.check == "database")
        assert (database.status, database.detail[: len(expected)]) == ("problem", expected)
        db = Database(url)
        try:
            with pytest.raises(ConfigError, match="needs a UTF8 database"), db.unit_of_work():
                db.connection()
        finally:
            db.dispose()


def test_no_free_pooled_connection(db_url: str) -> None:
    """Every pooled connection is taken and the wait runs out (SQLAlchemy's pool
    ``TimeoutError``, not a driver error): ``StorageUnavailable`` too."""
    db = Database(db_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        migrate(db)
        store = SqlClientStore(db)
        # The test holds the only connection.
        with db.engine.connect(), pytest.raises(StorageUnavailable) as raised, db.unit_of_work():
            store.list()
        assert isinstance(raised.value.__cause__, PoolTimeoutError)
        with db.unit_of_work():
            assert store.list() == []
    finally:
        db.dispose()


def test_a_failed_commit_of_the_flask_layer(tmp_path: Path) -> None:
    """The commit at the end of an admin request fails (the database went away after the
    handler ran): the unit of work raises ``StorageUnavailable`` and the Flask app answers
    the 503, not the handler's 201. (The lean layer's commit: test_db_outage.py.)"""
    with _serving(f"sqlite:///{tmp_path / 'a.db'}", tmp_path) as (svc, http, _credentials):

        def fail_commit(_conn: Any) -> None:
            raise OperationalError("COMMIT", None, Exception("server closed the connection"))

        event.listen(svc.db.engine, "commit", fail_commit)
        try:
            with pytest.raises(StorageUnavailable), svc.unit_of_work():
                svc.clients.create(name="lost at commit")
            _assert_the_503(_admin_create(http))
        finally:
            event.remove(svc.db.engine, "commit", fail_commit)
        assert _admin_create(http).status_code == 201


def test_sqlalchemy_s_own_errors_are_a_storage_error_and_a_500() -> None:
    """An error SQLAlchemy raises itself (a misuse: a storage bug) is a ``StorageError``
    that is not ``StorageUnavailable``: retrying will not fix it, so the web layer answers
    500 as for any bug, while the CLI still prints its one line."""
    url = "postgresql+psycopg://u:pw-5e1d77@db.example/authserver"
    error = storage_error(InvalidRequestError("misuse"), url)
    assert type(error) is StorageError
    assert str(error) == (
        "database error at postgresql+psycopg://u:***@db.example/authserver (InvalidRequestError)"
    )
    status, body, headers = render_exception(error)
    assert (status, body["error"], headers) == (500, "server_error", [])
    unavailable = storage_error(OperationalError("SELECT 1", None, Exception("boom")), url)
    assert type(unavailable) is StorageUnavailable
    assert render_exception(unavailable)[0] == 503


def test_doctor_names_an_unreadable_sql_key_store_in_an_operator_s_words(tmp_path: Path) -> None:
    """A migrated database whose key table cannot be read: doctor's key store finding is
    the storage error's own message (what failed and where), not just an exception name."""
    path = tmp_path / "a.db"
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{path}",
            "AUTHSERVER_KEY_STORE": "sql",
            "AUTHSERVER_ISSUER": "http://localhost:8000",
        }
    )
    make_services(settings).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE signing_keys")
    findings = {f.check: f for f in doctor.run(settings, check_issuer=False)}
    assert findings["schema"].status == "ok"
    key_store = findings["key store"]
    assert key_store.status == "problem"
    assert key_store.detail == f"unreadable: database error at sqlite:///{path} (OperationalError)"
