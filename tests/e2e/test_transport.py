"""TLS and proxy headers (docs/design.md, Authlib item 4): plain http only on loopback;
X-Forwarded-* trusted only when AUTHSERVER_PROXY_HOPS says a proxy is there."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from authserver.container import Services
from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services


@pytest.fixture
def app_for(settings: Settings) -> Iterator[Callable[[int], tuple[Any, str, str]]]:
    """An app with AUTHSERVER_PROXY_HOPS=hops and one client: (test client, id, secret)."""
    made: list[Services] = []

    def make(hops: int) -> tuple[Any, str, str]:
        services = make_services(settings.replace(proxy_hops=hops))
        made.append(services)
        with services.unit_of_work():
            client, secret = services.clients.create(name="backend")
        assert secret is not None
        return create_app(services=services).test_client(), str(client.client_id), secret

    yield make
    for services in made:
        services.close()


@pytest.mark.parametrize("host", ["http://localhost", "http://127.0.0.1", "http://[::1]"])
def test_plain_http_on_loopback_is_served(app_for: Any, host: str) -> None:
    http, cid, secret = app_for(0)
    r = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(cid, secret), base_url=host
    )
    assert r.status_code == 200


@pytest.mark.parametrize("hops", [0, 1])
def test_plain_http_elsewhere_is_refused(app_for: Any, hops: int) -> None:
    http, cid, secret = app_for(hops)
    r = http.post(
        "/token",
        data={"grant_type": "client_credentials"},
        auth=(cid, secret),
        base_url="http://auth.example.com",
    )
    assert r.status_code == 400
    assert r.json["error"] == "insecure_transport"
    # What to do about it: the loopback exception and the proxy setting, by name.
    assert "loopback" in r.json["error_description"]
    assert "AUTHSERVER_PROXY_HOPS" in r.json["error_description"]


def test_json_sent_as_a_form_says_so(app_for: Any) -> None:
    http, cid, secret = app_for(0)
    r = http.post(
        "/token",
        data='{"grant_type": "client_credentials"}',
        content_type="application/x-www-form-urlencoded",
        auth=(cid, secret),
        base_url="http://127.0.0.1",
    )
    assert r.status_code == 400
    assert r.json["error"] == "invalid_request"
    assert "Content-Type: application/json" in r.json["error_description"]
    no_type = http.post(
        "/token",
        data=b'{"grant_type": "client_credentials"}',
        auth=(cid, secret),
        base_url="http://127.0.0.1",
    )
    assert no_type.status_code == 400
    assert "application/json" in no_type.json["error_description"]


def test_forwarded_proto_is_ignored_without_a_configured_proxy(app_for: Any) -> None:
    http, cid, secret = app_for(0)
    r = http.post(
        "/token",
        data={"grant_type": "client_credentials"},
        auth=(cid, secret),
        base_url="http://auth.example.com",
        headers={"X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 400
    assert r.json["error"] == "insecure_transport"


def test_forwarded_proto_is_honoured_behind_a_configured_proxy(app_for: Any) -> None:
    http, cid, secret = app_for(1)
    r = http.post(
        "/token",
        data={"grant_type": "client_credentials"},
        auth=(cid, secret),
        base_url="http://auth.example.com",
        headers={"X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 200


ADMIN_TOKEN = "transport-test-admin-token-4b7e1c9d2a"


@pytest.mark.parametrize(
    ("hops", "base_url", "forwarded", "status"),
    [
        (0, "http://auth.example.com", "https", 400),
        (1, "http://auth.example.com", "http", 400),
        (1, "http://auth.example.com", "https", 200),
        (0, "https://auth.example.com", None, 200),
        (0, "http://127.0.0.1", None, 200),
    ],
)
def test_admin_api_follows_the_same_transport_rule(
    settings: Settings, hops: int, base_url: str, forwarded: str | None, status: int
) -> None:
    services = make_services(settings.replace(proxy_hops=hops, admin_token=ADMIN_TOKEN))
    try:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if forwarded:
            headers["X-Forwarded-Proto"] = forwarded
        r = (
            create_app(services=services)
            .test_client()
            .get("/admin/clients", base_url=base_url, headers=headers)
        )
        assert r.status_code == status, r.get_data(as_text=True)
        if status == 400:
            assert r.json["error"] == "insecure_transport"
    finally:
        services.close()


@db_independent
@pytest.mark.parametrize("host", ["xn--", "a.xn--", "xn--a", "xn--.com"])
@pytest.mark.parametrize("path", ["/admin/clients", "/token"])
def test_a_host_that_is_not_a_valid_idna_name_is_refused_not_a_500(
    settings: Settings, host: str, path: str
) -> None:
    """The transport rule reads the Host header as sent: Werkzeug's request.url decodes an
    IDNA name and raised on these, a 500 before any credential was checked."""
    services = make_services(settings.replace(admin_token=ADMIN_TOKEN))
    try:
        # Called directly: Werkzeug's test client decodes the Host for its cookie jar and
        # fails on these names before the app sees them.
        environ = EnvironBuilder(
            path=path, method="POST", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).get_environ()
        environ["HTTP_HOST"] = host
        answered: list[str] = []
        body = b"".join(
            create_app(services=services)(environ, lambda status, *_: answered.append(status))
        )
        assert answered[0].startswith("400 "), body
        assert json.loads(body)["error"] == "insecure_transport"
    finally:
        services.close()
