"""The Python verifier installs alone: a sync server's environment gets ``authserver-verifier``
and joserfc (with cryptography), none of the server's stack, and verifies a real token from a
real ``authserver serve``, refusing it once it is revoked (through the status list)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "https://sync.example.com"
SERVER_STACK = ["flask", "sqlalchemy", "granian", "psycopg", "authlib", "alembic", "authserver"]

CHECK = textwrap.dedent(
    """
    import sys
    from authserver_verifier import InvalidToken, TokenVerifier

    verifier = TokenVerifier(sys.argv[1], sys.argv[2])
    try:
        claims = verifier.verify(sys.argv[3])
    except InvalidToken as exc:
        print("refused", exc.reason)
    else:
        print("accepted", claims["sub"])
    """
)


@pytest.fixture(scope="session")
def verifier_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sync server's own virtualenv holding the verifier package installed by pip from
    this checkout (its dependencies resolved from the index, nothing of the server's).

    Built once per run, not once per pytest-xdist worker: the workers share the run's base
    temporary directory, and the first to take the lock builds while the others wait. The
    venv has no pip of its own (``--without-pip``: its bootstrap was half of the cost); the
    suite's pip installs into it with ``--python``.
    """
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is a directory of the run's own; serially, it is.
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "sync-server"
    shared.mkdir(exist_ok=True)
    venv, built = shared / "venv", shared / "built"
    python = venv / "bin" / "python"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            pip = [sys.executable, "-m", "pip", "--python", str(python)]
            install = subprocess.run(
                [*pip, "install", "-q", str(ROOT / "verifiers" / "python")],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert install.returncode == 0, install.stderr
            built.touch()
    return python


def test_installs_without_the_server_stack(verifier_python: Path) -> None:
    listed = subprocess.run(
        [
            str(verifier_python),
            "-c",
            "import importlib.metadata as m;"
            "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    names = {line.replace("_", "-") for line in listed.splitlines()}
    assert "authserver-verifier" in names
    assert "joserfc" in names
    assert not names & set(SERVER_STACK), names & set(SERVER_STACK)


def test_the_installed_distribution_carries_its_license(verifier_python: Path) -> None:
    """package metadata says Apache-2.0; the license's text travels with it."""
    found = subprocess.run(
        [
            str(verifier_python),
            "-c",
            "import importlib.metadata as m; d = m.distribution('authserver-verifier');"
            "print(d.metadata['License-Expression'] or d.metadata['License']);"
            "print('\\n'.join(str(f) for f in d.files or []))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert found[0] == "Apache-2.0"
    licenses = [f for f in found[1:] if f.endswith("licenses/LICENSE")]
    assert licenses, found


def test_verifies_and_sees_a_revocation(
    verifier_python: Path, tmp_path: Path, env_for: Callable[..., dict[str, str]]
) -> None:
    env = env_for(f"sqlite:///{tmp_path / 'auth.db'}", AUTHSERVER_STATUS_LIST_TTL="1s")
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess: the issuer is its base URL
    with ServerProcess(env) as server:
        client = cli_json(
            {**env, "AUTHSERVER_ISSUER": server.base_url},
            "clients",
            "create",
            "--name",
            "sync",
            "--audience",
            AUDIENCE,
        )
        auth = (client["client_id"], client["client_secret"])
        token = requests.post(
            server.base_url + "/token",
            data={"grant_type": "client_credentials", "sub": "user-7"},
            auth=auth,
            timeout=10,
        ).json()["access_token"]

        def check() -> str:
            return subprocess.run(
                [str(verifier_python), "-c", CHECK, server.base_url, AUDIENCE, token],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()

        assert check() == "accepted user-7"
        revoked = requests.post(
            server.base_url + "/revoke", data={"token": token}, auth=auth, timeout=10
        )
        assert revoked.status_code == 200, revoked.text
        # A fresh process has no cached list: it fetches the current one.
        assert check() == "refused revoked"
