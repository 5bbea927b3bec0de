"""A stranger's stalled or trickling request bodies do not deny service (web/bodies.py),
through a real ``authserver serve``: loopback only, every wait bounded."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AUD = "https://sync.example"
THREADS = 4
BODY_TIMEOUT = 2
#: More slow connections than the worker has threads: half send nothing more after part of
#: their body, half trickle a byte now and then.
STALLED = THREADS
TRICKLING = THREADS
#: A stalled body is cut within BODY_TIMEOUT + 0.5 s of its read's start, a trickling one
#: within BODY_TIMEOUT + 1 s (two looks at its byte count). The slow connections beyond the
#: threads wait in the server's queue; the watchdog closes those of the same address in
#: the same sweeps, but at worst one is read only once the first ones are cut, and the
#: proper requests queue behind them: two rounds, plus slack for a loaded machine (CI runs
#: three test workers on two cores).
BOUND = 2 * (BODY_TIMEOUT + 1) + 3


@pytest.fixture
def server(env_for: Callable[..., dict[str, str]], db_url: str) -> Iterator[ServerProcess]:
    env = env_for(db_url)
    env.pop("AUTHSERVER_ISSUER", None)
    env["AUTHSERVER_THREADS"] = str(THREADS)
    env["AUTHSERVER_BODY_TIMEOUT"] = str(BODY_TIMEOUT)
    with ServerProcess(env, workers=1) as srv:
        yield srv


#: The stranger's address. The watchdog closes the stalled connections of the addresses
#: whose reads are overdue, and may take along a request from the same address that has
#: waited as long (docs/security.md): the proper requests come from 127.0.0.1, another
#: address, as another client's would (Linux routes all of 127/8 to the loopback).
STRANGER = "127.0.0.2"


def _slow(port: int) -> socket.socket:
    """A connection that sends a /token request's head and 29 of its 100 body bytes."""
    conn = socket.create_connection(
        ("127.0.0.1", port), timeout=BOUND, source_address=(STRANGER, 0)
    )
    conn.sendall(
        b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        b"grant_type=client_credentials"
    )
    return conn


def _trickle(conns: list[socket.socket], stop: threading.Event) -> None:
    """One more body byte on each of *conns* every 0.4 s (70 would complete the body)."""
    while not stop.wait(0.4):
        for conn in conns:
            with contextlib.suppress(OSError):  # closed by the server: that is the point
                conn.send(b"x")


def _answer(conn: socket.socket, deadline: float) -> bytes | None:
    """What the server sent on *conn* by *deadline*: a response head, or what came before
    it closed the connection; ``None`` if it did neither."""
    data = b""
    while b"\r\n\r\n" not in data:
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            return None
        except ConnectionError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


@pytest.mark.waits
def test_slow_bodies_do_not_starve_proper_requests(server: ServerProcess) -> None:
    """More connections than threads send a head and part of a body, then nothing or a
    byte now and then: a proper /token request and /healthz are still served within BOUND,
    and every slow connection is answered 408 (or closed) within BOUND too."""
    created = cli_json(server.env, "clients", "create", "--name", "x", "--audience", AUD)
    credentials = (created["client_id"], created["client_secret"])
    started = time.monotonic()
    slow = [_slow(server.port) for _ in range(STALLED + TRICKLING)]
    stop = threading.Event()
    trickler = threading.Thread(target=_trickle, args=(slow[STALLED:], stop), daemon=True)
    trickler.start()
    try:
        time.sleep(0.3)  # they reach the worker's threads first
        began = time.monotonic()
        health = requests.get(server.base_url + "/healthz", timeout=BOUND)
        token = requests.post(
            server.base_url + "/token",
            data={"grant_type": "client_credentials", "sub": "u1"},
            auth=credentials,
            timeout=BOUND,
        )
        served_in = time.monotonic() - began
        assert health.status_code == 200, health.text
        assert token.status_code == 200, token.text
        assert token.json()["access_token"]
        assert served_in < BOUND
        answers = [_answer(conn, started + BOUND) for conn in slow]
        # Each answered 408, or closed without an answer: none left waiting.
        for answer in answers:
            assert answer is not None, "a slow connection was neither answered nor closed"
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
        assert any(a is not None and a.startswith(b"HTTP/1.1 408 ") for a in answers)
    finally:
        stop.set()
        trickler.join(timeout=5)
        for conn in slow:
            conn.close()
    # The freed threads keep serving.
    again = requests.post(
        server.base_url + "/token",
        data={"grant_type": "client_credentials", "sub": "u2"},
        auth=credentials,
        timeout=BOUND,
    )
    assert again.status_code == 200, again.text
