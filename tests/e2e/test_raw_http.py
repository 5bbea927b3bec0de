"""The HTTP layer under unusual requests, written byte by byte on a socket to a real
``authserver serve`` (granian): what an HTTP client library would never send (a method in
lower case, a request without ``Host``, pipelined requests, ambiguous framing), answered
with a JSON error or a closed connection, never an answer to a request nobody sent whole.

One server for the module, SQLite: these are properties of the HTTP layer, not of storage.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN_TOKEN = "raw-http-admin-token-0123456789abcdef01234567"
TIMEOUT = 10


class Raw:
    """A running server, a registered client, and raw exchanges with them."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "server.log"
        self.server = ServerProcess(
            {
                "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
                "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
                "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
            },
            log_path=self.log,
        )

    def start(self) -> None:
        self.server.start()
        created = self.admin("POST", "/admin/clients", json={"name": "raw"}).json()
        self.client_id = created["client_id"]
        pair = f"{self.client_id}:{created['client_secret']}".encode()
        self.basic = "Basic " + base64.b64encode(pair).decode()

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return requests.request(
            method, self.server.base_url + path, headers=headers, timeout=TIMEOUT, **kwargs
        )

    def exchange(self, data: bytes) -> bytes:
        """Send *data* on a new connection and read until the server closes it."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=TIMEOUT) as conn:
            conn.sendall(data)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        return answer


def request(method: str, path: str, headers: list[str], body: bytes = b"") -> bytes:
    """One request as bytes: the request line, ``Host`` unless *headers* set it, *headers*."""
    if not any(h.lower().startswith("host:") for h in headers):
        headers = ["Host: 127.0.0.1", *headers]
    return (
        f"{method} {path} HTTP/1.1\r\n".encode()
        + "".join(f"{h}\r\n" for h in headers).encode()
        + b"\r\n"
        + body
    )


def answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in *data*, in order: status, headers (lower-case names), body (every
    answer here has a Content-Length)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if status in (100, 304):
            length = 0
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Raw]:
    target = Raw(tmp_path_factory.mktemp("raw-http"))
    target.start()
    try:
        yield target
    finally:
        target.server.stop()
    log = target.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int, error: str) -> None:
    got, headers, body = answer
    assert got == status, (got, body[:300])
    assert headers["content-type"].startswith("application/json")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert json.loads(body)["error"] == error


# -- methods ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("get", "/healthz", "GET, HEAD, OPTIONS"),
        ("Get", "/admin/clients", "GET, HEAD, OPTIONS, POST"),
        ("head", "/readyz", "GET, HEAD, OPTIONS"),
        ("options", "/admin/keys", "GET, HEAD, OPTIONS"),
        ("post", "/token", "OPTIONS, POST"),
    ],
)
def test_a_method_is_matched_as_sent(raw: Raw, method: str, path: str, allow: str) -> None:
    """RFC 9110 §9.1: a method is case-sensitive. The lean layer answered ``post /token``
    405, but Flask (Werkzeug upper-cases the method) served ``get /healthz`` as GET."""
    headers = ["Connection: close", f"Authorization: Bearer {ADMIN_TOKEN}"]
    [answer] = answers(raw.exchange(request(method, path, headers)))
    error = "invalid_request" if path == "/token" else "method_not_allowed"
    assert_json_error(answer, 405, error)
    assert answer[1]["allow"] == allow


def test_a_method_in_lower_case_changes_nothing(raw: Raw) -> None:
    """``post /admin/clients`` created a client and ``delete /admin/clients/ID`` disabled
    one: a proxy rule written for POST or DELETE does not see them."""
    before = raw.admin("GET", "/admin/clients").json()["clients"]
    body = b'{"name": "lower-case"}'
    create = request(
        "post",
        "/admin/clients",
        [
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ],
        body,
    )
    delete = request(
        "delete",
        f"/admin/clients/{raw.client_id}",
        [f"Authorization: Bearer {ADMIN_TOKEN}", "Connection: close"],
    )
    created, deleted = answers(raw.exchange(create + delete))
    assert_json_error(created, 405, "method_not_allowed")
    assert_json_error(deleted, 405, "method_not_allowed")
    assert raw.admin("GET", "/admin/clients").json()["clients"] == before


# -- Host -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host_lines",
    [
        [],  # HTTP/1.1 without Host
        ["Host:"],
        ["Host: 127.0.0.1", "Host: auth.example.com"],  # granian joined them: "a,b"
        ["Host: user@127.0.0.1"],
        ["Host: b\u00fccher.example"],  # granian hands a non-ASCII value over as ""
    ],
    ids=["missing", "empty", "two", "userinfo", "not-ascii"],
)
@pytest.mark.parametrize("path", ["/token", "/healthz"])
def test_a_request_without_one_valid_host_is_400(
    raw: Raw, host_lines: list[str], path: str
) -> None:
    """RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, with several, or with an
    invalid one. granian served them: the transport rule took a missing Host for the
    server's own loopback address and issued a token; Werkzeug took ``a,b`` for a name.
    The body is not read: the connection is closed, and a request pipelined behind (here
    a token request) is not answered."""
    body = b"grant_type=client_credentials"
    headers = [
        *host_lines,
        f"Authorization: {raw.basic}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
    ]
    method = "POST" if path == "/token" else "GET"
    line = f"{method} {path} HTTP/1.1\r\n".encode()
    head = line + "".join(f"{h}\r\n" for h in headers).encode("utf-8") + b"\r\n"
    pipelined = request("POST", "/token", headers[len(host_lines) :], body)
    replies = answers(raw.exchange(head + body + pipelined))
    assert len(replies) == 1, replies
    assert_json_error(replies[0], 400, "invalid_request")
    assert replies[0][1]["connection"] == "close"
    assert "Host" in json.loads(replies[0][2])["error_description"]


def test_http_1_0_needs_no_host(raw: Raw) -> None:
    [(status, _, body)] = answers(raw.exchange(b"GET /healthz HTTP/1.0\r\n\r\n"))
    assert status == 200, body
