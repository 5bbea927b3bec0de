"""The ``authserver`` command line (docs/reference.md, "Command line").

Every test runs on a real SQLite file and on a fresh PostgreSQL schema (``db_url``).
``serve`` and the first command of the first test run as real ``authserver`` processes;
the other commands run through the same entry point in this process
(``tests.helpers.run_cli_here``: the same code, error rendering and exit statuses, without
most of a second of interpreter start-up each). ``test_cli_usage_errors.py``,
``test_cli_operator.py`` and ``test_cli_lifecycle.py`` run the binary too.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import MetaData
from sqlalchemy import create_engine
from sqlalchemy import select
from sqlalchemy import text

from authserver.settings import parse_database_url
from authserver.settings import redact_url
from authserver.storage.sql.migrate import head_revision
from tests.e2e.test_admin_api import too_large
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import free_port
from tests.helpers import run_cli
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

EnvFor = Callable[..., dict[str, str]]


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The failure contract: non-zero exit, exactly one line on stderr, no traceback."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def _dump_database(db_url: str) -> list[tuple[str, dict[str, Any]]]:
    """Every row of every table, through SQLAlchemy (same schema as the subprocesses)."""
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        meta = MetaData()
        meta.reflect(engine)
        rows = []
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(select(table)):
                    rows.append((table.name, dict(row._mapping)))
        return rows
    finally:
        engine.dispose()


def _sqlite_bytes(db_url: str) -> bytes:
    """The raw bytes of a SQLite database, including its WAL and journal files."""
    path = Path(db_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


# -- clients ----------------------------------------------------------------------------


def test_clients_create_json_prints_one_object_and_stores_only_a_hash(
    db_url: str, env_for: EnvFor
) -> None:
    env = env_for(db_url)
    result = run_cli(  # the real binary: exactly one JSON document on its stdout
        env,
        "clients",
        "create",
        "--name",
        "X",
        "--audience",
        "A",
        "--audience",
        "B",
        "--scope",
        "s1",
        "--allowed-claim",
        "libraryId",
        "--token-ttl",
        "600",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    created = json.loads(result.stdout)  # exactly one JSON document, nothing else
    assert isinstance(created, dict)
    client_id, secret = created["client_id"], created["client_secret"]
    assert isinstance(client_id, str)
    assert client_id
    assert isinstance(secret, str)
    assert len(secret) >= 32
    assert created["name"] == "X"
    assert created["audiences"] == ["A", "B"]
    assert created["scopes"] == ["s1"]
    assert created["allowed_claims"] == ["libraryId"]
    assert created["token_ttl"] == 600
    assert created["enabled"] is True

    # Stored only as a hash: the plaintext is nowhere in the database.
    rows = _dump_database(db_url)
    client_rows = [r for t, r in rows if t == "clients"]
    assert len(client_rows) == 1
    stored = client_rows[0]
    assert stored["client_id"] == client_id
    assert stored["secret_hash"]
    assert secret not in str(stored["secret_hash"])
    for table, row in rows:
        assert secret not in repr(row), f"client secret stored in plain text in {table}"
    if db_url.startswith("sqlite"):
        raw = _sqlite_bytes(db_url)
        assert client_id.encode() in raw  # the grep does see the data
        assert secret.encode() not in raw

    # list and show never reveal the secret (nor its hash).
    listed = cli_json_here(env, "clients", "list")
    assert [c["client_id"] for c in listed["clients"]] == [client_id]
    shown = cli_json_here(env, "clients", "show", client_id)
    assert shown["client_id"] == client_id
    assert shown["audiences"] == ["A", "B"]
    assert shown["scopes"] == ["s1"]
    assert shown["allowed_claims"] == ["libraryId"]
    assert shown["token_ttl"] == 600
    hashed = str(stored["secret_hash"])
    for args in (("clients", "list"), ("clients", "show", client_id)):
        for extra in ((), ("--json",)):
            out = run_cli_here(env, *args, *extra)
            assert out.returncode == 0, out.stderr
            assert secret not in out.stdout + out.stderr
            assert hashed not in out.stdout + out.stderr
            if extra:
                data = json.loads(out.stdout)
                for item in data.get("clients", [data]):
                    assert "client_secret" not in item
            else:
                assert not re.search(r"^client_secret\s", out.stdout, re.M)


def test_clients_create_human_output_shows_id_and_secret(db_url: str, env_for: EnvFor) -> None:
    env = env_for(db_url)
    result = run_cli_here(env, "clients", "create", "--name", "backend one")
    assert result.returncode == 0, result.stderr
    client_id = re.search(r"^client_id\s+(\S+)\s*$", result.stdout, re.M)
    secret = re.search(r"^client_secret\s+(\S+)\s*$", result.stdout, re.M)
    assert client_id, result.stdout
    assert secret, result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)
    shown = cli_json_here(env, "clients", "show", client_id.group(1))
    assert shown["name"] == "backend one"
    for _table, row in _dump_database(db_url):
        assert secret.group(1) not in repr(row)


def _jwks_file(tmp_path: Path, rsa_private_key: Any) -> Path:
    from joserfc.jwk import RSAKey

    key = RSAKey.import_key(rsa_private_key)
    public = key.as_dict(private=False)
    public["kid"] = key.thumbprint()
    path = tmp_path / "client-jwks.json"
    path.write_text(json.dumps({"keys": [public]}))
    return path


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["clients", "show", "as_client_doesnotexist"], id="show-unknown"),
        pytest.param(
            ["clients", "show", "as_client_doesnotexist", "--json"], id="show-unknown-json"
        ),
        pytest.param(["clients", "create", "--name", "X", "--token-ttl", "0"], id="ttl-0"),
        pytest.param(["clients", "create", "--name", "X", "--token-ttl", "-5"], id="ttl-negative"),
        pytest.param(
            ["clients", "create", "--name", "X", "--token-ttl", "-5", "--json"],
            id="ttl-negative-json",
        ),
        pytest.param(
            ["clients", "create", "--name", "X", "--allowed-claim", "iss"], id="reserved-claim"
        ),
        pytest.param(
            ["clients", "create", "--name", "X", "--allowed-claim", "EXP"], id="reserved-claim-case"
        ),
        pytest.param(
            ["clients", "create", "--name", "X", "--fixed-claim", "Sub=admin"],
            id="identity-claim-case-fixed",
        ),
        pytest.param(["clients", "create", "--name", ""], id="empty-name"),
        pytest.param(["clients", "create", "--name", "   "], id="blank-name"),
        pytest.param(
            ["clients", "create", "--name", "X", "--jwks-file", "{missing}"], id="jwks-file-missing"
        ),
        pytest.param(
            [
                "clients",
                "create",
                "--name",
                "X",
                "--jwks-file",
                "{jwks}",
                "--jwks-uri",
                "https://backend.example.com/jwks.json",
            ],
            id="jwks-file-and-uri",
        ),
        pytest.param(["keys", "retire", "NoSuchKid0123456789"], id="retire-unknown"),
        pytest.param(["keys", "retire", "NoSuchKid0123456789", "--json"], id="retire-unknown-json"),
        # A kid may start with "-": it must reach the key service, not the option parser.
        pytest.param(["keys", "retire", "-NoSuchKid012345"], id="retire-dash-kid"),
        pytest.param(["keys", "retire", "--", "-NoSuchKid012345"], id="retire-dashdash-kid"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(
    db_url: str, env_for: EnvFor, tmp_path: Path, rsa_private_key: Any, args: list[str]
) -> None:
    env = env_for(db_url)
    jwks = _jwks_file(tmp_path, rsa_private_key)
    args = [a.format(missing=tmp_path / "missing.json", jwks=jwks) for a in args]
    if args[:2] == ["keys", "retire"]:
        cli_json_here(env, "keys", "rotate")  # a key store to look the kid up in
    result = run_cli_here(env, *args)
    line = _one_line_error(result)
    assert result.stdout == ""
    if args[:2] == ["keys", "retire"]:
        kid = args[-1] if args[-1] != "--json" else args[-2]
        assert kid in line, line  # the service looked the kid up, whatever its first char
    if args[:2] == ["clients", "create"]:
        # Nothing half-done: a refused registration registered nothing (when it was
        # refused before touching the database, there is no database to list).
        listed = run_cli_here(env, "clients", "list", "--json")
        if listed.returncode == 0:
            assert json.loads(listed.stdout)["clients"] == []
        else:
            assert "no database at" in listed.stderr or "is empty" in listed.stderr, listed.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        # json.loads raised RecursionError (a traceback) on deep nesting and kept the last
        # of repeated names, so {"b": 1, "b": 2} was registered as {"b": 2}.
        ("--jwks-file", '{"keys": ' + "[" * 20000 + "]" * 20000 + "}", "nested deeper"),
        ("--jwks-file", '{"keys": [{"kty": "RSA", "kty": "EC"}]}', "repeated name"),
        ("--fixed-claim", "deep=" + "[" * 20000 + "]" * 20000, "nested deeper"),
        ("--fixed-claim", 'tier={"plan": "free", "plan": "pro"}', "repeated name"),
    ],
    ids=["jwks-deep", "jwks-repeated", "fixed-claim-deep", "fixed-claim-repeated"],
)
def test_json_option_values_are_read_strictly(
    db_url: str, env_for: EnvFor, tmp_path: Path, option: str, value: str, said: str
) -> None:
    env = env_for(db_url)
    if option == "--jwks-file":
        path = tmp_path / "jwks.json"
        path.write_text(value)
        value = str(path)
    result = run_cli_here(env, "clients", "create", "--name", "X", option, value)
    line = _one_line_error(result)
    assert said in line, line
    assert option in line, line


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("db_url", "key_store"),
    [("sqlite", "file"), ("postgresql", "file"), ("postgresql", "sql")],
    indirect=["db_url"],
)
def test_keys_list_rotate_retire(db_url: str, env_for: EnvFor, key_store: str) -> None:
    env = env_for(db_url, AUTHSERVER_KEY_STORE=key_store)
    cli_json_here(env, "db", "upgrade")
    assert cli_json_here(env, "keys", "list")["keys"] == []

    first = cli_json_here(env, "keys", "rotate")
    assert first["created"] is True
    assert first["state"] == "next"
    listed = cli_json_here(env, "keys", "list")["keys"]
    states = {k["kid"]: k["state"] for k in listed}
    assert states[first["kid"]] == "next"
    assert sorted(states.values()) == ["current", "next"]
    current_kid = next(kid for kid, state in states.items() if state == "current")
    # The key made to sign at once on the empty store is named too (it was not).
    assert first["current_kid"] == current_kid

    # Idempotent: the rotation already scheduled is returned, nothing new is created.
    again = cli_json_here(env, "keys", "rotate")
    assert again["created"] is False
    assert again["kid"] == first["kid"]
    assert len(cli_json_here(env, "keys", "list")["keys"]) == 2

    human = run_cli_here(env, "keys", "list")
    assert human.returncode == 0, human.stderr
    assert first["kid"] in human.stdout
    assert current_kid in human.stdout

    # Retire the scheduled key: it is gone, the current key is untouched.
    retired = cli_json_here(env, "keys", "retire", first["kid"])
    assert retired["kid"] == first["kid"]
    assert retired["state"] == "gone"
    assert retired["current_kid"] == current_kid
    states = {k["kid"]: k["state"] for k in cli_json_here(env, "keys", "list")["keys"]}
    assert states[first["kid"]] == "gone"
    assert states[current_kid] == "current"

    # Retiring it again is refused in one line.
    line = _one_line_error(run_cli_here(env, "keys", "retire", first["kid"]))
    assert first["kid"] in line

    # Retire the current key: another key signs at once.
    retired = cli_json_here(env, "keys", "retire", current_kid)
    assert retired["state"] == "gone"
    assert retired["current_kid"] not in (None, current_kid, first["kid"])
    states = {k["kid"]: k["state"] for k in cli_json_here(env, "keys", "list")["keys"]}
    assert [kid for kid, s in states.items() if s == "current"] == [retired["current_kid"]]


# -- configuration errors stop serve at once ---------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHSERVER_KEY_SIZE", "1000"),
        ("AUTHSERVER_ISSUER", "ftp://x"),
        ("AUTHSERVER_KEY_ROTATION_INTERVAL", "soon"),
        ("AUTHSERVER_DATABASE_URL", "not a url"),
    ],
)
def test_invalid_configuration_stops_serve_with_one_line(
    env_for: EnvFor, tmp_path: Path, variable: str, value: str
) -> None:
    db_file = tmp_path / "never.db"
    env = env_for(f"sqlite:///{db_file}", **{variable: value})
    port = free_port()
    started = time.monotonic()
    result = run_cli(
        env, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", timeout=30
    )
    elapsed = time.monotonic() - started
    line = _one_line_error(result)
    assert variable in line
    assert elapsed < 15, f"took {elapsed:.1f}s to refuse"
    # It never started: no database, no key.
    assert not db_file.exists()
    keys_dir = Path(env["AUTHSERVER_KEYS_DIR"])
    assert not list(keys_dir.glob("*.pem")) if keys_dir.exists() else True

    # The same for any other command.
    line = _one_line_error(run_cli_here(env, "clients", "list", "--json"))
    assert variable in line


def test_a_sqlite_path_in_the_home_directory(tmp_path: Path) -> None:
    """AUTHSERVER_DATABASE_URL=sqlite:///~/authserver.db in a configuration file (where no
    shell expands ~), beside AUTHSERVER_KEYS_DIR=~/keys, which was read as the home
    directory: the database URL was not ("cannot open the SQLite file", or a directory
    named "~" in the working directory)."""
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "authserver.env"
    config.write_text(
        "AUTHSERVER_DATABASE_URL=sqlite:///~/authserver.db\nAUTHSERVER_KEYS_DIR=~/keys\n"
    )
    env = {"HOME": str(home)}
    created = run_cli_here(env, "--config", str(config), "clients", "create", "--name", "x")
    assert created.returncode == 0, created.stderr
    assert f"sqlite:///{home}/authserver.db; key store file {home}/keys" in created.stderr
    assert (home / "authserver.db").is_file()
    listed = run_cli_here(env, "--config", str(config), "clients", "list", "--json")
    assert [c["name"] for c in json.loads(listed.stdout)["clients"]] == ["x"]


def _stop_line(result: subprocess.CompletedProcess[str], log_format: str) -> str:
    """The one line serve stopped with: the CLI's error line, or under JSON logs a JSON
    record at level critical (a pipeline reading JSON lines gets why it stopped)."""
    line = _one_line_error(result)
    if log_format == "text":
        assert line.startswith("authserver: error: "), line
        return line
    record = json.loads(line)
    assert record["level"] == "critical", record
    assert record["logger"] == "authserver", record
    return str(record["message"])


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_serve_on_a_port_in_use_stops_with_one_line(
    env_for: EnvFor, tmp_path: Path, log_format: str
) -> None:
    db_file = tmp_path / "never.db"
    env = {**env_for(f"sqlite:///{db_file}"), "AUTHSERVER_LOG_FORMAT": log_format}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            env, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", timeout=30
        )
    line = _stop_line(result, log_format)
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line
    assert not db_file.exists()  # refused before touching the database


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_serve_without_its_database_stops_with_one_line(
    env_for: EnvFor, tmp_path: Path, log_format: str
) -> None:
    """A database that refuses connections: one line saying so, in the log format."""
    closed = free_port()
    env = {
        **env_for(f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{closed}/nowhere"),
        "AUTHSERVER_LOG_FORMAT": log_format,
    }
    result = run_cli(env, "serve", "--port", str(free_port()), "--workers", "1", timeout=60)
    assert result.returncode == 1, result.stderr
    line = _stop_line(result, log_format)
    assert line.startswith(("cannot start:", "authserver: error: cannot start:")), line
    assert f"127.0.0.1:{closed}" in line
    assert "hunter2" not in result.stderr


def test_serve_listens_on_a_host_name(env_for: EnvFor, tmp_path: Path) -> None:
    """``--host localhost``, the name a newcomer types: granian binds numeric addresses
    only, and a name passed to it ended serve with a ValueError traceback after the
    database and the first key were made. serve binds the address the name resolves to."""
    env = env_for(f"sqlite:///{tmp_path / 'named.db'}")
    log = tmp_path / "server.log"
    with ServerProcess(env, host="localhost", log_path=log) as server:
        answer = requests.get(f"{server.base_url}/.well-known/jwks.json", timeout=5)
        assert answer.status_code == 200
        assert len(answer.json()["keys"]) == 1
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("issuer_set", [False, True], ids=["unset", "set-to-the-default"])
def test_serve_behind_a_proxy_without_an_issuer_warns(
    env_for: EnvFor, tmp_path: Path, issuer_set: bool
) -> None:
    """AUTHSERVER_PROXY_HOPS set and AUTHSERVER_ISSUER not (docs/operations.md, "Behind a
    reverse proxy", followed halfway): every token and the metadata named
    http://localhost:PORT, whatever the proxy forwarded, and serve said nothing. Set to
    that same URL it is as unreachable, and the warning must not say it is unset."""
    env = env_for(f"sqlite:///{tmp_path / 'proxied.db'}", AUTHSERVER_PROXY_HOPS="1")
    log = tmp_path / "server.log"
    server = ServerProcess(env, log_path=log)
    if issuer_set:
        server.env["AUTHSERVER_ISSUER"] = f"http://localhost:{server.port}"
    else:
        del server.env["AUTHSERVER_ISSUER"]  # unset, as in the quickstart
    with server:
        metadata = requests.get(
            f"{server.base_url}/.well-known/oauth-authorization-server",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "auth.example.com"},
            timeout=5,
        ).json()
    issuer = f"http://localhost:{server.port}"
    assert metadata["issuer"] == issuer  # what the warning is about
    warnings = [ln for ln in log.read_text().splitlines() if " WARNING " in ln]
    assert any(
        f"AUTHSERVER_ISSUER is {issuer} (its value while unset" in ln
        and "AUTHSERVER_PROXY_HOPS" in ln
        for ln in warnings
    ), warnings
    assert not any("AUTHSERVER_ISSUER is not set" in ln for ln in warnings), warnings


def test_the_file_key_store_on_a_database_holding_sql_keys_is_refused(
    db_url: str, env_for: EnvFor, tmp_path: Path
) -> None:
    """One instance (or command) started without AUTHSERVER_KEY_STORE=sql on the database
    the others keep their keys in: it found no key in its directory, made one and signed
    with it, publishing a JWKS the other instances do not, and 'keys list' said there
    were no keys yet. serve, the keys commands and doctor now refuse, naming the setting."""
    sql = env_for(db_url, AUTHSERVER_KEY_STORE="sql")
    rotated = cli_json_here(sql, "keys", "rotate")
    file_store = env_for(db_url)  # AUTHSERVER_KEY_STORE left out: file
    keys_dir = Path(file_store["AUTHSERVER_KEYS_DIR"])

    log = tmp_path / "refused.log"
    # A server process (stopped with its workers, by process group, should it start).
    with (
        pytest.raises(RuntimeError, match="exited with 2"),
        ServerProcess(file_store, log_path=log),
    ):
        pass
    lines = log.read_text().strip().splitlines()
    assert "Traceback" not in log.read_text()
    line = lines[-1]
    assert line.startswith("authserver: error: AUTHSERVER_KEY_STORE: is file"), lines
    assert "holds 2 signing key(s) in use" in line
    assert not list(keys_dir.glob("*.pem"))  # no key of its own
    for command in (["keys", "list"], ["keys", "rotate"], ["keys", "retire", rotated["kid"]]):
        refused = run_cli_here(file_store, *command)
        assert refused.returncode == 2, (command, refused.stdout)
        assert "AUTHSERVER_KEY_STORE" in refused.stderr.splitlines()[0], command
    assert not list(keys_dir.glob("*.pem"))
    doctor = json.loads(run_cli_here(file_store, "doctor", "--no-issuer-check", "--json").stdout)
    assert any(
        c["check"] == "key store"
        and c["status"] == "problem"
        and "AUTHSERVER_KEY_STORE" in c["detail"]
        for c in doctor["checks"]
    ), doctor
    # The SQL store itself is untouched: the key scheduled before is still next.
    assert [
        k["kid"] for k in cli_json_here(sql, "keys", "list")["keys"] if k["state"] == "next"
    ] == [rotated["kid"]]


# -- an encrypted key store and a wrong or missing passphrase ------------------------------


def _key_files(keys_dir: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(keys_dir.iterdir()) if p.suffix in (".pem", ".json")
    }


@pytest.mark.slow
def test_wrong_or_missing_passphrase_stops_serve_without_a_new_key(
    db_url: str, env_for: EnvFor, tmp_path: Path
) -> None:
    env = env_for(db_url, AUTHSERVER_KEY_PASSPHRASE="p1")
    keys_dir = Path(env["AUTHSERVER_KEYS_DIR"])
    with ServerProcess(env, log_path=tmp_path / "server.log"):
        pass
    pems = list(keys_dir.glob("*.pem"))
    assert len(pems) == 1
    assert pems[0].read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(pems[0].stat().st_mode) == 0o600
    before = _key_files(keys_dir)

    wrong = {**env, "AUTHSERVER_KEY_PASSPHRASE": "wrong"}
    unset = {k: v for k, v in env.items() if k != "AUTHSERVER_KEY_PASSPHRASE"}
    for bad in (wrong, unset):
        port = free_port()
        started = time.monotonic()
        result = run_cli(
            bad, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", timeout=60
        )
        elapsed = time.monotonic() - started
        assert result.returncode != 0, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("authserver: error:")]
        assert len(errors) == 1, result.stderr
        assert "AUTHSERVER_KEY_PASSPHRASE" in errors[0]
        # Not first told that the keys, which are encrypted, are stored unencrypted.
        assert "UNENCRYPTED" not in result.stderr, result.stderr
        assert elapsed < 20
        assert _key_files(keys_dir) == before, "a new or changed key after a passphrase failure"

    # The right passphrase still starts it, on the same key.
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        response = requests.get(server.base_url + "/.well-known/jwks.json", timeout=10)
        kids = [k["kid"] for k in response.json()["keys"]]
    assert kids == [pems[0].stem]
    assert _key_files(keys_dir) == before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("passphrase", ["wrong", None], ids=["wrong", "unset"])
def test_keys_rotate_with_wrong_or_missing_passphrase_creates_no_key(
    db_url: str, env_for: EnvFor, passphrase: str | None
) -> None:
    """ "Never a silent new key": an operator's `keys rotate` with a mistyped or forgotten
    passphrase must not add a key the servers (running with the right passphrase) cannot
    decrypt, or an unencrypted key to an encrypted store."""
    env = env_for(db_url, AUTHSERVER_KEY_PASSPHRASE="p1")
    keys_dir = Path(env["AUTHSERVER_KEYS_DIR"])
    scheduled = cli_json_here(env, "keys", "rotate")
    cli_json_here(env, "keys", "retire", scheduled["kid"])  # back to one current key, no next
    before = _key_files(keys_dir)
    assert all(
        v.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        for k, v in before.items()
        if k.endswith(".pem")
    )

    bad = {k: v for k, v in env.items() if k != "AUTHSERVER_KEY_PASSPHRASE"}
    if passphrase is not None:
        bad["AUTHSERVER_KEY_PASSPHRASE"] = passphrase
    result = run_cli_here(bad, "keys", "rotate", "--json")
    line = _one_line_error(result)
    assert "AUTHSERVER_KEY_PASSPHRASE" in line
    assert _key_files(keys_dir) == before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("key_store", ["file", "sql"])
@pytest.mark.parametrize("command", ["rotate", "retire"])
def test_key_commands_with_a_passphrase_the_servers_lack_write_no_key(
    db_url: str, env_for: EnvFor, key_store: str, command: str
) -> None:
    """The other mismatch: servers without a passphrase (their keys stored unencrypted),
    and an operator's shell that has one. `keys retire` of the current key made a new,
    encrypted key that signed at once, and every token request of those servers answered
    503 ("is encrypted and no passphrase is set"); `keys rotate` set the same trap for
    when the new key takes over."""
    plain = env_for(db_url, AUTHSERVER_KEY_STORE=key_store)
    current = cli_json_here(plain, "keys", "rotate")["current_kid"]  # one current, one next
    nxt = cli_json_here(plain, "keys", "list")["keys"][0]["kid"]
    if command == "rotate":
        cli_json_here(plain, "keys", "retire", nxt)  # back to one current key, no next
    before = cli_json_here(plain, "keys", "list")

    args = ["keys", "rotate"] if command == "rotate" else ["keys", "retire", current]
    result = run_cli_here({**plain, "AUTHSERVER_KEY_PASSPHRASE": "p1"}, *args, "--json")
    line = _one_line_error(result)
    assert "AUTHSERVER_KEY_PASSPHRASE is set" in line, line
    assert "is stored unencrypted" in line, line
    assert result.stdout == ""
    assert cli_json_here(plain, "keys", "list") == before
    # Without the passphrase, as the servers run, the same command works.
    cli_json_here(plain, *args)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("key_store", ["file", "sql"])
@pytest.mark.parametrize(
    ("servers", "shell"),
    [("p1", "wrong"), ("p1", None), (None, "p1")],
    ids=["wrong", "missing", "the-servers-lack-it"],
)
def test_retiring_the_only_live_key_checks_the_passphrase_against_it(
    db_url: str, env_for: EnvFor, key_store: str, servers: str | None, shell: str | None
) -> None:
    """After a finished rotation the current key is the only one with a private half. Its
    retire checked the passphrase against the other keys only, found none to check, and
    wrote the new current key with the shell's passphrase: servers running with another
    answered every token request with 503, for good. The retired key itself is checked."""
    plain = env_for(db_url, AUTHSERVER_KEY_STORE=key_store)
    env = {**plain, "AUTHSERVER_KEY_PASSPHRASE": servers} if servers else plain
    current = cli_json_here(env, "keys", "rotate")["current_kid"]  # one current, one next
    nxt = cli_json_here(env, "keys", "list")["keys"][0]["kid"]
    cli_json_here(env, "keys", "retire", nxt)  # the current key is the only live one
    before = cli_json_here(env, "keys", "list")

    wrong = {**plain, "AUTHSERVER_KEY_PASSPHRASE": shell} if shell else plain
    result = run_cli_here(wrong, "keys", "retire", current, "--json")
    line = _one_line_error(result)
    assert "AUTHSERVER_KEY_PASSPHRASE" in line, line
    assert result.stdout == ""
    assert cli_json_here(env, "keys", "list") == before
    # With the servers' passphrase the retire works, and the new key signs for them.
    retired = cli_json_here(env, "keys", "retire", current)
    assert retired["current_kid"] not in (None, current)
    cli_json_here(env, "keys", "rotate")  # the servers' settings read the new key


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_keys_restored_unencrypted_are_named_as_such_when_rotate_is_refused(
    db_url: str, env_for: EnvFor, tmp_path: Path
) -> None:
    """Key files restored from a backup made before the passphrase was set, in a
    deployment whose servers run with it: `keys rotate` with the passphrase was refused
    saying "so the servers run without it", which was not true. The refusal names both
    situations and what to do; doing it (serve with the passphrase) lets rotate work."""
    plain = env_for(db_url)
    env = {**plain, "AUTHSERVER_KEY_PASSPHRASE": "p1"}
    keys_dir = Path(env["AUTHSERVER_KEYS_DIR"])
    cli_json_here(plain, "keys", "rotate")  # one current, one next
    nxt = cli_json_here(plain, "keys", "list")["keys"][0]["kid"]
    cli_json_here(plain, "keys", "retire", nxt)  # one current key: rotate writes one
    backup = {p.name: p.read_bytes() for p in keys_dir.iterdir() if p.suffix in (".json", ".pem")}
    with ServerProcess(env, log_path=tmp_path / "first.log"):
        pass  # encrypts the stored keys
    for name, data in backup.items():
        (keys_dir / name).write_bytes(data)  # the restore
    before = cli_json_here(env, "keys", "list")

    line = _one_line_error(run_cli_here(env, "keys", "rotate"))
    assert "is stored unencrypted: either the servers run without the passphrase" in line
    assert "or the keys were restored unencrypted and 'serve' with the passphrase" in line
    assert "so the servers run without it" not in line
    assert cli_json_here(env, "keys", "list") == before
    with ServerProcess(env, log_path=tmp_path / "second.log"):
        pass  # what the message says to do
    assert cli_json_here(env, "keys", "rotate")["created"] is True


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("key_store", ["file", "sql"])
def test_serve_encrypts_keys_stored_before_the_passphrase_was_set(
    db_url: str, env_for: EnvFor, tmp_path: Path, key_store: str
) -> None:
    """AUTHSERVER_KEY_PASSPHRASE "when set, private keys are encrypted at rest": also the
    keys made before it was set, which kept signing and staying published unencrypted
    (up to a rotation interval plus the retention) while doctor said all were encrypted."""
    plain = env_for(db_url, AUTHSERVER_KEY_STORE=key_store)
    env = {**plain, "AUTHSERVER_KEY_PASSPHRASE": "p1"}

    def pems() -> list[bytes]:
        if key_store == "file":
            return [p.read_bytes() for p in Path(env["AUTHSERVER_KEYS_DIR"]).glob("*.pem")]
        return [bytes(r["private_pem"]) for t, r in _dump_database(db_url) if t == "signing_keys"]

    kids = {cli_json_here(plain, "keys", "rotate")["kid"]}
    kids |= {k["kid"] for k in cli_json_here(plain, "keys", "list")["keys"]}
    assert len(kids) == len(pems()) == 2
    assert all(pem.startswith(b"-----BEGIN PRIVATE KEY-----") for pem in pems())
    before = run_cli_here(env, "doctor", "--no-issuer-check", "--json")
    passphrase = next(c for c in json.loads(before.stdout)["checks"] if c["check"] == "passphrase")
    assert passphrase["status"] == "warning"
    assert "2 stored private key(s) are not encrypted yet" in passphrase["detail"]

    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        jwks = requests.get(server.base_url + "/.well-known/jwks.json", timeout=10).json()
    assert {k["kid"] for k in jwks["keys"]} == kids
    assert len(pems()) == 2
    assert all(pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") for pem in pems())
    after = run_cli_here(env, "doctor", "--no-issuer-check", "--json")
    passphrase = next(c for c in json.loads(after.stdout)["checks"] if c["check"] == "passphrase")
    assert passphrase == {
        "check": "passphrase",
        "status": "ok",
        "detail": "private keys are encrypted at rest",
    }
    assert cli_json_here(env, "keys", "list")["unreadable"] == []
    unset = run_cli_here(plain, "doctor", "--no-issuer-check")  # now they need it
    assert unset.returncode == 1
    assert "is encrypted and no passphrase is set" in unset.stdout


@pytest.mark.slow
def test_wrong_passphrase_stops_serve_with_sql_key_store(
    db_url: str, env_for: EnvFor, tmp_path: Path
) -> None:
    env = env_for(db_url, AUTHSERVER_KEY_PASSPHRASE="p1", AUTHSERVER_KEY_STORE="sql")
    with ServerProcess(env, log_path=tmp_path / "server.log"):
        pass
    keys = [r for t, r in _dump_database(db_url) if t == "signing_keys"]
    assert len(keys) == 1
    assert bytes(keys[0]["private_pem"]).startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")

    for bad in (
        {**env, "AUTHSERVER_KEY_PASSPHRASE": "wrong"},
        {k: v for k, v in env.items() if k != "AUTHSERVER_KEY_PASSPHRASE"},
    ):
        result = run_cli(
            bad,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--workers",
            "1",
            timeout=60,
        )
        assert result.returncode != 0, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("authserver: error:")]
        assert len(errors) == 1, result.stderr
        assert "AUTHSERVER_KEY_PASSPHRASE" in errors[0], result.stderr
        assert [r for t, r in _dump_database(db_url) if t == "signing_keys"] == keys


# -- db upgrade ----------------------------------------------------------------------------


def test_a_schema_error_names_the_database(db_url: str, env_for: EnvFor) -> None:
    """A command stopped by the schema prints no line saying what it used, so the error
    must name the database: "the database is empty" and "the schema is at revision ..."
    did not (a PostgreSQL URL naming the wrong database or search_path, a SQLite file made
    empty by hand), while "no database at PATH" did."""
    env = env_for(db_url)
    shown = redact_url(parse_database_url(db_url))
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).touch(mode=0o600)  # a file, no schema
    line = _one_line_error(run_cli_here(env, "clients", "list"))
    assert f"the database at {shown} is empty (no authserver schema)" in line, line

    cli_json_here(env, "db", "upgrade")
    engine = create_engine(parse_database_url(db_url))
    try:
        for revision in ("0001", "9999"):  # behind this version's schema, then ahead of it
            with engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
            line = _one_line_error(run_cli_here(env, "clients", "list"))
            assert f"the schema of the database at {shown} is at revision {revision}" in line
            if revision == "0001":
                assert f"this version needs {head_revision()}" in line
    finally:
        engine.dispose()


def test_db_upgrade_on_empty_database_then_again(db_url: str, env_for: EnvFor) -> None:
    env = env_for(db_url)
    first = cli_json_here(env, "db", "upgrade")
    assert first["from_revision"] is None
    assert first["to_revision"]
    again = cli_json_here(env, "db", "upgrade")
    assert again == {
        **again,
        "from_revision": first["to_revision"],
        "to_revision": first["to_revision"],
    }
    human = run_cli_here(env, "db", "upgrade")
    assert human.returncode == 0, human.stderr
    assert first["to_revision"] in human.stdout
    tables = {t for t, _ in _dump_database(db_url)} | set(_table_names(db_url))
    assert {"clients", "signing_keys"} <= tables
    assert cli_json_here(env, "clients", "list") == {"clients": [], "unreadable": []}


def _table_names(db_url: str) -> list[str]:
    from sqlalchemy import inspect

    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_keys_dir_files_are_private(db_url: str, env_for: EnvFor) -> None:
    env = env_for(db_url)
    cli_json_here(env, "keys", "rotate")
    keys_dir = Path(env["AUTHSERVER_KEYS_DIR"])
    pems = list(keys_dir.glob("*.pem"))
    assert len(pems) == 2
    for pem in pems:
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
        assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(os.stat(keys_dir).st_mode) & 0o077 == 0


def test_scopes_audiences_and_fixed_claims_fit_a_token_together(
    db_url: str, env_for: EnvFor
) -> None:
    """The bound of tests/e2e/test_admin_api.py, in the same words: 4,000 scopes made a
    74 KB token before."""
    env = env_for(db_url)
    scopes = [arg for i in range(186) for arg in ("--scope", f"scope-{i:04d}")]
    result = run_cli_here(env, "clients", "create", "--name", "big", *scopes)
    assert _one_line_error(result) == "authserver: error: " + too_large(2057)
    assert cli_json_here(env, "clients", "list")["clients"] == []
    created = cli_json_here(env, "clients", "create", "--name", "big", *scopes[2:])
    result = run_cli_here(env, "clients", "update", created["client_id"], "--fixed-claim", "f=1")
    assert _one_line_error(result).startswith("authserver: error: scopes, audiences and fixed")


def test_allowed_claims_are_bounded(db_url: str, env_for: EnvFor) -> None:
    """The bound of tests/e2e/test_admin_api.py, in the same words."""
    env = env_for(db_url)
    names = [arg for i in range(257) for arg in ("--allowed-claim", f"claim{i}")]
    result = run_cli_here(env, "clients", "create", "--name", "many", *names)
    assert _one_line_error(result) == "authserver: error: at most 256 allowed claims"
    created = cli_json_here(env, "clients", "create", "--name", "many", *names[:-2])
    assert len(created["allowed_claims"]) == 256
