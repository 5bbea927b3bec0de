"""authserver_verifier inside the servers sync servers are deployed with, against a real
``authserver serve``: gunicorn with ``--preload`` (the verifier built in the master, then
forked) and threads, and uvicorn running a Starlette app with an HTTP and a WebSocket
endpoint. The keys are fetched through a loopback proxy that answers 2 s late: an issuer
that is slow right when it matters (the fork, the first request).

One authserver per module; each test starts its own app server (a second or two).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import free_port
from tests.jwks_servers import KeyServer
from tests.jwks_servers import self_signed_cert
from tests.jwks_servers import server_tls

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

AUDIENCE = "https://sync.example.com"
#: How late the proxy answers: longer than forking the workers takes, shorter than the
#: verifier's timeout (5 s).
DELAY = 2.0


class Deployment:
    def __init__(self, server: ServerProcess, client: dict[str, Any]) -> None:
        self.server = server
        self.client = client

    def token(self, sub: str) -> str:
        response = requests.post(
            self.server.base_url + "/token",
            data={"grant_type": "client_credentials", "sub": sub},
            auth=(self.client["client_id"], self.client["client_secret"]),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def revoke(self, token: str) -> None:
        response = requests.post(
            self.server.base_url + "/revoke",
            data={"token": token},
            auth=(self.client["client_id"], self.client["client_secret"]),
            timeout=10,
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("verifier-deployments")
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
        "AUTHSERVER_STATUS_LIST_TTL": "1",
    }
    with ServerProcess(env) as server:
        env["AUTHSERVER_ISSUER"] = server.base_url
        client = cli_json_here(env, "clients", "create", "--name", "sync", "--audience", AUDIENCE)
        yield Deployment(server, client)


@contextmanager
def slow_proxy(
    target: str, *, delay: float = DELAY, tls: ssl.SSLContext | None = None
) -> Iterator[KeyServer]:
    """Forwards GETs to *target* after *delay* seconds (``requests`` lists them), over
    TLS with *tls*."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        with urllib.request.urlopen(target + handler.path, timeout=10) as response:
            body = response.read()
            handler.send_response(response.status)
            for name in ("Content-Type", "Cache-Control", "ETag"):
                if response.headers.get(name):
                    handler.send_header(name, response.headers[name])
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with KeyServer(behave, tls=tls) as proxy:
        yield proxy


@contextmanager
def app_server(
    command: list[str], cwd: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start an app server (its own process group) with *env* added to the environment,
    wait until *port* accepts, and stop it (by its group) afterwards."""
    log = open(cwd / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (cwd / "server.log").read_text()
            assert time.monotonic() < deadline, "the app server did not start"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()


GUNICORN_APP = textwrap.dedent(
    """
    import sys, threading
    from authserver_verifier import TokenVerifier, require_token

    verifier = TokenVerifier(sys.argv[-3], sys.argv[-2], jwks_uri=sys.argv[-1])
    # Warm the key cache without delaying start-up: gunicorn forks the workers while
    # this fetch is still under way (the issuer answers 2 s late).
    threading.Thread(target=verifier.refresh, daemon=True).start()

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["authserver.claims"]["sub"].encode()]

    app = require_token(verifier)(hello)
    """
)


def test_gunicorn_preload_workers_forked_mid_fetch_fetch_their_own_keys(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A lock held by the master's fetch at the fork stayed held in every worker: each
    request that needed the keys waited for it forever (gthread workers keep their
    heartbeat, so gunicorn never restarted them). Each worker now fetches the keys
    itself, once for all its threads."""
    base = deployment.server.base_url
    (tmp_path / "sync_app.py").write_text(GUNICORN_APP)
    port = free_port()
    with slow_proxy(base) as proxy:
        command = [
            sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--threads", "4",
            "--bind", f"127.0.0.1:{port}", "sync_app:app",
            # gunicorn reads its own options only; the app reads these from sys.argv.
            base, AUDIENCE, proxy.url("/.well-known/jwks.json"),
        ]  # fmt: skip
        with app_server(command, tmp_path, port):
            token = deployment.token("user-forked")
            answers: list[Any] = []

            def call() -> None:
                try:
                    response = requests.get(
                        f"http://127.0.0.1:{port}/",
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=DELAY * 4,
                    )
                    answers.append((response.status_code, response.text))
                except requests.RequestException as exc:
                    answers.append(type(exc).__name__)

            callers = [threading.Thread(target=call) for _ in range(8)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join()
        assert answers == [(200, "user-forked")] * 8
        # The master's fetch, then at most one per worker (single flight across threads).
        assert 2 <= len(proxy.requests) <= 3, proxy.requests


ASGI_APP = textwrap.dedent(
    """
    import os
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from authserver_verifier import InvalidToken, TokenVerifier, bearer_token

    verifier = TokenVerifier(
        os.environ["SYNC_ISSUER"], os.environ["SYNC_AUDIENCE"], jwks_uri=os.environ["SYNC_JWKS"]
    )

    async def sync(request):
        try:
            token = bearer_token(request.headers.get("authorization"))
            claims = await verifier.averify(token)
        except InvalidToken as exc:
            return JSONResponse({"reason": exc.reason}, status_code=401)
        return JSONResponse({"sub": claims["sub"]})

    async def ping(request):
        return PlainTextResponse("pong")

    async def socket(websocket):
        await websocket.accept()
        try:
            claims = await verifier.averify(websocket.query_params.get("token", ""))
        except InvalidToken as exc:
            await websocket.close(code=4001, reason=exc.reason)
            return
        await websocket.send_text(claims["sub"])
        await websocket.close()

    app = Starlette(
        routes=[Route("/sync", sync), Route("/ping", ping), WebSocketRoute("/ws", socket)]
    )
    """
)


def test_uvicorn_averify_never_holds_the_event_loop_for_a_fetch(
    deployment: Deployment, tmp_path: Path
) -> None:
    """``verify()`` on the event loop held every request of the process, /ping included,
    for as long as the issuer took to answer (the timeout, 5 s, when it does not):
    ``averify()`` fetches on a worker thread. WebSocket handshakes verify the same way, and
    a revoked token is refused once its status list's 1 s ttl has passed."""
    import websockets.sync.client

    base = deployment.server.base_url
    (tmp_path / "sync_app.py").write_text(ASGI_APP)
    port = free_port()
    with slow_proxy(base) as proxy:
        env = {
            "SYNC_ISSUER": base,
            "SYNC_AUDIENCE": AUDIENCE,
            "SYNC_JWKS": proxy.url("/.well-known/jwks.json"),
        }
        command = [
            sys.executable, "-m", "uvicorn", "sync_app:app", "--port", str(port),
            "--log-level", "warning",
        ]  # fmt: skip
        with app_server(command, tmp_path, port, env):
            app = f"http://127.0.0.1:{port}"
            token = deployment.token("user-async")
            answers: list[Any] = []

            def first() -> None:
                response = requests.get(
                    app + "/sync", headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
                answers.append((response.status_code, response.json()))

            caller = threading.Thread(target=first)
            caller.start()
            time.sleep(0.3)  # the keys are being fetched (2 s)
            started = time.monotonic()
            assert requests.get(app + "/ping", timeout=10).text == "pong"
            assert time.monotonic() - started < 1.0  # blocked: DELAY less 0.3 s
            caller.join()
            assert answers == [(200, {"sub": "user-async"})]

            # Cached now: answered on the loop; the WebSocket handshake alike.
            with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
                assert ws.recv(timeout=10) == "user-async"
            assert closing(f"ws://127.0.0.1:{port}/ws?token=x.y.z") == (4001, "malformed")

            # A revocation reaches a WebSocket handshake within the list's ttl (1 s).
            deployment.revoke(token)
            deadline = time.monotonic() + 10
            reason = None
            while reason != "revoked":
                assert time.monotonic() < deadline, f"still {reason!r}"
                time.sleep(0.3)
                _, reason = closing(f"ws://127.0.0.1:{port}/ws?token={token}")
            # One fetch of the keys through the proxy: the others were answered on the loop.
            assert proxy.requests.count("/.well-known/jwks.json") == 1, proxy.requests


ASGI_MIDDLEWARE_APP = textwrap.dedent(
    """
    import os
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from authserver_verifier import TokenVerifier, require_token_asgi

    verifier = TokenVerifier(os.environ["SYNC_ISSUER"], os.environ["SYNC_AUDIENCE"])

    async def sync(request):
        return JSONResponse({"sub": request.scope["authserver.claims"]["sub"]})

    async def health(request):
        return JSONResponse({"claims": request.scope["authserver.claims"]})

    async def socket(websocket):
        await websocket.accept()
        await websocket.send_text(websocket.scope["authserver.claims"]["sub"])
        await websocket.close()

    app = Starlette(
        routes=[Route("/sync", sync), Route("/healthz", health), WebSocketRoute("/ws", socket)],
        middleware=[Middleware(require_token_asgi(verifier, public_paths={"/healthz"}))],
    )
    """
)


def test_uvicorn_starlette_behind_the_asgi_middleware(
    deployment: Deployment, tmp_path: Path
) -> None:
    """``require_token_asgi`` in a Starlette app under uvicorn, against the real server:
    HTTP requests and WebSocket handshakes get the claims, a missing or revoked token is
    refused before the app runs (the handshake with the same 401 JSON, through uvicorn's
    WebSocket Denial Response), and a public path passes with no claims."""
    import websockets.exceptions
    import websockets.sync.client

    (tmp_path / "sync_app.py").write_text(ASGI_MIDDLEWARE_APP)
    port = free_port()
    env = {"SYNC_ISSUER": deployment.server.base_url, "SYNC_AUDIENCE": AUDIENCE}
    command = [
        sys.executable, "-m", "uvicorn", "sync_app:app", "--port", str(port),
        "--log-level", "warning",
    ]  # fmt: skip
    with app_server(command, tmp_path, port, env):
        app, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
        token = deployment.token("user-asgi")
        bearer = {"Authorization": f"Bearer {token}"}
        response = requests.get(app + "/sync", headers=bearer, timeout=10)
        assert (response.status_code, response.json()) == (200, {"sub": "user-asgi"})
        with websockets.sync.client.connect(ws_url, additional_headers=bearer) as ws:
            assert ws.recv(timeout=10) == "user-asgi"

        response = requests.get(app + "/sync", timeout=10)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"error": "invalid_token", "reason": "missing_token"}
        assert requests.get(app + "/healthz", timeout=10).json() == {"claims": None}

        deployment.revoke(token)
        deadline = time.monotonic() + 10
        while requests.get(app + "/sync", headers=bearer, timeout=10).status_code == 200:
            assert time.monotonic() < deadline, "the revocation was never seen"
            time.sleep(0.3)
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            websockets.sync.client.connect(ws_url, additional_headers=bearer, open_timeout=10)
        answer = refused.value.response
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == (
            'Bearer error="invalid_token", error_description="revoked"'
        )
        assert json.loads(answer.body) == {"error": "invalid_token", "reason": "revoked"}


def test_a_certificate_the_sync_server_does_not_trust_is_named_and_ssl_cert_file_trusts_it(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys served over https with a self-signed certificate: jwks_unavailable (503 in
    require_token), the detail naming the TLS failure, no other exception; with that
    certificate in SSL_CERT_FILE (as docs/sync-servers.md says for a private CA) the same
    verifier accepts the token."""
    from authserver_verifier import InvalidToken
    from authserver_verifier import TokenVerifier

    cert, key = self_signed_cert(tmp_path)
    token = deployment.token("user-tls")
    base = deployment.server.base_url
    with slow_proxy(base, delay=0, tls=server_tls(cert, key)) as proxy:
        verifier = TokenVerifier(
            base, AUDIENCE, jwks_uri=proxy.url("/.well-known/jwks.json"), min_refetch_interval=0
        )
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(token)
        assert refused.value.reason == "jwks_unavailable"
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value.detail), refused.value.detail
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert verifier.verify(token)["sub"] == "user-tls"


def closing(url: str) -> tuple[int | None, str | None]:
    """The close code and reason a WebSocket connection to *url* ends with, with no message
    before it (``(None, None)`` when the server sends one: the token was accepted)."""
    import websockets.exceptions
    import websockets.sync.client

    with websockets.sync.client.connect(url) as ws:
        try:
            ws.recv(timeout=10)
        except websockets.exceptions.ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, None)
    return None, None
