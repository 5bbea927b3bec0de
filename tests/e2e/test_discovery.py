"""RFC 8414 metadata, also served as the OIDC discovery document (docs/reference.md)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import db_independent

pytestmark = pytest.mark.e2e

PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def fetch(http: Any, path: str) -> dict[str, Any]:
    response = http.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return json.loads(response.get_data())  # type: ignore[no-any-return]


@db_independent
def test_both_documents_are_the_same(http: Any) -> None:
    oauth, oidc = (fetch(http, path) for path in PATHS)
    assert oauth == oidc


@db_independent
@pytest.mark.parametrize("path", PATHS)
def test_document(http: Any, settings: Settings, path: str) -> None:
    doc = fetch(http, path)
    issuer = doc["issuer"]
    assert issuer == settings.issuer == "http://localhost:8000"
    assert doc["token_endpoint"].startswith(issuer + "/")
    assert doc["token_endpoint"] == issuer + "/token"
    assert doc["jwks_uri"].startswith(issuer + "/")
    assert doc["jwks_uri"] == issuer + "/.well-known/jwks.json"
    assert doc["grant_types_supported"] == ["client_credentials"]
    # No authorization endpoint, so no redirect-based flow (RFC 9700 §2.1 does not apply).
    assert doc["response_types_supported"] == ["none"]
    assert "authorization_endpoint" not in doc
    methods = doc["token_endpoint_auth_methods_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(methods)
    AuthorizationServerMetadata(doc).validate()


@db_independent
def test_advertised_endpoints_answer(http: Any) -> None:
    doc = fetch(http, PATHS[0])
    base = doc["issuer"]
    jwks = http.get(doc["jwks_uri"].removeprefix(base))
    assert jwks.status_code == 200
    assert json.loads(jwks.get_data())["keys"]
    token = http.post(doc["token_endpoint"].removeprefix(base), data={})
    assert token.status_code in (400, 401)
    assert token.mimetype == "application/json"


@pytest.mark.parametrize(
    "changes",
    [
        {"issuer": "http://auth.internal:8000"},
        {"issuer": "http://auth.internal:8000", "production": True, "allow_http_issuer": True},
    ],
    ids=["development", "production-allowed"],
)
def test_a_plain_http_issuer_the_settings_accept_is_served(
    settings: Settings, changes: dict[str, Any]
) -> None:
    """RFC 8414 wants https; a plain-http issuer is accepted with a warning outside
    production and with AUTHSERVER_ALLOW_HTTP_ISSUER in it, and must then be served."""
    app = create_app(dataclasses.replace(settings, **changes))
    doc = fetch(app.test_client(), PATHS[0])
    assert doc["issuer"] == "http://auth.internal:8000"
    assert doc["jwks_uri"] == "http://auth.internal:8000/.well-known/jwks.json"
