"""CLI rendering: a human table or exactly one JSON object; one-line errors."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Sequence
from typing import Any
from typing import NoReturn

import click


class OutputFailed(Exception):
    """A command's output could not be written to stdout (a full disk, an I/O error). A
    pipe closed by its reader (``| head``) is not one: Click ends such a command quietly
    with status 1."""


def echo(text: str = "") -> None:
    """Write *text* and a newline to stdout: every line of a command's output goes here.

    :raises OutputFailed: when stdout cannot take it, so the command ends with one line on
        stderr instead of a traceback, and a command that prints from inside its unit of
        work (a new secret) rolls back.
    """
    try:
        click.echo(text)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise
        raise OutputFailed(
            f"cannot write the output: {exc.strerror or type(exc).__name__}"
        ) from None


def emit_json(obj: Any) -> None:
    echo(json.dumps(obj, indent=2, sort_keys=False))


def one_line(message: str) -> str:
    """*message* on one line: every run of whitespace, newlines included, one space."""
    return " ".join(str(message).split())


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    click.echo(f"authserver: error: {one_line(message)}", err=True)
    sys.exit(code)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    echo("\n".join(lines))


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    lines = []
    for key, value in pairs:
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "-"
        lines.append(f"{key.ljust(width)}  {'-' if value is None else value}")
    # One write: a block holding a new secret is shown whole or not at all.
    echo("\n".join(lines))
