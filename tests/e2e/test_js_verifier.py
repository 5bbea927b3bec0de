"""The JavaScript package ``verifiers/js`` (npm ``authserver-verifier``): its own tests, run
by Node's test runner against real ``authserver serve`` processes started with this
virtualenv's ``authserver``.

Needs ``node`` (20 or later) and ``npm``. Outside CI their absence skips this test; under CI
(``CI=true``, set by ``.ci/run``, which installs them from Debian when missing) it fails.
``npm ci`` installs exactly the committed package-lock.json; it is skipped when
``node_modules`` already holds exactly that tree (npm's own record of what it installed,
``node_modules/.package-lock.json``), because the Verdant server the adapter is tested
against builds ``better-sqlite3`` from source when no prebuilt binary can be downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PACKAGE = Path(__file__).resolve().parents[2] / "verifiers" / "js"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not on PATH: the JavaScript verifier's tests cannot run"
        if IN_CI:
            pytest.fail(message + " (CI: .ci/run installs nodejs and npm from Debian)")
        pytest.skip(message)
    return path


def _installed_matches_lockfile() -> bool:
    """True when node_modules holds exactly the packages package-lock.json names."""
    hidden = PACKAGE / "node_modules" / ".package-lock.json"
    if not hidden.exists():
        return False
    wanted = json.loads((PACKAGE / "package-lock.json").read_text())["packages"]
    have = json.loads(hidden.read_text())["packages"]

    def versions(packages: dict[str, dict[str, object]]) -> dict[str, object]:
        return {k: v.get("version") for k, v in packages.items() if k.startswith("node_modules/")}

    return versions(wanted) == versions(have)


def test_js_verifier_package() -> None:
    node, npm = _tool("node"), _tool("npm")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        message = f"node {version} is too old for authserver-verifier (engines: node >= 20)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    if not _installed_matches_lockfile():
        install = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=PACKAGE,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    bin_dir = Path(sys.executable).parent
    authserver = shutil.which("authserver", path=str(bin_dir))
    assert authserver, f"no authserver in {bin_dir}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env["AUTHSERVER_BIN"] = authserver
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", "test/suite.js"],
        cwd=PACKAGE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert "\N{INFORMATION SOURCE} fail 0" in output, output[-5000:]  # the spec reporter's summary
