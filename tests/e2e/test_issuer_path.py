"""An issuer with a path (``AUTHSERVER_ISSUER=http://host:port/auth``), through a real
``authserver serve``: the URLs it publishes answer, its metadata is at the RFC 8414 §3.1
location too, its tokens verify with the verifier package, and ``authserver doctor`` finds
it. The routing itself: ``tests/unit/test_issuer_path.py``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from authserver_verifier import TokenVerifier

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

AUDIENCE = "https://sync.example.com"


@dataclass
class Deployment:
    server: ServerProcess
    env: dict[str, str]
    issuer: str
    credentials: tuple[str, str]
    log: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("issuer-path")
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
    }
    log = tmp / "server.log"
    server = ServerProcess(env, log_path=log)
    env["AUTHSERVER_ISSUER"] = issuer = server.base_url + "/auth"
    server.env["AUTHSERVER_ISSUER"] = issuer
    server.start()
    try:
        created = cli_json_here(
            env, "clients", "create", "--name", "backend", "--audience", AUDIENCE
        )
        yield Deployment(server, env, issuer, (created["client_id"], created["client_secret"]), log)
    finally:
        server.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server/auth",  # RFC 8414 §3.1
        "/auth/.well-known/oauth-authorization-server",  # appended, as a proxy may route it
        "/.well-known/oauth-authorization-server",  # a proxy that strips the path
        "/auth/.well-known/openid-configuration",  # OIDC Discovery appends
    ],
)
def test_the_metadata_answers_wherever_a_client_looks(deployment: Deployment, path: str) -> None:
    response = requests.get(deployment.server.base_url + path, timeout=10)
    assert response.status_code == 200, response.text
    metadata = response.json()
    assert metadata["issuer"] == deployment.issuer
    assert metadata["token_endpoint"] == deployment.issuer + "/token"
    assert metadata["jwks_uri"] == deployment.issuer + "/.well-known/jwks.json"


def test_every_published_url_answers_and_tokens_verify(deployment: Deployment) -> None:
    base = deployment.server.base_url
    metadata = requests.get(
        base + "/.well-known/oauth-authorization-server/auth", timeout=10
    ).json()
    for path in ("/token", ""):  # with the issuer's path, and without (a stripping proxy)
        url = metadata["token_endpoint"] if path else base + "/token"
        response = requests.post(
            url,
            data={"grant_type": "client_credentials", "sub": "path-user", "audience": AUDIENCE},
            auth=deployment.credentials,
            timeout=10,
        )
        assert response.status_code == 200, (url, response.text)
    token = response.json()["access_token"]
    claims = TokenVerifier(deployment.issuer, AUDIENCE).verify(token)
    assert claims["iss"] == deployment.issuer
    assert claims["sub"] == "path-user"
    status_uri = claims["status"]["status_list"]["uri"]
    assert status_uri.startswith(deployment.issuer + "/statuslists/")
    for url in (status_uri, metadata["jwks_uri"], metadata["introspection_endpoint"]):
        method = "POST" if url.endswith("/introspect") else "GET"
        answer = requests.request(
            method, url, data={"token": token}, auth=deployment.credentials, timeout=10
        )
        assert answer.status_code == 200, (url, answer.text)
    introspected = requests.post(
        metadata["introspection_endpoint"],
        data={"token": token},
        auth=deployment.credentials,
        timeout=10,
    ).json()
    assert introspected["active"] is True
    # The access log shows each path as it was sent, not as it was routed.
    wanted = ("GET /.well-known/oauth-authorization-server/auth 200", "POST /auth/token 200")
    deadline = time.monotonic() + 10
    while not all(line in (log := deployment.log.read_text()) for line in wanted):
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.05)


def test_doctor_finds_the_issuer(deployment: Deployment) -> None:
    result = run_cli_here(deployment.env, "doctor")
    issuer_lines = [line for line in result.stdout.splitlines() if " issuer " in f" {line} "]
    assert issuer_lines, result.stdout
    assert all(line.split()[0] == "ok" for line in issuer_lines), result.stdout


def test_a_profile_path_that_starts_with_the_issuers_path(deployment: Deployment) -> None:
    """The stream profile's ``/auth/v1/access-tokens`` under an issuer at ``/auth``: as sent
    to the server, and under the issuer's path."""
    created = cli_json_here(
        deployment.env, "clients", "create", "--name", "operator", "--profile", "stream"
    )
    for path in ("/auth/v1/access-tokens", "/auth/auth/v1/access-tokens"):
        response = requests.post(
            deployment.server.base_url + path,
            json={"userId": "viewer-1"},
            headers={"Authorization": f"Bearer {created['client_secret']}"},
            timeout=10,
        )
        assert response.status_code == 200, (path, response.text)
        assert set(response.json()) >= {"token", "ttl"}
