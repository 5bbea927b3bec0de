"""What an operator meets on the command line, through the real ``authserver`` command and a
real ``authserver serve``: settings from group options and a configuration file, warnings
for misspelt variables, read-only commands that create nothing, the line saying what a
command acted on, ``doctor``, zero-downtime secret rotation, confirmed deletes, and the
error messages of the newcomer's usual mistakes. SQLite only: nothing here depends on the
database engine (the PostgreSQL cause of an unreachable server is checked on its own)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from authserver.storage.sql.migrate import head_revision
from tests.conftest import fresh_pg_schema
from tests.conftest import require_postgres
from tests.factories import client_public_jwk
from tests.factories import request_token
from tests.helpers import AUTHSERVER
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import free_port
from tests.helpers import run_cli
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
        "AUTHSERVER_SCHEDULER": "false",
        **extra,
    }


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _in(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    full.update(env or {})
    return subprocess.run(
        [AUTHSERVER, *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- where settings come from ---------------------------------------------------------------


def test_read_only_commands_create_nothing_in_an_empty_directory(tmp_path: Path) -> None:
    for args in (
        ["clients", "list"],
        ["clients", "show", "as_nope"],
        ["keys", "list"],
        ["audit"],
        ["db", "current"],
        ["doctor", "--no-issuer-check"],
    ):
        result = _in(tmp_path, *args)
        assert _files(tmp_path) == [], (args, _files(tmp_path))
        if args[0] in ("clients", "keys", "audit"):
            assert result.returncode == 2, (args, result.stderr)
            assert "no database at" in result.stderr, result.stderr
            assert str(tmp_path / "authserver.db") in result.stderr
        if args == ["db", "current"]:
            # It said "empty", as for a file that is there with no schema in it.
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"no database at {tmp_path / 'authserver.db'} ")
    assert "PROBLEM" in _in(tmp_path, "doctor", "--no-issuer-check").stdout


def test_commands_that_change_existing_records_create_nothing(tmp_path: Path) -> None:
    # From the wrong directory they made a new, empty database (and a key directory) and
    # answered "no client" or, for an incident's 'tokens revoke', "revoked 0" with status 0.
    env = _env(tmp_path)
    for args in (
        ["tokens", "revoke", "--sub", "user-42"],
        ["clients", "disable", "as_client_x"],
        ["clients", "enable", "as_client_x"],
        ["clients", "update", "as_client_x", "--name", "y"],
        ["clients", "rotate-secret", "as_client_x"],
        ["clients", "delete", "as_client_x", "--yes"],
        ["keys", "retire", "kid"],
    ):
        result = run_cli_here(env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("authserver: error: AUTHSERVER_DATABASE_URL: no database")
        assert _files(tmp_path) == [], (args, _files(tmp_path))
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    retired = run_cli_here(env, "keys", "retire", "kid")
    assert retired.returncode == 1
    assert retired.stderr.splitlines() == [
        f"authserver: error: AUTHSERVER_KEYS_DIR: {tmp_path / 'keys'} does not exist (no "
        "signing keys yet: 'authserver serve' or 'authserver keys rotate' creates it)"
    ]
    assert cli_json_here(env, "tokens", "revoke", "--sub", "user-42")["revoked"] == 0
    assert _files(tmp_path) == ["a.db"]
    # Beginning an installation still works from an empty directory.
    (tmp_path / "new").mkdir()
    assert cli_json_here(_env(tmp_path / "new"), "clients", "create", "--name", "b")["client_id"]
    # A client needs no signing key: no key directory (it made an empty one).
    assert _files(tmp_path / "new") == ["a.db"]


def test_group_options_config_file_and_the_line_saying_what_was_used(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    keys = tmp_path / "k"
    assert run_cli({}, "--database-url", f"sqlite:///{db}", "db", "upgrade").returncode == 0
    # Options on the group apply to every command; the human output names what was used.
    listed = _in(
        tmp_path, "--database-url", f"sqlite:///{db}", "--keys-dir", str(keys), "clients", "list"
    )
    assert listed.returncode == 0, listed.stderr
    assert "no clients registered" in listed.stdout
    assert f"database sqlite:///{db}" in listed.stderr
    assert f"key store file {keys}" in listed.stderr
    assert "issuer http://localhost:8000" in listed.stderr
    # With --json too: stdout exactly one JSON object, the line on stderr.
    as_json = _in(
        tmp_path,
        "--database-url",
        f"sqlite:///{db}",
        "--keys-dir",
        str(keys),
        *("clients", "list", "--json"),
    )
    assert json.loads(as_json.stdout) == {"clients": [], "unreadable": []}
    assert f"database sqlite:///{db}" in as_json.stderr
    assert f"key store file {keys}" in as_json.stderr
    # The same settings from a configuration file, by option and by variable.
    config = tmp_path / "authserver.env"
    config.write_text(
        f"AUTHSERVER_DATABASE_URL=sqlite:///{db}\nAUTHSERVER_ISSUER=https://auth.example.com\n"
    )
    for result in (
        _in(tmp_path, "--config", str(config), "clients", "create", "--name", "x", "--json"),
        _in(tmp_path, "clients", "list", env={"AUTHSERVER_CONFIG": str(config)}),
    ):
        assert result.returncode == 0, result.stderr
    assert "issuer https://auth.example.com" in result.stderr
    assert not (tmp_path / "authserver.db").exists()
    # A misspelt variable is named, with the likely intended one.
    warned = _in(
        tmp_path,
        "--config",
        str(config),
        "clients",
        "list",
        "--json",
        env={"AUTHSERVER_DATABSE_URL": "sqlite:///other.db"},
    )
    assert warned.returncode == 0
    assert json.loads(warned.stdout)["clients"][0]["name"] == "x"
    assert (
        "warning: ignoring unknown variable AUTHSERVER_DATABSE_URL "
        "(did you mean AUTHSERVER_DATABASE_URL?)" in warned.stderr
    )


def test_a_relative_sqlite_path_is_named_as_the_file_it_is(tmp_path: Path) -> None:
    """sqlite:///authserver.db in a configuration file is a file in the working directory
    of each command. The line saying what a command used, the "created a new database"
    note and the "no database" error showed it as written (sqlite:///authserver.db, "no
    database at authserver.db"), so an operator in another directory could not tell that
    the command had acted on, or made, another database than the servers'."""
    config = tmp_path / "authserver.env"
    config.write_text("AUTHSERVER_DATABASE_URL=sqlite:///authserver.db\n")
    config.chmod(0o600)
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    created = _in(here, "--config", str(config), "clients", "create", "--name", "x", "--json")
    assert created.returncode == 0, created.stderr
    assert f"created a new database: database sqlite:///{here}/authserver.db;" in created.stderr
    listed = _in(here, "--config", str(config), "clients", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"(database sqlite:///{here}/authserver.db;" in listed.stderr
    missing = _in(elsewhere, "--config", str(config), "clients", "list")
    assert missing.returncode == 2
    assert f"no database at {elsewhere}/authserver.db;" in missing.stderr, missing.stderr
    assert _files(elsewhere) == []


@pytest.mark.parametrize("url", [None, "sqlite:///authserver.db"])
def test_a_working_directory_with_url_characters_holds_the_database(
    tmp_path: Path, url: str | None
) -> None:
    """The working directory goes into the SQLite URL (the default, a relative path), and
    SQLAlchemy percent-decodes a URL's database and ends it at a ``?``: run in
    ``50%41``, a command made and used ``50A/authserver.db``, while its lines named the
    directory it ran in; in ``a?b`` the database was a file named ``a``."""
    for name, other in (("50%41", "50A"), ("a?b", "a")):
        here = tmp_path / name
        here.mkdir()
        env = {} if url is None else {"AUTHSERVER_DATABASE_URL": url}
        upgraded = _in(here, "db", "upgrade", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        assert _files(here) == ["authserver.db"]
        assert not (tmp_path / other).exists()
        listed = _in(here, "clients", "list", env=env)
        assert listed.returncode == 0, listed.stderr


def test_the_default_key_directory_is_named_by_its_absolute_path(tmp_path: Path) -> None:
    """AUTHSERVER_KEYS_DIR is ``keys`` by default, in the working directory. The line
    saying what a command used named it absolutely, but doctor ("keys does not exist"),
    the key store's errors and serve's warning said just "keys"."""
    doctor = _in(tmp_path, "doctor", "--no-issuer-check")
    assert f"WARNING  key store      {tmp_path / 'keys'} does not exist" in doctor.stdout
    assert _in(tmp_path, "db", "upgrade").returncode == 0
    retired = _in(tmp_path, "keys", "retire", "some-kid")
    assert retired.returncode == 1
    assert f"AUTHSERVER_KEYS_DIR: {tmp_path / 'keys'} does not exist" in retired.stderr
    assert _in(tmp_path, "keys", "rotate").returncode == 0
    doctor = _in(tmp_path, "doctor", "--no-issuer-check")
    assert f"ok       key store      readable (2 keys in {tmp_path / 'keys'})" in doctor.stdout


def test_key_commands_in_another_directory_than_the_servers_keys_are_refused(
    tmp_path: Path,
) -> None:
    """The right database (an absolute URL) and the default key directory, ``keys`` in
    the working directory, from another directory than the servers': `keys list` said "no
    signing keys yet", and `keys rotate` made a key directory there, recorded its keys on
    the servers' audit trail and said "published key", for keys no server would use."""
    home, elsewhere = tmp_path / "deployment", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    env = {"AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    rotated = _in(home, "keys", "rotate", "--json", env=env)
    assert rotated.returncode == 0, rotated.stderr
    trail = cli_json_here(env, "audit", "--action", "key.rotated")["events"]

    for args in (["keys", "list"], ["keys", "rotate"], ["keys", "retire", "some-kid"]):
        result = _in(elsewhere, *args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"authserver: error: AUTHSERVER_KEYS_DIR: {elsewhere / 'keys'} holds no signing "
            "keys, but the database's audit trail records 2 made for it: point --keys-dir, "
            "AUTHSERVER_KEYS_DIR or --config at the servers' key directory (a relative one "
            "is taken from the working directory); if theirs is lost, 'authserver serve' "
            "makes a new key"
        ], args
    # Refused before any key was written: not even an empty key directory is left there.
    assert _files(elsewhere) == []
    assert cli_json_here(env, "audit", "--action", "key.rotated")["events"] == trail
    doctor = _in(elsewhere, "doctor", "--no-issuer-check", env=env)
    assert doctor.returncode == 1
    assert "PROBLEM  key store      AUTHSERVER_KEYS_DIR: " in doctor.stdout, doctor.stdout
    # From the deployment's directory, or pointed at it, they work.
    assert _in(home, "keys", "list", env=env).returncode == 0
    pointed = _in(elsewhere, "--keys-dir", str(home / "keys"), "keys", "list", env=env)
    assert pointed.returncode == 0, pointed.stderr
    # serve is not refused (a lost key directory gets a new key), but says so: one started
    # on another directory than the other instances' signs with a key they never publish.
    log = tmp_path / "server.log"
    other = {**env, "AUTHSERVER_KEYS_DIR": str(elsewhere / "keys"), "AUTHSERVER_SCHEDULER": "false"}
    with ServerProcess(other, log_path=log):
        pass
    warnings = [ln for ln in log.read_text().splitlines() if "WARNING" in ln and "KEYS_DIR" in ln]
    assert len(warnings) == 1, log.read_text()
    assert f"AUTHSERVER_KEYS_DIR: {elsewhere / 'keys'} holds no signing keys" in warnings[0]
    same = {**other, "AUTHSERVER_KEYS_DIR": str(home / "keys")}
    with ServerProcess(same, log_path=tmp_path / "home.log"):
        pass  # the key directory in use: no such line
    assert "holds no signing keys" not in (tmp_path / "home.log").read_text()


def test_db_upgrade_says_when_it_made_a_new_database(tmp_path: Path) -> None:
    """`db upgrade` before a deployment's upgrade, from another directory than the
    servers', made a new database there and said only "upgraded database from empty to
    N", with the usual "(database ...)" line: `clients create` and `keys rotate` say "created
    a new database" in that case, which is what the note is for."""
    first = _in(tmp_path, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [
        f"authserver: note: created a new database: database sqlite:///{tmp_path}/"
        f"authserver.db; key store file {tmp_path}/keys; issuer http://localhost:8000"
    ]
    again = _in(tmp_path, "db", "upgrade", "--json")
    assert json.loads(again.stdout)["from_revision"] == head_revision()
    assert again.stderr.startswith("(database sqlite:///"), again.stderr


@pytest.mark.parametrize("command", [["db", "upgrade"], ["clients", "create", "--name", "x"]])
def test_an_empty_existing_database_gets_the_schema_not_a_new_database(
    tmp_path: Path, command: list[str]
) -> None:
    """On an existing, empty PostgreSQL database (and an empty SQLite file) the note said
    "created a new database": the database was there already, only its schema is new."""
    require_postgres()
    with fresh_pg_schema() as url:
        env = _env(tmp_path, AUTHSERVER_DATABASE_URL=url)
        result = run_cli_here(env, *command)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[-1].startswith(
            "authserver: note: created the schema: database postgresql"
        ), result.stderr
    (tmp_path / "empty.db").touch()
    env = _env(tmp_path, AUTHSERVER_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    result = run_cli_here(env, *command)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"authserver: note: created the schema: database sqlite:///{tmp_path}/empty.db;"
    ), result.stderr


def test_an_unknown_client_or_key_names_where_it_was_looked_for(tmp_path: Path) -> None:
    """ "no client with id X" is also what another deployment's database answers (staging's
    settings in the shell, prod's client id on the screen), and a command that fails
    prints no line saying what it used: the error line names the database, key store and
    issuer it looked in, as a command that succeeds says on its last line."""
    (tmp_path / "prod").mkdir()
    (tmp_path / "staging").mkdir()
    prod, staging = _env(tmp_path / "prod"), _env(tmp_path / "staging")
    client_id = cli_json_here(prod, "clients", "create", "--name", "x")["client_id"]
    kid = cli_json_here(prod, "keys", "rotate")["kid"]
    assert run_cli_here(staging, "db", "upgrade").returncode == 0
    cli_json_here(staging, "keys", "rotate")
    where = (
        f"(database sqlite:///{tmp_path / 'staging' / 'a.db'}; key store file "
        f"{tmp_path / 'staging' / 'keys'}; issuer http://localhost:8000)"
    )
    for args, unknown in (
        (["clients", "show", client_id], f"no client with id {client_id!r}"),
        (["clients", "disable", client_id], f"no client with id {client_id!r}"),
        (
            ["tokens", "revoke", "--sub", "u", "--client", client_id],
            f"no client with id {client_id!r}",
        ),
        (["keys", "retire", kid], f"no signing key with kid {kid!r}"),
    ):
        result = run_cli_here(staging, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.splitlines() == [f"authserver: error: {unknown} {where}"], args


def test_passwords_are_masked_in_what_a_command_says(tmp_path: Path) -> None:
    url = "postgresql+psycopg://authserver:pw-5e1d77@127.0.0.1:1/nodb"
    result = run_cli_here({"AUTHSERVER_DATABASE_URL": url}, "clients", "list")
    assert result.returncode != 0
    assert "pw-5e1d77" not in result.stdout + result.stderr
    # The cause, in words, and where.
    assert "connection refused" in result.stderr, result.stderr
    assert "127.0.0.1:1/nodb" in result.stderr


def test_serve_says_in_words_why_it_cannot_use_the_database(tmp_path: Path) -> None:
    """``serve`` checks the schema before it starts its workers: an unusable database is
    the same one line as any command's (storage/sql's StorageError message), not the
    driver's own text."""
    url = "postgresql+psycopg://authserver:pw-5e1d77@127.0.0.1:1/nodb"
    env = _env(tmp_path, AUTHSERVER_DATABASE_URL=url)
    result = run_cli(env, "serve", "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    assert "pw-5e1d77" not in result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        "authserver: error: cannot start: cannot use the database at "
        "postgresql+psycopg://authserver:***@127.0.0.1:1/nodb: connection refused (is the "
        "database server running on that host and port?)"
    ), result.stderr
    assert "psycopg" not in result.stderr.replace("postgresql+psycopg", ""), result.stderr


# -- the newcomer's mistakes -----------------------------------------------------------------


def test_error_messages_name_what_to_change(tmp_path: Path) -> None:
    port = run_cli(_env(tmp_path), "serve", "--port", "abc")
    assert port.returncode == 2
    assert port.stderr.strip() == "authserver: error: --port: expected a whole number"

    mysql = run_cli_here({"AUTHSERVER_DATABASE_URL": "mysql://u@h/db"}, "clients", "list")
    assert mysql.returncode == 2
    assert "postgresql+psycopg://" in mysql.stderr
    assert "sqlite:///" in mysql.stderr
    assert "Traceback" not in mysql.stderr

    action = run_cli_here(_env(tmp_path), "audit", "--action", "bogus")
    assert action.returncode == 2
    assert "token.issued" in action.stderr
    assert "client.secret_rotated" in action.stderr

    current = cli_json_here(_env(tmp_path), "db", "current")
    assert current == {
        "revision": None,
        "head": current["head"],
        "up_to_date": False,
        "status": "empty",
    }


def test_a_database_migrated_by_a_newer_version_is_named_as_such(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    with sqlite3.connect(tmp_path / "a.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for args in (["db", "upgrade"], ["clients", "list"], ["clients", "create", "--name", "b"]):
        result = run_cli_here(env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
        assert "revision 9999" in result.stderr
        assert "a newer version migrated this database" in result.stderr
        assert "run 'authserver db upgrade'" not in result.stderr
    current = run_cli_here(env, "db", "current")
    assert current.stdout.strip() == (
        "9999 (unknown to this version, which needs "
        f"{head_revision()}: a newer version migrated it)"
    )
    # A script reads the same from --json (it only said up_to_date: false).
    assert cli_json_here(env, "db", "current")["status"] == "newer"
    doctor = run_cli_here(env, "doctor", "--no-issuer-check")
    assert doctor.returncode == 1
    assert "a newer version migrated this database" in doctor.stdout
    assert "db upgrade" not in doctor.stdout


def test_a_keys_dir_that_is_not_a_directory_is_named_in_one_line(tmp_path: Path) -> None:
    # It was a NotADirectoryError traceback from the commands that only read the keys,
    # and "cannot create ...: File exists" from those that write.
    env = _env(tmp_path)
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    keys = tmp_path / "keys"
    keys.write_text("a file\n")
    listed = run_cli_here(env, "keys", "list")
    assert listed.returncode == 1
    assert listed.stderr.splitlines() == [
        f"authserver: error: AUTHSERVER_KEYS_DIR: cannot read {keys}: Not a directory"
    ]
    rotated = run_cli_here(env, "keys", "rotate")
    assert rotated.returncode == 2
    assert rotated.stderr.splitlines() == [
        f"authserver: error: AUTHSERVER_KEYS_DIR: {keys} is not a directory"
    ]
    doctor = run_cli_here(env, "doctor", "--no-issuer-check", "--json")
    assert doctor.returncode == 1
    store = next(c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "key store")
    assert store == {
        "check": "key store",
        "status": "problem",
        "detail": f"AUTHSERVER_KEYS_DIR: cannot read {keys}: Not a directory",
    }
    assert keys.read_text() == "a file\n"


@pytest.mark.parametrize(
    "url", ["postgresql://u:pw-5e1d77@db.example:notaport/x", "postgresql://u:pw-5e1d77@[::1/x"]
)
def test_a_database_url_with_a_bad_port_is_one_line(tmp_path: Path, url: str) -> None:
    # SQLAlchemy's make_url raises ValueError for a port that is not a number: it was a
    # traceback from every command.
    for args in (["clients", "list"], ["db", "upgrade"], ["doctor"]):
        result = run_cli_here({**_env(tmp_path), "AUTHSERVER_DATABASE_URL": url}, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.splitlines()[-1] == (
            "authserver: error: AUTHSERVER_DATABASE_URL: not a valid SQLAlchemy URL "
            "(its port must be a number from 1 to 65535)"
        ), args
        assert "pw-5e1d77" not in result.stdout + result.stderr


def test_a_bad_port_names_where_the_url_came_from(tmp_path: Path) -> None:
    """The port is checked where the setting is read, so the line names the option or the
    configuration file's line that carried the URL: it named AUTHSERVER_DATABASE_URL
    whatever the URL came from (the check was the engine's, which knows no source)."""
    url = "postgresql://u:pw-5e1d77@db.example:notaport/x"
    reason = "not a valid SQLAlchemy URL (its port must be a number from 1 to 65535)"
    result = run_cli_here(_env(tmp_path), "--database-url", url, "clients", "list")
    assert result.returncode == 2
    assert result.stderr == f"authserver: error: --database-url: {reason}\n"
    config = tmp_path / "authserver.env"
    config.write_text(f"AUTHSERVER_DATABASE_URL={url}\n")
    env = {k: v for k, v in _env(tmp_path).items() if k != "AUTHSERVER_DATABASE_URL"}
    result = run_cli_here(env, "--config", str(config), "clients", "list")
    assert result.returncode == 2
    assert result.stderr == f"authserver: error: {config}: AUTHSERVER_DATABASE_URL: {reason}\n"
    assert "pw-5e1d77" not in result.stdout + result.stderr


def test_a_password_holding_a_slash_is_no_port(tmp_path: Path) -> None:
    """A password may hold ``/``, ``?`` or ``#`` unencoded (a generated one often does):
    SQLAlchemy and libpq take it, and such a URL connected. The port check cut the URL
    at the password's ``/`` and read ``user:pass`` as a host and port: "its port must be
    a number" for a URL with no port wrong in it."""
    require_postgres()
    with fresh_pg_schema() as url:
        scheme, _, rest = url.partition("://")
        user, _, host = rest.partition("@")
        if ":" in user:
            pytest.skip("the test PostgreSQL URL has a password of its own")
        # The test server trusts local connections: the password is not checked.
        env = _env(tmp_path, AUTHSERVER_DATABASE_URL=f"{scheme}://{user}:pw/5e1d?7#7@{host}")
        upgraded = run_cli_here(env, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        current = run_cli_here(env, "db", "current", "--json")
        assert current.returncode == 0, current.stderr
        assert json.loads(current.stdout)["status"] == "up_to_date"
        assert "pw/5e1d" not in upgraded.stderr + current.stderr


def test_serve_refuses_port_0(tmp_path: Path) -> None:
    # The system picked a free port, while the start-up line, the issuer that follows the
    # port and so every token's iss and the metadata's URLs said http://localhost:0.
    result = run_cli_here(_env(tmp_path), "serve", "--port", "0")
    assert result.returncode == 2
    assert result.stderr == "authserver: error: --port: must be between 1 and 65535\n"
    assert _files(tmp_path) == []


def test_serve_refuses_an_issuer_too_long_for_its_tokens(tmp_path: Path) -> None:
    """A 6,000-character AUTHSERVER_ISSUER started a server whose every token request was
    refused with "the token would be 16896 characters long ... ask for fewer scopes": the
    real serve now refuses to start, in one line, and creates nothing."""
    issuer = "https://auth.example.com/" + "p" * 6000
    log = tmp_path / "serve.log"
    server = ServerProcess(_env(tmp_path, AUTHSERVER_ISSUER=issuer), log_path=log)
    try:
        with pytest.raises(RuntimeError, match="exited with 2"):
            server.start()
    finally:
        server.stop()
    assert log.read_text().splitlines() == [
        "authserver: error: AUTHSERVER_ISSUER: the issuer would be 6025 characters, more "
        "than the 255 it may be (every token carries it twice, and a token is at most 8000 "
        "characters)"
    ]
    assert _files(tmp_path) == ["serve.log"]


# -- doctor ----------------------------------------------------------------------------------


def test_doctor_passes_on_a_healthy_server_and_names_each_problem(tmp_path: Path) -> None:
    env = _env(tmp_path, AUTHSERVER_KEY_PASSPHRASE="correct horse battery staple")
    with ServerProcess(env) as server:
        env["AUTHSERVER_ISSUER"] = server.base_url
        healthy = run_cli_here(env, "doctor")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert "No problems found." in healthy.stdout
        report = cli_json_here(env, "doctor")
        assert report["ok"] is True
        assert {c["check"] for c in report["checks"]} >= {
            "database",
            "schema",
            "key store",
            "signing key",
            "passphrase",
            "issuer",
            "admin token",
        }
        # The issuer this configuration names is not the one that server answers as.
        wrong = run_cli_here({**env, "AUTHSERVER_ISSUER": server.base_url + "/other"}, "doctor")
        assert wrong.returncode == 1
        assert "PROBLEM" in wrong.stdout
        assert "issuer" in wrong.stdout
        # A wrong passphrase: the key store cannot be read.
        bad_pass = run_cli_here({**env, "AUTHSERVER_KEY_PASSPHRASE": "wrong passphrase"}, "doctor")
        assert bad_pass.returncode == 1
        assert "key store" in bad_pass.stdout
        # No passphrase for encrypted keys: the key store is the problem, and the
        # passphrase line does not say the keys are stored unencrypted.
        no_pass = {k: v for k, v in env.items() if k != "AUTHSERVER_KEY_PASSPHRASE"}
        missing = run_cli_here(no_pass, "doctor")
        assert missing.returncode == 1
        passphrase = [line for line in missing.stdout.splitlines() if "passphrase" in line]
        assert passphrase, missing.stdout
        assert not [line for line in passphrase if "unencrypted" in line], missing.stdout
    unreachable = run_cli_here(env, "doctor", "--json")
    assert unreachable.returncode == 1
    issuer = next(c for c in json.loads(unreachable.stdout)["checks"] if c["check"] == "issuer")
    assert issuer["status"] == "problem"
    assert "cannot reach" in issuer["detail"]


def test_doctor_warns_of_unreadable_key_records(tmp_path: Path) -> None:
    """Skipped everywhere else (never signed with, never published): doctor still tells the
    operator, as a warning (the server works), naming the record, never its content."""
    env = _env(tmp_path, AUTHSERVER_ISSUER="http://127.0.0.1:9")
    assert run_cli_here(env, "keys", "rotate").returncode == 0
    (tmp_path / "keys" / "bad.json").write_text('{"kid": "bad", "secret-ish": ')
    report = cli_json_here(env, "doctor", "--no-issuer-check")
    warnings = [c for c in report["checks"] if c["status"] == "warning"]
    assert any(
        c["check"] == "key store" and "bad.json" in c["detail"] and "secret-ish" not in c["detail"]
        for c in warnings
    ), report
    assert report["ok"] is True


def test_doctor_names_a_shared_metrics_token_an_open_database_file_and_a_missing_key_dir(
    tmp_path: Path,
) -> None:
    """Each said "ok" (an operator review): the metrics token equal to the admin token, a
    database file other users may read, a key directory that does not exist (a typo in
    AUTHSERVER_KEYS_DIR, which serve would then fill)."""
    token = "doctor-review-token-0123456789abcdefghij"
    env = _env(
        tmp_path,
        AUTHSERVER_ISSUER="http://127.0.0.1:9",
        AUTHSERVER_ADMIN_TOKEN=token,
        AUTHSERVER_METRICS_TOKEN=token,
    )
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    os.chmod(tmp_path / "a.db", 0o644)
    result = run_cli_here(env, "doctor", "--no-issuer-check", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    found = {(c["check"], c["status"]): c["detail"] for c in report["checks"]}
    assert "is the admin token" in found[("metrics token", "problem")], report
    assert (
        "was readable or writable by other users (mode 644): narrowed to its owner"
        in (found[("database file", "warning")])
    ), report
    assert stat.S_IMODE((tmp_path / "a.db").stat().st_mode) == 0o600
    assert "does not exist" in found[("key store", "warning")], report
    assert not (tmp_path / "keys").exists()  # doctor looked, created nothing
    assert report["ok"] is False


def test_doctor_reaches_the_rate_limit_storage_as_serve_does(tmp_path: Path) -> None:
    """A Redis that cannot be reached stops serve at start; doctor said "No problems
    found" for the same configuration. It reports it (the password masked)."""
    unreachable = f"redis://:doctor-redis-pw@127.0.0.1:{free_port()}/0"
    env = _env(tmp_path, AUTHSERVER_RATE_LIMIT_STORAGE=unreachable)
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    result = run_cli_here(env, "doctor", "--no-issuer-check", "--json")
    assert result.returncode == 1, result.stdout
    found = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert found["rate limits"]["status"] == "problem", found
    assert found["rate limits"]["detail"].startswith("AUTHSERVER_RATE_LIMIT_STORAGE: cannot reach")
    assert "doctor-redis-pw" not in result.stdout + result.stderr

    served = run_cli(env, "serve", "--host", "127.0.0.1", "--port", str(free_port()), timeout=60)
    assert served.returncode == 2
    assert found["rate limits"]["detail"] in served.stderr  # the same line serve stops with

    memory = _env(tmp_path)
    report = json.loads(run_cli_here(memory, "doctor", "--no-issuer-check", "--json").stdout)
    limits = next(c for c in report["checks"] if c["check"] == "rate limits")
    assert limits["status"] == "ok", limits
    assert limits["detail"].startswith("memory://"), limits


def test_doctor_names_a_configuration_file_others_may_read_that_holds_a_secret(
    tmp_path: Path,
) -> None:
    """operations.md keeps a deployment's settings, the key passphrase among them, in one
    file (chmod 600). One written with an editor's 644 let every user of the machine read
    the passphrase; doctor, which narrows a database file others may read, said nothing."""
    env = _env(tmp_path)
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    config = tmp_path / "authserver.env"
    config.write_text(
        "AUTHSERVER_KEY_PASSPHRASE=doctor-config-passphrase\n"
        f"AUTHSERVER_DATABASE_URL={env['AUTHSERVER_DATABASE_URL']}\n"
    )
    os.chmod(config, 0o644)
    without_url = {k: v for k, v in env.items() if k != "AUTHSERVER_DATABASE_URL"}
    for args in (["--config", str(config)], []):
        run_env = without_url if args else {**without_url, "AUTHSERVER_CONFIG": str(config)}
        result = run_cli_here(run_env, *args, "doctor", "--no-issuer-check", "--json")
        assert result.returncode == 1, result.stderr
        found = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
        detail = found["configuration file"]["detail"]
        assert found["configuration file"]["status"] == "problem"
        # The secret by name, never by value; a URL without a password is no secret.
        assert detail == (
            f"{config} holds AUTHSERVER_KEY_PASSPHRASE and other users may read it "
            f"(mode 644): chmod 600 {config}"
        )
        assert "doctor-config-passphrase" not in result.stdout + result.stderr
    os.chmod(config, 0o600)
    result = run_cli_here(
        without_url, "--config", str(config), "doctor", "--no-issuer-check", "--json"
    )
    assert "configuration file" not in {c["check"] for c in json.loads(result.stdout)["checks"]}


def test_audit_since_empty_is_refused_as_the_api_refuses_it(tmp_path: Path) -> None:
    """'audit --since ""' (an unset shell variable) meant no filter at all."""
    env = _env(tmp_path)
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    result = run_cli_here(env, "audit", "--since", "")
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines()[0].startswith("authserver: error: --since"), result.stderr


@pytest.mark.parametrize(("option", "field"), [("--client", "client_id"), ("--sub", "sub")])
def test_an_empty_audit_filter_is_refused_not_answered_with_no_events(
    tmp_path: Path, option: str, field: str
) -> None:
    """'audit --client ""' (an unset shell variable) answered "no matching audit events":
    no event has an empty client or user, so an operator looking into an incident read
    that nothing had happened. Refused as --since "" is, in the admin API's words."""
    env = _env(tmp_path)
    assert run_cli_here(env, "clients", "create", "--name", "audited").returncode == 0
    result = run_cli_here(env, "audit", option, "")
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"authserver: error: {field} must not be empty (leave the filter out instead)"
    ]


# -- clients ---------------------------------------------------------------------------------


def test_rotate_secret_with_grace_keeps_the_old_secret_working(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with ServerProcess(env) as server:
        created = cli_json_here(env, "clients", "create", "--name", "backend", "--audience", "A")
        cid, old = created["client_id"], created["client_secret"]
        assert request_token(server, (cid, old), sub="user-1").status_code == 200

        rotated = cli_json_here(env, "clients", "rotate-secret", cid, "--grace", "1h")
        new = rotated["client_secret"]
        assert rotated["previous_secret_expires_at"] is not None
        assert request_token(server, (cid, new), sub="user-1").status_code == 200
        assert request_token(server, (cid, old), sub="user-1").status_code == 200

        # Without --grace the old secret (and the one in its grace period) stop at once.
        newest = cli_json_here(env, "clients", "rotate-secret", cid)["client_secret"]
        assert request_token(server, (cid, old), sub="user-1").status_code == 401
        assert request_token(server, (cid, new), sub="user-1").status_code == 401
        assert request_token(server, (cid, newest), sub="user-1").status_code == 200

    events = cli_json_here(env, "audit", "--client", cid, "--action", "token.issued")["events"]
    used = [e["detail"].get("secret_used") for e in reversed(events)]
    assert used == ["current", "current", "previous", "current"], events
    # The table an operator reads to see when the backend has switched (docs/operations.md)
    # shows the same, newest first.
    human = run_cli_here(env, "audit", "--client", cid, "--action", "token.issued")
    assert human.stdout.splitlines()[0].split()[-1] == "SECRET"
    assert [line.split()[-1] for line in human.stdout.splitlines()[2:]] == used[::-1]
    bad = run_cli_here(env, "clients", "rotate-secret", cid, "--grace", "soon")
    assert bad.returncode == 2
    assert "--grace" in bad.stderr


def test_the_audit_table_shows_the_id_that_before_pages_on(tmp_path: Path) -> None:
    """``audit --before ID`` lists the page after one whose last event is ID; the table an
    operator reads must show that id (it showed none: only ``--json`` could page)."""
    env = _env(tmp_path)
    for n in range(5):
        cli_json_here(env, "clients", "create", "--name", f"c{n}")
    listed = [e["id"] for e in cli_json_here(env, "audit")["events"]]
    assert len(listed) == 5
    pages: list[int] = []
    args = ["audit", "--limit", "2"]
    while True:
        human = run_cli_here(env, *args)
        assert human.returncode == 0, human.stderr
        if human.stdout.startswith("no matching audit events"):
            break
        lines = human.stdout.splitlines()
        assert lines[0].split()[0] == "ID"
        ids = [int(line.split()[0]) for line in lines[2:]]
        pages += ids
        args = ["audit", "--limit", "2", "--before", str(ids[-1])]
    assert pages == listed


def test_delete_asks_for_confirmation_unless_yes(tmp_path: Path) -> None:
    env = _env(tmp_path)
    cid = cli_json_here(env, "clients", "create", "--name", "x")["client_id"]
    refused = run_cli_here(env, "clients", "delete", cid)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert cli_json_here(env, "clients", "show", cid)["client_id"] == cid
    # Interactive: "n" keeps it, "y" deletes it.
    no = subprocess.run(
        ["script", "-qec", f"{AUTHSERVER} clients delete {cid}", "/dev/null"],
        input="n\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert no.returncode != 0
    assert cli_json_here(env, "clients", "show", cid)["client_id"] == cid
    deleted = cli_json_here(env, "clients", "delete", cid, "--yes")
    assert deleted == {"client_id": cid, "deleted": True}
    assert run_cli_here(env, "clients", "show", cid).returncode == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_output_that_cannot_be_written_is_one_line_and_a_lost_secret_changes_nothing(
    tmp_path: Path,
) -> None:
    # Real processes: stdout is /dev/full, where every write fails with ENOSPC (a full
    # disk under 'clients create --json > creds.json'). It was a traceback, after the
    # commit: a rotated secret was lost while the old one had stopped working.
    env = _env(tmp_path)
    client = cli_json_here(env, "clients", "create", "--name", "backend")
    cid = client["client_id"]
    for args in (
        ["clients", "create", "--name", "lost"],
        ["clients", "rotate-secret", cid, "--json"],
        ["clients", "list"],
    ):
        with open("/dev/full", "w") as full:
            result = run_cli(env, *args, stdout=full)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.splitlines() == [
            "authserver: error: cannot write the output: No space left on device"
        ], args
    listed = cli_json_here(env, "clients", "list")["clients"]
    assert [c["name"] for c in listed] == ["backend"]
    assert cli_json_here(env, "audit", "--action", "client.secret_rotated")["events"] == []
    assert listed[0]["updated_at"] == client["updated_at"]


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_a_new_secret_sent_to_a_closed_pipe_leaves_no_client(tmp_path: Path, as_json: bool) -> None:
    """'clients create | head -0': the reader is gone before the secret is written, so
    nobody saw it, and the client it belongs to must not stay behind (it did: a closed
    pipe was let through as Click's quiet exit, past the delete)."""
    env = _env(tmp_path)
    cli_json_here(env, "clients", "create", "--name", "backend")
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command starts: its first write fails
    try:
        result = run_cli(
            env, "clients", "create", "--name", "piped", *(["--json"] * as_json), stdout=write_end
        )
    finally:
        os.close(write_end)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    listed = cli_json_here(env, "clients", "list")["clients"]
    assert [c["name"] for c in listed] == ["backend"]


@pytest.mark.parametrize("closed", [">&-", "2>&-"], ids=["stdout", "stderr"])
def test_a_command_started_with_a_closed_stream_does_nothing(tmp_path: Path, closed: str) -> None:
    """'authserver clients rotate-secret ID >&-': Click writes nothing to a closed stream
    and says nothing, so a rotated secret was committed and never shown (the backend locked
    out), and the exit was a traceback. Now nothing is done, exit 1."""
    env = _env(tmp_path)
    client = cli_json_here(env, "clients", "create", "--name", "backend")
    cid = client["client_id"]
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")} | env
    for args in (
        ["clients", "create", "--name", "lost"],
        ["clients", "rotate-secret", cid, "--json"],
        ["clients", "list"],
    ):
        result = subprocess.run(
            ["bash", "-c", f'"$0" "$@" {closed}', AUTHSERVER, *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, (args, result.stderr)
        if closed == ">&-":
            assert result.stderr == "authserver: error: stdout is closed\n", args
    listed = cli_json_here(env, "clients", "list")["clients"]
    assert [c["name"] for c in listed] == ["backend"]
    assert listed[0]["updated_at"] == client["updated_at"]
    assert cli_json_here(env, "audit", "--action", "client.secret_rotated")["events"] == []


def test_serve_issuer_follows_the_port_when_unset(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env.pop("AUTHSERVER_ISSUER", None)
    port = free_port()
    server = ServerProcess(env, port=port)
    del server.env["AUTHSERVER_ISSUER"]  # ServerProcess sets one by default
    with server:
        metadata = requests.get(
            server.base_url + "/.well-known/oauth-authorization-server", timeout=10
        ).json()
    assert metadata["issuer"] == f"http://localhost:{port}"
    assert metadata["jwks_uri"] == f"http://localhost:{port}/.well-known/jwks.json"


def test_a_config_file_line_dotenv_cannot_parse_stops_the_command(tmp_path: Path) -> None:
    """Not dotenv's warning and a run on defaults: one line naming the file and the line,
    exit 2 (a configuration error), and the line's text (maybe a secret) not echoed."""
    db = tmp_path / "a.db"
    assert run_cli({}, "--database-url", f"sqlite:///{db}", "db", "upgrade").returncode == 0
    config = tmp_path / "authserver.env"
    config.write_text(
        f'AUTHSERVER_DATABASE_URL=sqlite:///{db}\nAUTHSERVER_ADMIN_TOKEN="s3cr3t-admin-token\n'
    )
    result = run_cli_here({}, "--config", str(config), "clients", "list")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"authserver: error: {config}: line 2: not a NAME=VALUE line "
        "(is an = missing, or a quote not closed?)"
    ]
    assert "s3cr3t" not in result.stderr + result.stdout
    # A file that is not there is named by where its path came from: the option here.
    missing = run_cli_here({}, "--config", str(tmp_path / "nosuch.env"), "clients", "list")
    assert missing.returncode == 2, missing
    assert missing.stderr.startswith("authserver: error: --config: cannot read "), missing


def test_an_empty_config_path_is_refused_not_ignored(tmp_path: Path) -> None:
    """``--config "$CONF"`` with the variable unset (or ``AUTHSERVER_CONFIG=``) was
    ignored: the command ran on the defaults, and clients create made a database and a
    key store in the working directory, holding a client the real server never sees.
    Refused as every other empty setting is, naming where it came from."""
    for args, env, source in (
        (["--config", ""], {}, "--config"),
        ([], {"AUTHSERVER_CONFIG": ""}, "AUTHSERVER_CONFIG"),
    ):
        result = _in(tmp_path, *args, "clients", "create", "--name", "lost", env=env)
        assert result.returncode == 2, result
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"authserver: error: {source}: must not be empty (leave it out or unset it instead)"
        ]
        assert _files(tmp_path) == []
    # A config file named by the variable is named so when it cannot be read.
    result = _in(tmp_path, "clients", "list", env={"AUTHSERVER_CONFIG": "nosuch.env"})
    assert result.returncode == 2, result
    assert result.stderr.startswith("authserver: error: AUTHSERVER_CONFIG: cannot read "), result


def test_serve_workers_read_the_config_file_given_as_an_option(tmp_path: Path) -> None:
    """``authserver --config FILE serve``: the master exports the file's path, so every
    worker (a fresh process reading its settings again) uses the same settings."""
    config = tmp_path / "authserver.env"
    config.write_text(
        f"AUTHSERVER_DATABASE_URL=sqlite:///{tmp_path / 'c.db'}\n"
        f"AUTHSERVER_KEYS_DIR={tmp_path / 'keys'}\n"
        "AUTHSERVER_ISSUER=https://auth.from-the-file.example\n"
        "AUTHSERVER_SCHEDULER=false\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    proc = subprocess.Popen(
        [AUTHSERVER, "--config", "authserver.env", "serve", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        metadata = None
        for _ in range(150):
            try:
                answer = requests.get(
                    f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server", timeout=2
                )
                metadata = answer.json()
                break
            except requests.RequestException:
                time.sleep(0.2)
        assert metadata is not None
        assert metadata["issuer"] == "https://auth.from-the-file.example"
        assert (tmp_path / "c.db").exists()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
@pytest.mark.parametrize("command", [["db", "upgrade"], ["clients", "create", "--name", "x"]])
def test_sqlite_in_memory_is_refused_before_anything_runs(
    tmp_path: Path, url: str, command: list[str]
) -> None:
    """Each process (each command, each server worker) would get its own empty database:
    a client created there is gone when the command returns. One line, exit 2."""
    result = run_cli_here(
        {"AUTHSERVER_KEYS_DIR": str(tmp_path / "keys")}, "--database-url", url, *command
    )
    assert result.returncode == 2, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("authserver: error: --database-url: is an in-memory SQLite database"), (
        line
    )
    assert not (tmp_path / "keys").exists()


def test_jwks_options_with_odd_values_are_refused_in_one_line(
    tmp_path: Path, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """An empty --jwks-file or --jwks-uri (an unset shell variable) made a secret client,
    or was dropped from an update; a FIFO or /dev/zero hung or filled the memory."""
    env = _env(tmp_path)
    fifo = tmp_path / "jwks.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    big.write_text('{"keys": []}' + " " * (64 * 1024))
    for args, words in (
        (["--jwks-file", ""], "--jwks-file: the path is empty"),
        (["--jwks-file", str(fifo)], "is not a regular file"),
        (["--jwks-file", "/dev/zero"], "is not a regular file"),
        (["--jwks-file", str(tmp_path)], "is not a regular file"),
        (["--jwks-file", str(big)], "is larger than 64 KiB"),
        (["--jwks-uri", ""], "jwks_uri must be an https:// URL"),
        (["--jwks-file", "", "--jwks-uri", ""], "mutually exclusive"),
    ):
        result = run_cli_here(env, "clients", "create", "--name", "odd", *args)
        assert result.returncode != 0, (args, result.stdout)
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
    assert cli_json_here(env, "clients", "list")["clients"] == []

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [client_public_jwk(rsa_private_key)]}))
    created = cli_json_here(env, "clients", "create", "--name", "jwt", "--jwks-file", str(jwks))
    result = run_cli_here(
        env, "clients", "update", created["client_id"], "--jwks-uri", "", "--name", "renamed"
    )
    assert result.returncode != 0, result.stdout
    assert "jwks_uri must be an https:// URL" in result.stderr
    assert cli_json_here(env, "clients", "show", created["client_id"])["name"] == "jwt"
