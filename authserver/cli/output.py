"""CLI rendering: a human table or exactly one JSON object; one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any
from typing import NoReturn

import click


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    click.echo(f"authserver: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * w for w in widths))


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "-"
        click.echo(f"{key.ljust(width)}  {'-' if value is None else value}")
