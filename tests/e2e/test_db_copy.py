"""``authserver db copy``: a deployment moved from SQLite to PostgreSQL and back, with real
servers on each database (the SQL key store, so the keys travel). What was issued before a
move still verifies, a revocation stays revoked, old secrets still work, and the moved
database takes new writes. ``tests/integration/test_db_copy.py`` checks the copy's values
and refusals table by table."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from token_status_list import BitArray

from authserver.tokens.statuslist import BLOCK_SIZE
from tests.conftest import fresh_pg_schema
from tests.conftest import require_postgres
from tests.factories import client_public_jwk
from tests.factories import issue_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import free_port
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

AUD = "https://sync.example"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _assertion(client_id: str, key: rsa.RSAPrivateKey, aud: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60}
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(
        {**claims, "jti": str(uuid.uuid4())}, pem, algorithm="RS256", headers={"kid": "ck1"}
    )


def _claims(server: ServerProcess, token: str) -> dict[str, Any]:
    """*token* verified with PyJWT against the JWKS *server* publishes."""
    jwks = requests.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=AUD)


def _status_bit(server: ServerProcess, token: str) -> int:
    ref = jwt.decode(token, options={"verify_signature": False})["status"]["status_list"]
    path = ref["uri"].removeprefix(server.env["AUTHSERVER_ISSUER"])
    listed = requests.get(
        server.base_url + path, headers={"Accept": "application/statuslist+jwt"}, timeout=10
    ).text
    return int(BitArray.load(_claims_any_aud(server, listed)["status_list"]).get(ref["idx"]))


def _claims_any_aud(server: ServerProcess, token: str) -> dict[str, Any]:
    jwks = requests.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["RS256"], options={"verify_aud": False})


def _active(server: ServerProcess, token: str, creds: tuple[str, str]) -> bool:
    response = requests.post(
        f"{server.base_url}/introspect", data={"token": token}, auth=creds, timeout=10
    )
    assert response.status_code == 200, response.text
    return bool(response.json()["active"])


def test_a_deployment_moves_to_postgresql_and_back(
    tmp_path: Path, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    require_postgres()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        "AUTHSERVER_KEY_STORE": "sql",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "unused-keys"),
        "AUTHSERVER_KEY_PASSPHRASE": "the same passphrase on every database",
        "AUTHSERVER_ISSUER": issuer,
    }
    jwks_file = tmp_path / "client.jwks"
    jwks_file.write_text(json.dumps({"keys": [client_public_jwk(rsa_private_key, "ck1")]}))

    def create(*args: str) -> dict[str, Any]:
        out = cli_json_here(env, "clients", "create", "--audience", AUD, *args)
        assert isinstance(out, dict)
        return out

    plain = create("--name", "secret backend")
    old = (plain["client_id"], plain["client_secret"])
    rotated = cli_json_here(env, "clients", "rotate-secret", old[0], "--grace", "1d")
    new = (old[0], rotated["client_secret"])
    keyed = create("--name", "jwks backend", "--jwks-file", str(jwks_file))["client_id"]
    profiled = create(
        "--name", "verdant backend", "--profile", "verdant", "--fixed-claim", "url=wss://x"
    )["client_id"]
    shown = {c: cli_json_here(env, "clients", "show", c) for c in (old[0], keyed, profiled)}
    assert shown[profiled]["fixed_claims"] == {"url": "wss://x"}

    with ServerProcess(env, port=port) as server:
        issued = {
            "old": issue_token(server.base_url, old, sub="user-1"),
            "new": issue_token(server.base_url, new, sub="user-2"),
            "revoked": issue_token(server.base_url, new, sub="user-3"),
            "user": issue_token(server.base_url, new, sub="user-4"),
        }
        response = requests.post(
            f"{server.base_url}/revoke", data={"token": issued["revoked"]}, auth=new, timeout=10
        )
        assert response.status_code == 200, response.text
        keyed_token = requests.post(
            f"{server.base_url}/token",
            data={
                "grant_type": "client_credentials",
                "client_id": keyed,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": _assertion(keyed, rsa_private_key, issuer),
            },
            timeout=10,
        )
        assert keyed_token.status_code == 200, keyed_token.text
        issued["keyed"] = keyed_token.json()["access_token"]
    assert cli_json_here(env, "tokens", "revoke", "--sub", "user-4")["revoked"] >= 1
    audited = {e["action"] for e in cli_json_here(env, "audit")["events"]}
    assert {"client.created", "token.issued", "token.revoked"} <= audited
    blocks = {_block(t) for t in issued.values()}

    clients = [3]

    def moved_and_serving(target: str) -> None:
        """Copy the database of *env* to *target*, point *env* at it and check a server
        there."""
        events = cli_json_here(env, "audit")["events"]  # newest first
        copied = cli_json_here(env, "db", "copy", "--to", target)
        assert copied["rows"]["clients"] == clients[0]
        assert copied["rows"]["signing_keys"] >= 1
        assert copied["rows"]["status_revocations"] >= 2
        assert copied["rows"]["audit_events"] == len(events)
        env["AUTHSERVER_DATABASE_URL"] = target
        for client, before in shown.items():
            assert cli_json_here(env, "clients", "show", client) == before
        assert cli_json_here(env, "audit")["events"] == events
        with ServerProcess(env, port=port) as server:
            for name, token in issued.items():
                assert _claims(server, token)["iss"] == issuer, name
            assert _active(server, issued["new"], new)
            assert _active(server, issued["old"], new)
            assert not _active(server, issued["revoked"], new)
            assert not _active(server, issued["user"], new)
            assert _status_bit(server, issued["revoked"]) == 1
            assert _status_bit(server, issued["user"]) == 1
            assert _status_bit(server, issued["new"]) == 0
            # Both secrets of the grace period still work; this server leases a new
            # status list block (a new row beside the copied ones).
            tokens = [issue_token(server.base_url, creds, sub="user-9") for creds in (old, new)]
            for token in tokens:
                assert _claims(server, token)["sub"] == "user-9"
                issued[f"after-{len(issued)}"] = token
            assert _block(tokens[0]) not in blocks
            blocks.update(_block(t) for t in tokens)
        # New rows: an audit event and a client (ids past the copied ones).
        create("--name", f"after the move to {target.split(':')[0]}")
        clients[0] += 1
        assert cli_json_here(env, "audit")["events"][0]["action"] == "client.created"

    with fresh_pg_schema() as pg_url:
        moved_and_serving(pg_url)
        moved_and_serving(f"sqlite:///{tmp_path / 'c.db'}")
    # The target is never written twice.
    again = run_cli_here(env, "db", "copy", "--to", f"sqlite:///{tmp_path / 'a.db'}")
    assert again.returncode != 0
    assert "already holds authserver rows" in again.stderr


def _block(token: str) -> tuple[int, int]:
    ref = jwt.decode(token, options={"verify_signature": False})["status"]["status_list"]
    return ref["uri"], ref["idx"] // BLOCK_SIZE
