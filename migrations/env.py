"""Alembic environment. authserver configures Alembic in code (``storage/sql/migrate.py``)
and hands a connection in ``config.attributes["connection"]``; running ``alembic`` by hand
also works with ``AUTHSERVER_DATABASE_URL`` set."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from authserver.storage.sql.tables import metadata as target_metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from authserver.settings import Settings
    from authserver.storage.sql.engine import make_engine

    engine = make_engine(Settings.from_env().database_url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("authserver migrations run online only")
run_migrations_online()
