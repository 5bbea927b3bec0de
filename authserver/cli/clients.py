"""``authserver clients``: register and manage trusted backends."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from authserver.audit.service import settle_batches
from authserver.cli.context import WholeNumber
from authserver.cli.context import handle_errors
from authserver.cli.context import json_option
from authserver.cli.context import services
from authserver.cli.output import OutputFailed
from authserver.cli.output import echo
from authserver.cli.output import emit_json
from authserver.cli.output import fail
from authserver.cli.output import fields
from authserver.cli.output import table
from authserver.clients.jwks import MAX_JWKS_BYTES
from authserver.clients.jwks import MAX_JWKS_DEPTH
from authserver.clients.model import DEFAULT_PROFILE
from authserver.files import FileRefused
from authserver.files import read_small_text
from authserver.settings import parse_duration
from authserver.vocabulary import MAX_CLAIM_DEPTH
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import RepeatedNames
from authserver.vocabulary import loads_strict
from authserver.web.serializers import client_json
from authserver.web.serializers import unreadable_json


def _show(data: dict[str, Any], as_json: bool, secret: str | None = None) -> None:
    if secret is not None:
        data = {**data, "client_secret": secret}
    if as_json:
        emit_json(data)
        return
    fields(
        [
            ("client_id", data["client_id"]),
            *([("client_secret", secret)] if secret is not None else []),
            ("name", data["name"]),
            ("enabled", "yes" if data["enabled"] else "no"),
            ("audiences", data["audiences"]),
            ("scopes", data["scopes"]),
            ("allowed_claims", data["allowed_claims"]),
            ("token_ttl", data["token_ttl"] or "server default"),
            ("require_sub", "yes" if data["require_sub"] else "no"),
            ("profile", data["profile"]),
            (
                "fixed_claims",
                ", ".join(f"{k}={json.dumps(v)}" for k, v in data["fixed_claims"].items())
                or "none",
            ),
            ("auth_methods", data["token_endpoint_auth_methods"]),
            ("jwks_uri", data["jwks_uri"]),
            ("old secret valid until", data.get("previous_secret_expires_at")),
            ("created_at", data["created_at"]),
            ("updated_at", data["updated_at"]),
        ]
    )
    if secret is not None:
        click.echo(
            "\nStore the client_secret now: it is shown this once and cannot be recovered.",
            err=True,
        )


def _read_jwks(path: str) -> dict[str, Any]:
    # Strict and bounded, as the admin API reads a body: json.loads raised RecursionError
    # (a traceback) on a deeply nested file and kept the last of repeated names; the file
    # is read as a jwks_uri answer is, at most MAX_JWKS_BYTES (/dev/zero or a FIFO hung).
    if not path:
        fail("--jwks-file: the path is empty")
    names = RepeatedNames()
    try:
        data = loads_strict(
            read_small_text(path, MAX_JWKS_BYTES),
            "the JWK set",
            max_depth=MAX_JWKS_DEPTH,
            object_pairs_hook=names,
        )
        names.check(data, "the JWK set")
    except OSError as exc:
        fail(f"--jwks-file: cannot read {path}: {exc.strerror}")
    except FileRefused as exc:
        fail(f"--jwks-file: {path} {exc}")
    except UnicodeDecodeError:
        # Said as such (as --config and the admin API say it), not as "not valid JSON".
        fail(f"--jwks-file: {path} is not UTF-8 text (JSON is UTF-8, RFC 8259)")
    except InvalidValue as exc:
        fail(f"--jwks-file: {path}: {exc}")
    except ValueError:
        fail(f"--jwks-file: {path} is not valid JSON")
    if not isinstance(data, dict):
        fail(f"--jwks-file: {path} must hold a JSON Web Key Set object")
    return data


def _fixed_claims(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; VALUE is JSON when it parses as JSON (``type=0``,
    ``grants={"a":1}``), else the literal string (``url=wss://sync.example``). Quote a
    string that looks like JSON: ``tenant='"123"'``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name or not raw:
            fail("--fixed-claim takes NAME=VALUE")
        if name in out:
            fail(f"--fixed-claim {name} is given twice")
        names = RepeatedNames()
        try:
            # NaN and Infinity are not JSON (RFC 8259): such a VALUE is a plain string.
            value: Any = json.loads(raw, parse_constant=_not_json, object_pairs_hook=names)
        except RecursionError:
            fail(f"--fixed-claim {name}: the value is nested deeper than {MAX_CLAIM_DEPTH} levels")
        except ValueError:
            value = raw
        try:
            names.check(value, f"--fixed-claim {name}")
        except InvalidValue as exc:
            fail(str(exc))
        out[name] = value
    return out


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


profile_option = click.option(
    "--profile",
    help="request/response dialect: oauth2 (default), dexie, verdant, twilio, stream, "
    "or an installed plug-in",
)
fixed_claim_option = click.option(
    "--fixed-claim",
    "fixed_claims",
    multiple=True,
    metavar="NAME=VALUE",
    help="a claim every token carries and no request can change (repeat); VALUE is JSON "
    "or a plain string",
)


@click.group()
def clients() -> None:
    """Register and manage clients (trusted backends)."""


@clients.command()
@click.option("--name", required=True, help="a human name for the backend")
@click.option("--audience", "audiences", multiple=True, help="an audience it may request (repeat)")
@click.option("--scope", "scopes", multiple=True, help="a scope it may request (repeat)")
@click.option(
    "--allowed-claim",
    "allowed_claims",
    multiple=True,
    help="an extra claim it may set through 'claims' (repeat)",
)
@click.option(
    "--token-ttl", type=WholeNumber(), help="token lifetime in seconds (default: server default)"
)
@click.option("--jwks-file", type=str, help="public JWK set: authenticate with private_key_jwt")
@click.option("--jwks-uri", type=str, help="URL of its public JWK set (private_key_jwt)")
@click.option(
    "--require-sub/--no-require-sub",
    default=False,
    help="every token request must name a user (sub); default: not required",
)
@profile_option
@fixed_claim_option
@json_option
@handle_errors
def create(
    name: str,
    audiences: tuple[str, ...],
    scopes: tuple[str, ...],
    allowed_claims: tuple[str, ...],
    token_ttl: int | None,
    jwks_file: str | None,
    jwks_uri: str | None,
    require_sub: bool,
    profile: str | None,
    fixed_claims: tuple[str, ...],
    as_json: bool,
) -> None:
    """Register a client; prints its client_id and (once) its client_secret."""
    if jwks_file is not None and jwks_uri is not None:
        fail("--jwks-file and --jwks-uri are mutually exclusive")
    jwks = _read_jwks(jwks_file) if jwks_file is not None else None
    fixed = _fixed_claims(fixed_claims)
    with services(creates=True) as svc:
        with svc.unit_of_work():
            client, secret = svc.clients.create(
                name=name,
                audiences=audiences,
                scopes=scopes,
                allowed_claims=allowed_claims,
                token_ttl=token_ttl,
                jwks=jwks,
                jwks_uri=jwks_uri,
                require_sub=require_sub,
                # Only an absent --profile is the default: --profile '' (an empty
                # variable) is refused by the service, as the admin API refuses "".
                profile=profile if profile is not None else DEFAULT_PROFILE,
                fixed_claims=fixed,
            )
        # Shown after the commit, so a client printed is a client stored whatever ends the
        # command next (kill -9: tests/integration/test_crash_safety.py). A secret that
        # cannot be shown (a full disk, a closed pipe) then leaves no client behind that
        # nobody can authenticate as: it is deleted again.
        try:
            _show(client_json(client), as_json, secret)
        except (OutputFailed, BrokenPipeError):
            # A closed pipe too (| head -0): Click ends that quietly, but nobody read it.
            with svc.unit_of_work():
                svc.clients.delete(client.client_id)
            raise


@clients.command("list")
@json_option
@handle_errors
def list_(as_json: bool) -> None:
    """List every client, and every client record that cannot be read (skipped)."""
    with services() as svc, svc.unit_of_work():
        items = [client_json(c) for c in svc.clients.list()]
        unreadable = svc.clients.unreadable()
    if as_json:
        emit_json({"clients": items, "unreadable": [unreadable_json(r) for r in unreadable]})
        return
    for record in unreadable:
        echo(f"UNREADABLE (skipped) {record.name}: {record.reason}")
    if not items:
        echo("no clients registered")
        return
    table(
        [
            (
                c["client_id"],
                c["name"],
                "yes" if c["enabled"] else "no",
                ",".join(c["audiences"]) or "-",
                c["created_at"],
            )
            for c in items
        ],
        ["CLIENT_ID", "NAME", "ENABLED", "AUDIENCES", "CREATED"],
    )


@clients.command()
@click.argument("client_id")
@json_option
@handle_errors
def show(client_id: str, as_json: bool) -> None:
    """Show one client."""
    with services() as svc, svc.unit_of_work():
        client = svc.clients.get(client_id)
    _show(client_json(client), as_json)


@clients.command()
@click.argument("client_id")
@click.option("--name", help="new name")
@click.option("--audience", "audiences", multiple=True, help="replace the audiences (repeat)")
@click.option("--clear-audiences", is_flag=True, help="remove every audience")
@click.option("--scope", "scopes", multiple=True, help="replace the scopes (repeat)")
@click.option("--clear-scopes", is_flag=True, help="remove every scope")
@click.option(
    "--allowed-claim", "allowed_claims", multiple=True, help="replace the allowed claims (repeat)"
)
@click.option("--clear-allowed-claims", is_flag=True, help="remove every allowed claim")
@click.option("--token-ttl", type=WholeNumber(), help="token lifetime in seconds")
@click.option("--default-token-ttl", is_flag=True, help="use the server's default lifetime")
@click.option(
    "--require-sub/--no-require-sub",
    default=None,
    help="require (or stop requiring) a user (sub) in every token request",
)
@profile_option
@fixed_claim_option
@click.option("--clear-fixed-claims", is_flag=True, help="remove every fixed claim")
@click.option(
    "--jwks-file", type=str, help="replace a private_key_jwt client's keys by this public JWK set"
)
@click.option("--jwks-uri", type=str, help="replace a private_key_jwt client's keys by this URL")
@json_option
@handle_errors
def update(
    client_id: str,
    name: str | None,
    audiences: tuple[str, ...],
    clear_audiences: bool,
    scopes: tuple[str, ...],
    clear_scopes: bool,
    allowed_claims: tuple[str, ...],
    clear_allowed_claims: bool,
    token_ttl: int | None,
    default_token_ttl: bool,
    require_sub: bool | None,
    profile: str | None,
    fixed_claims: tuple[str, ...],
    clear_fixed_claims: bool,
    jwks_file: str | None,
    jwks_uri: str | None,
    as_json: bool,
) -> None:
    """Change a client's name or policy, or a private_key_jwt client's public keys (it
    keeps its client id); options left out stay as they are."""
    for values, clear, option in (
        (audiences, clear_audiences, "audience"),
        (scopes, clear_scopes, "scope"),
        (allowed_claims, clear_allowed_claims, "allowed-claim"),
        (fixed_claims, clear_fixed_claims, "fixed-claim"),
    ):
        if values and clear:
            fail(f"--{option} and --clear-{option}s are mutually exclusive")
    if token_ttl is not None and default_token_ttl:
        fail("--token-ttl and --default-token-ttl are mutually exclusive")
    if jwks_file is not None and jwks_uri is not None:
        fail("--jwks-file and --jwks-uri are mutually exclusive")
    changes: dict[str, Any] = {}
    if jwks_file is not None:
        changes["jwks"] = _read_jwks(jwks_file)
    if jwks_uri is not None:
        changes["jwks_uri"] = jwks_uri
    if name is not None:
        changes["name"] = name
    if audiences or clear_audiences:
        changes["audiences"] = audiences
    if scopes or clear_scopes:
        changes["scopes"] = scopes
    if allowed_claims or clear_allowed_claims:
        changes["allowed_claims"] = allowed_claims
    if token_ttl is not None or default_token_ttl:
        changes["token_ttl"] = token_ttl
    if require_sub is not None:
        changes["require_sub"] = require_sub
    if profile is not None:
        changes["profile"] = profile
    if fixed_claims or clear_fixed_claims:
        # Replaces the whole set, like --scope and --allowed-claim.
        changes["fixed_claims"] = _fixed_claims(fixed_claims)
    if not changes:
        fail("nothing to change: give at least one option (see --help)")
    with services() as svc, svc.unit_of_work():
        client = svc.clients.update(client_id, **changes)
    _show(client_json(client), as_json)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int:
    if value is None:
        return 0
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@clients.command("rotate-secret")
@click.argument("client_id")
@click.option(
    "--grace",
    metavar="DURATION",
    callback=_duration,
    help="keep the old secret working this long beside the new one (e.g. 1h, 7d; at "
    "most 30d), so the backend can switch without refused requests",
)
@json_option
@handle_errors
def rotate_secret(client_id: str, grace: int, as_json: bool) -> None:
    """Issue a new client secret; the old one stops working at once (within a second on
    every worker on PostgreSQL), or after --grace."""
    with services() as svc, svc.unit_of_work():
        client, secret = svc.clients.rotate_secret(client_id, grace=grace)
        # Shown before the commit: a new secret that cannot be shown (a full disk, a closed
        # pipe) must not replace the one the backend still holds.
        _show(client_json(client), as_json, secret)


def _set_enabled(client_id: str, enabled: bool, as_json: bool) -> None:
    if not enabled:
        settle_batches()  # a token issued a moment ago by a serving worker is withdrawn too
    with services() as svc, svc.unit_of_work():
        client = svc.clients.set_enabled(client_id, enabled)
    _show(client_json(client), as_json)


@clients.command()
@click.argument("client_id")
@json_option
@handle_errors
def disable(client_id: str, as_json: bool) -> None:
    """Refuse the client's authentication until enabled again, and revoke every live
    token it was issued (status lists, introspection): enabling it again does not bring
    those back."""
    _set_enabled(client_id, False, as_json)


@clients.command()
@click.argument("client_id")
@json_option
@handle_errors
def enable(client_id: str, as_json: bool) -> None:
    """Accept the client again."""
    _set_enabled(client_id, True, as_json)


@clients.command()
@click.argument("client_id")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@json_option
@handle_errors
def delete(client_id: str, yes: bool, as_json: bool) -> None:
    """Delete the client for good (asks first unless --yes)."""
    if not yes:
        if not sys.stdin.isatty():
            fail(f"deleting {client_id} cannot be undone: add --yes to confirm")
        click.confirm(f"Delete client {client_id} for good?", abort=True, err=True)
    settle_batches()  # a token issued a moment ago by a serving worker is withdrawn too
    with services() as svc, svc.unit_of_work():
        svc.clients.delete(client_id)
    if as_json:
        emit_json({"client_id": client_id, "deleted": True})
    else:
        echo(f"deleted client {client_id}")
