"""Schemathesis against /openapi.json (every operation, bounded examples): no 5xx, and every
response conforms to the document (status, content type, headers, body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance
from schemathesis.specs.openapi.checks import response_headers_conformance
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.checks import status_code_conformance

from authserver.settings import Settings
from tests.conftest import make_services

ADMIN = "fuzz-admin-token-0123456789abcdefghij"


def _make_app(tmp: Path) -> tuple[Any, Any]:
    from authserver.web.app import create_app

    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'fuzz.db'}",
            "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
            "AUTHSERVER_ADMIN_TOKEN": ADMIN,
        }
    )
    services = make_services(settings)
    with services.unit_of_work():
        services.clients.create(name="fuzz", audiences=["https://sync.example"])
    return create_app(services=services), services


#: Response-side checks. Request-side "valid data must be accepted" is left out on purpose:
#: the server refuses combinations a JSON schema cannot express (two client
#: authentication methods at once, RFC 6749 §2.3; a scope not registered for the client).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

_tmp = Path(__import__("tempfile").mkdtemp(prefix="authserver-fuzz-"))
APP, SERVICES = _make_app(_tmp)
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _close() -> Iterator[None]:
    yield
    SERVICES.close()


@schema.parametrize()
@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_and_never_fails(case: Any) -> None:
    headers = {}
    if case.path.startswith("/admin"):
        headers["Authorization"] = f"Bearer {ADMIN}"
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    # What the issue asks: no 5xx, and every response conforms to the document.
    case.validate_response(response, checks=CHECKS)
