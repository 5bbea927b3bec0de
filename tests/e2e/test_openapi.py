"""GET /openapi.json: a valid OpenAPI 3 document that describes every route the app serves,
and whose schemas describe what the endpoints really answer."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from authserver.audit.model import ACTIONS
from authserver.audit.model import MAX_QUERY_LIMIT
from authserver.container import Services
from authserver.settings import Settings
from authserver.web.app import create_app
from authserver.web.app import routes
from tests.conftest import db_independent
from tests.conftest import make_services

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "openapi-test-admin-token-0123456789"
#: Added by Flask/werkzeug to every GET rule (HEAD) and every rule (OPTIONS).
IMPLICIT = {"HEAD", "OPTIONS"}


def packaged_document() -> dict[str, Any]:
    """The packaged document, as PyYAML's pure-Python safe loader reads it: parsed once
    per process (about 0.15 s of CPU each time, and the tests of this module asked for it
    some 45 times), a fresh copy for each caller, so no test sees another's changes."""
    return copy.deepcopy(_parsed_document())


@functools.cache
def _parsed_document() -> dict[str, Any]:
    text = resources.files("authserver.web").joinpath("openapi.yaml").read_text("utf-8")
    return yaml.safe_load(text)  # type: ignore[no-any-return]


@pytest.fixture
def admin_services(settings: Settings) -> Any:
    """Every optional route on: the admin API and /metrics."""
    svc = make_services(settings.replace(admin_token=ADMIN_TOKEN, metrics_token=ADMIN_TOKEN[::-1]))
    yield svc
    svc.close()


@pytest.fixture
def admin_app(admin_services: Services) -> Any:
    return create_app(services=admin_services)


def openapi_path(rule: str) -> str:
    """Flask ``/admin/clients/<client_id>`` -> OpenAPI ``/admin/clients/{client_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def validator_for(document: dict[str, Any], schema_name: str) -> OAS31Validator:
    """A JSON Schema validator for one component schema, with the document's $refs."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return OAS31Validator(schema)


def test_packaged_document_is_valid_openapi() -> None:
    document = packaged_document()
    assert str(document["openapi"]).startswith("3.")
    validate(document)


@db_independent
def test_served_document_is_valid_and_names_the_issuer(http: Any, settings: Settings) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    validate(document)
    assert document["servers"] == [{"url": settings.issuer}]
    # The same document as the packaged YAML, but for servers.
    packaged = packaged_document()
    packaged.pop("servers", None)
    document.pop("servers")
    assert document == packaged


def test_served_document_follows_the_issuer(services: Services) -> None:
    other = services.settings.replace(issuer="https://auth.example.com")
    svc = make_services(other)
    try:
        response = create_app(services=svc).test_client().get("/openapi.json")
        assert response.get_json()["servers"] == [{"url": "https://auth.example.com"}]
    finally:
        svc.close()


@db_independent
def test_served_document_supports_conditional_get(http: Any) -> None:
    first = http.get("/openapi.json")
    assert first.headers.get("ETag")
    again = http.get("/openapi.json", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


@db_independent
def test_every_route_is_documented_with_its_methods(admin_app: Any) -> None:
    paths = packaged_document()["paths"]
    rules = routes(admin_app)
    assert any(r.startswith("/admin/") for r in rules), "the admin API must be registered"
    assert "/token" in rules, "the lean OAuth layer's routes must be listed"
    missing: list[str] = []
    for rule, methods in rules.items():
        path = openapi_path(rule)
        documented = {m.upper() for m in paths.get(path, {}) if m != "parameters"}
        for method in sorted(methods - IMPLICIT):
            if method not in documented:
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from openapi.yaml: {missing}"


@db_independent
def test_every_documented_operation_exists(admin_app: Any) -> None:
    """No stale documentation: each documented path and method is served."""
    served: dict[str, set[str]] = {}
    for rule, methods in routes(admin_app).items():
        served.setdefault(openapi_path(rule), set()).update(methods)
    for path, item in packaged_document()["paths"].items():
        assert path in served, f"{path} is documented but not served"
        for method in item:
            if method != "parameters":
                assert method.upper() in served[path], f"{method.upper()} {path} is not served"


def _documented(document: dict[str, Any], method: str, path: str) -> set[str]:
    return set(document["paths"][path][method.lower()]["responses"])


@db_independent
def test_admin_error_answers_are_documented(
    admin_app: Any, admin_services: Services, settings: Settings
) -> None:
    """A client whose stored record cannot be decoded is answered 409 unreadable_record,
    a body over AUTHSERVER_MAX_BODY_BYTES 413 and an unreachable database 503, on routes
    whose documented responses named none of them: a generated client had no type for
    the answer, and a schema-driven test flagged the server as wrong."""
    from sqlalchemy import create_engine
    from sqlalchemy import text

    document = packaged_document()
    http, auth, client_id = _admin_with_a_client(admin_app)
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE clients SET audiences = '{broken' WHERE client_id = :id"),
            {"id": client_id},
        )
    engine.dispose()
    item = "/admin/clients/{client_id}"
    unreadable = [
        ("GET", item, None),
        ("PATCH", item, {"name": "n"}),
        ("POST", item + "/rotate-secret", None),
        ("POST", item + "/disable", None),
        ("POST", item + "/enable", None),
        ("POST", "/admin/tokens/revoke", {"sub": "u", "client_id": client_id}),
    ]
    for method, path, body in unreadable:
        url = path.replace("{client_id}", client_id)
        response = http.open(url, method=method, json=body, headers=auth)
        assert response.status_code == 409, (method, path, response.get_data(as_text=True))
        assert response.get_json()["error"] == "unreadable_record"
        assert "409" in _documented(document, method, path), f"{method} {path}: 409"
        assert document["components"]["responses"]["UnreadableClient"]["description"].startswith(
            "`unreadable_record`"
        )

    oversized = "x" * (settings.max_body_bytes + 1)
    for method, path in [
        ("POST", "/admin/clients"),
        ("PATCH", item),
        ("POST", item + "/rotate-secret"),
        ("POST", "/admin/tokens/revoke"),
    ]:
        url = path.replace("{client_id}", client_id)
        response = http.open(
            url, method=method, data=oversized, content_type="application/json", headers=auth
        )
        assert response.status_code == 413, (method, path, response.get_data(as_text=True))
        assert "413" in _documented(document, method, path), f"{method} {path}: 413"

    # The database gone (its file replaced by a directory, every pooled connection
    # closed): each admin operation that reads or writes it is answered 503, and says so.
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    admin_services.db.dispose()
    database.rename(database.with_suffix(".gone"))
    database.mkdir()
    for path, operations in document["paths"].items():
        if not path.startswith("/admin/"):
            continue
        for method in operations:
            if method == "parameters":
                continue
            url = path.replace("{client_id}", client_id).replace("{kid}", "k")
            body = {
                "/admin/tokens/revoke": {"sub": "u"},
                "/admin/clients": {"name": "n"},
                item: {"name": "n"},
            }.get(path)
            response = http.open(url, method=method.upper(), json=body, headers=auth)
            status = response.status_code
            assert str(status) in _documented(document, method, path), (method, path, status)
            # The file key store answers the key routes without the database.
            assert status == 503 or path.startswith("/admin/keys"), (method, path, status)


def test_path_parameters_are_declared() -> None:
    for path, item in packaged_document()["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        declared: set[str] = set()
        for params in [item.get("parameters", [])] + [
            op.get("parameters", []) for m, op in item.items() if m != "parameters"
        ]:
            for p in params:
                if "$ref" in p:
                    p = packaged_document()["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
                if p["in"] == "path":
                    declared.add(p["name"])
        assert names <= declared, f"{path}: undeclared path parameters {names - declared}"


def test_audit_query_is_documented_as_the_admin_api_checks_it() -> None:
    """The actions are the audit trail's own list, and limit's bounds are the API's."""
    params = {
        p["name"]: p for p in packaged_document()["paths"]["/admin/audit"]["get"]["parameters"]
    }
    assert params["action"]["schema"]["enum"] == list(ACTIONS)
    assert params["limit"]["schema"]["maximum"] == MAX_QUERY_LIMIT
    since = re.compile(params["since"]["schema"]["pattern"])
    for value in ("1h", "7d", "2026-11-23", "2026-11-23T10:00:00Z", "1764374400"):
        assert since.match(value), value


def test_token_endpoint_documents_the_interface() -> None:
    document = packaged_document()
    op = document["paths"]["/token"]["post"]
    assert set(op["requestBody"]["content"]) == {
        "application/x-www-form-urlencoded",
        "application/json",
    }
    schemes = {name for requirement in op["security"] for name in requirement}
    assert schemes == {"client_secret_basic", "client_secret_post", "private_key_jwt"}
    assert {"200", "400", "401", "413", "503"} <= set(op["responses"])
    unauthorized = document["components"]["responses"]["InvalidClient"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    form = document["components"]["schemas"]["TokenRequestForm"]["allOf"][1]["properties"]
    for name in (
        "grant_type",
        "sub",
        "email",
        "name",
        "scope",
        "audience",
        "resource",
        "expires_in",
        "claims",
    ):
        assert name in form, name
    admin = document["paths"]["/admin/clients"]["get"]
    assert admin["security"] == [{"admin_bearer": []}]
    assert document["components"]["securitySchemes"]["admin_bearer"]["scheme"] == "bearer"


# -- the schemas describe the real responses --------------------------------------------


def test_token_and_discovery_responses_match_their_schemas(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    document = packaged_document()
    client_id, secret = register(audiences=["https://sync.example"], scopes=["sync"])
    token = http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "sub": "u1",
            "scope": "sync",
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert token.status_code == 200, token.get_data(as_text=True)
    validator_for(document, "TokenResponse").validate(token.get_json())

    introspection = http.post(
        "/introspect", data={"token": token.get_json()["access_token"]}, auth=(client_id, secret)
    )
    assert introspection.get_json()["active"] is True
    validator_for(document, "IntrospectionResponse").validate(introspection.get_json())

    error = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong")
    )
    assert error.status_code == 401
    validator_for(document, "OAuthError").validate(error.get_json())

    validator_for(document, "Jwks").validate(http.get("/.well-known/jwks.json").get_json())
    validator_for(document, "ServerMetadata").validate(
        http.get("/.well-known/oauth-authorization-server").get_json()
    )
    validator_for(document, "Readiness").validate(http.get("/readyz").get_json())


def test_admin_responses_match_their_schemas(admin_app: Any, rsa_private_key: Any) -> None:
    document = packaged_document()
    http = admin_app.test_client()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = http.post(
        "/admin/clients",
        json={"name": "x", "audiences": ["https://a.example"], "token_ttl": 600},
        headers=auth,
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    validator_for(document, "ClientWithSecret").validate(created.get_json())
    validator_for(document, "ClientCreate").validate({"name": "x", "token_ttl": 600})

    from joserfc.jwk import RSAKey

    public = RSAKey.import_key(rsa_private_key).as_dict(private=False)
    jwt_client = http.post(
        "/admin/clients", json={"name": "y", "jwks": {"keys": [public]}}, headers=auth
    )
    assert jwt_client.status_code == 201, jwt_client.get_data(as_text=True)
    validator_for(document, "Client").validate(jwt_client.get_json())

    listed = http.get("/admin/clients", headers=auth).get_json()
    for client in listed["clients"]:
        validator_for(document, "Client").validate(client)

    rotated = http.post("/admin/keys/rotate", headers=auth)
    validator_for(document, "KeyRotation").validate(rotated.get_json())
    for key in http.get("/admin/keys", headers=auth).get_json()["keys"]:
        validator_for(document, "Key").validate(key)
    for event in http.get("/admin/audit", headers=auth).get_json()["events"]:
        validator_for(document, "AuditEvent").validate(event)
    error = http.get("/admin/clients/nope", headers=auth)
    assert error.status_code == 404
    validator_for(document, "OAuthError").validate(error.get_json())


#: Bodies the admin API accepts in which null stands for "not given" (create) or for the
#: empty value: the document must describe them as valid, or a generated client refuses
#: to send what the server takes (and a fuzzer's negative case is answered 2xx).
ACCEPTED_NULLS: list[tuple[str, str, dict[str, Any]]] = [
    ("post", "/admin/clients", {"name": "n", "audiences": None}),
    ("post", "/admin/clients", {"name": "n", "scopes": None}),
    ("post", "/admin/clients", {"name": "n", "allowed_claims": None}),
    ("post", "/admin/clients", {"name": "n", "token_ttl": None}),
    ("post", "/admin/clients", {"name": "n", "jwks": None}),
    ("post", "/admin/clients", {"name": "n", "jwks_uri": None}),
    ("post", "/admin/clients", {"name": "n", "fixed_claims": None}),
    ("patch", "/admin/clients/{client_id}", {"token_ttl": None}),
    ("post", "/admin/tokens/revoke", {"sub": "alice", "client_id": None}),
]


def request_validator(document: dict[str, Any], method: str, path: str) -> OAS31Validator:
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    return OAS31Validator({**body["schema"], "components": document["components"]})


def _admin_with_a_client(admin_app: Any) -> tuple[Any, dict[str, str], str]:
    """A test client of the admin API, its Authorization header, and a client it made."""
    http = admin_app.test_client()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = http.post("/admin/clients", json={"name": "c"}, headers=auth)
    return http, auth, created.get_json()["client_id"]


@db_independent
@pytest.mark.parametrize(("method", "path", "body"), ACCEPTED_NULLS)
def test_bodies_the_admin_api_accepts_are_documented_as_valid(
    admin_app: Any, method: str, path: str, body: dict[str, Any]
) -> None:
    document = packaged_document()
    http, auth, client_id = _admin_with_a_client(admin_app)
    url = path.replace("{client_id}", client_id)
    response = getattr(http, method)(url, json=body, headers=auth)
    assert 200 <= response.status_code < 300, response.get_data(as_text=True)
    request_validator(document, method, path).validate(body)


#: Values the admin API refuses by a rule the document can state: described as invalid,
#: so a generated client or a fuzzer's valid case never sends one ("type: string" alone
#: described every string as a scope or a claim name).
REFUSED_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("post", {"name": "n", "scopes": ["read write"]}),
    ("post", {"name": "n", "scopes": ['say"hi"']}),
    ("post", {"name": "n", "scopes": ["s" * 201]}),
    ("post", {"name": "n", "allowed_claims": ["1st"]}),
    ("post", {"name": "n", "allowed_claims": ["x" * 65]}),
    ("post", {"name": "n", "fixed_claims": {"has space": 1}}),
    ("patch", {"scopes": ["caf\u00e9"]}),
    ("patch", {"allowed_claims": ["a/b"]}),
    ("patch", {"fixed_claims": {"": 1}}),
]


@db_independent
@pytest.mark.parametrize(("method", "body"), REFUSED_VALUES)
def test_scopes_and_claim_names_the_admin_api_refuses_are_documented_as_invalid(
    admin_app: Any, method: str, body: dict[str, Any]
) -> None:
    document = packaged_document()
    http, auth, client_id = _admin_with_a_client(admin_app)
    path = "/admin/clients" if method == "post" else "/admin/clients/{client_id}"
    response = getattr(http, method)(
        path.replace("{client_id}", client_id), json=body, headers=auth
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert not request_validator(document, method, path).is_valid(body)
    accepted = {"name": "n", "scopes": ["sync:read"], "allowed_claims": ["libraryId"]}
    assert request_validator(document, "post", "/admin/clients").is_valid(accepted)


def test_scope_and_claim_name_patterns_are_the_ones_the_code_checks() -> None:
    from authserver.clients.model import _SCOPE_TOKEN
    from authserver.vocabulary import _CLAIM_NAME

    schemas = packaged_document()["components"]["schemas"]
    assert re.compile(schemas["ScopeToken"]["pattern"]).pattern == f"^{_SCOPE_TOKEN.pattern}$"
    assert re.compile(schemas["ClaimName"]["pattern"]).pattern == f"^{_CLAIM_NAME.pattern}$"


#: A null in PATCH that would have cleared a list: refused, and described as invalid.
REFUSED_NULLS = [
    {"audiences": None},
    {"scopes": None},
    {"allowed_claims": None},
    {"fixed_claims": None},
]


@db_independent
@pytest.mark.parametrize("body", REFUSED_NULLS, ids=lambda b: next(iter(b)))
def test_nulls_the_admin_api_refuses_are_documented_as_invalid(
    admin_app: Any, body: dict[str, Any]
) -> None:
    document = packaged_document()
    http, auth, client_id = _admin_with_a_client(admin_app)
    response = http.patch(f"/admin/clients/{client_id}", json=body, headers=auth)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert not request_validator(document, "patch", "/admin/clients/{client_id}").is_valid(body)
