"""Migrations: one head, up and down and up again, and the models match the migrations
(``alembic check``), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy import insert
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy import text

from authserver.errors import ConfigError
from authserver.errors import StorageError
from authserver.settings import redact_url
from authserver.storage.sql.engine import Database
from authserver.storage.sql.migrate import alembic_config
from authserver.storage.sql.migrate import current_revision
from authserver.storage.sql.migrate import downgrade
from authserver.storage.sql.migrate import ensure_schema
from authserver.storage.sql.migrate import head_revision
from authserver.storage.sql.migrate import known_revisions
from authserver.storage.sql.migrate import migrations_dir
from authserver.storage.sql.migrate import upgrade_to_head
from authserver.storage.sql.tables import CLIENTS
from authserver.storage.sql.tables import LOCKS
from authserver.storage.sql.tables import metadata
from tests import conftest
from tests.conftest import fresh_pg_schema
from tests.conftest import migrate


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    db.dispose()


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def _diffs(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "compare_server_default": True},
        )
        return list(compare_metadata(context, metadata))


# -- the script directory (no database) ----------------------------------------------------------


def test_exactly_one_head() -> None:
    heads = _script().get_heads()
    assert len(heads) == 1, f"several migration heads, merge them: {heads}"
    assert head_revision() == heads[0]


def test_history_is_linear_from_one_base() -> None:
    script = _script()
    assert len(script.get_bases()) == 1
    revisions = list(script.walk_revisions())
    for revision in revisions:
        down = revision.down_revision
        assert down is None or isinstance(down, str), f"{revision.revision} is a merge point"


def test_migration_files_are_named_date_first() -> None:
    versions = migrations_dir() / "versions"
    files = sorted(p for p in versions.glob("*.py") if p.name != "__init__.py")
    assert files, versions
    by_file = {Path(rev.path).name: rev.revision for rev in _script().walk_revisions()}
    for path in files:
        assert re.match(r"^\d{8}_\d{4}_[A-Za-z0-9]+_[a-z0-9_]+\.py$", path.name), path.name
        assert f"_{by_file[path.name]}_" in path.name
    # Date-first names sort in history order.
    order = [rev.revision for rev in reversed(list(_script().walk_revisions()))]
    assert [by_file[p.name] for p in files] == order


def test_known_revisions_are_alembics() -> None:
    assert known_revisions() == {rev.revision for rev in _script().walk_revisions()}


# -- on real databases ---------------------------------------------------------------------------


def test_upgrade_creates_every_model_table(database: Database) -> None:
    before, after = upgrade_to_head(database)
    assert before is None
    assert after == head_revision()
    assert current_revision(database) == head_revision()
    assert _tables(database) == set(metadata.tables)


def test_models_match_migrations(database: Database) -> None:
    upgrade_to_head(database)
    diffs = _diffs(database)
    assert diffs == [], "models and migrations differ; add a migration:\n" + "\n".join(
        map(repr, diffs)
    )


def test_upgrade_downgrade_upgrade(database: Database) -> None:
    upgrade_to_head(database)
    downgrade(database, "base")
    assert current_revision(database) is None
    assert _tables(database) == set()
    before, after = upgrade_to_head(database)
    assert (before, after) == (None, head_revision())
    assert _tables(database) == set(metadata.tables)
    assert _diffs(database) == []
    # The seeded lock row comes back too.
    with database.unit_of_work():
        conn = database.connection()
        assert conn.scalar(select(LOCKS.c.name)) == "signing_keys"


def test_each_revision_steps_up_and_down(database: Database) -> None:
    order = [rev.revision for rev in reversed(list(_script().walk_revisions()))]
    with database.engine.connect() as conn:
        for revision in order:
            command.upgrade(alembic_config(conn), revision)
            conn.commit()
            assert MigrationContext.configure(conn).get_current_revision() == revision
            assert current_revision(database) == revision  # the CLI's check, without Alembic
        for revision, previous in reversed(list(zip(order, [None, *order[:-1]], strict=True))):
            assert MigrationContext.configure(conn).get_current_revision() == revision
            command.downgrade(alembic_config(conn), previous or "base")
            conn.commit()
        assert MigrationContext.configure(conn).get_current_revision() is None
    assert current_revision(database) is None
    assert _tables(database) == set()


def test_upgrade_to_head_twice_is_a_no_op(database: Database) -> None:
    upgrade_to_head(database)
    with database.unit_of_work():
        conn = database.connection()
        conn.execute(
            insert(CLIENTS).values(
                client_id="as_client_keep",
                name="kept",
                secret_hash=None,
                audiences=[],
                scopes=[],
                allowed_claims=[],
                token_ttl=None,
                enabled=True,
                jwks=None,
                jwks_uri=None,
                created_at=1.0,
                updated_at=1.0,
            )
        )
    tables = _tables(database)
    before, after = upgrade_to_head(database)
    assert before == after == head_revision()
    assert _tables(database) == tables
    assert _diffs(database) == []
    with database.unit_of_work():
        conn = database.connection()
        assert conn.scalars(select(CLIENTS.c.client_id)).all() == ["as_client_keep"]
        assert conn.scalars(select(LOCKS.c.name)).all() == ["signing_keys"]


def test_a_schema_from_a_newer_version_is_left_alone_with_one_line(database: Database) -> None:
    # A deployment rolled back after a newer authserver migrated the database: Alembic
    # cannot find the revision (it raised CommandError, a traceback from 'db upgrade'), and
    # 'run authserver db upgrade' is the wrong advice.
    upgrade_to_head(database)
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    for attempt in (
        lambda: upgrade_to_head(database),
        lambda: ensure_schema(database, create=True, upgrade=True),
        lambda: ensure_schema(database, create=False, upgrade=False),
    ):
        with pytest.raises(ConfigError) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith(
            f"AUTHSERVER_DATABASE_URL: the schema of the database at {redact_url(database.url)} "
            "is at revision 9999"
        )
        assert "newer version" in message
        assert "db upgrade" not in message
    assert current_revision(database) == "9999"


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        # Emptied by hand: "empty, run db upgrade" was the wrong advice (the upgrade then
        # failed creating the first table).
        ("DELETE FROM alembic_version", "schema revision is gone (alembic_version is empty)"),
        # Dropped: called "empty" too, and 'db upgrade' then failed on an opaque
        # OperationalError.
        ("DROP TABLE alembic_version", "schema revision is gone (no alembic_version table)"),
    ],
    ids=["emptied", "dropped"],
)
def test_a_schema_whose_revision_was_deleted_is_not_taken_for_an_empty_database(
    database: Database, sql: str, said: str
) -> None:
    """The version table emptied or dropped, every other table still there."""
    upgrade_to_head(database)
    with database.engine.begin() as conn:
        conn.execute(text(sql))
    for attempt in (
        lambda: current_revision(database),
        lambda: upgrade_to_head(database),
        lambda: ensure_schema(database, create=True, upgrade=True),
    ):
        with pytest.raises(StorageError) as refused:
            attempt()
        assert said in str(refused.value)


@pytest.mark.parametrize("change", ["upgrade", "downgrade"])
def test_a_migration_committed_while_the_revision_is_read_is_never_a_lost_revision(
    database: Database, db_url: str, change: str
) -> None:
    """Two instances start on one empty database: one migrates while the other reads the
    revision (or an operator downgrades to base meanwhile). The reads are separate
    statements, and the change commits right after the first of them: the reader must
    see the database before or after it, never tables without a revision (it stopped
    with "schema revision is gone": a test failure on the upgrade, a review's finding on
    the downgrade)."""
    if change == "downgrade":
        upgrade_to_head(database)
    other = Database(db_url)
    changed: list[object] = []

    def change_once(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        # After the reader's first read (not after its BEGIN or isolation setting).
        if not changed and statement.lstrip().upper().startswith(("SELECT", "PRAGMA")):
            changed.append(
                upgrade_to_head(other) if change == "upgrade" else downgrade(other, "base")
            )

    event.listen(database.engine, "after_cursor_execute", change_once)
    try:
        assert current_revision(database) in (None, head_revision())
    finally:
        event.remove(database.engine, "after_cursor_execute", change_once)
        other.dispose()
    assert len(changed) == 1
    assert current_revision(database) == (head_revision() if change == "upgrade" else None)


def test_a_schema_downgraded_to_nothing_is_empty_again(database: Database) -> None:
    """Version table or not: a database downgraded to base holds no authserver table."""
    upgrade_to_head(database)
    downgrade(database, "base")
    assert current_revision(database) is None


def _schema(db: Database) -> dict[str, object]:
    """Everything the inspector sees of each table, for comparing two databases."""
    inspector = inspect(db.engine)
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            inspector.get_pk_constraint(table),
            sorted(inspector.get_indexes(table), key=lambda i: str(i["name"])),
            inspector.get_foreign_keys(table),
            inspector.get_unique_constraints(table),
        )
        for table in inspector.get_table_names()
    }


def test_the_suites_replayed_migration_is_the_migrated_schema(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """tests/conftest.py migrates the first empty database per dialect with Alembic, then
    starts every new SQLite file as a copy of the first and replays the recorded
    statements on every new PostgreSQL schema: either must be the migrated database, rows
    included, and a copied file is owner-only as authserver makes its own."""
    upgrade_to_head(database)  # Alembic, for real
    with ExitStack() as stack:

        def empty_database(name: str) -> Database:
            if db_url.startswith("sqlite"):
                url = f"sqlite:///{tmp_path / name}.db"
            else:
                url = stack.enter_context(fresh_pg_schema())
            db = Database(url)
            stack.callback(db.dispose)
            return db

        migrate(empty_database("first"))  # records, unless a test before did
        replayed = empty_database("replayed")
        migrate(replayed)
        assert conftest._MIGRATION_SQL[database.engine.dialect.name]
        assert current_revision(replayed) == head_revision()
        assert _diffs(replayed) == []
        assert _schema(replayed) == _schema(database)
        with replayed.engine.connect() as a, database.engine.connect() as b:
            assert a.execute(select(LOCKS)).all() == b.execute(select(LOCKS)).all()
        if db_url.startswith("sqlite"):
            assert conftest._SQLITE_TEMPLATE
            assert (tmp_path / "replayed.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("start", [None, "0001"], ids=["empty", "behind"])
def test_a_schema_another_process_migrated_meanwhile_is_not_reported_as_changed(
    database: Database, db_url: str, start: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances start on one empty (or old) database: both read that it needs the
    migrations, one migrates, the other then finds it done under the lock. Both logged
    "database schema created" (serve) although one of them changed nothing."""
    from authserver.storage.sql import migrate as migrate_module

    if start is not None:
        with database.engine.connect() as conn:
            command.upgrade(alembic_config(conn), start)
            conn.commit()
    seen = current_revision(database)
    assert seen == start
    other = Database(db_url)
    try:
        upgrade_to_head(other)  # the other instance, after this one's read
    finally:
        other.dispose()
    monkeypatch.setattr(migrate_module, "current_revision", lambda db: seen)
    assert ensure_schema(database, create=True, upgrade=True) is None
    monkeypatch.undo()
    assert current_revision(database) == head_revision()
