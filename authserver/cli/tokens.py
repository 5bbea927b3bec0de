"""``authserver tokens``: revoke every live token of a user."""

from __future__ import annotations

import click

from authserver.audit.service import settle_batches
from authserver.cli.context import handle_errors
from authserver.cli.context import services
from authserver.cli.output import echo
from authserver.cli.output import emit_json
from authserver.tokens.statuslist import revocable_sub


@click.group()
def tokens() -> None:
    """Issued access tokens."""


@tokens.command()
@click.option("--sub", required=True, help="the user whose tokens to revoke")
@click.option("--client", "client_id", help="only the tokens issued to this client")
@click.option("--json", "as_json", is_flag=True, help="print exactly one JSON object")
@handle_errors
def revoke(sub: str, client_id: str | None, as_json: bool) -> None:
    """Revoke every live token of user SUB, through the status lists (offline verifiers
    see it within one status-list ttl) and introspection."""
    revocable_sub(sub, what="--sub")
    settle_batches()  # a token issued a moment ago by a serving worker counts
    with services() as svc, svc.unit_of_work():
        if client_id is not None:
            svc.clients.get(client_id)  # an unknown client is an error, not "0 revoked"
        revoked = svc.status_lists.revoke_user(sub, client_id=client_id)
    if as_json:
        emit_json({"sub": sub, "client_id": client_id, "revoked": revoked})
    else:
        scope = f" issued to {client_id}" if client_id else ""
        echo(f"revoked {revoked} live token(s) of {sub}{scope}")
