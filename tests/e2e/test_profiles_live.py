"""Profiles through a real ``authserver serve`` (issue 16): clients registered with the
CLI's ``--profile`` and ``--fixed-claim``; the vendors' own client code fed the answers
(``tests/vendor_clients/test/vendor_clients.test.js``, Node's test runner:
dexie-cloud-addon's login, Verdant's ``ServerSyncEndpointProvider``, twilio's
``AccessToken`` as the reference for the grants claim, the streaming platform's
``{token}``); the silent mis-issue refused; failed Bearer
authentications at the stream path throttled like any failed authentication.

Needs ``node`` (20 or later) and ``npm``: skipped without them, failed under CI
(``CI=true``). ``npm ci`` installs exactly tests/vendor_clients/package-lock.json, skipped
when node_modules already holds exactly that tree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import node_and_npm
from tests.helpers import node_test
from tests.helpers import npm_ci

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PACKAGE = Path(__file__).resolve().parents[1] / "vendor_clients"
AUDIENCE = "https://sync.example"
VERDANT_SYNC_URL = "http://127.0.0.1:3000/lofi"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("profiles_live")
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'a.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
        "AUTHSERVER_WORKERS": "1",
        "AUTHSERVER_SCHEDULER": "false",
        "AUTHSERVER_AUTH_FAILURES_PER_ADDRESS": "5/minute",
        "AUTHSERVER_AUTH_FAILURES_PER_CLIENT": "off",
    }
    with ServerProcess(env, log_path=tmp / "serve.log") as process:
        cli_env = {**env, "AUTHSERVER_ISSUER": process.base_url}
        aud = ("--audience", AUDIENCE)

        def create(*args: str) -> dict[str, str]:
            out = cli_json_here(cli_env, "clients", "create", "--name", "backend", *aud, *args)
            return {"client_id": out["client_id"], "client_secret": out["client_secret"]}

        clients = {
            "oauth2": create("--scope", "media", "--token-ttl", "86400"),
            "dexie": create("--profile", "dexie", "--scope", "ACCESS_DB"),
            "verdant": create(
                "--profile",
                "verdant",
                *("--allowed-claim", "lib", "--allowed-claim", "role", "--allowed-claim", "type"),
                "--fixed-claim",
                f"url={VERDANT_SYNC_URL}",
            ),
            "twilio": create("--profile", "twilio", "--allowed-claim", "grants"),
            "stream": create(
                "--profile",
                "stream",
                *("--scope", "broadcaster", "--allowed-claim", "data", "--token-ttl", "3600"),
            ),
        }
        shown = cli_json_here(cli_env, "clients", "show", clients["verdant"]["client_id"])
        assert shown["profile"] == "verdant"
        assert shown["fixed_claims"] == {"url": VERDANT_SYNC_URL}
        yield process, clients


def test_vendor_clients_accept_the_answers(server: tuple[ServerProcess, dict[str, Any]]) -> None:
    process, clients = server
    node, npm = node_and_npm("the vendor client checks")
    npm_ci(npm, PACKAGE)
    env = {
        "AUTHSERVER_URL": process.base_url,
        "AUDIENCE": AUDIENCE,
        "PROFILE_CLIENTS": json.dumps(clients),
        "VERDANT_SYNC_URL": VERDANT_SYNC_URL,
    }
    node_test(node, PACKAGE, "test/vendor_clients.test.js", env=env, passed=7)


def test_the_silent_mis_issue_is_refused(server: tuple[ServerProcess, dict[str, Any]]) -> None:
    """The stream body with Basic auth at /token, for an oauth2 client: it used to answer
    200 with a 24-hour token for the client itself and every registered scope."""
    process, clients = server
    oauth2 = clients["oauth2"]
    response = requests.post(
        process.base_url + "/token",
        json={
            "grant_type": "client_credentials",
            "ttl": 600,
            "userId": "viewer-1",
            "scopes": ["media"],
        },
        auth=(oauth2["client_id"], oauth2["client_secret"]),
        timeout=10,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "scopes, ttl, userId" in body["error_description"]


def test_failed_bearer_authentications_are_throttled(
    server: tuple[ServerProcess, dict[str, Any]],
) -> None:
    """Wrong operator tokens at the stream path count as failed authentications (the
    server allows 5 per address per minute here): the sixth request is refused with 429,
    before any secret is looked up."""
    process, _ = server
    statuses = []
    for _ in range(7):
        response = requests.post(
            process.base_url + "/auth/v1/access-tokens",
            json={"userId": "u"},
            headers={"Authorization": "Bearer as_secret_not-a-real-one"},
            timeout=10,
        )
        statuses.append(response.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
