"""Every secret comparison is ``hmac.compare_digest``, and its answer is the decision.

Accept/reject tests cannot tell ``compare_digest`` from ``==`` (both say the same thing,
only the timing differs, and timing cannot be asserted reliably in a test). So these put a
spy in place of ``hmac.compare_digest``: it records what it was asked to compare and
answers what the test says. If a comparison used ``==`` (or any other function), the spy
would not see the secret, and forcing its answer would not change the outcome: the tests
below fail.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from authserver.clients import secrets as client_secrets
from authserver.settings import Settings
from authserver.web import bearer
from authserver.web.app import create_app
from tests.conftest import make_services

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "constant-time-admin-token-3c8e1f5a9b2d"
METRICS_TOKEN = "constant-time-metrics-token-7a4d0c6e2f1b"


@dataclass
class Spy:
    """Stands in for ``hmac.compare_digest``: records each call, answers ``answer``
    (``None``: the real function's answer)."""

    real: Any
    answer: bool | None = None
    calls: list[tuple[Any, Any]] = field(default_factory=list)

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return bool(self.real(a, b)) if self.answer is None else self.answer

    def saw(self, value: str) -> bool:
        def text(x: Any) -> str:
            return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)

        return any(value in text(a) or value in text(b) for a, b in self.calls)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    return spy


# -- the two comparison functions -------------------------------------------------------------


def test_client_secrets_are_compared_with_compare_digest(spy: Spy) -> None:
    secret = client_secrets.new_secret()
    stored = client_secrets.hash_secret(secret)
    assert client_secrets.verify_secret(secret, stored) is True
    assert spy.calls == [(stored, stored)]
    spy.answer = False
    assert client_secrets.verify_secret(secret, stored) is False
    spy.answer = True
    assert client_secrets.verify_secret("as_secret_wrong", stored) is True


@pytest.mark.parametrize("answer", [True, False])
def test_bearer_tokens_are_compared_with_compare_digest(spy: Spy, answer: bool) -> None:
    spy.answer = answer
    presented = "presented-token-0123456789abcdefghij"
    with Flask(__name__).test_request_context(headers={"Authorization": f"Bearer {presented}"}):
        assert bearer.presented_matches(ADMIN_TOKEN) is answer
    assert spy.calls == [(presented.encode(), ADMIN_TOKEN.encode())]


# -- and through the application: the spy's answer is the server's --------------------------


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[Any, str, str]]:
    """The app with an admin and a metrics token and one client: (test client, id, secret).
    SQLite only: the comparison does not depend on the database."""
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'authserver.db'}",
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
            "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
            "AUTHSERVER_METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    services = make_services(settings)
    with services.unit_of_work():
        client, secret = services.clients.create(name="backend")
    assert secret is not None
    try:
        yield create_app(services=services).test_client(), str(client.client_id), secret
    finally:
        services.close()


def test_the_token_endpoint_decides_with_compare_digest(
    spy: Spy, http: tuple[Any, str, str]
) -> None:
    client, client_id, secret = http
    body = {"grant_type": "client_credentials"}
    assert client.post("/token", data=body, auth=(client_id, secret)).status_code == 200
    assert spy.saw(client_secrets.hash_secret(secret))
    spy.answer = False
    assert client.post("/token", data=body, auth=(client_id, secret)).status_code == 401
    spy.answer = True
    assert client.post("/token", data=body, auth=(client_id, "as_secret_wrong")).status_code == 200


@pytest.mark.parametrize(
    ("path", "token"), [("/admin/clients", ADMIN_TOKEN), ("/metrics", METRICS_TOKEN)]
)
def test_the_operator_endpoints_decide_with_compare_digest(
    spy: Spy, http: tuple[Any, str, str], path: str, token: str
) -> None:
    client = http[0]
    assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert spy.saw(token)
    spy.answer = False
    assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    spy.answer = True
    wrong = "not-the-token-but-the-spy-says-yes-000"
    assert client.get(path, headers={"Authorization": f"Bearer {wrong}"}).status_code == 200
