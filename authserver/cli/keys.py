"""``authserver keys``: list, rotate and retire signing keys."""

from __future__ import annotations

import click

from authserver.cli.context import handle_errors
from authserver.cli.context import is_group_option
from authserver.cli.context import json_option
from authserver.cli.context import services
from authserver.cli.output import echo
from authserver.cli.output import emit_json
from authserver.cli.output import table
from authserver.container import Services
from authserver.container import check_key_directory
from authserver.container import check_key_store
from authserver.keys.service import KeyView
from authserver.web.serializers import key_change_json
from authserver.web.serializers import key_json
from authserver.web.serializers import unreadable_json


def _table(views: list[KeyView]) -> None:
    rows = [key_json(v) for v in views]
    table(
        [
            (
                r["kid"],
                r["state"],
                r["published_at"],
                r["signs_from"],
                r["signs_until"],
                r["unpublished_at"],
            )
            for r in rows
        ],
        ["KID", "STATE", "PUBLISHED", "SIGNS_FROM", "SIGNS_UNTIL", "UNPUBLISHED"],
    )


@click.group()
def keys() -> None:
    """Signing keys and their rotation."""


@keys.command("list")
@json_option
@handle_errors
def list_(as_json: bool) -> None:
    """Every key with its state (next, current, previous, gone) and dates, and every key
    record that cannot be read (skipped by the server)."""
    with services() as svc, svc.unit_of_work():
        check_key_store(svc)
        check_key_directory(svc)
        views = svc.keys.views()
        unreadable = svc.key_ring.unreadable()
    if as_json:
        emit_json(
            {
                "keys": [key_json(v) for v in views],
                "unreadable": [unreadable_json(r) for r in unreadable],
            }
        )
        return
    if not views:
        echo("no signing keys yet (authserver serve creates the first)")
    else:
        _table(views)
    for record in unreadable:
        echo(f"UNREADABLE (skipped) {record.name}: {record.reason}")


@keys.command()
@json_option
@handle_errors
def rotate(as_json: bool) -> None:
    """Publish a new key now; it starts signing after the publish-ahead time."""
    with services(creates=True) as svc:
        _recover_records(svc)
        # One transaction, as POST /admin/keys/rotate does it.
        with svc.unit_of_work():
            check_key_store(svc)
            # On an empty store, first a key that signs now: the one rotated to signs only
            # after the publish-ahead, and until then the servers need one.
            first = svc.keys.ensure_current()
            result = svc.keys.rotate()
            views = svc.keys.views()
    data = key_change_json(views, result.key.kid, created=result.created)
    if as_json:
        emit_json(data)
        return
    if first is not None:
        echo(f"created key {first.kid}, which signs now (the store had no current key)")
    if result.created:
        echo(f"published key {data['kid']}; it signs from {data['signs_from']}")
    else:
        echo(f"a rotation is already scheduled: key {data['kid']} signs from {data['signs_from']}")


# A kid is a base64url thumbprint and may start with "-": no short options here, and
# unknown "options" are taken as the KID argument. A thumbprint is 43 characters, so a
# lone "-h" is the help every command takes, not a kid.
@keys.command(
    context_settings={
        "help_option_names": ["--help"],
        "ignore_unknown_options": True,
        "allow_extra_args": True,
    }
)
@click.argument("kid")
@json_option
@handle_errors
def retire(kid: str, as_json: bool) -> None:
    """Emergency: remove KID from the JWKS at once; it never signs again."""
    ctx = click.get_current_context()
    if kid == "-h":
        echo(ctx.get_help())
        ctx.exit(0)
    # A setting given after the command (keys retire --database-url URL KID) was taken for
    # the KID, the rest for extra arguments. No thumbprint is an option's name (and none
    # holds "="): say where the option goes, as for every other command (cli.run).
    # The same after the KID (keys retire KID --database-url URL): taken for extra arguments.
    for given in (kid, *ctx.args):
        option = given.split("=", 1)[0]
        if option.startswith("--") and is_group_option(ctx, option):
            raise click.NoSuchOption(option, ctx=ctx)
    if ctx.args:
        raise click.UsageError(
            f"Got unexpected extra argument{'s' if len(ctx.args) > 1 else ''} "
            f"({' '.join(ctx.args)})",
            ctx=ctx,
        )
    with services() as svc:
        _recover_records(svc)
        with svc.unit_of_work():
            check_key_store(svc)
            svc.keys.retire(kid)
            views = svc.keys.views()
    data = key_change_json(views, kid)
    if as_json:
        emit_json(data)
    else:
        echo(f"retired key {kid}; it is no longer published and signs nothing")
        if data["current_kid"]:
            echo(f"current signing key: {data['current_kid']}")


def _recover_records(svc: Services) -> None:
    """Before the command's own change, in units of work of their own (never under the key
    store's lock): the audit records of keys whose writer stopped before recording them
    (Services.recover_key_records, as the admin API's rotate and retire), each said in one
    line on stderr."""
    with svc.unit_of_work():
        check_key_store(svc)
        check_key_directory(svc)
    recovered = svc.recover_key_records()
    for action, key in recovered:
        click.echo(
            f"recorded {action} for signing key {key.kid}, which had no such record", err=True
        )
