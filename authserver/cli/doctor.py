"""``authserver doctor``: check a configuration end to end (see authserver/doctor.py)."""

from __future__ import annotations

import os
import sys

import click

from authserver import doctor as checks
from authserver.cli.context import handle_errors
from authserver.cli.context import json_option
from authserver.cli.context import load_settings
from authserver.cli.context import state
from authserver.cli.output import echo
from authserver.cli.output import emit_json
from authserver.settings import CONFIG_ENV

_MARK = {"ok": "ok", "warning": "WARNING", "problem": "PROBLEM"}


@click.command()
@click.option(
    "--no-issuer-check",
    "skip_issuer",
    is_flag=True,
    help="do not contact the issuer (when the server is not meant to be running)",
)
@json_option
@handle_errors
def doctor(skip_issuer: bool, as_json: bool) -> None:
    """Check the configuration end to end: database reachable and migrated, key store
    readable with a current key, passphrase, issuer reachable and matching its metadata,
    admin and metrics token strength, rate-limit storage reachable. Exits 1 when any
    problem is found; creates nothing."""
    settings = load_settings()
    state().used = settings
    config_file = state().config_file or os.environ.get(CONFIG_ENV)
    findings = checks.run(settings, check_issuer=not skip_issuer, config_file=config_file)
    problems = sum(f.status == "problem" for f in findings)
    if as_json:
        emit_json(
            {
                "ok": problems == 0,
                "checks": [
                    {"check": f.check, "status": f.status, "detail": f.detail} for f in findings
                ],
            }
        )
    else:
        width = max(len(f.check) for f in findings)
        for f in findings:
            echo(f"{_MARK[f.status]:<8} {f.check.ljust(width)}  {f.detail}")
        echo(f"\n{problems} problem(s) found." if problems else "\nNo problems found.")
    if problems:
        sys.exit(1)
