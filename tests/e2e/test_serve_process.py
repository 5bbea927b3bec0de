"""The real thing: ``authserver serve`` (granian) over real HTTP, a client registered with
the real CLI, the token verified with PyJWT's JWKS client, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from authserver.cli.serve import GRACEFUL_TIMEOUT
from tests.conftest import db_independent
from tests.conftest import empty_database
from tests.factories import issue_token
from tests.helpers import AUTHSERVER
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AUD = "https://sync.example"
TIMEOUT = 10
ADMIN_TOKEN = "serve-process-admin-token-5b4a39281706f5e4d3c2"


@pytest.fixture
def env(env_for: Callable[..., dict[str, str]], db_url: str) -> dict[str, str]:
    env = env_for(db_url, AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN)
    # Let ServerProcess set AUTHSERVER_ISSUER to its own base URL.
    env.pop("AUTHSERVER_ISSUER", None)
    return env


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[ServerProcess]:
    with ServerProcess(env) as srv:
        yield srv


@pytest.fixture
def credentials(env: dict[str, str], server: ServerProcess) -> tuple[str, str]:
    return _create_client(env)


def _create_client(env: dict[str, str]) -> tuple[str, str]:
    created = cli_json_here(
        env, "clients", "create", "--name", "x", "--audience", AUD, "--allowed-claim", "libraryId"
    )
    assert created["client_id"]
    assert created["client_secret"]
    return created["client_id"], created["client_secret"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def serving(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, tuple[str, str]]]:
    """One server per database, and its one client, for the tests that only send it
    requests and leave it serving as they found it: a server costs about 1.4 s of CPU to
    start and stop, and these tests needed twelve. A test that stops its server, or needs
    a record of its own requests alone, takes ``server``."""
    tmp = tmp_path_factory.mktemp("serving")
    with ExitStack() as stack:
        url = stack.enter_context(empty_database(request.param, tmp))
        env = {
            "AUTHSERVER_DATABASE_URL": url,
            "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
            "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        server = stack.enter_context(ServerProcess(env))
        yield server, _create_client(env)


def verify(server: ServerProcess, token: str) -> dict[str, Any]:
    """A sync server: PyJWT's JWKS client fetches the served keys and picks one by kid."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header.get("kid")
    jwks_client = jwt.PyJWKClient(server.base_url + "/.well-known/jwks.json")
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    assert signing_key.key_id == header["kid"]
    return jwt.decode(
        token,
        signing_key,
        algorithms=["RS256"],
        audience=AUD,
        issuer=server.base_url,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]},
    )


def test_token_over_http_verifies_with_served_jwks(
    serving: tuple[ServerProcess, tuple[str, str]],
) -> None:
    server, credentials = serving
    token = issue_token(
        server,
        credentials,
        sub="user-1",
        email="u1@example.com",
        claims=json.dumps({"libraryId": "lib-1"}),
    )
    claims = verify(server, token)
    assert claims["iss"] == server.base_url
    assert claims["aud"] == AUD
    assert claims["sub"] == "user-1"
    assert claims["email"] == "u1@example.com"
    assert claims["libraryId"] == "lib-1"
    assert claims["client_id"] == credentials[0]

    metadata = requests.get(
        server.base_url + "/.well-known/oauth-authorization-server", timeout=TIMEOUT
    ).json()
    assert metadata["issuer"] == server.base_url


#: (id, request keyword arguments, expected status). Each is sent with valid Basic auth.
HOSTILE: list[tuple[str, dict[str, Any], int]] = [
    (
        "malformed-json",
        {
            "data": b'{"grant_type": "client_credentials",',
            "headers": {"Content-Type": "application/json"},
        },
        400,
    ),
    ("json-array", {"data": b"[]", "headers": {"Content-Type": "application/json"}}, 400),
    (
        "huge-body",
        {
            "data": b"grant_type=client_credentials&sub=" + b"a" * 300_000,
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        413,
    ),
    (
        "non-utf8-form",
        {
            "data": b"grant_type=client_credentials&sub=\xff\xfe",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        400,
    ),
    (
        "non-utf8-json",
        {
            "data": b'{"grant_type": "client_credentials", "sub": "\xff"}',
            "headers": {"Content-Type": "application/json"},
        },
        400,
    ),
    (
        "text-plain",
        {"data": b"grant_type=client_credentials", "headers": {"Content-Type": "text/plain"}},
        400,
    ),
]


def test_hostile_requests_are_refused_and_the_server_keeps_serving(
    serving: tuple[ServerProcess, tuple[str, str]],
) -> None:
    server, credentials = serving
    failures = []
    for name, kwargs, status in HOSTILE:
        response = requests.post(
            server.base_url + "/token", auth=credentials, timeout=TIMEOUT, **kwargs
        )
        ok = (
            response.status_code == status
            and response.headers.get("Content-Type", "").startswith("application/json")
            and isinstance(response.json().get("error"), str)
        )
        if not ok:
            failures.append((name, response.status_code, response.text[:200]))
    # Bad credentials in a non-UTF-8 Basic header, sent as raw bytes.
    response = requests.post(
        server.base_url + "/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": b"Basic \xff\xfe\xfd"},
        timeout=TIMEOUT,
    )
    if response.status_code != 401 or response.json().get("error") != "invalid_client":
        failures.append(("non-utf8-basic", response.status_code, response.text[:200]))
    assert not failures, failures

    claims = verify(server, issue_token(server, credentials, sub="after"))
    assert claims["sub"] == "after"
    assert requests.get(server.base_url + "/readyz", timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("path", ["/token", "/admin/clients"])
def test_chunked_body_over_the_limit_is_413(
    serving: tuple[ServerProcess, tuple[str, str]], path: str
) -> None:
    """A body without Content-Length (Transfer-Encoding: chunked) is held to the same
    AUTHSERVER_MAX_BODY_BYTES as one with it: refused whole, never truncated and parsed
    (the admin API parsed the first 64 KiB + 1 as the body: 400 "not a JSON object")."""
    server, credentials = serving

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "' if path.startswith("/admin") else b"grant_type=client_credentials&p="
        for _ in range(64):
            yield b"a" * 16384  # 1 MiB in all, far over the 64 KiB default
        if path.startswith("/admin"):
            yield b'"}'

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    admin = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = requests.post(
        server.base_url + path,
        data=chunks(),
        auth=credentials if path == "/token" else None,
        timeout=TIMEOUT,
        headers=admin if path.startswith("/admin") else form,
    )
    assert response.status_code == 413, response.text
    assert response.headers.get("Content-Type", "").startswith("application/json")
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "the request body is too large",
    }
    # ...and the server still serves.
    assert verify(server, issue_token(server, credentials))["client_id"] == credentials[0]


@pytest.mark.parametrize("path", ["/token", "/admin/clients"])
def test_a_body_over_the_limit_closes_the_connection_and_says_so(
    serving: tuple[ServerProcess, tuple[str, str]], path: str
) -> None:
    """A Content-Length over AUTHSERVER_MAX_BODY_BYTES is answered 413 without the body
    being read, and granian then closes the connection; the answer did not say so, so a
    client kept it and its next request failed (requests: ConnectionError, every time)."""
    server, credentials = serving
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with requests.Session() as session:
        if path == "/token":
            response = session.post(
                server.base_url + path,
                data={"grant_type": "client_credentials", "p": "a" * 100_000},
                auth=credentials,
                timeout=TIMEOUT,
            )
        else:
            response = session.post(
                server.base_url + path, json={"name": "a" * 100_000}, headers=admin, timeout=TIMEOUT
            )
        assert response.status_code == 413, response.text
        assert response.headers.get("Connection", "").lower() == "close"
        # The next request of the same client goes out on a new connection and is served.
        after = session.get(server.base_url + "/admin/clients", headers=admin, timeout=TIMEOUT)
        assert after.status_code == 200, after.text
        assert [c["client_id"] for c in after.json()["clients"]] == [credentials[0]]


def _chunked_exchange(
    server: ServerProcess, head: str, chunks: list[bytes], end: bytes, *, half_close: bool
) -> bytes:
    """Send a chunked request: *chunks* framed, then *end* raw (the last chunk, a cut or a
    malformed chunk), half-closing after it if asked; return the whole answer."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + end
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as conn:
        conn.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        while data := conn.recv(65536):
            answer += data
    return answer


def test_a_chunked_form_is_refused_and_chunked_json_is_read_whole(
    server: ServerProcess, credentials: tuple[str, str], env: dict[str, str]
) -> None:
    """granian ends a chunked body where its framing ends, complete or not, and says
    nothing: a form cut before its last parameters parsed as a shorter request (a token
    without the sub, lifetime and scope asked for). A chunked form gets 411; JSON, which
    does not parse when cut, is served when whole and refused when cut."""
    basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    head = (
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Basic {basic}\r\nContent-Type: %s\r\n"
    )
    form_head = head % "application/x-www-form-urlencoded"
    form = [b"grant_type=client_credentials"]  # "&sub=user-1&expires_in=60" never arrives
    for end in (b"0\r\n\r\n", b"zz\r\n&sub=user-1\r\n0\r\n\r\n"):  # whole; malformed
        answer = _chunked_exchange(server, form_head, form, end, half_close=False)
        assert answer.startswith(b"HTTP/1.1 411 "), (end, answer[:300])
        assert b'"error":"invalid_request"' in answer
    # Cut: the client half-closes before the last chunk (hyper may then drop the answer).
    cut_form = _chunked_exchange(server, form_head, form, b"", half_close=True)
    assert cut_form == b"" or cut_form.startswith(b"HTTP/1.1 411 "), cut_form[:300]

    json_head = head % "application/json"
    document = json.dumps({"grant_type": "client_credentials", "sub": "user-1"}).encode()
    chunks = [document[:20], document[20:]]
    whole = _chunked_exchange(server, json_head, chunks, b"0\r\n\r\n", half_close=False)
    assert whole.startswith(b"HTTP/1.1 200 "), whole[:300]
    token = json.loads(whole.split(b"\r\n\r\n", 1)[1])["access_token"]
    assert verify(server, token)["sub"] == "user-1"
    cut_json = _chunked_exchange(server, json_head, chunks[:1], b"", half_close=True)
    assert b"access_token" not in cut_json

    # The one whole JSON request got a token; none of the others did (the server's own
    # record, whatever reached the client: a graceful stop writes the audit batch).
    server.stop()
    issued = cli_json_here(env, "audit", "--action", "token.issued", "--json")["events"]
    assert [e["sub"] for e in issued] == ["user-1"], issued


def test_graceful_stop_writes_the_pending_audit_batch(env: dict[str, str]) -> None:
    """token.issued records are batched per worker (<= 0.25 s); a SIGTERM right after the
    last token must still write them (workers are forked processes whose exit skips
    atexit: the batcher's multiprocessing finalizer does it)."""
    created = cli_json_here(env, "clients", "create", "--name", "stopping", "--audience", AUD)
    credentials = (created["client_id"], created["client_secret"])
    server = ServerProcess(env, workers=2).start()
    try:
        subs = [f"last-user-{i}" for i in range(4)]
        for sub in subs:
            issue_token(server, credentials, sub=sub)
    finally:
        server.stop()  # SIGTERM at once: within the 0.25 s batch interval
    audit = cli_json_here(env, "audit", "--action", "token.issued", "--json")
    assert sorted(e["sub"] for e in audit["events"]) == sorted(subs)


@contextmanager
def audit_table_locked(db_url: str) -> Iterator[None]:
    """Another session holds the audit table (a SQLite file: the whole database) so that no
    record can be written: a backup or a long transaction of an operator's."""
    if db_url.startswith("sqlite"):
        hold = "import sqlite3, sys, time\n" + (
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(60)"
        )
        path = db_url.removeprefix("sqlite:///")
        holder = subprocess.Popen(
            [sys.executable, "-c", hold, path], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            yield
        finally:
            holder.kill()
            holder.wait(timeout=10)
            if holder.stdout is not None:
                holder.stdout.close()
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(db_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        conn.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def test_a_stop_while_the_database_cannot_be_written_says_how_many_records_are_lost(
    env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """A worker stopping while its last token.issued records cannot be written (the audit
    table locked by another session) gives up on them in time and says, in one line, how
    many are lost: before, on SQLite it waited out the 15 s busy timeout, was killed after
    serve's 10 s grace, and said nothing."""
    created = cli_json_here(env, "clients", "create", "--name", "stopping", "--audience", AUD)
    credentials = (created["client_id"], created["client_secret"])
    log_path = tmp_path / "serve.log"
    server = ServerProcess(env, workers=1, log_path=log_path).start()
    try:
        issue_token(server, credentials, sub="written-1")
        issue_token(server, credentials, sub="written-2")
        time.sleep(1)  # four batch intervals: both on record
        with audit_table_locked(db_url):
            for n in range(4):
                issue_token(server, credentials, sub=f"lost-{n}")
            started = time.monotonic()
            server.stop()
            stopped_after = time.monotonic() - started
    finally:
        server.stop()
    assert stopped_after < GRACEFUL_TIMEOUT - 1, stopped_after
    log = log_path.read_text()
    lost = [line for line in log.splitlines() if "records lost at exit" in line]
    assert len(lost) == 1, log
    assert "audit: 4 token.issued records lost at exit: " in lost[0]
    assert "Traceback" not in log
    # Nothing invented either: the records written are the tokens issued before.
    audit = cli_json_here(env, "audit", "--action", "token.issued", "--json")
    assert sorted(e["sub"] for e in audit["events"]) == ["written-1", "written-2"]


#: Every setting that carries a secret, named here and not taken from settings.py: the
#: worker scrubs the list derived from the settings' ``secret`` flags, so checking against
#: that list would pass whatever it held.
SECRET_SETTINGS = {
    "AUTHSERVER_KEY_PASSPHRASE": "env-test-passphrase-5be1c0",
    "AUTHSERVER_ADMIN_TOKEN": "env-test-admin-token-0f1e2d3c4b5a69788796a5b4",
    "AUTHSERVER_METRICS_TOKEN": "env-test-metrics-token-1a2b3c4d5e6f708192a3b4",
    "AUTHSERVER_RATE_LIMIT_STORAGE": "redis://:env-test-redis-pw-77c1@127.0.0.1:1/0",
}


def test_worker_drops_secret_settings_from_its_environment(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """granian copies the process environment into every request's WSGI environ: a worker
    keeps no secret-bearing setting there once it has read its settings, by name or by
    value, and the settings it read still hold them."""
    serve = importlib.import_module("authserver.cli.serve")  # the module, not the command
    for name, value in {**env, **SECRET_SETTINGS}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTHSERVER_SCHEDULER", "false")
    secrets_ = {**SECRET_SETTINGS, "AUTHSERVER_DATABASE_URL": env["AUTHSERVER_DATABASE_URL"]}
    app = serve.worker_app()
    settings = app.extensions["authserver.services"].settings
    assert settings.key_passphrase == SECRET_SETTINGS["AUTHSERVER_KEY_PASSPHRASE"]
    assert settings.admin_token == SECRET_SETTINGS["AUTHSERVER_ADMIN_TOKEN"]
    assert settings.metrics_token == SECRET_SETTINGS["AUTHSERVER_METRICS_TOKEN"]
    assert settings.rate_limit_storage == SECRET_SETTINGS["AUTHSERVER_RATE_LIMIT_STORAGE"]
    assert settings.database_url == env["AUTHSERVER_DATABASE_URL"]
    for name, value in secrets_.items():
        assert name not in os.environ, name
        assert not [k for k, v in os.environ.items() if value in v], name


def test_a_stop_while_workers_start_ends_them_at_once(env: dict[str, str]) -> None:
    """SIGTERM to the main process (what ``docker stop`` and systemd send) while a worker is
    still building its application: the worker ends at once, not after granian's kill
    timeout (``GRACEFUL_TIMEOUT``, 10 s), and the server exits cleanly. Before, the worker
    carried the main process's handler until it had started, which lost the signal."""
    proc = subprocess.Popen(
        [AUTHSERVER, "serve", "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "2"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        log = []
        for line in proc.stderr:  # ends when serve exits: it prints the spawns first
            log.append(line)
            if "Spawning worker-2" in line:
                break
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # worker-2 is still importing and building
        _, rest = proc.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.append(rest)
    assert "Spawning worker-2" in "".join(log), "".join(log)
    # Not asserted: granian's "Killing worker-N after it refused to gracefully stop". It
    # also logs that for a worker already exiting: a dying process closes its files (which
    # ends granian's join) a moment before it can be reaped, and granian looks again only
    # 1 ms later, which a busy machine can miss. The wait is what tells a lost signal.
    assert took < 5, f"stopped after {took:.1f} s:\n{rest}"
    assert proc.returncode == 0, rest


@db_independent
def test_a_web_application_that_cannot_be_imported_stops_serve_in_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    """``serve`` imports the web application before forking its workers: a broken install
    (here a ``flask`` that fails to import, first on the path) stops it with one line and
    status 1, and its private metrics directory is removed, not a traceback and a leftover."""
    broken = tmp_path / "broken" / "flask"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("this flask is broken")\n')
    metrics_parent = tmp_path / "metrics"
    metrics_parent.mkdir()
    result = subprocess.run(
        [AUTHSERVER, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env={
            **os.environ,
            **env,
            "PYTHONPATH": str(broken.parent),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_parent),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "authserver: error: cannot start: ImportError: this flask is broken"
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert list(metrics_parent.iterdir()) == []
