"""The ``authserver`` command."""

from __future__ import annotations

import click

from authserver import __version__
from authserver.cli.audit import audit
from authserver.cli.clients import clients
from authserver.cli.db import db
from authserver.cli.keys import keys
from authserver.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="authserver")
def cli() -> None:
    """authserver: OAuth2 client-credentials token service for sync servers.

    Configuration comes from AUTHSERVER_* environment variables (see README.md).
    """


cli.add_command(serve)
cli.add_command(db)
cli.add_command(clients)
cli.add_command(keys)
cli.add_command(audit)


def main() -> None:
    cli(prog_name="authserver")
