"""The JavaScript package ``verifiers/js`` (npm ``authserver-verifier``): its own tests, run
by Node's test runner against real ``authserver serve`` processes started with this
virtualenv's ``authserver``.

Needs ``node`` (20 or later) and ``npm``. Outside CI their absence skips this test; under CI
(``CI=true``, set by ``.ci/run``, which installs them from Debian when missing) it fails.
``npm ci`` installs exactly the committed package-lock.json (``tests.helpers.npm_ci``: not
again when ``node_modules`` already holds that tree, and from a per-user cache of that exact
tree in a clean clone), because the Verdant server the adapter is tested against builds
``better-sqlite3`` from source when no prebuilt binary can be downloaded: minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import node_and_npm
from tests.helpers import npm_ci

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PACKAGE = Path(__file__).resolve().parents[2] / "verifiers" / "js"


def test_js_verifier_package() -> None:
    node, npm = node_and_npm("the JavaScript verifier's tests")
    npm_ci(npm, PACKAGE)
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
