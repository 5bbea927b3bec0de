"""The access log of a real ``authserver serve``: one line per request with method, path,
status, duration and request id; ``X-Request-Id`` taken or made and echoed; JSON lines
with ``AUTHSERVER_LOG_FORMAT=json``; a quiet start."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here

pytestmark = pytest.mark.e2e


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
        "AUTHSERVER_WORKERS": "1",
        "AUTHSERVER_SCHEDULER": "false",
        **extra,
    }


def test_one_text_line_per_request_with_the_request_id(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    with ServerProcess(_env(tmp_path), log_path=log_path) as server:
        given = requests.get(
            server.base_url + "/.well-known/jwks.json",
            headers={"X-Request-Id": "abc-123"},
            timeout=10,
        )
        made = requests.post(server.base_url + "/token", data={"grant_type": "x"}, timeout=10)
        hostile = requests.get(
            server.base_url + "/healthz",
            headers={"X-Request-Id": "a b;<c>" + "x" * 200},
            timeout=10,
        )
    assert given.headers["X-Request-Id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["X-Request-Id"])
    assert re.fullmatch(r"[0-9a-f]{16}", hostile.headers["X-Request-Id"])
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if "authserver.access" in line]
    assert len([x for x in lines if "GET /.well-known/jwks.json 200" in x]) == 1, text
    assert "request_id=abc-123" in next(x for x in lines if "jwks.json" in x)
    token_line = next(x for x in lines if "POST /token" in x)
    assert f"request_id={made.headers['X-Request-Id']}" in token_line
    assert re.search(r"POST /token 4\d\d [\d.]+ms", token_line), token_line
    # Quiet start: Alembic's context line at most once, and not at info for every check.
    assert text.count("Context impl") <= 1, text


def test_json_log_format(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    env = _env(tmp_path, AUTHSERVER_LOG_FORMAT="json")
    with ServerProcess(env, log_path=log_path, workers=2) as server:
        requests.get(server.base_url + "/healthz", headers={"X-Request-Id": "req-1"}, timeout=10)
        requests.post(
            server.base_url + "/token",
            data={"grant_type": "password"},
            headers={"X-Request-Id": "req-2"},
            timeout=10,
        )
    records = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    access = [r for r in records if r["logger"] == "authserver.access"]
    assert any(
        r["method"] == "GET"
        and r["path"] == "/healthz"
        and r["status"] == 200
        and r["request_id"] == "req-1"
        and isinstance(r["duration_ms"], float)
        for r in access
    ), access
    # A refusal carries what the client was told; a success carries nulls, not other names.
    (refused,) = [r for r in access if r["request_id"] == "req-2"]
    assert (refused["status"], refused["error"]) == (400, "unsupported_grant_type")
    assert refused["error_description"] == "only grant_type=client_credentials is supported"
    (served,) = [r for r in access if r["request_id"] == "req-1"]
    assert (served["error"], served["error_description"]) == (None, None)
    started = [r for r in records if "listening on" in r["message"]]
    assert started, records
    # Said once per start (serve's main process), not once per worker.
    memory = [r for r in records if "is memory://" in r["message"]]
    assert len(memory) == 1, memory
    # granian's own lines name the logger the text format shows, not its private names.
    granian = [r for r in records if "granian" in r["logger"]]
    assert granian, records
    assert {r["logger"] for r in granian} == {"granian"}, granian


def test_failed_and_throttled_authentication_are_logged_with_the_reason(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    env = _env(tmp_path, AUTHSERVER_AUTH_FAILURES_PER_CLIENT="2/minute")
    created = cli_json_here(env, "clients", "create", "--name", "backend")
    cid, secret = created["client_id"], created["client_secret"]
    wrong = "wrong-secret-5b0c1e77d9"
    with ServerProcess(env, log_path=log_path) as server:
        token = server.base_url + "/token"
        form = {"grant_type": "client_credentials"}
        assert requests.post(token, data=form, auth=(cid, secret), timeout=10).ok
        scope = {**form, "scope": "not-registered"}
        assert requests.post(token, data=scope, auth=(cid, secret), timeout=10).status_code == 400
        unknown = requests.post(token, data=form, auth=("as_nobody", wrong), timeout=10)
        assert unknown.status_code == 401
        answers = [
            requests.post(token, data=form, auth=(cid, wrong), timeout=10).status_code
            for _ in range(3)
        ]
        assert answers[:2] == [401, 401]
        assert answers[2] == 429
    text = log_path.read_text()
    assert wrong not in text
    assert secret not in text
    assert re.search(
        r"INFO .*client authentication failed at /token: client_id=as_nobody, unknown client_id",
        text,
    ), text
    assert re.search(
        rf"INFO .*client authentication failed at /token: client_id={cid}, wrong secret", text
    ), text
    assert re.search(
        rf"INFO .*throttled at /token: client_id={cid}, client failure budget exhausted", text
    ), text
    # The access lines name the client: the authenticated one, or the id a failure claimed.
    assert re.search(rf"POST /token 200 [\d.]+ms client={cid} ", text), text
    assert re.search(r"POST /token 401 [\d.]+ms client=as_nobody ", text), text
    # An error answer's line says why, in the words the client got (an expected refusal:
    # INFO, no traceback).
    assert re.search(
        rf"INFO .*POST /token 400 [\d.]+ms client={cid} request_id=\w+ error=invalid_scope "
        r"\(the requested scope is not registered for this client\)$",
        text,
        re.MULTILINE,
    ), text
    assert "Traceback" not in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_secret_sent_as_the_client_id_is_never_logged(tmp_path: Path, log_format: str) -> None:
    """A backend that swapped its id and its secret sends the secret as the client id, in
    the Basic header, the form or a JSON body: the failure is logged with the id withheld
    and a reason that says what happened, and the secret is on no line."""
    log_path = tmp_path / "serve.log"
    env = _env(tmp_path, AUTHSERVER_LOG_FORMAT=log_format)
    created = cli_json_here(env, "clients", "create", "--name", "backend")
    cid, secret = created["client_id"], created["client_secret"]
    grant = {"grant_type": "client_credentials"}
    with ServerProcess(env, log_path=log_path) as server:
        token = server.base_url + "/token"
        answers = [
            requests.post(token, data=grant, auth=(secret, cid), timeout=10),
            requests.post(
                token, data={**grant, "client_id": secret, "client_secret": cid}, timeout=10
            ),
            requests.post(
                token, json={**grant, "client_id": secret, "client_secret": cid}, timeout=10
            ),
            requests.post(
                server.base_url + "/introspect", data={"token": "x"}, auth=(secret, cid), timeout=10
            ),
        ]
        assert [a.status_code for a in answers] == [401, 401, 401, 401]
        assert requests.post(token, data=grant, auth=(cid, secret), timeout=10).ok
    text = log_path.read_text()
    assert secret not in text
    assert secret.removeprefix("as_secret_") not in text
    failures = [line for line in text.splitlines() if "client authentication failed at" in line]
    assert len(failures) == 4, text
    for line in failures:
        assert "client_id and client_secret swapped" in line, line
        assert "<withheld: a client secret>" in line, line
    if log_format == "json":
        records = [json.loads(line) for line in failures]
        assert {r["client_id"] for r in records} == {"<withheld: a client secret>"}
