"""A status-list lease on SQLite never waits for the request that asked for it.

``SqlStatusListStore.lease_block`` commits in its own session (a lease must survive the
request's rollback), so on SQLite it needs the database's one write lock. A token request
whose own unit of work had already written before allocating an index would hold that
lock while waiting for it: the lease would wait out the 15 s busy timeout and fail. No
token path does, because the only write before the allocation, a ``private_key_jwt``
assertion's ``jti``, commits in its own transaction (``storage/sql/revocations.py``),
and the ``token.issued`` audit record is written after the token is issued.

* Every way of asking for a token (secret in Basic or the form, JSON body,
  ``private_key_jwt``) leases with nobody holding the write lock, as a second SQLite
  connection sees it at the moment of the lease.
* Two processes, like two workers, issue tokens through the real WSGI application on one
  SQLite file, each leasing a block for every token, while the other's requests write
  their audit records: every request succeeds, and no lease comes near the busy timeout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authserver.container import Services
from authserver.settings import Settings
from authserver.storage.sql.raw import BUSY_TIMEOUT_S
from authserver.tokens.statuslist import Block
from tests.conftest import make_services

pytestmark = pytest.mark.integration

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _write_lock_held(path: str) -> bool:
    """Whether some connection holds the SQLite write lock and keeps it: a second
    connection asks for it, waiting a second for any other short write to end."""
    probe = sqlite3.connect(path, timeout=1, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return True
        raise
    else:
        probe.execute("ROLLBACK")
        return False
    finally:
        probe.close()


def _assertion(client_id: str, key: rsa.RSAPrivateKey, aud: str) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": "k1"})


@sqlite_only
def test_no_token_path_holds_the_write_lock_when_it_leases(
    services: Services,
    settings: Settings,
    http: Any,
    register: Callable[..., tuple[str, str]],
    rsa_private_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = settings.database_url.removeprefix("sqlite:///")
    status_lists = services.status_lists
    store = status_lists._store
    real_lease = store.lease_block
    leases: list[bool] = []

    def lease_block(now: float, hold_until: float, release: Any) -> Block:
        held = _write_lock_held(path)
        leases.append(held)
        if held:
            # The real lease would now wait out the busy timeout; fail at once instead.
            raise AssertionError("the write lock is held while leasing")
        return real_lease(now, hold_until, release)

    monkeypatch.setattr(store, "lease_block", lease_block)

    client_id, secret = register(audiences=["https://sync.example"])
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_private_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    with services.unit_of_work():
        jwt_client, none = services.clients.create(
            name="jwt backend", audiences=["https://sync.example"], jwks={"keys": [jwk]}
        )
    assert none is None
    jwt_id = str(jwt_client.client_id)
    token_url = settings.issuer + "/token"
    grant = {"grant_type": "client_credentials", "sub": "user-1"}

    def assertion() -> dict[str, str]:
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _assertion(jwt_id, rsa_private_key, token_url),
        }

    requests: dict[str, Callable[[], Any]] = {
        "client_secret_basic": lambda: http.post("/token", data=grant, auth=(client_id, secret)),
        "client_secret_post": lambda: http.post(
            "/token", data={**grant, "client_id": client_id, "client_secret": secret}
        ),
        "json body": lambda: http.post("/token", json=grant, auth=(client_id, secret)),
        "private_key_jwt": lambda: http.post("/token", data={**grant, **assertion()}),
        "private_key_jwt, json body": lambda: http.post("/token", json={**grant, **assertion()}),
    }
    for name, send in requests.items():
        for _ in range(2):
            status_lists._forget_lease()  # this request leases a block
            before = len(leases)
            response = send()
            assert leases[before:] == [False], f"{name}: the write lock was held while leasing"
            assert response.status_code == 200, (name, response.get_data(as_text=True))


WORKER = textwrap.dedent(
    r"""
    import json, sys, time
    from pathlib import Path

    from authserver import container
    from authserver.settings import Settings
    from authserver.web.app import create_app

    client_id, secret, go, seconds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
    svc = container.build(Settings.from_env())
    http = create_app(services=svc).test_client()
    http.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    statuses, slowest, entries = {}, 0.0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        svc.status_lists._forget_lease()  # every token leases a block
        started = time.monotonic()
        response = http.post(
            "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        slowest = max(slowest, time.monotonic() - started)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code != 200:
            statuses.setdefault("body", response.get_data(as_text=True))
    svc.close()
    print(json.dumps({"statuses": statuses, "slowest": slowest}))
    """
)


@sqlite_only
@pytest.mark.slow
def test_two_processes_leasing_for_every_token_never_wait_out_the_busy_timeout(
    db_url: str, settings: Settings, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    svc = make_services(settings)
    try:
        with svc.unit_of_work():
            client, secret = svc.clients.create(name="busy", audiences=["https://sync.example"])
    finally:
        svc.close()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update(env_for(db_url, AUTHSERVER_ISSUER=settings.issuer))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(client.client_id), str(secret), str(go), "4"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        go.touch()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    for report in reports:
        assert set(report["statuses"]) == {"200"}, report
        assert report["statuses"]["200"] >= 5, report
        # Leases waited only for the other process's short transactions, not for a
        # write lock that nobody releases until the busy timeout (then the request
        # fails with 503 after it); the margin is for a loaded test machine.
        assert report["slowest"] < BUSY_TIMEOUT_S * 2 / 3, report
