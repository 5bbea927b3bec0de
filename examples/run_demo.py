"""Run the whole chain locally: authserver → your backend → browser → sync server(s).

1. starts ``authserver serve`` on a free port in a temporary directory (SQLite, new keys);
2. registers the backend with ``authserver clients create ... --json``;
3. starts the Python sync server (examples/sync_server.py) and, with ``--node``, the Node
   one (examples/node/sync_server.mjs; run ``npm ci`` in examples/node first);
4. starts the Flask backend (examples/backend_flask.py) with the client's credentials;
5. plays the browser: signs in to the backend, gets ``{accessToken, syncEndpoint}``,
   connects to each sync server with the token, and checks that no token and a tampered
   token are refused;
6. prints the claims each sync server verified, and stops every process it started.

Run from a checkout with the package installed: ``.venv/bin/python examples/run_demo.py``
(``--authserver-port``, ``--sync-port``, ``--node-port``, ``--backend-port`` pick the ports;
free ones by default).
Exit status 0 when every step worked.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
AUDIENCE = "https://sync.example.com"


class DemoError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Every child process, each in its own session, stopped by its PID at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Path:
        log = self.workdir / f"{name.replace(' ', '_')}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own commands
                argv,
                env=env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((name, proc, log))
        return log

    def check_alive(self) -> None:
        for name, proc, log in self.started:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with {proc.returncode}:\n{log.read_text()}")

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # the group led by this PID
                except ProcessLookupError:
                    continue
        for _name, proc, _log in reversed(self.started):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def dump_logs(self) -> None:
        for name, _proc, log in self.started:
            print(f"----- {name} log -----\n{log.read_text(errors='replace')}", file=sys.stderr)


def wait_ready(url: str, procs: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise DemoError(f"{url} did not answer in {timeout} s")


def call(
    opener: urllib.request.OpenerDirector,
    url: str,
    *,
    data: dict[str, Any] | None = None,
    token: str | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Accept": "application/json"}
    body = None
    if data is not None:
        body = json.dumps(data).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310
    try:
        with opener.open(request, timeout=15) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise DemoError(message)
    print(f"ok: {message}")


def run(node: bool, workdir: Path, ports: dict[str, int]) -> None:
    procs = Processes(workdir)
    try:
        walk(procs, node, workdir, ports)
    except BaseException:
        procs.dump_logs()
        raise
    finally:
        procs.stop_all()


def walk(procs: Processes, node: bool, workdir: Path, ports: dict[str, int]) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    # 1. authserver
    port = ports["authserver"] or free_port()
    issuer = f"http://127.0.0.1:{port}"
    auth_env = {
        **base_env,
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{workdir / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(workdir / "keys"),
        "AUTHSERVER_ISSUER": issuer,
        "AUTHSERVER_LOG_LEVEL": "warning",
    }
    authserver = [sys.executable, "-m", "authserver"]
    procs.start(
        "authserver",
        [*authserver, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        auth_env,
    )
    wait_ready(issuer + "/readyz", procs)
    print(f"authserver at {issuer}")

    # 2. register the backend
    created = subprocess.run(  # noqa: S603
        [*authserver, "clients", "create", "--name", "demo-backend", "--audience", AUDIENCE,
         "--allowed-claim", "libraryId", "--json"],
        env=auth_env, cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if created.returncode != 0:
        raise DemoError(f"clients create failed: {created.stderr}")
    client = json.loads(created.stdout)
    print(f"registered client {client['client_id']}")

    # 3. sync servers
    sync_env = {**base_env, "SYNC_ISSUER": issuer, "SYNC_AUDIENCE": AUDIENCE}
    sync_servers: dict[str, tuple[str, Path]] = {}
    py_port = ports["sync"] or free_port()
    log = procs.start(
        "python sync server",
        [sys.executable, str(HERE / "sync_server.py"), "--port", str(py_port)],
        sync_env,
    )
    sync_servers["python"] = (f"http://127.0.0.1:{py_port}", log)
    if node:
        node_dir = HERE / "node"
        if not (node_dir / "node_modules" / "authserver-verifier").is_dir():
            raise DemoError("authserver-verifier is not installed: run `npm ci` in examples/node")
        node_bin = shutil.which("node")
        if node_bin is None:
            raise DemoError("node is not on PATH")
        node_port = ports["node"] or free_port()
        log = procs.start(
            "node sync server",
            [node_bin, str(node_dir / "sync_server.mjs")],
            {**sync_env, "PORT": str(node_port)},
        )
        sync_servers["node"] = (f"http://127.0.0.1:{node_port}", log)
    for url, _log in sync_servers.values():
        wait_ready(url + "/healthz", procs)

    # 4. the backend; it advertises the Python sync server as syncEndpoint
    backend_port = ports["backend"] or free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    procs.start(
        "backend",
        [sys.executable, str(HERE / "backend_flask.py"), "--port", str(backend_port)],
        {
            **base_env,
            "AUTH_TOKEN_URL": issuer + "/token",
            "AUTH_CLIENT_ID": client["client_id"],
            "AUTH_CLIENT_SECRET": client["client_secret"],
            "SYNC_AUDIENCE": AUDIENCE,
            "SYNC_ENDPOINT": sync_servers["python"][0] + "/sync",
        },
    )
    wait_ready(backend + "/healthz", procs)

    # 5. the browser
    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    status, body, _ = call(browser, backend + "/api/sync-token")
    expect(status == 401, "the backend refuses a browser that has not signed in")
    status, body, _ = call(
        browser,
        backend + "/login",
        data={"username": "ada", "password": "correct horse battery staple"},
    )
    expect(status == 200, "signed in to the backend")
    status, body, headers = call(browser, backend + "/api/sync-token")
    expect(status == 200 and {"accessToken", "syncEndpoint"} <= body.keys(),
           "the backend returned {accessToken, syncEndpoint}")  # fmt: skip
    token, endpoint = body["accessToken"], body["syncEndpoint"]

    endpoints = {"python": endpoint}
    if node:
        endpoints["node"] = sync_servers["node"][0] + "/sync"
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload[:-4]}AAAA.{signature}"
    for name, url in endpoints.items():
        status, body, headers = call(browser, url)
        expect(status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"),
               f"the {name} sync server refuses a request without a token")  # fmt: skip
        status, body, headers = call(browser, url, token=tampered)
        expect(status == 401 and 'error="invalid_token"' in headers.get("WWW-Authenticate", ""),
               f"the {name} sync server refuses a tampered token")  # fmt: skip
        status, body, _ = call(browser, url, token=token)
        expect(status == 200 and body["user"] == "user-42",
               f"the {name} sync server accepts the token")  # fmt: skip

    # 6. what each sync server verified, from its own output
    procs.check_alive()
    for name, (_url, log) in sync_servers.items():
        lines = [
            line for line in log.read_text().splitlines()
            if line.startswith("verified claims: ")
        ]  # fmt: skip
        if not lines:
            raise DemoError(f"the {name} sync server printed no verified claims")
        print(f"[{name} sync server] {lines[-1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", action="store_true", help="also run the Node sync server")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    for name, what in (
        ("authserver", "authserver"),
        ("sync", "the Python sync server"),
        ("node", "the Node sync server"),
        ("backend", "the Flask backend"),
    ):
        parser.add_argument(
            f"--{name}-port",
            type=int,
            default=0,
            metavar="PORT",
            help=f"port of {what} on 127.0.0.1 (default: a free one)",
        )
    args = parser.parse_args()
    ports = {
        "authserver": args.authserver_port,
        "sync": args.sync_port,
        "node": args.node_port,
        "backend": args.backend_port,
    }
    workdir = Path(tempfile.mkdtemp(prefix="authserver-demo-"))
    try:
        run(args.node, workdir, ports)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("demo complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
