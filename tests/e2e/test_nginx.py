"""The shipped reverse proxy configuration (deploy/nginx.conf), in a real nginx in front of
a real ``authserver serve``: what docker-compose.yml runs, with the two instances' host
names and the listening ports replaced by loopback ones (one instance alive, the other
port closed, as while one instance restarts).

Needs the ``nginx`` binary (Debian's ``nginx-core``): skipped without it, failed under CI,
where ``.ci/run`` installs it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import free_port
from tests.helpers import missing

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
ADMIN_TOKEN = "admin-token-for-the-nginx-tests-8c1f0e2d9b"
METRICS_TOKEN = "metrics-token-for-the-nginx-tests-5e7a3c1b04"
AUDIENCE = "https://sync.example"


@dataclass
class Proxy:
    public: str
    operator: str
    server: ServerProcess
    client: dict[str, Any]

    def token(self, base: str | None = None, **data: str) -> requests.Response:
        return requests.post(
            (base or self.public) + "/token",
            data={"grant_type": "client_credentials", **data},
            auth=(self.client["client_id"], self.client["client_secret"]),
            timeout=10,
        )


def _nginx_conf(tmp: Path, upstream_port: int, public: int, operator: int) -> Path:
    site = CONF.read_text()
    for old, new in (
        ("authserver-1:8000", f"127.0.0.1:{upstream_port}"),
        ("authserver-2:8000", f"127.0.0.1:{free_port()}"),  # an instance that is down
        ("listen 8080;", f"listen 127.0.0.1:{public};"),
        ("listen 8081;", f"listen 127.0.0.1:{operator};"),
    ):
        assert old in site, old
        site = site.replace(old, new)
    (tmp / "site.conf").write_text(site)
    main = tmp / "nginx.conf"
    # What the nginx image's own main configuration gives around conf.d/default.conf.
    main.write_text(
        f"""
        user root;
        daemon off;
        worker_processes 1;
        pid {tmp}/nginx.pid;
        error_log {tmp}/error.log;
        events {{}}
        http {{
            access_log off;
            client_body_temp_path {tmp}/body;
            proxy_temp_path {tmp}/proxy;
            include {tmp}/site.conf;
        }}
        """
    )
    return main


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert proc.poll() is None, log.read_text() if log.exists() else "nginx exited"
        assert time.monotonic() < deadline, "nginx did not start listening"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)


def _nginx() -> str:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        missing("nginx is not installed (Debian: apt-get install nginx-core)")
    return nginx


@contextmanager
def running_nginx(tmp: Path, upstream_port: int) -> Iterator[tuple[str, str]]:
    """nginx with the shipped configuration in front of *upstream_port* (and a closed
    port for the second instance): the public and the operator side's base URLs."""
    nginx = _nginx()
    public, operator = free_port(), free_port()
    main = _nginx_conf(tmp, upstream_port, public, operator)
    check = subprocess.run(
        [nginx, "-t", "-c", str(main)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [nginx, "-c", str(main)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(public, proc, tmp / "error.log")
        _wait_for(operator, proc, tmp / "error.log")
        yield f"http://127.0.0.1:{public}", f"http://127.0.0.1:{operator}"
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful: its workers exit with it
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    _nginx()
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
        "AUTHSERVER_PROXY_HOPS": "1",
        "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "AUTHSERVER_METRICS_TOKEN": METRICS_TOKEN,
    }
    # The issuer is the public side's URL, known once nginx has its port: nginx starts
    # first (its upstream answers once the server is up).
    with running_nginx(tmp, port) as (public, operator):
        env["AUTHSERVER_ISSUER"] = public
        with ServerProcess(env, port=port) as server:
            client = cli_json_here(
                env, "clients", "create", "--name", "backend", "--audience", AUDIENCE
            )
            yield Proxy(public, operator, server, client)


def _is_json_error(response: requests.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert response.json()["error"] == error, response.text


def test_tokens_through_the_public_side_name_the_public_issuer(proxy: Proxy) -> None:
    """A token through the proxy (one instance down: the other answers every request), the
    key set and the metadata through it, all naming the public URL."""
    for _ in range(4):  # both upstreams tried in turn
        response = proxy.token(sub="user-1")
        assert response.status_code == 200, response.text
    assert requests.get(proxy.public + "/.well-known/jwks.json", timeout=10).json()["keys"]
    metadata = requests.get(
        proxy.public + "/.well-known/oauth-authorization-server", timeout=10
    ).json()
    assert metadata["issuer"] == proxy.public
    assert metadata["token_endpoint"] == proxy.public + "/token"


@pytest.mark.parametrize(
    "path",
    ["/admin/clients", "/metrics", "//admin/clients", "/%61dmin/clients", "/ADMIN/clients",
     "/x/admin/clients", "/admin"],
)  # fmt: skip
def test_the_public_side_never_forwards_the_operator_routes(proxy: Proxy, path: str) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = requests.get(proxy.public + path, headers=bearer, timeout=10)
    _is_json_error(response, 404, "not_found")
    # nginx's answer: never forwarded (authserver's own 404 for /x/admin/... would look
    # the same but carry its request id).
    assert "X-Request-Id" not in response.headers


def test_the_operator_side_forwards_everything(proxy: Proxy) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = requests.get(proxy.operator + "/admin/clients", headers=bearer, timeout=10)
    assert response.status_code == 200, response.text
    assert proxy.client["client_id"] in response.text


def test_metrics_are_scraped_per_instance_on_the_operator_side(proxy: Proxy) -> None:
    """Through the balancer, /metrics read the two instances in turn: a counter read 5, 0,
    5, 0 (Prometheus takes each drop for a reset). Each instance has its own path; the
    balanced one says so; the public side forwards none of them."""
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert proxy.token(sub="user-1").status_code == 200
    scraped = requests.get(proxy.operator + "/metrics/authserver-1", headers=bearer, timeout=10)
    assert scraped.status_code == 200, scraped.text
    assert "authserver_tokens_issued_total" in scraped.text
    down = requests.get(proxy.operator + "/metrics/authserver-2", headers=bearer, timeout=10)
    _is_json_error(down, 503, "temporarily_unavailable")  # that instance is down here
    for path in ("/metrics", "/metrics/"):
        balanced = requests.get(proxy.operator + path, headers=bearer, timeout=10)
        _is_json_error(balanced, 404, "not_found")
        assert "/metrics/authserver-1" in balanced.json()["error_description"]
    for path in ("/metrics/authserver-1", "/metrics/authserver-2"):
        public = requests.get(proxy.public + path, headers=bearer, timeout=10)
        _is_json_error(public, 404, "not_found")


def test_what_nginx_refuses_itself_is_json(proxy: Proxy) -> None:
    """nginx's own refusals (a body over client_max_body_size, headers or a URI too large)
    were its HTML pages, which a backend parsing /token's error cannot read; authserver's
    own errors pass through as they are."""
    big = proxy.token(sub="user-1", padding="a" * 70_000)
    _is_json_error(big, 413, "invalid_request")
    headers = {"X-Large": "a" * 20_000}
    _is_json_error(
        requests.get(proxy.public + "/healthz", headers=headers, timeout=10), 400, "invalid_request"
    )
    _is_json_error(
        requests.get(proxy.public + "/" + "a" * 9_000, timeout=10), 414, "invalid_request"
    )
    with socket.create_connection(("127.0.0.1", int(proxy.public.rsplit(":", 1)[1]))) as raw:
        raw.sendall(b"GARBAGE\r\n\r\n")
        answer = raw.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 400"), answer
    assert '"error": "invalid_request"' in answer
    # authserver's own 4xx through the proxy: untouched.
    _is_json_error(proxy.token(sub="user-1", expires_in="soon"), 400, "invalid_request")
    wrong = requests.post(
        proxy.public + "/token",
        data={"grant_type": "client_credentials"},
        auth=(proxy.client["client_id"], "wrong"),
        timeout=10,
    )
    _is_json_error(wrong, 401, "invalid_client")
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")


def test_no_instance_answering_is_a_json_503(tmp_path: Path) -> None:
    """Both instances down: 503 temporarily_unavailable with Retry-After, not nginx's 502
    page."""
    with running_nginx(tmp_path, free_port()) as (public, _):
        response = requests.post(
            public + "/token", data={"grant_type": "client_credentials"}, timeout=10
        )
    _is_json_error(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "5"
