"""``storage/sql/copy.py``: every table copied exactly, in both directions between SQLite
and PostgreSQL, and the refusals. The whole command, with servers on both ends, is
``tests/e2e/test_db_copy.py``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select

from authserver.errors import ConfigError
from authserver.errors import StorageError
from authserver.storage.sql.copy import copy_database
from authserver.storage.sql.engine import Database
from authserver.storage.sql.migrate import downgrade
from authserver.storage.sql.migrate import head_revision
from authserver.storage.sql.migrate import known_revisions
from authserver.storage.sql.tables import AUDIT_EVENTS
from authserver.storage.sql.tables import USED_ASSERTIONS as USED
from authserver.storage.sql.tables import metadata
from tests.conftest import empty_database
from tests.conftest import fresh_pg_schema
from tests.conftest import migrate
from tests.conftest import require_postgres
from tests.helpers import run_cli_here

#: Values each dialect could bend: binary with NUL and high bytes, floats that do not
#: round-trip through a decimal shortcut, JSON null beside SQL NULL, booleans, non-ASCII.
PEM = bytes(range(256)) * 3
AT = 1_764_000_000.123456789
TINY = 0.1 + 0.2


def _rows() -> dict[str, list[dict[str, Any]]]:
    client = {
        "client_id": "as_client_a",
        "name": "Bücherei ✓",
        "secret_hash": "sha256$" + "a" * 64,
        "audiences": ["https://a.example", "https://b.example"],
        "scopes": [],
        "allowed_claims": ["libraryId"],
        "token_ttl": None,
        "require_sub": True,
        "enabled": False,
        "jwks": None,
        "jwks_uri": None,
        "created_at": AT,
        "updated_at": TINY,
        "profile": "verdant",
        "fixed_claims": {"url": "wss://x", "n": 1.5, "deep": {"a": [None, True]}},
        "previous_secret_hash": "sha256$" + "b" * 64,
        "previous_secret_expires_at": AT + 86400,
    }
    jwt_client = {
        **client,
        "client_id": "as_client_b",
        "secret_hash": None,
        "require_sub": False,
        "enabled": True,
        "jwks": {"keys": [{"kty": "RSA", "n": "xyz", "e": "AQAB"}]},
        "jwks_uri": "https://jwks.example/keys",
        "fixed_claims": JSON.NULL,  # a JSON null, not an SQL NULL
        "previous_secret_hash": None,
        "previous_secret_expires_at": None,
    }
    events = [
        {
            "id": n,
            "at": AT + n / 7,
            "actor": "cli",
            "action": "token.issued",
            "client_id": "as_client_a",
            "sub": None if n % 2 else f"user-{n}",
            "aud": "https://a.example",
            "jti": f"jti-{n}",
            "detail": None if n == 3 else {"status_list": 1, "status_idx": n, "f": TINY},
        }
        for n in (1, 2, 3, 5, 40)  # a gap: ids are copied, not renumbered
    ]
    return {
        "clients": [client, jwt_client],
        "signing_keys": [
            {
                "kid": "k1",
                "alg": "RS256",
                "private_pem": PEM,
                "public_jwk": {"kty": "RSA", "kid": "k1"},
                "created_at": AT,
                "activate_at": AT,
                "deactivate_at": None,
                "retired_at": None,
                "retention": 3600.0,
            },
            {
                "kid": "k0",
                "alg": "RS256",
                "private_pem": None,
                "public_jwk": {"kty": "RSA", "kid": "k0"},
                "created_at": 1.0,
                "activate_at": 1.0,
                "deactivate_at": AT,
                "retired_at": AT,
                "retention": None,
            },
        ],
        "locks": [{"name": "clients", "counter": 7}],
        "revoked_tokens": [
            {"jti": "r1", "client_id": "as_client_a", "revoked_at": AT, "expires_at": AT + 60}
        ],
        "used_assertions": [{"client_id": "as_client_b", "jti": "u1", "expires_at": AT + 5}],
        "purge_horizons": [{"name": "revocations", "horizon": AT - 5}],
        "audit_events": events,
        "status_blocks": [
            {"list_id": 1, "block": b, "leased_at": AT, "held_until": AT} for b in (0, 1)
        ],
        "status_revocations": [
            {"list_id": 1, "idx": 5, "revoked_at": AT, "expires_at": AT + 60},
            {"list_id": 1, "idx": 1030, "revoked_at": TINY, "expires_at": AT + 61},
        ],
    }


@pytest.fixture(params=["sqlite-to-postgresql", "postgresql-to-sqlite"])
def ends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, str]]:
    """A migrated source holding :func:`_rows`, and the URL of an empty target."""
    require_postgres()
    sqlite_url = f"sqlite:///{tmp_path / 'a.db'}"
    with fresh_pg_schema() as pg_url:
        source_url, target_url = (
            (sqlite_url, pg_url) if request.param.startswith("sqlite") else (pg_url, sqlite_url)
        )
        source = Database(source_url)
        migrate(source)
        with source.engine.begin() as conn:
            for name, rows in _rows().items():
                table = metadata.tables[name]
                if name == "locks":
                    conn.execute(insert(table), rows)
                    continue
                for row in rows:  # one by one: a JSON.NULL is a per-row value
                    conn.execute(insert(table).values(row))
        try:
            yield source, target_url
        finally:
            source.dispose()


def _dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in key order, with whether each JSON column is SQL NULL."""
    out = {}
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            nulls = [c.is_(None) for c in table.columns if isinstance(c.type, JSON)]
            query = select(table, *nulls).order_by(*table.primary_key.columns)
            out[table.name] = [tuple(row) for row in conn.execute(query)]
    return out


def test_every_table_is_copied_exactly_and_the_ids_move_on(ends: tuple[Database, str]) -> None:
    source, target_url = ends
    result = copy_database(source, target_url, batch_rows=2)
    assert list(result.rows) == [t.name for t in metadata.sorted_tables]
    # Every table holds rows here, so a table added to the metadata must be given some
    # (and is then checked to travel).
    assert all(result.rows.values()), result.rows
    assert result.rows["audit_events"] == 5
    assert result.revision == head_revision()
    assert result.created
    target = Database(target_url)
    try:
        copied = _dump(target)
        assert copied == _dump(source)
        assert dict(copied["locks"])["clients"] == 7
        with target.engine.begin() as conn:
            # The id is the database's to choose: past the copied ones (PostgreSQL: the
            # sequence was moved).
            new_id = conn.execute(
                insert(AUDIT_EVENTS)
                .values(at=AT, actor="cli", action="client.created")
                .returning(AUDIT_EVENTS.c.id)
            ).scalar_one()
        assert new_id == 41
        # A target that now holds rows is never written again.
        with pytest.raises(ConfigError, match="already holds authserver rows") as refused:
            copy_database(source, target_url)
        assert "6 in audit_events" in str(refused.value)
        with target.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(AUDIT_EVENTS)).scalar_one() == 6
    finally:
        target.dispose()


def test_a_failed_copy_leaves_no_rows(tmp_path: Path) -> None:
    """PostgreSQL refuses a NUL character that SQLite stores: the copy fails at the last
    table, after the others went in, naming the row, and the target holds none of their
    rows."""
    require_postgres()
    source = Database(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(source)
    rows = _rows()
    assert metadata.sorted_tables[-1] is USED  # the failing table is written last
    with source.engine.begin() as conn:
        conn.execute(insert(metadata.tables["clients"]).values(rows["clients"][0]))
        conn.execute(insert(AUDIT_EVENTS).values(at=AT, actor="cli", action="x"))
        conn.execute(insert(USED), {"client_id": "c", "jti": "nul\x00", "expires_at": AT})
    try:
        with fresh_pg_schema() as pg_url:
            with pytest.raises(ConfigError) as refused:
                copy_database(source, pg_url)
            # Named before the driver is asked (it said "database error ... (DataError)").
            assert str(refused.value) == (
                "the used_assertions row 'c', 'nul\\x00' of the source holds jti with a NUL "
                "character, which PostgreSQL text cannot hold: nothing was copied; mend or "
                "delete that row first"
            )
            target = Database(pg_url)
            try:
                with target.engine.connect() as conn:
                    for table in metadata.sorted_tables:
                        if table.name != "locks":
                            count = conn.execute(select(func.count()).select_from(table))
                            assert count.scalar_one() == 0, table.name
            finally:
                target.dispose()
            # Nothing was left behind: the same target takes the copy once the row is fixed.
            with source.engine.begin() as conn:
                conn.execute(USED.update().values(jti="nul"))
            copied = copy_database(source, pg_url).rows
            assert (copied["audit_events"], copied["used_assertions"]) == (1, 1)
    finally:
        source.dispose()


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_a_source_row_whose_json_is_damaged_is_named_and_nothing_is_copied(
    tmp_path: Path, target: str
) -> None:
    """A SQLite file holds JSON as text, which can be damaged (the clients list reports
    such a row as unreadable). SQLAlchemy's JSON type failed the whole read with a
    JSONDecodeError: a traceback from ``db copy``, to either database, naming no row. Now
    the copy is refused naming the row and column, and the target holds nothing."""
    source_url = f"sqlite:///{tmp_path / 'a.db'}"
    source = Database(source_url)
    migrate(source)
    rows = _rows()
    clients = metadata.tables["clients"]
    with source.engine.begin() as conn:
        for row in rows["clients"]:
            conn.execute(insert(clients).values(row))
        conn.execute(insert(AUDIT_EVENTS).values(at=AT, actor="cli", action="x"))
        conn.exec_driver_sql(
            "UPDATE clients SET audiences = 'not json {' WHERE client_id = 'as_client_b'"
        )
    expected = (
        "the clients row 'as_client_b' of the source holds audiences that is not JSON: "
        "nothing was copied"
    )
    try:
        with ExitStack() as stack:
            target_url = stack.enter_context(empty_database(target, tmp_path, "b.db"))
            with pytest.raises(ConfigError) as refused:
                copy_database(source, target_url)
            assert str(refused.value).startswith(expected)
            copied = Database(target_url)
            try:
                with copied.engine.connect() as conn:
                    for table in (clients, AUDIT_EVENTS):
                        assert conn.execute(select(func.count()).select_from(table)).scalar() == 0
            finally:
                copied.dispose()
            result = run_cli_here(
                {"AUTHSERVER_DATABASE_URL": source_url}, "db", "copy", "--to", target_url
            )
            assert result.returncode != 0
            assert result.stderr.splitlines() == [f"authserver: error: {refused.value}"]
    finally:
        source.dispose()


def test_text_longer_than_its_postgresql_column_is_named_and_nothing_is_copied(
    tmp_path: Path,
) -> None:
    """SQLite ignores a VARCHAR's length; PostgreSQL refuses a longer value, which was the
    driver's "database error ... (DataError)" for the whole copy, naming nothing."""
    require_postgres()
    source = Database(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(source)
    client = {**_rows()["clients"][0], "name": "n" * 201}
    with source.engine.begin() as conn:
        conn.execute(insert(metadata.tables["clients"]).values(client))
    try:
        with fresh_pg_schema() as pg_url, pytest.raises(ConfigError) as refused:
            copy_database(source, pg_url)
        assert str(refused.value).startswith(
            "the clients row 'as_client_a' of the source holds name with more than the "
            "column's 200 characters: nothing was copied"
        )
    finally:
        source.dispose()


def test_refusals(tmp_path: Path) -> None:
    require_postgres()
    path = tmp_path / "a.db"
    source = Database(f"sqlite:///{path}")
    migrate(source)
    try:
        # The same file, however spelled.
        for same in (f"sqlite:///{path}", f"sqlite:///{tmp_path}/./a.db"):
            with pytest.raises(ConfigError, match="is the database being copied"):
                copy_database(source, same)
        with fresh_pg_schema() as pg_url:
            pg = Database(pg_url)
            migrate(pg)
            try:
                with pytest.raises(ConfigError, match="is the database being copied"):
                    copy_database(pg, pg_url.replace("127.0.0.1", "localhost"))
                # An older source is never copied (nor migrated).
                older = max(known_revisions() - {head_revision()})
                downgrade(pg, older)
                with pytest.raises(ConfigError, match=r"run 'authserver db upgrade' first"):
                    copy_database(pg, f"sqlite:///{tmp_path / 'b.db'}")
            finally:
                pg.dispose()
        assert not (tmp_path / "b.db").exists()
    finally:
        source.dispose()


def test_the_command_refuses_in_one_line_without_the_password(tmp_path: Path) -> None:
    """Bad target URLs through the command: one line on stderr, a non-zero exit, no
    password (there is none in the source URL either way)."""
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    source = Database(env["AUTHSERVER_DATABASE_URL"])
    migrate(source)
    source.dispose()
    for to, says in (
        ("postgresql://u:s3cr3t@localhost:notaport/db", "--to: not a valid SQLAlchemy URL"),
        ("postgresql://u:s3cr3t@127.0.0.1:19199/db", "connection refused"),
        ("postgresql://u:s3cr3t@@127.0.0.1/db", "--to: has more than one @"),
        ("sqlite://", "--to: is an in-memory SQLite database"),
        ("mysql://u:s3cr3t@h/db", "--to: no driver"),
        ("authserver.db", "--to: must be a SQLAlchemy URL"),
    ):
        result = run_cli_here(env, "db", "copy", "--to", to)
        assert result.returncode != 0, to
        error = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(error) == 1, (to, result.stderr)
        assert says in error[0], (to, result.stderr)
        assert "Traceback" not in result.stderr
        assert "s3cr3t" not in result.stdout + result.stderr, result.stderr


def test_a_failed_write_names_the_target_not_the_source(tmp_path: Path) -> None:
    """Every write to the target fails as the target's error, also the one that clears the
    rows the migrations seeded (``locks``), which runs while the source is being read."""
    source = Database(f"sqlite:///{tmp_path / 'source.db'}")
    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    target = Database(target_url)
    try:
        migrate(source)
        migrate(target)
        with target.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER keep_locks BEFORE DELETE ON locks "
                "BEGIN SELECT RAISE(ABORT, 'no'); END"
            )
        with pytest.raises(StorageError) as refused:
            copy_database(source, target_url)
        assert "target.db" in str(refused.value)
        assert "source.db" not in str(refused.value)
    finally:
        target.dispose()
        source.dispose()
