"""One bad record does not take the service down, through a real ``authserver serve``: a key
file or key row that cannot be read, or a client row that cannot be decoded, is skipped
and reported by name (log, ``/readyz``, ``keys list`` / ``clients list``); every other
client keeps getting tokens, the JWKS and introspection keep answering, and a restart
works. Only a missing usable signing key stops signing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

from authserver.storage.sql.engine import Database
from tests.factories import issue_token
from tests.factories import request_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _serves(server: ServerProcess, client: dict[str, Any]) -> None:
    """Tokens, the JWKS and introspection all answer as they should."""
    credentials = (client["client_id"], client["client_secret"])
    access_token = issue_token(server, credentials, sub="user-1")
    jwks = requests.get(server.base_url + "/.well-known/jwks.json", timeout=10)
    assert jwks.status_code == 200
    assert jwks.json()["keys"]
    introspected = requests.post(
        server.base_url + "/introspect",
        data={"token": access_token},
        auth=credentials,
        timeout=10,
    )
    assert introspected.status_code == 200, introspected.text
    assert introspected.json()["active"] is True


def _ready_reporting(server: ServerProcess, names: set[str]) -> None:
    ready = requests.get(server.base_url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    reported = ready.json().get("unreadable_records", [])
    assert {line.split(":", 1)[0] for line in reported} == names, reported


def _logged_once(log: Path, names: set[str]) -> None:
    lines = [line for line in log.read_text().splitlines() if "unreadable" in line]
    for name in names:
        matching = [line for line in lines if name in line]
        assert len(matching) == 1, (name, lines)
        assert "ERROR" in matching[0]
    assert "Traceback" not in log.read_text()


def _rotate(env: dict[str, str]) -> None:
    """A key change made elsewhere, so every worker re-reads the whole key store."""
    cli_json_here(env, "keys", "rotate")


@pytest.fixture
def file_keys(
    env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> tuple[dict[str, str], dict[str, Any], Path]:
    """A SQLite database and the file key store with one client: the environment (its
    issuer left to each server), the client and the keys directory."""
    env = env_for(f"sqlite:///{tmp_path / 'authserver.db'}")
    env.pop("AUTHSERVER_ISSUER")
    client = cli_json_here(env, "clients", "create", "--name", "backend")
    return env, client, Path(env["AUTHSERVER_KEYS_DIR"])


def test_bad_key_files_are_skipped_and_reported(
    file_keys: tuple[dict[str, str], dict[str, Any], Path], tmp_path: Path
) -> None:
    env, client, keys_dir = file_keys
    log = tmp_path / "serve.log"
    with ServerProcess(env, log_path=log) as server:
        _serves(server, client)
        (keys_dir / "empty.json").write_text("{}")
        (keys_dir / "broken.json").write_text('{"kid": "broken", "public_jwk": ')
        _serves(server, client)  # introspection reads the store fresh
        _rotate(env)
        _serves(server, client)
        _ready_reporting(server, {"empty.json", "broken.json"})
        _serves(server, client)
    _logged_once(log, {"empty.json", "broken.json"})
    listed = cli_json_here(env, "keys", "list")
    assert {r["name"] for r in listed["unreadable"]} == {"empty.json", "broken.json"}
    assert len(listed["keys"]) == 2
    # A restart works (it failed with a bare KeyError).
    with ServerProcess(env) as server:
        _serves(server, client)
        _ready_reporting(server, {"empty.json", "broken.json"})


def test_a_lost_current_key_is_replaced_at_restart(
    file_keys: tuple[dict[str, str], dict[str, Any], Path],
) -> None:
    env, client, keys_dir = file_keys
    with ServerProcess(env) as server:
        _serves(server, client)
    (old,) = cli_json_here(env, "keys", "list")["keys"]
    (keys_dir / f"{old['kid']}.json").write_text("{}")
    with ServerProcess(env) as server:
        _serves(server, client)
        _ready_reporting(server, {f"{old['kid']}.json"})
        jwks = requests.get(server.base_url + "/.well-known/jwks.json", timeout=10).json()
        assert old["kid"] not in {k["kid"] for k in jwks["keys"]}


def _insert_bad_rows(db_url: str) -> tuple[set[str], str]:
    """A bad signing_keys row and a client row that cannot be decoded."""
    database = Database(db_url)
    postgres = database.engine.dialect.name == "postgresql"
    cast = "CAST({} AS json)" if postgres else "{}"
    try:
        with database.unit_of_work():
            conn = database.connection()
            conn.execute(
                text(
                    "INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activate_at) "  # noqa: S608 - constant SQL, bound values
                    f"VALUES ('bad-kid', 'RS256', {cast.format(':jwk')}, 1, 1)"
                ),
                {"jwk": "{}"},
            )
            conn.execute(
                text(
                    "INSERT INTO clients (client_id, name, enabled, created_at, updated_at, "  # noqa: S608 - constant SQL, bound values
                    f"audiences, scopes, allowed_claims) VALUES ('as_client_bad', 'bad', true, "
                    f"1, 1, {cast.format(':aud')}, {cast.format(':aud')}, {cast.format(':aud')})"
                ),
                {"aud": '"not a list"'},
            )
            # A change made elsewhere: every worker re-reads the key store and clients.
            conn.execute(text("UPDATE locks SET counter = counter + 1"))
    finally:
        database.dispose()
    return {"signing_keys row 'bad-kid'"}, "as_client_bad"


def test_bad_rows_are_skipped_and_reported(
    env_for: Callable[..., dict[str, str]], db_url: str, tmp_path: Path
) -> None:
    env = env_for(db_url, AUTHSERVER_KEY_STORE="sql")
    env.pop("AUTHSERVER_ISSUER")
    client = cli_json_here(env, "clients", "create", "--name", "backend")
    log = tmp_path / "serve.log"
    with ServerProcess(env, log_path=log) as server:
        _serves(server, client)
        bad_keys, bad_client = _insert_bad_rows(db_url)
        _serves(server, client)
        _ready_reporting(server, bad_keys)
        # The client whose row cannot be decoded fails to authenticate (401), nothing more.
        refused = request_token(server, (bad_client, "anything"), sub="user-1")
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
        _serves(server, client)
    _logged_once(log, {*bad_keys, f"clients row {bad_client!r}"})
    listed = cli_json_here(env, "clients", "list")
    assert [c["client_id"] for c in listed["clients"]] == [client["client_id"]]
    assert [r["name"] for r in listed["unreadable"]] == [f"clients row {bad_client!r}"]
    assert {r["name"] for r in cli_json_here(env, "keys", "list")["unreadable"]} == bad_keys
    doctor = cli_json_here(env, "doctor", "--no-issuer-check")["checks"]
    assert any(
        c["check"] == "clients" and c["status"] == "warning" and bad_client in c["detail"]
        for c in doctor
    ), doctor
    with ServerProcess(env) as server:
        _serves(server, client)
    # The operator can remove the bad row.
    cli_json_here(env, "clients", "delete", bad_client, "--yes")
    assert cli_json_here(env, "clients", "list")["unreadable"] == []
