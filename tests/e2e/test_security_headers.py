"""Browser-facing hardening: no CORS on credentialed endpoints (RFC 9700 §2.6: the token
endpoint is for backends), CORS only on public documents, no caching of secrets."""

from __future__ import annotations

from typing import Any

import pytest

from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services

ORIGIN = "https://evil.example"


@db_independent
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_no_cors_on_credentialed_endpoints(http: Any, path: str) -> None:
    preflight = http.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    post = http.post(path, headers={"Origin": ORIGIN}, data={"grant_type": "client_credentials"})
    assert "Access-Control-Allow-Origin" not in post.headers
    assert post.headers["Cache-Control"] == "no-store"
    assert post.headers["X-Content-Type-Options"] == "nosniff"


OPERATOR_TOKEN = "security-headers-operator-token-5b9e2c7a1d"


@db_independent
@pytest.mark.parametrize("path", ["/admin/clients", "/metrics"])
def test_no_cors_on_operator_endpoints(settings: Settings, path: str) -> None:
    services = make_services(
        settings.replace(admin_token=OPERATOR_TOKEN, metrics_token=OPERATOR_TOKEN[::-1])
    )
    try:
        http = create_app(services=services).test_client()
        preflight = http.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers
        token = OPERATOR_TOKEN if path.startswith("/admin") else OPERATOR_TOKEN[::-1]
        get = http.get(path, headers={"Origin": ORIGIN, "Authorization": f"Bearer {token}"})
        assert get.status_code == 200
        assert "Access-Control-Allow-Origin" not in get.headers
        assert "Access-Control-Allow-Credentials" not in get.headers
        assert get.headers["Cache-Control"] == "no-store"
    finally:
        services.close()


@db_independent
@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ],
)
def test_public_documents_allow_any_origin_without_credentials(http: Any, path: str) -> None:
    response = http.get(path, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_token_response_is_never_cached(http: Any, register: Any) -> None:
    cid, secret = register()
    response = http.post("/token", auth=(cid, secret), data={"grant_type": "client_credentials"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
