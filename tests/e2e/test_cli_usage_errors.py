"""Usage errors (a bad option value, an unknown command) are one line and exit 2, like every
other error of the CLI: no usage block, no help hint on lines of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["audit", "--action", "bogus"], ["--action", "token.issued", "key.retired"]),
        (["serve", "--port", "abc"], ["--port"]),
        (["nosuch"], ["nosuch"]),
        (["clients", "create"], ["--name"]),
        # The examples docs/reference.md gives of usage errors that exit 2.
        (["audit", "--limit", "0"], ["--limit"]),
        (["clients", "update", "ID", "--token-ttl", "abc"], ["--token-ttl"]),
    ],
    ids=[
        "audit-action",
        "serve-port",
        "unknown-command",
        "missing-option",
        "audit-limit",
        "update-token-ttl",
    ],
)
def test_usage_error_is_one_line(args: list[str], names: list[str], tmp_path: Path) -> None:
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"}
    result = run_cli(env, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authserver: error: "), lines
    for name in names:
        assert name in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()
