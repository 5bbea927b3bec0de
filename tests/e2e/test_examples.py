"""The examples run: examples/run_demo.py walks the whole chain and prints what each sync
server verified (the Python one always; the Node one where ``node`` and ``npm`` exist)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.helpers import missing

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


def test_node_chain() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing("node and npm are not on PATH: the Node sync server example is not run")
    node_dir = EXAMPLES / "node"
    # npm ci: exactly the committed package-lock.json, into examples/node/node_modules
    # (git-ignored); --prefer-offline uses npm's cache when it already holds jose.
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
    verified = run_demo("--node")
    assert set(verified) == {"python", "node"}
    assert verified["node"] == verified["python"]  # the same token, the same claims
