"""``authserver db``: schema migrations (the only CLI module besides serve that migrates)."""

from __future__ import annotations

import click

from authserver.cli.context import handle_errors
from authserver.cli.output import emit_json
from authserver.container import Services
from authserver.errors import ConfigError
from authserver.storage.sql import migrate


def ensure_schema(svc: Services, *, upgrade_existing: bool) -> None:
    """Create the schema on an empty database (``serve`` and the first CLI command on a
    new machine); with *upgrade_existing*, also apply pending migrations."""
    current = migrate.current_revision(svc.db)
    head = migrate.head_revision()
    if current == head:
        return
    if current is None or upgrade_existing:
        migrate.upgrade_to_head(svc.db)
        return
    raise ConfigError(
        f"AUTHSERVER_DATABASE_URL: the schema is at revision {current}, this version needs "
        f"{head}; run 'authserver db upgrade'"
    )


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@handle_errors
def upgrade(as_json: bool) -> None:
    """Apply the migrations in migrations/ (idempotent)."""
    from authserver import container
    from authserver.settings import Settings

    svc = container.build(Settings.from_env())
    try:
        before, after = migrate.upgrade_to_head(svc.db)
    finally:
        svc.close()
    if as_json:
        emit_json({"from_revision": before, "to_revision": after})
    elif before == after:
        click.echo(f"database already at revision {after}")
    else:
        click.echo(f"upgraded database from {before or 'empty'} to {after}")


@db.command()
@handle_errors
def current() -> None:
    """Print the schema revision of the database."""
    from authserver import container
    from authserver.settings import Settings

    svc = container.build(Settings.from_env())
    try:
        click.echo(migrate.current_revision(svc.db) or "empty")
    finally:
        svc.close()
