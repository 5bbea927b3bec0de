"""The admin and metrics bearer tokens through a real ``authserver serve``: at least 32
characters or no start, wrong tokens throttled per address (failures only: the right token
always passes), and the admin API's transport rule, the same as ``/token``'s."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import free_port
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-for-operator-tests-5e8a2b7c"
METRICS_TOKEN = "metrics-token-for-operator-tests-9d1f4c"
#: Wrong tokens an address may send per minute before its wrong tokens get 429.
BUDGET = 5


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # Nothing here depends on the database: SQLite only.
    return {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
        **extra,
    }


@pytest.mark.parametrize("variable", ["AUTHSERVER_ADMIN_TOKEN", "AUTHSERVER_METRICS_TOKEN"])
@pytest.mark.parametrize("value", ["Q", "Z" * 31])
def test_a_short_token_stops_serve_with_one_line(tmp_path: Path, variable: str, value: str) -> None:
    result = run_cli(
        _env(tmp_path, **{variable: value}),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "32 characters" in lines[0]
    assert value not in lines[0]  # the value is never echoed


def test_serve_warns_of_what_doctor_finds_in_the_tokens(tmp_path: Path) -> None:
    """A 40-character token of two letters, given to both settings: doctor called each a
    problem, and serve started on them without a word."""
    weak = "ab" * 20
    env = _env(tmp_path, AUTHSERVER_ADMIN_TOKEN=weak, AUTHSERVER_METRICS_TOKEN=weak)
    log = tmp_path / "serve.log"
    with ServerProcess(env, log_path=log) as running:
        assert _get(running, "/admin/clients", weak).status_code == 200
    warnings = [ln for ln in log.read_text().splitlines() if " WARNING " in ln]
    for expected in (
        "AUTHSERVER_ADMIN_TOKEN looks guessable (40 characters, 2 distinct)",
        "AUTHSERVER_METRICS_TOKEN looks guessable (40 characters, 2 distinct)",
        "AUTHSERVER_METRICS_TOKEN is the admin token",
    ):
        assert any(expected in ln for ln in warnings), (expected, warnings)
    assert weak not in log.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("operator")
    env = _env(
        tmp_path,
        AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN,
        AUTHSERVER_METRICS_TOKEN=METRICS_TOKEN,
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS=f"{BUDGET}/minute",
    )
    with ServerProcess(env) as running:
        yield running


def _get(server: ServerProcess, path: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(server.base_url + path, headers=headers, timeout=10)


def test_wrong_tokens_are_throttled_per_address_and_the_right_ones_always_pass(
    server: ServerProcess,
) -> None:
    # The admin and metrics tokens share the address's budget: both are failures.
    statuses = [
        _get(server, "/admin/clients" if i % 2 else "/metrics", f"wrong-{i}").status_code
        for i in range(BUDGET)
    ]
    assert statuses == [401] * BUDGET
    for path in ("/admin/clients", "/metrics"):
        refused = _get(server, path, "wrong-again")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "slow_down"
        assert int(refused.headers["Retry-After"]) >= 1
        assert _get(server, path, None).status_code == 429
    # Failures only: the right token from the same, throttled address is served.
    admin = _get(server, "/admin/clients", ADMIN_TOKEN)
    assert admin.status_code == 200, admin.text
    assert admin.json() == {"clients": [], "unreadable": []}
    scrape = _get(server, "/metrics", METRICS_TOKEN)
    assert scrape.status_code == 200
    assert "authserver_client_auth_throttled_total" in scrape.text
    # The admin token is not the metrics token, nor the other way round.
    assert _get(server, "/metrics", ADMIN_TOKEN).status_code == 429
    assert _get(server, "/admin/clients", METRICS_TOKEN).status_code == 429


def _raw_get(server: ServerProcess, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A GET with exactly these headers (requests would set Host from the URL)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["authserver-1:8000", "10.0.0.5:8000"])
def test_metrics_is_served_over_plain_http_inside_a_private_network(
    server: ServerProcess, host: str
) -> None:
    """Deliberately unlike /admin/* (docs/security.md, operator endpoints): Prometheus
    scrapes each instance by its name on a private network, in plain http."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "GET", "/metrics", headers={"Host": host, "Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        response = conn.getresponse()
        assert response.status == 200
        assert b"authserver_" in response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["auth.example.com", "10.0.0.5:8000"])
def test_admin_refuses_plain_http_to_a_non_loopback_host(server: ServerProcess, host: str) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    status, body = _raw_get(server, "/admin/clients", {"Host": host, **auth})
    assert status == 400
    assert body["error"] == "insecure_transport"
    # Without a configured proxy, a forwarded scheme is not believed.
    status, body = _raw_get(
        server, "/admin/clients", {"Host": host, "X-Forwarded-Proto": "https", **auth}
    )
    assert status == 400
    assert body["error"] == "insecure_transport"
    # Loopback hosts are served.
    status, body = _raw_get(server, "/admin/clients", {"Host": "localhost", **auth})
    assert status == 200, body
