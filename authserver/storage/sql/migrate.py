"""Alembic, configured in code: the one path to the schema, for ``db upgrade`` and ``serve``.

``migrations/`` sits at the top of the repository and ships inside the wheel as
``authserver/_migrations`` (pyproject.toml force-include); :func:`migrations_dir` finds
whichever this installation has.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy import text

from authserver.storage.sql.engine import Database

#: An arbitrary constant: the PostgreSQL advisory lock id held while migrating.
MIGRATION_LOCK_ID = 0x61757468  # "auth"


def migrations_dir() -> Path:
    packaged = Path(str(importlib.resources.files("authserver"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    source = Path(__file__).resolve().parents[3] / "migrations"
    if (source / "env.py").is_file():
        return source
    raise RuntimeError("the migrations directory is missing from this installation")


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option(
        "file_template",
        "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s",
    )
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_to_head(db: Database) -> tuple[str | None, str | None]:
    """Apply every pending migration, serialised across processes.

    PostgreSQL: a transaction-level advisory lock, so N workers and M instances starting
    on an empty database migrate once. SQLite: ``BEGIN IMMEDIATE`` takes the write lock
    before Alembic looks at the version table.

    :returns: (revision before, revision after).
    """
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        before = MigrationContext.configure(conn).get_current_revision()
        command.upgrade(alembic_config(conn), "head")
        after = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
    return before, after


def downgrade(db: Database, revision: str) -> None:
    with db.engine.connect() as conn:
        command.downgrade(alembic_config(conn), revision)
        conn.commit()
