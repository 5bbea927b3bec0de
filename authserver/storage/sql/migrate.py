"""Alembic, configured in code: the one path to the schema, for ``db upgrade`` and ``serve``.

``migrations/`` sits at the top of the repository and ships inside the wheel as
``authserver/_migrations`` (pyproject.toml force-include); :func:`migrations_dir` finds
whichever this installation has.

Every command checks the schema's revision before it works, but only ``serve`` and ``db``
migrate: the check reads Alembic's version table with one query and compares it with
:data:`SCHEMA_HEAD`, so a command that does not migrate never imports Alembic (a fifth of
the CLI's start-up). ``tests/integration/test_migrations.py`` pins both to Alembic's own
answers.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy import inspect
from sqlalchemy import text

from authserver.errors import ConfigError
from authserver.errors import StorageError
from authserver.settings import redact_url
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import lock_wait
from authserver.storage.sql.engine import sqlite_file
from authserver.storage.sql.engine import storage_errors
from authserver.storage.sql.engine import unbounded_statements

if TYPE_CHECKING:
    from alembic.config import Config

#: An arbitrary constant: the PostgreSQL advisory lock id held while migrating.
MIGRATION_LOCK_ID = 0x61757468  # "auth"

#: The newest revision in ``migrations/versions``: a new migration moves it (the test of
#: the script directory fails until it does).
SCHEMA_HEAD = "0011"

#: Alembic's version table (its default name, which ``migrations/env.py`` keeps).
VERSION_TABLE = "alembic_version"

#: A table every revision of the schema has: its presence tells a database that holds the
#: schema from an empty one.
PROBE_TABLE = "clients"


def migrations_dir() -> Path:
    packaged = Path(str(importlib.resources.files("authserver"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    source = Path(__file__).resolve().parents[3] / "migrations"
    if (source / "env.py").is_file():
        return source
    raise RuntimeError("the migrations directory is missing from this installation")


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config  # only when migrating: see the module's docstring

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option(
        "file_template",
        "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s",
    )
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The revision this version of authserver needs."""
    return SCHEMA_HEAD


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this version's migrations know, read from their file names (the
    ``file_template`` above: ``<date>_<time>_<rev>_<slug>.py``) without importing Alembic.
    ``tests/integration/test_migrations.py`` pins it to Alembic's own list."""
    return frozenset(
        path.name.split("_")[2] for path in (migrations_dir() / "versions").glob("*_*_*_*.py")
    )


def unknown_revision(current: str, url: str) -> ConfigError:
    """The error for a schema at a revision no migration here knows: one written by a newer
    authserver (a deployment rolled back after its upgrade), which Alembic cannot upgrade
    from (or downgrade) and this version must not write to. Names the database at *url*
    (password masked), as every schema error does: a command stopped by one prints no
    line saying what it used."""
    return ConfigError(
        f"AUTHSERVER_DATABASE_URL: the schema of the database at {redact_url(url)} is at "
        f"revision {current}, which this version of authserver does not know (it needs "
        f"{SCHEMA_HEAD}): a newer version migrated this database; run that version, or "
        "point --database-url at another database"
    )


def current_revision(db: Database) -> str | None:
    """The schema's revision, None for a database without one.

    :raises StorageError: when the database cannot be read (see engine.storage_error), or
        holds several revisions (this project's history is linear: never written by it).
    """
    with storage_errors(db.url), db.engine.connect() as conn:
        # One snapshot for the reads of _revision: another process's migration or
        # downgrade committing between two of them would show tables without a revision.
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # deferred: WAL gives a read its snapshot
        return _revision(conn)


def upgrade_to_head(db: Database) -> tuple[str | None, str | None]:
    """Apply every pending migration, serialised across processes.

    PostgreSQL: a transaction-level advisory lock, so N workers and M instances starting
    on an empty database migrate once. SQLite: ``BEGIN IMMEDIATE`` takes the write lock
    before Alembic looks at the version table.

    :returns: (revision before, revision after).
    :raises StorageError: when the database fails (see engine.storage_error).
    :raises ConfigError: when the schema is at a revision this version does not know
        (:func:`unknown_revision`).
    """
    from alembic import command  # only when migrating: see the module's docstring

    with storage_errors(db.url), db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Without end: another process's migration holds it for as long as it runs
            # (several instances starting at once, ``db upgrade`` beside them). The
            # migration's own statements keep the connection's bounded lock waits.
            with lock_wait(conn, None):
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            # A migration rewriting a large table (an index on millions of audit events)
            # runs as long as it needs; its lock waits keep their bound.
            unbounded_statements(conn)
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        before = _revision(conn)
        if before is not None and before not in known_revisions():
            raise unknown_revision(before, db.url)
        command.upgrade(alembic_config(conn), "head")
        after = _revision(conn)
        conn.commit()
    return before, after


def _revision(conn: Connection) -> str | None:
    """The revision in Alembic's version table on *conn*, read with one query (no
    Alembic import: see the module's docstring).

    These are separate statements: the caller reads them in one snapshot
    (:func:`current_revision`) or under the migration lock (:func:`upgrade_to_head`,
    where no other upgrade can commit in between). The tables are looked at first all the
    same, so that a caller without either still never takes a migration committed between
    the reads for a lost revision: a migration commits its tables and its version
    together."""
    has_tables = inspect(conn).has_table(PROBE_TABLE)
    has_version_table = inspect(conn).has_table(VERSION_TABLE)
    rows = (
        conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if has_version_table
        else []
    )
    if len(rows) > 1:
        raise StorageError(f"the schema's version table holds several revisions: {rows}")
    if not rows and has_tables:
        # Not an empty database: migrating it would fail on the first table it creates,
        # and "empty" would send the operator the wrong way.
        where = f"{VERSION_TABLE} is empty" if has_version_table else f"no {VERSION_TABLE} table"
        raise StorageError(
            "the database holds authserver's tables but its schema revision is gone "
            f"({where}): restore it from a backup, or point --database-url at another "
            "database"
        )
    return rows[0] if rows else None


def downgrade(db: Database, revision: str) -> None:
    from alembic import command  # only when migrating: see the module's docstring

    with storage_errors(db.url), db.engine.connect() as conn:
        unbounded_statements(conn)  # as long as it needs, as an upgrade
        command.downgrade(alembic_config(conn), revision)
        conn.commit()


def database_missing(db: Database) -> bool:
    """True when *db* is a SQLite file that does not exist (connecting would create it)."""
    path = sqlite_file(db.url)
    return path is not None and not Path(path).exists()


def ensure_schema(db: Database, *, create: bool, upgrade: bool) -> str | None:
    """Bring the schema to what this version needs, as far as the caller may.

    Schema policy in one place: ``serve`` creates and upgrades (*create* and *upgrade*);
    commands that write create the schema on an empty database but never upgrade one
    (*create*); commands that only read create nothing, not even the SQLite file.

    :returns: ``"created"`` or ``"upgraded"`` when it changed the schema, else None.
    :raises ConfigError: naming what to run, when the schema is missing or behind, or
        saying that it is ahead (:func:`unknown_revision`).
    """
    if not create and database_missing(db):
        raise ConfigError(
            f"AUTHSERVER_DATABASE_URL: no database at {sqlite_file(db.url)}; start "
            "'authserver serve' or run 'authserver db upgrade' first, or point "
            "--database-url / AUTHSERVER_DATABASE_URL / --config at yours"
        )
    current = current_revision(db)
    head = head_revision()
    if current == head:
        return None
    if current is not None and current not in known_revisions():
        raise unknown_revision(current, db.url)
    if (current is None and create) or (current is not None and upgrade):
        # Under the migration lock: another process (an instance or worker starting beside
        # this one) may have migrated since the read above, and then this one changed
        # nothing and must not say it did.
        before, after = upgrade_to_head(db)
        if before == after:
            return None
        return "created" if before is None else "upgraded"
    if current is None:
        raise ConfigError(
            f"AUTHSERVER_DATABASE_URL: the database at {redact_url(db.url)} is empty (no "
            "authserver schema); start 'authserver serve' or run 'authserver db upgrade' "
            "first, or point --database-url / AUTHSERVER_DATABASE_URL / --config at yours"
        )
    raise ConfigError(
        f"AUTHSERVER_DATABASE_URL: the schema of the database at {redact_url(db.url)} is at "
        f"revision {current}, this version needs {head}; run 'authserver db upgrade'"
    )
