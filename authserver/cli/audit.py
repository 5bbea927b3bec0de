"""``authserver audit``: read the audit trail."""

from __future__ import annotations

import click

from authserver.audit.model import ACTIONS
from authserver.audit.model import MAX_QUERY_LIMIT
from authserver.audit.model import AuditQuery
from authserver.cli.context import WholeNumberRange
from authserver.cli.context import handle_errors
from authserver.cli.context import json_option
from authserver.cli.context import services
from authserver.cli.output import echo
from authserver.cli.output import emit_json
from authserver.cli.output import fail
from authserver.cli.output import table
from authserver.settings import SINCE_FORMS
from authserver.settings import SinceOutOfRange
from authserver.settings import parse_since
from authserver.web.serializers import audit_json


def _since(value: str, now: float, option: str = "--since") -> float:
    """*now* is the services' clock, as ``GET /admin/audit`` reads it: one "1h ago" for
    both."""
    try:
        return parse_since(value, now)
    except SinceOutOfRange as exc:
        fail(f"{option}: out of range: a duration {exc}")
    except ValueError:
        fail(f"{option}: expected {SINCE_FORMS}")


@click.command()
@click.option("--client", "client_id", help="only events of this client_id")
@click.option("--sub", help="only tokens issued for this user")
@click.option(
    "--action",
    type=click.Choice(ACTIONS),
    help="only this action",
)
@click.option("--since", help="only events at or after: a date or a duration ago (1h, 7d)")
@click.option("--until", help="only events before: a date or a duration ago (1h, 7d)")
@click.option(
    "--before",
    type=WholeNumberRange(1, 2**63 - 1),
    metavar="ID",
    help="only events listed after event ID (the next page after one ending with it)",
)
@click.option("--limit", type=WholeNumberRange(1, MAX_QUERY_LIMIT), default=100, show_default=True)
@json_option
@handle_errors
def audit(
    client_id: str | None,
    sub: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    before: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """Who minted which token for whom, and every operator action (newest first)."""
    # Checked before the database is opened, so a mistyped option is what is reported.
    for value, option in ((since, "--since"), (until, "--until")):
        if value is not None:
            _since(value, 0.0, option)
    with services() as svc:
        now = svc.clock.now()
        query = AuditQuery(
            client_id=client_id,
            sub=sub,
            action=action,
            since=_since(since, now) if since is not None else None,
            until=_since(until, now, "--until") if until is not None else None,
            before=before,
            limit=limit,
        )
        with svc.unit_of_work():
            events = [audit_json(e) for e in svc.audit.query(query)]
    if as_json:
        emit_json({"events": events})
    elif not events:
        echo("no matching audit events")
    else:
        # ID: what --before takes to list the next page (the table's last one).
        # SECRET: which secret a token was issued on ("current", or "previous" during a
        # rotate-secret grace period), the column an operator watches to end the grace.
        table(
            [
                (
                    e["id"],
                    e["at"],
                    e["actor"],
                    e["action"],
                    e["client_id"],
                    e["sub"],
                    e["jti"],
                    (e["detail"] or {}).get("secret_used"),
                )
                for e in events
            ],
            ["ID", "AT", "ACTOR", "ACTION", "CLIENT_ID", "SUB", "JTI", "SECRET"],
        )
