"""The command line's shape, read from the Click tree: ``-h`` on every command and group,
``--json`` on every command that prints a result, and every setting an option of the group
(so ``authserver --database-url URL <any command>`` works) and of ``serve``."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from authserver.cli import cli
from authserver.settings import FIELDS


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


ALL = list(_commands(cli))
LEAVES = [(path, c) for path, c in ALL if not isinstance(c, click.Group)]


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_dash_h_everywhere(path: tuple[str, ...], flag: str) -> None:
    # keys retire takes a KID that may start with "-", and still a lone -h is help.
    result = CliRunner().invoke(cli, [*path, flag])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize(
    "command",
    [c for p, c in LEAVES if p != ("serve",)],
    ids=[" ".join(p) for p, _ in LEAVES if p != ("serve",)],
)
def test_json_on_every_command(command: click.Command) -> None:
    assert "--json" in {opt for param in command.params for opt in getattr(param, "opts", [])}


@pytest.mark.parametrize("command", [cli, cli.commands["serve"]], ids=["group", "serve"])
def test_every_setting_is_an_option(command: click.Command) -> None:
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {f.option for f in FIELDS} <= options


def test_serve_imports_the_web_app_only_to_serve_it() -> None:
    """``serve``'s start-up checks use no web module (the limit storage check lives in
    ``authserver.limits_storage``); only the worker imports the application."""
    import ast
    import importlib
    from pathlib import Path

    serve = importlib.import_module("authserver.cli.serve")  # the module, not the command
    tree = ast.parse(Path(str(serve.__file__)).read_text("utf-8"))
    web = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("authserver.web")
    }
    assert web == {"authserver.web.app"}
    worker = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "worker_app")
    inside = {node.module for node in ast.walk(worker) if isinstance(node, ast.ImportFrom)}
    assert "authserver.web.app" in inside
