"""The examples run: examples/run_demo.py walks the whole chain and prints what each sync
server verified (the Python one always; the Node one where ``node`` and ``npm`` exist)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json
from tests.helpers import free_port
from tests.helpers import missing
from tests.helpers import node_and_npm

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLAIMS_LINE = re.compile(r"^\[(python|node) sync server\] verified claims: (\{.*\})$", re.M)
#: npm's codes for "the registry cannot be reached" (an offline machine, not a bug).
OFFLINE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH", "ECONNRESET")


def run_demo(*args: str) -> dict[str, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "run_demo.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo complete" in result.stdout
    verified = {m[1]: json.loads(m[2]) for m in CLAIMS_LINE.finditer(result.stdout)}
    for name, claims in verified.items():
        assert claims["sub"] == "user-42", name
        assert claims["email"] == "ada@example.com", name
        assert claims["name"] == "Ada Lovelace", name
        assert claims["libraryId"] == "lib-7", name
        assert claims["aud"] == "https://sync.example.com", name
        assert claims["iss"].startswith("http://127.0.0.1:"), name
        assert claims["client_id"], name
    return verified


def test_python_chain_on_chosen_ports() -> None:
    auth, sync, backend = free_port(), free_port(), free_port()
    verified = run_demo(
        "--authserver-port", str(auth), "--sync-port", str(sync), "--backend-port", str(backend)
    )
    assert set(verified) == {"python"}
    assert verified["python"]["iss"] == f"http://127.0.0.1:{auth}"


def _npm_ci_node_example() -> tuple[str, Path]:
    """``npm ci`` in examples/node; the node binary and the example's folder."""
    node, npm = node_and_npm("the Node sync server example")
    node_dir = EXAMPLES / "node"
    # npm ci: exactly the committed package-lock.json, into examples/node/node_modules
    # (git-ignored): authserver-verifier copied from verifiers/js (.npmrc install-links)
    # and jose; --prefer-offline uses npm's cache when it already holds jose. Always run
    # (not helpers.npm_ci, which skips an unchanged tree): the copy of verifiers/js keeps
    # its version number when its code changes.
    install = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=node_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:
        output = install.stdout + install.stderr
        if any(code in output for code in OFFLINE):
            missing(f"npm registry unreachable, Node example not run: {output[-300:]}")
        pytest.fail(f"npm ci failed:\n{output}")
    return node, node_dir


def test_node_chain() -> None:
    _npm_ci_node_example()
    verified = run_demo("--node")
    assert set(verified) == {"python", "node"}
    assert verified["node"] == verified["python"]  # the same token, the same claims


def test_node_sync_server_waits_for_authserver(
    env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """Started before authserver, the Node example says so in one line per retry (no
    ``fetch failed`` stack trace, no exit), answers 503 meanwhile, and verifies tokens once
    authserver is up."""
    node, node_dir = _npm_ci_node_example()
    auth_port, sync_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{auth_port}"
    audience = "https://sync.example.com"
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [node, str(node_dir / "sync_server.mjs")],
            env={
                **os.environ,
                "SYNC_ISSUER": issuer,
                "SYNC_AUDIENCE": audience,
                "PORT": str(sync_port),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sync = f"http://127.0.0.1:{sync_port}"
    try:
        deadline = time.monotonic() + 30
        while "not reachable yet" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        # Well formed, so only the keys can decide: they cannot be fetched yet.
        header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"at+jwt","kid":"k"}').rstrip(b"=")
        unjudged = header.decode() + ".e30.c2ln"
        response = requests.get(
            sync + "/sync", headers={"Authorization": f"Bearer {unjudged}"}, timeout=10
        )
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "temporarily_unavailable", "reason": "jwks_unavailable"}

        env = env_for(f"sqlite:///{tmp_path / 'auth.db'}", AUTHSERVER_ISSUER=issuer)
        with ServerProcess(env, port=auth_port):
            client = cli_json(env, "clients", "create", "--name", "late", "--audience", audience)
            token = requests.post(
                issuer + "/token",
                data={"grant_type": "client_credentials", "sub": "user-1"},
                auth=(client["client_id"], client["client_secret"]),
                timeout=10,
            ).json()["access_token"]
            # The example retries every 2 s (and the verifier spaces out refetches after a
            # failure), so the first requests after authserver came up may still be 503.
            deadline = time.monotonic() + 30
            while True:
                response = requests.get(
                    sync + "/sync", headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
                if response.status_code != 503 or time.monotonic() > deadline:
                    break
                assert response.json()["reason"] == "jwks_unavailable", response.text
                time.sleep(0.5)
            assert response.status_code == 200, response.text
            assert response.json()["user"] == "user-1"
        assert proc.poll() is None
        output = log_path.read_text()
        assert "fetch failed" not in output, output
        assert "\n    at " not in output, output  # no stack trace at all
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
