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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from authserver.audit.service import settle_batches
from tests.helpers import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN_TOKEN = "raw-http-admin-token-0123456789abcdef01234567"
TIMEOUT = 10


class Raw:
    """A running server, a registered client, and raw exchanges with them."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.log = tmp / "server.log"
        self.server = ServerProcess(
            {
                "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
                "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
                "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
                **env,
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


def _serve(tmp: Path, **env: str) -> Iterator[Raw]:
    target = Raw(tmp, **env)
    target.start()
    try:
        yield target
    finally:
        target.server.stop()
    log = target.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Raw]:
    yield from _serve(tmp_path_factory.mktemp("raw-http"))


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Raw]:
    """The same behind one trusted proxy (``AUTHSERVER_PROXY_HOPS=1``)."""
    yield from _serve(tmp_path_factory.mktemp("raw-http-proxied"), AUTHSERVER_PROXY_HOPS="1")


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


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/healthz", "GET, HEAD, OPTIONS"),
        ("/admin/clients", "GET, HEAD, OPTIONS, POST"),
        ("/admin/clients/x", "DELETE, GET, HEAD, OPTIONS, PATCH"),
        ("/token", "OPTIONS, POST"),
        ("/.well-known/jwks.json", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_is_answered_alike_on_both_layers(raw: Raw, path: str, allow: str) -> None:
    """OPTIONS: 200, the methods in ``Allow`` in order, an empty body and no
    ``Content-Type``, whichever layer serves the path. Flask's own answer said
    ``text/html`` of an empty body and listed the methods in a set's order; a method a
    Flask route does not serve lists them in that order in its 405 too."""
    headers = ["Connection: close", f"Authorization: Bearer {ADMIN_TOKEN}"]
    [(status, got, body)] = answers(raw.exchange(request("OPTIONS", path, headers)))
    assert (status, body) == (200, b"")
    assert "content-type" not in got, got
    assert got["allow"] == allow
    assert got["content-length"] == "0"
    assert got["x-content-type-options"] == "nosniff"
    [refused] = answers(raw.exchange(request("PUT", path, headers)))
    assert refused[0] == 405
    assert refused[1]["allow"] == allow


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


@pytest.mark.parametrize("path", ["/admin//clients", "/admin/clients//x", "/admin//keys/rotate"])
def test_a_path_with_doubled_slashes_is_404_json(raw: Raw, path: str) -> None:
    """Werkzeug merged the slashes and answered 308 with an HTML page (Flask hands its
    routing redirects back without any error handler), a redirect to another URL than
    the one sent; the lean layer matches a path as sent."""
    headers = ["Connection: close", f"Authorization: Bearer {ADMIN_TOKEN}"]
    method = "POST" if path.endswith("rotate") else "GET"
    [answer] = answers(raw.exchange(request(method, path, headers)))
    assert_json_error(answer, 404, "not_found")
    assert "location" not in answer[1]


# -- Host -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host_lines",
    [
        [],  # HTTP/1.1 without Host
        ["Host:"],
        ["Host: 127.0.0.1", "Host: auth.example.com"],  # granian joined them: "a,b"
        ["Host: user@127.0.0.1"],
        ["Host: b\u00fccher.example"],  # granian hands a non-ASCII value over as ""
        ["Host: 127.0.0.1:99999"],  # no port: refused as a forwarded port of 99999 is
        ["Host: [::1]:65536"],
    ],
    ids=["missing", "empty", "two", "userinfo", "not-ascii", "port-99999", "port-65536"],
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


@pytest.mark.parametrize(
    "forwarded",
    [
        ['X-Forwarded-Host: "auth.example.com,evil.example"'],  # one quoted list item
        ['X-Forwarded-Host: "auth.example.com evil.example"'],
        ["X-Forwarded-Host: user@auth.example.com"],
        ["X-Forwarded-Host: auth.example.com/path"],
        # granian hands a non-ASCII value over as "": ProxyFix then left the Host of the
        # proxy's own connection (loopback here) in charge, and plain http was served.
        ["X-Forwarded-Host: b\u00fccher.example", "X-Forwarded-Proto: http"],
        ["X-Forwarded-Host: auth.example.com", "X-Forwarded-Port: https"],
        ["X-Forwarded-Host: auth.example.com", "X-Forwarded-Port: 99999"],
        ["X-Forwarded-Host: auth.example.com", "X-Forwarded-Proto: ftp"],
        ["X-Forwarded-Host: auth.example.com", 'X-Forwarded-Proto: "https x"'],
        ["X-Forwarded-Host: auth.example.com", "X-Forwarded-Prefix: /a b"],
    ],
    ids=[
        "quoted-comma",
        "space",
        "userinfo",
        "path",
        "not-ascii",
        "port-name",
        "port-too-big",
        "proto-ftp",
        "proto-two-words",
        "prefix-space",
    ],
)
def test_what_the_trusted_proxy_forwards_is_judged_like_host(
    proxied: Raw, forwarded: list[str]
) -> None:
    """Behind AUTHSERVER_PROXY_HOPS the application uses the host, port, scheme and
    prefix ProxyFix takes from X-Forwarded-*, but only the Host line was checked: each of
    these was served (a token issued, or insecure_transport judged on a host nobody
    named). They are refused as a bad Host is, before the body is read."""
    body = b"grant_type=client_credentials"
    headers = [
        "X-Forwarded-Proto: https",
        *forwarded,
        "Connection: close",
        f"Authorization: {proxied.basic}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
    ]
    head = b"POST /token HTTP/1.1\r\n" + "".join(
        f"{h}\r\n" for h in ["Host: 127.0.0.1", *headers]
    ).encode("utf-8")
    [answer] = answers(proxied.exchange(head + b"\r\n" + body))
    assert_json_error(answer, 400, "invalid_request")
    assert answer[1]["connection"] == "close"
    assert "X-Forwarded" in json.loads(answer[2])["error_description"]


def test_what_a_proxy_usually_forwards_is_served(proxied: Raw) -> None:
    body = b"grant_type=client_credentials"
    headers = [
        "X-Forwarded-For: 203.0.113.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: auth.example.com",
        "X-Forwarded-Port: 443",
        "Connection: close",
        f"Authorization: {proxied.basic}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
    ]
    [(status, _, answer)] = answers(proxied.exchange(request("POST", "/token", headers, body)))
    assert status == 200, answer
    assert json.loads(answer)["token_type"] == "Bearer"


# -- framing and pipelining -------------------------------------------------------------------


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def _token_form(raw: Raw, sub: str) -> bytes:
    """A whole, valid token request for *sub* (Basic, a form body)."""
    body = f"grant_type=client_credentials&sub={sub}".encode()
    headers = [
        f"Authorization: {raw.basic}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
    ]
    return request("POST", "/token", headers, body)


def _issued_subs(raw: Raw) -> list[str]:
    """The sub of every token the server has recorded as issued (once the workers have
    written their batches of token.issued records)."""
    settle_batches()
    events = raw.admin("GET", "/admin/audit", params={"action": "token.issued"}).json()
    return [e["sub"] for e in events["events"]]


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        # Which length counts is ambiguous: granian refuses (400, no JSON: it answers
        # before the application sees the request).
        (["Content-Length: 20", "Content-Length: 21"], b"x" * 21),
        (["Transfer-Encoding: gzip"], b"x" * 21),
        (["Transfer-Encoding: chunked, identity"], _chunked(b"x" * 21)),
        (["Transfer-Encoding: xchunked"], _chunked(b"x" * 21)),
        (["Content-Length: -21"], b"x" * 21),
        (["Content-Length: +21"], b"x" * 21),
        (["X-Folded: a", " b", "Content-Length: 21"], b"x" * 21),
    ],
    ids=["two-lengths", "gzip", "chunked-identity", "xchunked", "negative", "plus", "obs-fold"],
)
def test_ambiguous_framing_is_refused_and_nothing_behind_it_is_read(
    raw: Raw, framing: list[str], body: bytes
) -> None:
    """A request whose body length two parsers could read differently is refused and its
    connection closed: whatever follows on it (here a whole token request, for a sub
    nobody else asks for) is never read as a request. granian's own 400 has no JSON body
    (docs/reference.md); what matters is that it closes."""
    sub = f"smuggled-{uuid.uuid4().hex[:8]}"
    smuggled = _token_form(raw, sub)
    head = request("POST", "/token", [f"Authorization: {raw.basic}", *framing])
    replies = answers(raw.exchange(head + body + smuggled))
    assert [status for status, _, _ in replies] == [400], replies
    assert sub not in _issued_subs(raw)


def test_content_length_and_chunked_together_read_the_chunks_and_close(raw: Raw) -> None:
    """Both headers (RFC 9112 §6.1: Transfer-Encoding wins, and the connection must close
    after the answer): the body is the chunked one, and the bytes the Content-Length
    would have left over are never read as a request."""
    sub = f"chunked-{uuid.uuid4().hex[:8]}"
    document = json.dumps({"grant_type": "client_credentials", "sub": sub}).encode()
    head = request(
        "POST",
        "/token",
        [
            f"Authorization: {raw.basic}",
            "Content-Type: application/json",
            "Content-Length: 4",
            "Transfer-Encoding: chunked",
        ],
    )
    after = request("GET", "/healthz", [])
    replies = answers(raw.exchange(head + _chunked(document) + after))
    assert [status for status, _, _ in replies] == [200], replies
    assert replies[0][1]["connection"] == "close"
    assert _issued_subs(raw).count(sub) == 1


def test_a_body_over_the_limit_is_never_read_as_requests(raw: Raw) -> None:
    """A Content-Length over AUTHSERVER_MAX_BODY_BYTES is answered 413 without reading the
    body; the body (here, whole token requests) is not taken for the next requests."""
    sub = f"inside-{uuid.uuid4().hex[:8]}"
    one = _token_form(raw, sub)
    body = one * (70_000 // len(one) + 1)
    head = request(
        "POST",
        "/token",
        [
            f"Authorization: {raw.basic}",
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
        ],
    )
    replies = answers(raw.exchange(head + body))
    assert [status for status, _, _ in replies] == [413], [r[:2] for r in replies]
    assert sub not in _issued_subs(raw)


def test_pipelined_requests_get_their_own_answers_in_order(raw: Raw) -> None:
    """Requests sent back to back on one connection, refusals among them: each gets its
    own answer, in order, and a refusal leaves the connection serving the next one."""
    token_headers = [f"Authorization: {raw.basic}"]
    form = "Content-Type: application/x-www-form-urlencoded"

    def token_json_chunked(sub: str) -> bytes:
        body = json.dumps({"grant_type": "client_credentials", "sub": sub}).encode()
        headers = [*token_headers, "Content-Type: application/json", "Transfer-Encoding: chunked"]
        return request("POST", "/token", headers, _chunked(body))

    plain = b"grant_type=client_credentials"
    sequence = [
        (_token_form(raw, "pipe-1"), 200, "pipe-1"),
        (
            request(
                "POST",
                "/token",
                [*token_headers, "Content-Type: text/plain", f"Content-Length: {len(plain)}"],
                plain,
            ),
            400,
            None,
        ),
        (token_json_chunked("pipe-2"), 200, "pipe-2"),
        (
            request(
                "POST",
                "/token",
                [*token_headers, form, "Transfer-Encoding: chunked"],
                _chunked(plain),
            ),
            411,
            None,
        ),
        (request("PUT", "/token", [f"Content-Length: {len(plain)}"], plain), 405, None),
        (request("GET", "/nope", [f"Content-Length: {len(plain)}"], plain), 404, None),
        (
            request(
                "GET", "/admin/clients/no-such-client", [f"Authorization: Bearer {ADMIN_TOKEN}"]
            ),
            404,
            None,
        ),
        (_token_form(raw, "pipe-3"), 200, "pipe-3"),
        (request("GET", "/healthz", ["X-Request-Id: pipe-last", "Connection: close"]), 200, None),
    ]
    replies = answers(raw.exchange(b"".join(data for data, _, _ in sequence)))
    assert [status for status, _, _ in replies] == [status for _, status, _ in sequence]
    for (_, _, sub), (_, headers, body) in zip(sequence, replies, strict=True):
        if sub is not None:
            token = json.loads(body)["access_token"]
            assert jwt.decode(token, options={"verify_signature": False})["sub"] == sub
        else:
            assert headers["x-content-type-options"] == "nosniff"
    assert replies[-1][1]["x-request-id"] == "pipe-last"


def test_http2_prior_knowledge_is_not_served(raw: Raw) -> None:
    """serve speaks HTTP/1.1 only: the HTTP/2 preface (h2c with prior knowledge) and a
    SETTINGS frame get the connection closed, not a second protocol whose limits nobody
    tested."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    answer = raw.exchange(preface)
    assert not answer.startswith(b"\x00"), answer[:100]  # no HTTP/2 frame came back
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:100]


def test_a_head_of_more_than_100_header_lines_is_431(raw: Raw) -> None:
    """granian's limit, as docs/reference.md states it: 100 lines are read, 101 refused."""
    lines = [f"X-Header-{i}: v" for i in range(98)]
    [(status, _, _)] = answers(
        raw.exchange(request("GET", "/healthz", ["Connection: close", *lines]))
    )
    assert status == 200
    lines.append("X-One-More: v")
    [(status, _, body)] = answers(
        raw.exchange(request("GET", "/healthz", ["Connection: close", *lines]))
    )
    assert status == 431, body
