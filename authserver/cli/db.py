"""``authserver db``: schema migrations (with ``serve``, the only command that upgrades an
existing schema; the policy is ``storage/sql/migrate.py``, ``ensure_schema``) and the copy
of a database into another (``storage/sql/copy.py``)."""

from __future__ import annotations

import click

from authserver import container
from authserver.cli.context import handle_errors
from authserver.cli.context import json_option
from authserver.cli.context import load_settings
from authserver.cli.context import state
from authserver.cli.output import echo
from authserver.cli.output import emit_json
from authserver.cli.output import table
from authserver.errors import ConfigError
from authserver.settings import parse_database_url
from authserver.storage.sql import migrate
from authserver.storage.sql.copy import copy_database
from authserver.storage.sql.engine import sqlite_file


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
@json_option
@handle_errors
def upgrade(as_json: bool) -> None:
    """Apply the migrations in migrations/ (idempotent; creates the database if needed)."""
    settings = load_settings()
    state().used = settings
    svc = container.build(settings, readonly=True)
    try:
        missing = migrate.database_missing(svc.db)
        before, after = migrate.upgrade_to_head(svc.db)
    finally:
        svc.close()
    # Said as clients create says it ("created a new database: ..."): run from the wrong
    # directory, an upgrade before a deployment's upgrade made a new database there.
    if before is None and after is not None:
        state().schema_created(database_was_missing=missing)
    if as_json:
        emit_json({"from_revision": before, "to_revision": after})
    elif before == after:
        echo(f"database already at revision {after}")
    else:
        echo(f"upgraded database from {before or 'empty'} to {after}")


@db.command()
@json_option
@handle_errors
def current(as_json: bool) -> None:
    """Print the schema revision of the database (creates nothing)."""
    settings = load_settings()
    state().used = settings
    svc = container.build(settings, readonly=True)
    try:
        missing = migrate.database_missing(svc.db)
        revision = None if missing else migrate.current_revision(svc.db)
        head = migrate.head_revision()
    finally:
        svc.close()
    newer = revision is not None and revision not in migrate.known_revisions()
    if as_json:
        # status: what a script needs to decide (an empty database and one that needs an
        # upgrade are both "not up to date", and only one of them may be upgraded).
        status = (
            "empty"
            if revision is None
            else "newer"
            if newer
            else "up_to_date"
            if revision == head
            else "needs_upgrade"
        )
        emit_json(
            {"revision": revision, "head": head, "up_to_date": revision == head, "status": status}
        )
    else:
        text = "up to date" if revision == head else f"this version needs {head}"
        if newer:
            text = f"unknown to this version, which needs {head}: a newer version migrated it"
        if missing:
            # Not "empty": no file there at all, the sign of a command run in another
            # directory than the database's (a relative SQLite path).
            sqlite = sqlite_file(svc.db.url)
            echo(f"no database at {sqlite} ({text}; 'authserver db upgrade' creates it)")
        else:
            echo(f"{revision or 'empty'} ({text})")


@db.command()
@click.option(
    "--to",
    "to",
    required=True,
    metavar="URL",
    help="the database to copy into (empty; its schema is created)",
)
@json_option
@handle_errors
def copy(to: str, as_json: bool) -> None:
    """Copy everything in the database into another, empty one (SQLite <-> PostgreSQL)."""
    try:
        target = parse_database_url(to)
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    settings = load_settings()
    state().used = settings
    svc = container.build(settings, readonly=True)
    try:
        result = copy_database(svc.db, target)
    finally:
        svc.close()
    if as_json:
        emit_json(
            {
                "from": result.source,
                "to": result.target,
                "revision": result.revision,
                "schema_created": result.created,
                "rows": result.rows,
            }
        )
        return
    total = sum(result.rows.values())
    echo(f"copied {total} rows from {result.source} to {result.target} (schema {result.revision})")
    table([(name, count) for name, count in result.rows.items()], ("TABLE", "ROWS"))
