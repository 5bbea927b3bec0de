"""Usage errors (a bad option value, an unknown command) are one line and exit 2, like every
other error of the CLI: no usage block, no help hint on lines of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.helpers import run_cli_here


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
        # int() read these, which the admin API refuses (?limit=1_0, a JSON number).
        (["audit", "--limit", "1_0"], ["--limit", "digits 0-9"]),
        (["audit", "--limit", "\uff15"], ["--limit", "digits 0-9"]),
        (
            ["clients", "create", "--name", "x", "--token-ttl", "\u0663\u0666\u0660\u0660"],
            ["--token-ttl"],
        ),
        (["clients", "update", "ID", "--token-ttl", " 60"], ["--token-ttl", "digits 0-9"]),
        # retire takes any first word for its KID (a kid may begin with "-").
        (["keys", "retire", "some-kid", "another"], ["unexpected extra argument (another)"]),
    ],
    ids=[
        "audit-action",
        "serve-port",
        "unknown-command",
        "missing-option",
        "audit-limit",
        "update-token-ttl",
        "audit-limit-underscore",
        "audit-limit-fullwidth",
        "create-token-ttl-arabic-indic",
        "update-token-ttl-space",
        "retire-extra-argument",
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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["clients", "list", "--database-url", "sqlite:///x.db"],
            "--database-url is an option of 'authserver', not of 'clients list': put it "
            "before the command (authserver --database-url VALUE clients list ...)",
        ),
        (
            ["serve", "--config", "settings.env"],
            "--config is an option of 'authserver', not of 'serve': put it before the "
            "command (authserver --config FILE serve ...)",
        ),
        (
            ["db", "current", "--port=9000"],
            "--port is an option of 'authserver', not of 'db current': put it before the "
            "command (authserver --port VALUE db current ...)",
        ),
        # keys retire takes its first word for the KID (a kid may begin with "-"): the
        # setting was the KID and the rest "unexpected extra arguments".
        (
            ["keys", "retire", "--database-url", "sqlite:///x.db", "some-kid"],
            "--database-url is an option of 'authserver', not of 'keys retire': put it "
            "before the command (authserver --database-url VALUE keys retire ...)",
        ),
        (
            ["keys", "retire", "--keys-dir=/tmp/keys", "some-kid"],
            "--keys-dir is an option of 'authserver', not of 'keys retire': put it "
            "before the command (authserver --keys-dir VALUE keys retire ...)",
        ),
        (
            ["keys", "retire", "some-kid", "--database-url", "sqlite:///x.db"],
            "--database-url is an option of 'authserver', not of 'keys retire': put it "
            "before the command (authserver --database-url VALUE keys retire ...)",
        ),
        (
            ["keys", "retire", "some-kid", "--database-url=sqlite:///x.db"],
            "--database-url is an option of 'authserver', not of 'keys retire': put it "
            "before the command (authserver --database-url VALUE keys retire ...)",
        ),
    ],
    ids=[
        "setting-after-command",
        "config-after-serve",
        "setting-with-equals",
        "setting-after-retire",
        "setting-with-equals-after-retire",
        "setting-after-the-kid",
        "setting-with-equals-after-the-kid",
    ],
)
def test_a_group_option_after_the_command_says_where_it_goes(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    """Settings (and --config) are options of the group; given after a command that does
    not take them, the answer was "No such option '--database-url'", as if it did not
    exist. The line says where it goes; an option unknown everywhere is still just that."""
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"}
    result = run_cli_here(env, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"authserver: error: {expected}"]
    assert not (tmp_path / "none.db").exists()

    unknown = run_cli_here(env, "clients", "list", "--no-such-option")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "authserver: error: No such option '--no-such-option'. "
        "(see 'authserver clients list --help')"
    )


def test_the_process_ends_with_its_output_status_and_exit_handlers(
    tmp_path: Path,
) -> None:
    """The entry point ends the process with ``os._exit`` after flushing its output and
    running the ``atexit`` handlers (a coverage tool's, logging's): what it printed and
    its status are those of the command, and a handler registered before it still runs."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env["AUTHSERVER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'a.db'}"
    env["AUTHSERVER_KEYS_DIR"] = str(tmp_path / "keys")
    program = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "from authserver.cli import main\n"
        "sys.argv = ['authserver', *sys.argv[1:]]\n"
        "main()\n"
    )
    for args, status, out in (
        (["db", "upgrade"], 0, "upgraded database"),
        (["clients", "show", "nosuch"], 1, "no client with id"),
        (["nosuch"], 2, "No such command"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", program, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == status, (args, done.stderr)
        assert done.stdout.endswith("exit handler ran\n"), (args, done.stdout)
        assert out in done.stdout + done.stderr, (args, done.stdout, done.stderr)


def test_a_library_warning_is_one_line_too(tmp_path: Path) -> None:
    """SQLAlchemy warns of query arguments a SQLite URL cannot take: Python's own format
    printed the warning's source file and a line of its code under it."""
    url = f"sqlite:///{tmp_path / 'a.db'}?password=not-for-sqlite"
    result = run_cli({}, "--database-url", url, "clients", "list")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert any(line.startswith("authserver: warning: Query string argument") for line in lines)
    assert all(line.startswith(("authserver: ", "(")) for line in lines), result.stderr
    assert "not-for-sqlite" not in result.stderr
