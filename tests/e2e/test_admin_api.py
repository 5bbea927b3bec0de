"""The operator API under /admin (docs/reference.md "HTTP endpoints"): bearer
``AUTHSERVER_ADMIN_TOKEN``, the client lifecycle seen from /token, signing keys seen from the
JWKS, the audit trail, and JSON errors for every bad request."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
import pytest

from authserver import container
from authserver.clients.service import MAX_ALLOWED_CLAIMS
from authserver.clock import FixedClock
from authserver.container import Services
from authserver.errors import InvalidInput
from authserver.settings import Settings
from authserver.storage.sql.clients import VERSION_NAME as CLIENTS_VERSION
from authserver.vocabulary import MAX_REGISTERED_BYTES
from authserver.vocabulary import registered_size
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services
from tests.factories import client_public_jwk
from tests.factories import token_response
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-for-tests-3f9a1c0b7d2e4f6a"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AUD = "https://sync.example"


@pytest.fixture
def admin_services(settings: Settings) -> Iterator[Services]:
    svc = make_services(settings.replace(admin_token=ADMIN_TOKEN))
    yield svc
    svc.close()


@pytest.fixture
def admin(admin_services: Services) -> Any:
    return create_app(services=admin_services).test_client()


def assert_error(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body.get("error"), str), body
    assert body["error"], body
    assert isinstance(body.get("error_description"), str), body
    if error is not None:
        assert body["error"] == error, body
    return body  # type: ignore[no-any-return]


def token_status(http: Any, client_id: str, secret: str) -> tuple[int, dict[str, Any]]:
    response = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    return response.status_code, response.get_json()


def create(admin: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "backend")
    response = admin.post("/admin/clients", json=body, headers=AUTH)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()  # type: ignore[no-any-return]


# -- authentication ------------------------------------------------------------------------


BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
]
ROUTES = [
    ("GET", "/admin/clients"),
    ("POST", "/admin/clients"),
    ("GET", "/admin/clients/x"),
    ("PATCH", "/admin/clients/x"),
    ("DELETE", "/admin/clients/x"),
    ("POST", "/admin/clients/x/rotate-secret"),
    ("POST", "/admin/clients/x/disable"),
    ("POST", "/admin/clients/x/enable"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys/rotate"),
    ("POST", "/admin/keys/x/retire"),
    ("GET", "/admin/audit"),
]


def assert_unauthorized(response: Any) -> None:
    assert_error(response, 401)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.lower().startswith("bearer"), challenge
    assert ADMIN_TOKEN not in response.get_data(as_text=True)


@db_independent
@pytest.mark.parametrize(
    "headers",
    BAD_HEADERS,
    ids=["none", "wrong", "longer", "shorter", "basic-scheme", "no-scheme", "bare", "empty"],
)
def test_requires_the_admin_bearer_token(admin: Any, headers: dict[str, str]) -> None:
    response = admin.get("/admin/clients", headers=headers)
    assert_unauthorized(response)
    # RFC 6750 §3.1: an error code only for a Bearer token that was sent and refused; a
    # request without one gets a bare challenge (it said invalid_token to every request).
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    sent = scheme.lower() == "bearer" and bool(token.strip())
    challenge = response.headers["WWW-Authenticate"]
    expected = 'Bearer realm="authserver-admin"' + (', error="invalid_token"' if sent else "")
    assert challenge == expected


@db_independent
def test_every_admin_route_requires_the_token(admin: Any) -> None:
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}):
            assert_unauthorized(
                admin.open(path, method=method, headers=headers, json={"name": "x"})
            )


def test_unauthorized_request_changes_nothing(admin: Any) -> None:
    assert admin.post("/admin/clients", json={"name": "x"}).status_code == 401
    assert admin.get("/admin/clients", headers=AUTH).get_json()["clients"] == []


def test_scheme_is_case_insensitive(admin: Any) -> None:
    response = admin.get("/admin/clients", headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200


@db_independent
@pytest.mark.parametrize(
    "path", ["/admin/clients", "/admin/keys", "/admin/audit", "/admin/clients/x"]
)
def test_admin_api_absent_without_a_token(http: Any, path: str) -> None:
    """The default app (AUTHSERVER_ADMIN_TOKEN unset): /admin is not there at all."""
    for headers in ({}, AUTH, {"Authorization": "Bearer "}):
        assert_error(http.get(path, headers=headers), 404)
    assert_error(http.post("/admin/clients", json={"name": "x"}, headers=AUTH), 404)


# -- clients -------------------------------------------------------------------------------


def test_client_lifecycle(admin: Any) -> None:
    created = admin.post(
        "/admin/clients",
        json={
            "name": "Sync backend",
            "audiences": [AUD],
            "scopes": ["sync"],
            "allowed_claims": ["libraryId"],
            "token_ttl": 600,
        },
        headers=AUTH,
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.headers.get("Cache-Control") == "no-store"
    body = created.get_json()
    client_id, secret = body["client_id"], body["client_secret"]
    assert isinstance(secret, str)
    assert len(secret) >= 32
    assert created.headers["Location"].endswith(f"/admin/clients/{client_id}")
    assert body["name"] == "Sync backend"
    assert body["audiences"] == [AUD]
    assert body["scopes"] == ["sync"]
    assert body["allowed_claims"] == ["libraryId"]
    assert body["token_ttl"] == 600
    assert body["enabled"] is True
    assert set(body["token_endpoint_auth_methods"]) == {"client_secret_basic", "client_secret_post"}
    status, issued = token_status(admin, client_id, secret)
    assert status == 200, issued

    # list and show never show the secret (nor its hash)
    listed = admin.get("/admin/clients", headers=AUTH)
    assert listed.status_code == 200
    shown = admin.get(f"/admin/clients/{client_id}", headers=AUTH)
    assert shown.status_code == 200
    for response in (listed, shown):
        text = response.get_data(as_text=True)
        assert secret not in text
        assert '"client_secret"' not in text
        assert "hash" not in text
    assert [c["client_id"] for c in listed.get_json()["clients"]] == [client_id]
    assert shown.get_json() == {k: v for k, v in body.items() if k != "client_secret"}

    # update
    updated = admin.patch(
        f"/admin/clients/{client_id}",
        json={"name": "Renamed", "scopes": [], "token_ttl": None},
        headers=AUTH,
    )
    assert updated.status_code == 200, updated.get_data(as_text=True)
    assert updated.get_json()["name"] == "Renamed"
    assert updated.get_json()["scopes"] == []
    assert updated.get_json()["token_ttl"] is None
    assert updated.get_json()["audiences"] == [AUD]  # left out: unchanged
    assert "client_secret" not in updated.get_json()
    assert admin.get(f"/admin/clients/{client_id}", headers=AUTH).get_json()["name"] == "Renamed"

    # rotate-secret: a new secret; the old one stops working at once
    rotated = admin.post(f"/admin/clients/{client_id}/rotate-secret", headers=AUTH)
    assert rotated.status_code == 200, rotated.get_data(as_text=True)
    new_secret = rotated.get_json()["client_secret"]
    assert new_secret
    assert new_secret != secret
    status, error = token_status(admin, client_id, secret)
    assert status == 401
    assert error["error"] == "invalid_client"
    status, _ = token_status(admin, client_id, new_secret)
    assert status == 200

    # disable: /token refuses the right secret as invalid_client
    disabled = admin.post(f"/admin/clients/{client_id}/disable", headers=AUTH)
    assert disabled.status_code == 200
    assert disabled.get_json()["enabled"] is False
    refused = admin.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(client_id, new_secret)
    )
    assert_error(refused, 401, "invalid_client")
    assert refused.headers.get("WWW-Authenticate", "").startswith("Basic")

    # enable
    enabled = admin.post(f"/admin/clients/{client_id}/enable", headers=AUTH)
    assert enabled.status_code == 200
    assert enabled.get_json()["enabled"] is True
    assert token_status(admin, client_id, new_secret)[0] == 200

    # delete
    deleted = admin.delete(f"/admin/clients/{client_id}", headers=AUTH)
    assert deleted.status_code == 204
    assert deleted.get_data() == b""
    assert "Content-Type" not in deleted.headers  # no content, so no type of it
    assert_error(admin.get(f"/admin/clients/{client_id}", headers=AUTH), 404, "not_found")
    assert_error(admin.delete(f"/admin/clients/{client_id}", headers=AUTH), 404, "not_found")
    assert admin.get("/admin/clients", headers=AUTH).get_json()["clients"] == []
    status, error = token_status(admin, client_id, new_secret)
    assert status == 401
    assert error["error"] == "invalid_client"


def test_changes_are_seen_by_another_instance(admin: Any, admin_services: Services) -> None:
    """Committed per request: another instance on the same database sees them."""
    client = create(admin)
    other = make_services(admin_services.settings)
    try:
        other_http = create_app(services=other).test_client()
        assert token_status(other_http, client["client_id"], client["client_secret"])[0] == 200
        admin.post(f"/admin/clients/{client['client_id']}/disable", headers=AUTH)
        assert token_status(other_http, client["client_id"], client["client_secret"])[0] == 401
    finally:
        other.close()


def test_private_key_jwt_client_has_no_secret(admin: Any, rsa_private_key: Any) -> None:
    from joserfc.jwk import RSAKey

    public = RSAKey.import_key(rsa_private_key).as_dict(private=False)
    body = create(admin, name="jwt", jwks={"keys": [public]})
    assert "client_secret" not in body
    assert body["token_endpoint_auth_methods"] == ["private_key_jwt"]
    assert body["jwks"]["keys"][0]["n"] == public["n"]
    assert all("d" not in k for k in body["jwks"]["keys"])
    rotated = admin.post(f"/admin/clients/{body['client_id']}/rotate-secret", headers=AUTH)
    assert_error(rotated, 400, "invalid_request")


def test_a_private_key_jwt_clients_keys_are_replaced_in_place(
    admin: Any, rsa_private_key: Any
) -> None:
    """PATCH ``jwks`` or ``jwks_uri`` replaces the keys of a client registered with keys
    (it keeps its id; the other source is cleared); a secret client, a set that is not an
    object and a private set are refused, and change nothing."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc.jwk import RSAKey

    first = RSAKey.import_key(rsa_private_key).as_dict(private=False)
    second = RSAKey.import_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ).as_dict(private=False)
    client = create(admin, name="jwt", jwks={"keys": [first]})
    path = f"/admin/clients/{client['client_id']}"
    replaced = admin.patch(path, json={"jwks": {"keys": [first, second]}}, headers=AUTH)
    assert replaced.status_code == 200, replaced.get_data(as_text=True)
    body = replaced.get_json()
    assert body["client_id"] == client["client_id"]
    assert [k["n"] for k in body["jwks"]["keys"]] == [first["n"], second["n"]]
    uri = admin.patch(path, json={"jwks_uri": "https://keys.example/jwks.json"}, headers=AUTH)
    assert uri.status_code == 200, uri.get_data(as_text=True)
    assert uri.get_json()["jwks_uri"] == "https://keys.example/jwks.json"
    assert uri.get_json().get("jwks") is None
    shown = admin.get(path, headers=AUTH).get_json()
    private = RSAKey.import_key(rsa_private_key).as_dict(private=True)
    secret_client = create(admin, name="secret")
    for target, body_ in (
        (path, {"jwks": None}),
        (path, {"jwks": [first]}),
        (path, {"jwks_uri": None}),
        (path, {"jwks": {"keys": [private]}}),
        (path, {"jwks": {"keys": [first]}, "jwks_uri": "https://keys.example/j"}),
        (f"/admin/clients/{secret_client['client_id']}", {"jwks": {"keys": [first]}}),
    ):
        refused = admin.patch(target, json=body_, headers=AUTH)
        assert_error(refused, 400, "invalid_request")
        assert private["d"] not in refused.get_data(as_text=True)
    assert admin.get(path, headers=AUTH).get_json() == shown
    unchanged = admin.get(f"/admin/clients/{secret_client['client_id']}", headers=AUTH).get_json()
    assert unchanged["token_endpoint_auth_methods"] != ["private_key_jwt"]


@db_independent
def test_private_keys_are_refused_in_a_jwk_set(admin: Any, rsa_private_key: Any) -> None:
    from joserfc.jwk import RSAKey

    private = RSAKey.import_key(rsa_private_key).as_dict(private=True)
    response = admin.post(
        "/admin/clients", json={"name": "x", "jwks": {"keys": [private]}}, headers=AUTH
    )
    assert_error(response, 400, "invalid_request")
    assert private["d"] not in response.get_data(as_text=True)


@db_independent
def test_a_jwk_set_with_two_keys_of_one_kid_is_refused(admin: Any, rsa_private_key: Any) -> None:
    """An assertion naming that kid would be checked against whichever key a lookup finds
    first: refused at create and at update, as from --jwks-file."""
    twice = {"keys": [client_public_jwk(rsa_private_key, "k")] * 2}
    body = assert_error(
        admin.post("/admin/clients", json={"name": "x", "jwks": twice}, headers=AUTH), 400
    )
    assert "same kid" in body["error_description"], body
    assert admin.get("/admin/clients", headers=AUTH).get_json()["clients"] == []
    keyed = create(admin, jwks={"keys": [client_public_jwk(rsa_private_key, "k")]})
    url = f"/admin/clients/{keyed['client_id']}"
    body = assert_error(admin.patch(url, json={"jwks": twice}, headers=AUTH), 400)
    assert "same kid" in body["error_description"], body
    assert admin.get(url, headers=AUTH).get_json()["jwks"] == keyed["jwks"]


@pytest.mark.parametrize("action", ["rotate-secret", "disable", "enable"])
def test_unknown_client_is_404(admin: Any, action: str) -> None:
    assert_error(
        admin.post(f"/admin/clients/no-such-client/{action}", headers=AUTH), 404, "not_found"
    )


@db_independent
def test_rotate_secret_takes_a_json_content_type_without_a_body(admin: Any) -> None:
    """A client library that sets Content-Type: application/json on every call and sends
    no body: no grace, as with no header (it was 400), while a body still counts."""
    client_id = admin.post("/admin/clients", json={"name": "r"}, headers=AUTH).get_json()[
        "client_id"
    ]
    headers = {**AUTH, "Content-Type": "application/json"}
    rotated = admin.post(f"/admin/clients/{client_id}/rotate-secret", headers=headers)
    assert rotated.status_code == 200, rotated.get_data(as_text=True)
    assert rotated.get_json()["previous_secret_expires_at"] is None
    graced = admin.post(
        f"/admin/clients/{client_id}/rotate-secret", json={"grace_seconds": 60}, headers=AUTH
    )
    assert graced.get_json()["previous_secret_expires_at"] is not None
    assert_error(
        admin.post(f"/admin/clients/{client_id}/rotate-secret", data="{", headers=headers),
        400,
        "invalid_request",
    )


def test_unknown_client_show_and_update_are_404(admin: Any) -> None:
    assert_error(admin.get("/admin/clients/no-such-client", headers=AUTH), 404, "not_found")
    assert_error(
        admin.patch("/admin/clients/no-such-client", json={"name": "x"}, headers=AUTH),
        404,
        "not_found",
    )


# -- bad requests ----------------------------------------------------------------------------


BAD_CREATE_BODIES: list[dict[str, Any]] = [
    {},
    {"name": ""},
    {"name": 5},
    {"name": None},
    {"name": "x", "surprise": 1},
    {"name": "x", "client_secret": "chosen-by-caller"},
    {"name": "x", "client_id": "chosen-by-caller"},
    {"name": "x", "audiences": AUD},
    {"name": "x", "audiences": [1]},
    {"name": "x", "audiences": ["has space"]},
    {"name": "x", "scopes": "sync"},
    {"name": "x", "scopes": ['bad"scope']},
    {"name": "x", "allowed_claims": ["iss"]},
    {"name": "x", "allowed_claims": ["Sub"]},  # a case-insensitive reader's sub
    {"name": "x", "fixed_claims": {"ISS": "https://elsewhere.example"}},
    {"name": "x", "allowed_claims": [{"a": 1}]},
    {"name": "x", "token_ttl": "600"},
    {"name": "x", "token_ttl": True},
    {"name": "x", "token_ttl": 1.5},
    {"name": "x", "token_ttl": 1e300},
    {"name": "x", "token_ttl": 0},
    {"name": "x", "token_ttl": 10**9},
    {"name": "x", "jwks": "not a set"},
    {"name": "x", "jwks": {"keys": []}},
    {"name": "x", "jwks_uri": 7},
    {"name": "x", "jwks_uri": "ftp://example.com/jwks"},
]


def test_create_rejects_bad_bodies(admin: Any) -> None:
    for body in BAD_CREATE_BODIES:
        response = admin.post("/admin/clients", json=body, headers=AUTH)
        assert response.status_code == 400, (body, response.get_data(as_text=True))
        assert_error(response, 400, "invalid_request")
    assert admin.get("/admin/clients", headers=AUTH).get_json()["clients"] == []


def _admits_null(schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    if types == "null" or (isinstance(types, list) and "null" in types):
        return True
    return any(_admits_null(s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


@db_independent
def test_a_null_member_is_taken_as_the_openapi_document_says(admin: Any) -> None:
    """ClientCreate: a member whose schema admits null, given as null, is one left out;
    one whose schema does not (require_sub, profile) is refused with 400, as schema-driven
    clients expect. The description said every optional member took null."""
    schema = admin.get("/openapi.json").get_json()["components"]["schemas"]["ClientCreate"]
    optional = set(schema["properties"]) - set(schema["required"])
    nullable = {field for field in optional if _admits_null(schema["properties"][field])}
    assert nullable
    assert optional - nullable == {"require_sub", "profile"}
    left_out = create(admin, name="plain")
    created = create(admin, name="nulls", **dict.fromkeys(nullable))
    volatile = {"client_id", "client_secret", "name", "created_at", "updated_at"}

    def kept(client: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in client.items() if k not in volatile}

    assert kept(created) == kept(left_out)
    for field in optional - nullable:
        response = admin.post("/admin/clients", json={"name": "x", field: None}, headers=AUTH)
        assert_error(response, 400, "invalid_request")


NOT_JSON_OBJECTS = [
    ("name=x", "application/x-www-form-urlencoded"),
    ('{"name": "x"', "application/json"),
    ('["name"]', "application/json"),
    ('"x"', "application/json"),
    ("null", "application/json"),
    ("", "application/json"),
    ('{"name": "x"}', "text/plain"),
]


def test_create_requires_a_json_object(admin: Any) -> None:
    for data, content_type in NOT_JSON_OBJECTS:
        response = admin.post("/admin/clients", data=data, content_type=content_type, headers=AUTH)
        assert response.status_code == 400, (data, response.get_data(as_text=True))
        assert_error(response, 400, "invalid_request")
    client = create(admin)
    response = admin.patch(
        f"/admin/clients/{client['client_id']}",
        data="[]",
        content_type="application/json",
        headers=AUTH,
    )
    assert_error(response, 400, "invalid_request")


BAD_UPDATE_BODIES: list[dict[str, Any]] = [
    {},
    {"enabled": False},
    {"jwks": {"keys": []}},
    {"name": 5},
    {"name": ""},
    {"audiences": "x"},
    {"scopes": [None]},
    {"token_ttl": "60"},
    {"token_ttl": False},
    {"token_ttl": 10**9},
]


def test_update_rejects_bad_bodies(admin: Any) -> None:
    client = create(admin, name="unchanged")
    for body in BAD_UPDATE_BODIES:
        response = admin.patch(f"/admin/clients/{client['client_id']}", json=body, headers=AUTH)
        assert response.status_code == 400, (body, response.get_data(as_text=True))
        assert_error(response, 400, "invalid_request")
    shown = admin.get(f"/admin/clients/{client['client_id']}", headers=AUTH).get_json()
    assert shown == {k: v for k, v in client.items() if k != "client_secret"}


@db_independent
@pytest.mark.parametrize(
    ("field", "empty"),
    [("audiences", []), ("scopes", []), ("allowed_claims", []), ("fixed_claims", {})],
)
def test_update_refuses_null_for_a_list_and_clears_it_with_an_empty_one(
    admin: Any, field: str, empty: Any
) -> None:
    """null is refused as it is for name and jwks_uri (it cleared the list in silence);
    an empty list or object is the way to clear."""
    values = {
        "audiences": [AUD],
        "scopes": ["sync"],
        "allowed_claims": ["tier"],
        "fixed_claims": {"tier": "pro"},
    }
    client = create(admin, **{field: values[field]})
    url = f"/admin/clients/{client['client_id']}"
    body = assert_error(admin.patch(url, json={field: None}, headers=AUTH), 400, "invalid_request")
    assert field in body["error_description"], body
    assert admin.get(url, headers=AUTH).get_json()[field] == values[field]
    cleared = admin.patch(url, json={field: empty}, headers=AUTH)
    assert cleared.status_code == 200, cleared.get_data(as_text=True)
    assert cleared.get_json()[field] == empty


@db_independent
def test_the_update_audit_event_names_the_fields_that_changed(
    admin: Any, rsa_private_key: Any
) -> None:
    """Names only: never a value, such as a fixed claim's or a key set's."""
    client = create(admin, name="before", scopes=["a"])
    url = f"/admin/clients/{client['client_id']}"
    changes = {"name": "after", "scopes": ["a"], "fixed_claims": {"tier": "secret-ish"}}
    assert admin.patch(url, json=changes, headers=AUTH).status_code == 200
    keyed = create(admin, jwks={"keys": [client_public_jwk(rsa_private_key, "k1")]})
    replaced = {"keys": [client_public_jwk(rsa_private_key, "k2")]}
    assert (
        admin.patch(
            f"/admin/clients/{keyed['client_id']}", json={"jwks": replaced}, headers=AUTH
        ).status_code
        == 200
    )
    events = admin.get("/admin/audit?action=client.updated", headers=AUTH).get_json()["events"]
    by_client = {e["client_id"]: e["detail"] for e in events}
    # scopes were given but are what they were: not a change.
    assert by_client[client["client_id"]]["changed"] == ["name", "fixed_claims"]
    assert "secret-ish" not in str(by_client)
    assert by_client[keyed["client_id"]]["changed"] == ["jwks"]
    assert client_public_jwk(rsa_private_key, "k2")["n"] not in str(by_client)


@db_independent
def test_unknown_fields_are_named_in_the_error(admin: Any) -> None:
    body = assert_error(
        admin.post("/admin/clients", json={"name": "x", "colour": "red"}, headers=AUTH),
        400,
        "invalid_request",
    )
    assert "colour" in body["error_description"]


@db_independent
def test_unknown_fields_are_named_only_when_plain(admin: Any) -> None:
    """A field name with control or bidirectional characters, or a long one, is not
    repeated in the error (as /token's profiles do it); the plain ones still are."""
    hostile = ["evil\u202egnp.exe", "line\nbreak", "x" * 5000, "bell\x07"]
    body = assert_error(
        admin.post(
            "/admin/clients",
            json={"name": "x", "colour": 1, **dict.fromkeys(hostile, 1)},
            headers=AUTH,
        ),
        400,
        "invalid_request",
    )
    said = body["error_description"]
    assert "colour" in said, said
    assert said.isprintable(), said
    assert len(said) < 200, said
    for name in hostile:
        assert name[:4] not in said.replace("colour", ""), said
    only_hostile = assert_error(
        admin.post("/admin/clients", json={"name": "x", hostile[0]: 1}, headers=AUTH), 400
    )
    assert only_hostile["error_description"].isprintable(), only_hostile
    assert "\u202e" not in only_hostile["error_description"]


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("x" * 201, "too long"),
        ("tab\there", "control characters"),
        ("del\x7f", "control characters"),
        ("lone \ud800", "not valid Unicode"),
        ("   ", "must not be empty"),
        # Only invisible characters: they look empty in every listing.
        ("\u200b", "must not be empty or only whitespace or invisible characters"),
        ("\ufeff\u202e", "must not be empty or only whitespace or invisible characters"),
        # A right-to-left override reorders what the operator reads after it.
        ("backend\u202eenilno", "bidirectional override"),
        ("a\u2066b", "bidirectional override"),
        # Kept as sent or refused, never stored other than given.
        (" padded", "must not begin or end with whitespace"),
        ("padded\u00a0", "must not begin or end with whitespace"),
    ],
)
def test_client_names_follow_the_single_line_text_rule(admin: Any, name: str, said: str) -> None:
    body = assert_error(
        admin.post("/admin/clients", json={"name": name}, headers=AUTH), 400, "invalid_request"
    )
    assert said in body["error_description"]
    assert admin.post("/admin/clients", json={"name": "y" * 200}, headers=AUTH).status_code == 201


@db_independent
def test_a_query_parameter_on_a_route_that_reads_none_is_refused(admin: Any) -> None:
    """It was ignored: ``POST /admin/tokens/revoke?client_id=A`` revoked the user's tokens
    of every client, ``POST /admin/clients?token_ttl=60`` made a client with the default
    lifetime, ``GET /admin/clients?enabled=false`` listed every client as if filtered.
    Refused with 400 before anything changes, as GET /admin/audit refuses an unknown
    filter; a wrong bearer still gets 401 first."""
    from tests.factories import issue_token

    a, b = create(admin, name="a"), create(admin, name="b")
    tokens = [issue_token(admin, (c["client_id"], c["client_secret"]), sub="alice") for c in (a, b)]
    ids = {"x": a["client_id"], "k": "nosuchkid"}
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/admin/clients"): {"name": "made"},
        ("PATCH", "/admin/clients/x"): {"name": "renamed"},
    }
    for method, path in [*ROUTES, ("POST", "/admin/tokens/revoke")]:
        if path == "/admin/audit":
            continue
        url = path.replace("/x", "/" + ids["x"]).replace("/keys/x/", "/keys/" + ids["k"] + "/")
        body = bodies.get((method, path))
        if path == "/admin/tokens/revoke":
            body = {"sub": "alice"}
            url += f"?client_id={a['client_id']}"
        else:
            url += "?enabled=false"
        response = admin.open(url, method=method, json=body, headers=AUTH)
        error = assert_error(response, 400, "invalid_request")
        assert error["error_description"].startswith("this route takes no query parameters")
        assert_unauthorized(admin.open(url, method=method, json=body))
    listed = admin.get("/admin/clients", headers=AUTH).get_json()["clients"]
    assert [(c["name"], c["enabled"]) for c in listed] == [("a", True), ("b", True)]
    for client, token in zip((a, b), tokens, strict=True):
        introspected = admin.post(
            "/introspect",
            data={"token": token},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert introspected.get_json()["active"] is True
    assert admin.get("/admin/audit?limit=1", headers=AUTH).status_code == 200


AUDIENCE_RULE = (
    "an audience must be at most 2048 characters without spaces, control characters or "
    "bidirectional override, embedding or isolate characters"
)


@db_independent
@pytest.mark.parametrize(
    "audience",
    [
        "https://sync.example/\x7f",  # DEL: refused before only below U+0020
        "https://sync.example/\x9b",  # C1 control (CSI)
        "https://sync.example/\u202eevil",  # right-to-left override
        "https://sync.example/\u2066x",  # left-to-right isolate
        "https://sync.example/\x1b[2J",  # C0, refused before too
    ],
    ids=["DEL", "C1", "RLO", "LRI", "ESC"],
)
def test_audiences_follow_the_control_character_rule(
    admin: Any, env_for: Any, db_url: str, audience: str
) -> None:
    """Every token of the client carries its audience in aud, shown by each sync server's
    log and console: DEL, C1 controls and the bidirectional controls were stored and
    issued, where a C0 control was refused. The CLI refuses them in the same words."""
    from tests.helpers import run_cli_here

    body = assert_error(
        admin.post("/admin/clients", json={"name": "x", "audiences": [audience]}, headers=AUTH),
        400,
        "invalid_request",
    )
    assert body["error_description"] == AUDIENCE_RULE
    client = create(admin, audiences=[AUD])
    body = assert_error(
        admin.patch(
            f"/admin/clients/{client['client_id']}", json={"audiences": [audience]}, headers=AUTH
        ),
        400,
        "invalid_request",
    )
    assert body["error_description"] == AUDIENCE_RULE
    shown = admin.get(f"/admin/clients/{client['client_id']}", headers=AUTH).get_json()
    assert shown["audiences"] == [AUD]
    result = run_cli_here(
        env_for(db_url), "clients", "create", "--name", "x", "--audience", audience
    )
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [f"authserver: error: {AUDIENCE_RULE}"]


JWKS_URI_CHARACTERS = (
    "jwks_uri must be an https:// URL without spaces, control characters or bidirectional "
    "override, embedding or isolate characters"
)


@db_independent
@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("https://keys.example/\x7fjwks", JWKS_URI_CHARACTERS),
        ("https://keys.example/\x9b2J", JWKS_URI_CHARACTERS),
        ("https://keys.example/\u202enosj.skwj", JWKS_URI_CHARACTERS),
        ("https://keys.example:0/jwks", "jwks_uri must be an https:// URL with a port from 1"),
    ],
    ids=["DEL", "C1", "RLO", "port-0"],
)
def test_a_jwks_uri_with_odd_characters_or_port_0_is_refused(
    admin: Any, env_for: Any, db_url: str, uri: str, said: str
) -> None:
    """The same mistake as the audiences' (only C0 controls were refused), and a port no
    server listens on: each was stored, and every authentication of the client failed or
    ``clients show`` printed the control to the operator's terminal."""
    from tests.helpers import run_cli_here

    body = assert_error(
        admin.post("/admin/clients", json={"name": "x", "jwks_uri": uri}, headers=AUTH),
        400,
        "invalid_request",
    )
    assert body["error_description"].startswith(said), body
    result = run_cli_here(env_for(db_url), "clients", "create", "--name", "x", "--jwks-uri", uri)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[0].startswith(f"authserver: error: {said}"), result.stderr
    assert admin.get("/admin/clients", headers=AUTH).get_json()["clients"] == []


REPEATED_NAMES = [
    # (path suffix, raw body, what the error names)
    ("", '{"name": "a", "name": "b"}', "more than once"),
    ("", '{"name": "x", "token_ttl": 60, "token_ttl": 3600}', "more than once"),
    ("", '{"name": "x", "fixed_claims": {"tier": "free", "tier": "pro"}}', "fixed_claims"),
    ("", '{"name": "x", "fixed_claims": {"t": {"a": [{"b": 1, "b": 2}]}}}', "fixed_claims"),
    ("/{id}", '{"scopes": ["a"], "scopes": ["a", "b"]}', "more than once"),
    ("/{id}", '{"fixed_claims": {"tier": "free", "tier": "pro"}}', "fixed_claims"),
    ("/{id}/rotate-secret", '{"grace_seconds": 0, "grace_seconds": 3600}', "more than once"),
]


@db_independent
@pytest.mark.parametrize(("suffix", "raw", "said"), REPEATED_NAMES)
def test_a_repeated_name_in_a_body_is_refused(admin: Any, suffix: str, raw: str, said: str) -> None:
    # json.loads keeps the last of repeated names in silence: the server stored one of two
    # values the request gave, where the operator's tool may have meant the other (/token
    # refuses a repeated parameter the same way).
    client = create(admin, name="unchanged")
    path = "/admin/clients" + suffix.replace("{id}", client["client_id"])
    method = admin.patch if suffix == "/{id}" else admin.post
    response = method(path, data=raw, content_type="application/json", headers=AUTH)
    body = assert_error(response, 400, "invalid_request")
    assert said in body["error_description"]
    listed = admin.get("/admin/clients", headers=AUTH).get_json()["clients"]
    assert listed == [{k: v for k, v in client.items() if k != "client_secret"}]


@db_independent
def test_a_repeated_name_in_a_revocation_is_refused(admin: Any) -> None:
    response = admin.post(
        "/admin/tokens/revoke",
        data='{"sub": "alice", "sub": "bob"}',
        content_type="application/json",
        headers=AUTH,
    )
    assert_error(response, 400, "invalid_request")


@db_independent
def test_a_compressed_body_is_refused_by_name(admin: Any) -> None:
    response = admin.post(
        "/admin/clients",
        data=gzip.compress(b'{"name": "x"}'),
        content_type="application/json",
        headers={**AUTH, "Content-Encoding": "gzip"},
    )
    body = assert_error(response, 400, "invalid_request")
    assert "Content-Encoding" in body["error_description"]


NOT_UTF8_BODIES = [
    # (raw body, Content-Type, what the error says)
    (b'{"name": "x"}', "application/json; charset=latin-1", "must be UTF-8"),
    (b'{"name": "x"}', "application/json; charset=UTF-16", "must be UTF-8"),
    ('{"name": "caf\u00e9"}'.encode("latin-1"), "application/json", "not valid UTF-8"),
    ('{"name": "x"}'.encode("utf-16"), "application/json", "not valid UTF-8"),
    ('{"name": "x"}'.encode("utf-16-le"), "application/json", "not valid UTF-8"),
    ('{"name": "x"}'.encode("utf-32"), "application/json", "not valid UTF-8"),
]


@db_independent
@pytest.mark.parametrize(
    ("raw", "content_type", "said"),
    NOT_UTF8_BODIES,
    ids=["latin-1-declared", "utf-16-declared", "latin-1-byte", "utf-16", "utf-16-le", "utf-32"],
)
def test_a_body_that_is_not_utf8_is_refused_as_such(
    admin: Any, raw: bytes, content_type: str, said: str
) -> None:
    """JSON is UTF-8 (RFC 8259 section 8.1), as at /token: another declared charset, and
    UTF-16 or UTF-32 that json.loads(bytes) would guess and read, are refused saying so."""
    response = admin.post("/admin/clients", data=raw, content_type=content_type, headers=AUTH)
    body = assert_error(response, 400, "invalid_request")
    assert said in body["error_description"], body
    assert "UTF-8" in body["error_description"], body
    assert admin.get("/admin/clients", headers=AUTH).get_json()["clients"] == []


@db_independent
@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/json; charset=UTF8"],
)
def test_a_utf8_body_is_read_with_or_without_its_charset(admin: Any, content_type: str) -> None:
    for raw in ('{"name": "caf\u00e9"}'.encode(), '\ufeff{"name": "caf\u00e9"}'.encode()):
        response = admin.post("/admin/clients", data=raw, content_type=content_type, headers=AUTH)
        assert response.status_code == 201, response.get_data(as_text=True)
        assert response.get_json()["name"] == "caf\u00e9"


@db_independent
def test_wrong_method_is_405_json(admin: Any) -> None:
    response = admin.put("/admin/clients", json={"name": "x"}, headers=AUTH)
    assert_error(response, 405)


# -- keys ----------------------------------------------------------------------------------


def test_keys_list_rotate_retire(admin: Any) -> None:
    listed = admin.get("/admin/keys", headers=AUTH)
    assert listed.status_code == 200
    keys = listed.get_json()["keys"]
    assert [k["state"] for k in keys] == ["current"]
    current = keys[0]["kid"]
    assert keys[0]["alg"] == "RS256"
    assert not ({"d", "p", "q", "private_pem", "pem"} & set(keys[0]))

    first = admin.post("/admin/keys/rotate", headers=AUTH)
    assert first.status_code == 201, first.get_data(as_text=True)
    assert first.get_json()["created"] is True
    assert first.get_json()["state"] == "next"
    assert first.get_json()["current_kid"] == current  # as `keys rotate --json` says it
    next_kid = first.get_json()["kid"]
    assert next_kid != current
    # Idempotent: the scheduled key is returned again, nothing new is created.
    again = admin.post("/admin/keys/rotate", headers=AUTH)
    assert again.status_code == 200
    assert again.get_json()["created"] is False
    assert again.get_json()["kid"] == next_kid
    kids = [k["kid"] for k in admin.get("/admin/keys", headers=AUTH).get_json()["keys"]]
    assert sorted(kids) == sorted([current, next_kid])
    # Published before it signs.
    jwks = {k["kid"] for k in admin.get("/.well-known/jwks.json").get_json()["keys"]}
    assert {current, next_kid} <= jwks

    retired = admin.post(f"/admin/keys/{current}/retire", headers=AUTH)
    assert retired.status_code == 200, retired.get_data(as_text=True)
    assert retired.get_json()["kid"] == current
    assert retired.get_json()["retired_at"]
    # The key that took over, as `keys retire --json` names it: next_kid is too young to be
    # promoted (published less than the JWKS max-age ago), so a new key signs.
    successor = retired.get_json()["current_kid"]
    assert successor not in (None, current, next_kid)
    # It stopped signing when it was retired, not at the handover it was planned with.
    assert retired.get_json()["signs_until"] == retired.get_json()["retired_at"]
    listed_retired = [
        k for k in admin.get("/admin/keys", headers=AUTH).get_json()["keys"] if k["kid"] == current
    ]
    assert [k["signs_until"] for k in listed_retired] == [retired.get_json()["retired_at"]]
    # The kid leaves the JWKS at once.
    jwks = {k["kid"] for k in admin.get("/.well-known/jwks.json").get_json()["keys"]}
    assert current not in jwks
    assert_error(admin.post(f"/admin/keys/{current}/retire", headers=AUTH), 409, "conflict")
    assert_error(admin.post("/admin/keys/no-such-kid/retire", headers=AUTH), 404, "not_found")
    # Tokens are still issued, by another key.
    client = create(admin)
    assert token_status(admin, client["client_id"], client["client_secret"])[0] == 200


@db_independent
@pytest.mark.parametrize(
    "kid", ["k" * 5000, "kid\u202eevil", "kid%0Anext"], ids=["5000-chars", "bidi", "newline"]
)
def test_an_unknown_kid_is_not_repeated_when_no_key_could_have_it(admin: Any, kid: str) -> None:
    """Only a kid that could be one is named in the 404, as a client id is: the message is
    not the place for 5000 characters, or for control or bidirectional ones."""
    body = assert_error(admin.post(f"/admin/keys/{kid}/retire", headers=AUTH), 404, "not_found")
    assert body["error_description"] == "no signing key with that kid"
    named = assert_error(admin.post("/admin/keys/no-such-kid/retire", headers=AUTH), 404)
    assert "no-such-kid" in named["error_description"]


@db_independent
@pytest.mark.parametrize(
    "client_id", ["c" * 5000, "id\u202eevil", "id%0Anext"], ids=["5000-chars", "bidi", "newline"]
)
def test_an_unknown_client_id_is_not_repeated_when_no_client_could_have_it(
    admin: Any, client_id: str
) -> None:
    """The same rule and wording as for a kid (``errors.not_found``)."""
    body = assert_error(admin.get(f"/admin/clients/{client_id}", headers=AUTH), 404, "not_found")
    assert body["error_description"] == "no client with that id"
    named = assert_error(admin.get("/admin/clients/no-such-id", headers=AUTH), 404)
    assert named["error_description"] == "no client with id 'no-such-id'"


def test_retire_is_seen_by_another_instance_at_once(admin: Any, admin_services: Services) -> None:
    other = make_services(admin_services.settings)
    try:
        other_http = create_app(services=other).test_client()
        kid = admin.get("/admin/keys", headers=AUTH).get_json()["keys"][0]["kid"]
        assert kid in {
            k["kid"] for k in other_http.get("/.well-known/jwks.json").get_json()["keys"]
        }
        assert admin.post(f"/admin/keys/{kid}/retire", headers=AUTH).status_code == 200
        other.key_ring.invalidate()  # the other instance's short key cache (key_cache_seconds)
        assert kid not in {
            k["kid"] for k in other_http.get("/.well-known/jwks.json").get_json()["keys"]
        }
    finally:
        other.close()


# -- audit ---------------------------------------------------------------------------------


def test_admin_actions_are_audited_as_admin_api(admin: Any) -> None:
    client = create(admin, name="audited")
    cid = client["client_id"]
    admin.patch(f"/admin/clients/{cid}", json={"name": "audited 2"}, headers=AUTH)
    admin.post(f"/admin/clients/{cid}/rotate-secret", headers=AUTH)
    admin.post(f"/admin/clients/{cid}/disable", headers=AUTH)
    admin.post(f"/admin/clients/{cid}/enable", headers=AUTH)
    admin.delete(f"/admin/clients/{cid}", headers=AUTH)
    admin.post("/admin/keys/rotate", headers=AUTH)

    response = admin.get(f"/admin/audit?client_id={cid}", headers=AUTH)
    assert response.status_code == 200
    events = response.get_json()["events"]
    actions = {e["action"] for e in events}
    assert {
        "client.created",
        "client.updated",
        "client.secret_rotated",
        "client.disabled",
        "client.enabled",
        "client.deleted",
    } <= actions, actions
    assert all(e["actor"] == "admin-api" for e in events), events
    assert all(e["client_id"] == cid for e in events)
    text = response.get_data(as_text=True)
    assert client["client_secret"] not in text

    keys = admin.get("/admin/audit?action=key.rotated", headers=AUTH).get_json()["events"]
    assert keys
    assert all(e["actor"] == "admin-api" for e in keys)
    limited = admin.get("/admin/audit?limit=2", headers=AUTH).get_json()["events"]
    assert len(limited) == 2


def test_tokens_are_audited_with_the_client_as_actor(admin: Any) -> None:
    client = create(admin, audiences=[AUD])
    response = admin.post(
        "/token",
        data={"grant_type": "client_credentials", "sub": "user-1"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 200
    access_token = response.get_json()["access_token"]
    events = admin.get(
        f"/admin/audit?action=token.issued&client_id={client['client_id']}", headers=AUTH
    )
    body = events.get_json()["events"]
    assert len(body) == 1
    assert body[0]["actor"] == f"client:{client['client_id']}"
    assert body[0]["sub"] == "user-1"
    assert access_token not in events.get_data(as_text=True)


@pytest.mark.parametrize(
    "sub",
    [
        "山田\u3000太郎",  # an ideographic space
        "ana\u00a0maria",  # a no-break space
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # an emoji joined by U+200D
        "user-\U0001faea",  # a character newer than this Python's Unicode tables
    ],
)
def test_audit_finds_every_sub_a_token_can_carry(admin: Any, sub: str) -> None:
    """The sub filter refused what str.isprintable() refuses ("sub is not a value any audit
    record has"), though /token issues tokens for such users and records them: the filter
    takes what a record can hold, and finds the event (on both databases)."""
    client = create(admin, audiences=[AUD])
    response = admin.post(
        "/token",
        data={"grant_type": "client_credentials", "sub": sub},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    found = admin.get("/admin/audit", query_string={"sub": sub}, headers=AUTH)
    assert found.status_code == 200, found.get_data(as_text=True)
    assert [(e["action"], e["sub"]) for e in found.get_json()["events"]] == [("token.issued", sub)]


@pytest.mark.parametrize("sub", ["u\x00", "u\nv", "x" * 256])
def test_audit_refuses_a_sub_no_record_can_hold(admin: Any, sub: str) -> None:
    body = assert_error(admin.get("/admin/audit", query_string={"sub": sub}, headers=AUTH), 400)
    assert body["error_description"] == "sub is not a value any audit record has"


@db_independent
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("limit=abc", "limit must be a whole number from 1 to 10000"),
        ("limit=0", "limit must be a whole number from 1 to 10000"),
        ("limit=-1", "limit must be a whole number from 1 to 10000"),
        ("limit=10001", "limit must be a whole number from 1 to 10000"),
        ("limit=99999999999999999999", "limit must be a whole number from 1 to 10000"),
        ("limit=" + "9" * 5000, "limit must be a whole number from 1 to 10000"),
        # int() reads these; a query string is ASCII digits.
        ("limit=1_0", "limit must be a whole number from 1 to 10000"),
        ("limit=%D9%A5", "limit must be a whole number from 1 to 10000"),
        # A filter misspelt (the CLI's --client) was ignored: every event came back.
        ("client=zzz", "unknown query parameter; known: client_id, sub, action"),
        ("limit=1&limit=2", "a query parameter is repeated"),
        ("since=yesterday", "since must be POSIX seconds, a date (2026-11-23"),
        ("since=nan", "since must be POSIX seconds, a date (2026-11-23"),
        ("since=" + "9" * 400, "since must be a finite number"),
        # float() read these as POSIX seconds, none of them the documented pattern.
        ("since=1e3", "since must be POSIX seconds, a date (2026-11-23"),
        ("since=1_000", "since must be POSIX seconds, a date (2026-11-23"),
        ("since=%EF%BC%95", "since must be POSIX seconds, a date (2026-11-23"),
        ("since=%205", "since must be POSIX seconds, a date (2026-11-23"),
        ("since=%201h", "since must be POSIX seconds, a date (2026-11-23"),
        # The form is right; the duration is longer than any may be.
        ("since=99999999999999999d", "since is out of range: a duration must be at most"),
        ("until=24856d", "until is out of range: a duration must be at most 2147483647"),
        ("action=zzz", "action must be one of: token.issued, token.revoked"),
        ("action=", "action must be one of: token.issued"),
        # No event has an empty client or user: "no events" read as "nothing happened".
        ("client_id=", "client_id must not be empty"),
        ("sub=", "sub must not be empty"),
    ],
)
def test_audit_rejects_bad_queries(admin: Any, query: str, names: str) -> None:
    """As the CLI does (``audit --action``, ``--limit``) and as the OpenAPI document says
    (limit at most 10000): not an empty list for an action that does not exist, nor every
    event for a filter it does not know."""
    body = assert_error(admin.get(f"/admin/audit?{query}", headers=AUTH), 400, "invalid_request")
    assert body["error_description"].startswith(names), body
    assert "zzz" not in body["error_description"]


@db_independent
def test_audit_since_takes_what_the_cli_takes(admin: Any) -> None:
    """A duration ago or a UTC date, like ``authserver audit --since``, and POSIX seconds,
    the API's own form."""
    created = create(admin)
    at = admin.get("/admin/audit?action=client.created", headers=AUTH).get_json()["events"][0]
    assert at["client_id"] == created["client_id"]

    def ids(since: str) -> list[str]:
        response = admin.get(f"/admin/audit?action=client.created&since={since}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [e["client_id"] for e in response.get_json()["events"]]

    assert ids("1h") == [created["client_id"]]
    assert ids("2000-01-01") == [created["client_id"]]
    assert ids("2000-01-01T00:00:00Z") == [created["client_id"]]
    assert ids("946684800") == [created["client_id"]]
    assert ids("2999-01-01") == []
    assert ids("32503680000") == []  # 3000-01-01


@db_independent
def test_audit_since_is_read_by_the_pattern_the_openapi_document_gives(admin: Any) -> None:
    from authserver.web.admin import SINCE_PATTERN

    spec = admin.get("/openapi.json").get_json()
    [since] = [
        p for p in spec["paths"]["/admin/audit"]["get"]["parameters"] if p["name"] == "since"
    ]
    assert since["schema"]["pattern"] == "^(" + SINCE_PATTERN.pattern + ")$"


def test_whole_numbers_written_with_a_point_are_their_numbers(admin: Any) -> None:
    """JSON has one type of number: a token_ttl of 600.0 is 600, a grace_seconds of
    3600.0 is an hour (some encoders write every number with a point)."""
    client = create(admin, name="pointed", token_ttl=600.0)
    assert client["token_ttl"] == 600
    assert isinstance(client["token_ttl"], int)
    rotated = admin.post(
        f"/admin/clients/{client['client_id']}/rotate-secret",
        json={"grace_seconds": 3600.0},
        headers=AUTH,
    )
    assert rotated.status_code == 200, rotated.get_data(as_text=True)
    status, _ = token_status(admin, client["client_id"], client["client_secret"])
    assert status == 200  # the old secret, within its hour of grace
    refused = admin.post(
        f"/admin/clients/{client['client_id']}/rotate-secret",
        json={"grace_seconds": 0.5},
        headers=AUTH,
    )
    assert refused.status_code == 400


#: Scopes that take exactly MAX_REGISTERED_BYTES in a token ({"scope":"..."}).
FITTING_SCOPES = [*(f"scope-{i:04d}" for i in range(185)), "a"]


def too_large(size: int) -> str:
    """The words of the CLI and the admin API for a registration of *size* bytes."""
    return (
        f"scopes, audiences and fixed claims together take {size} bytes in a token, more than "
        "the 2048 they may (tokens travel in an HTTP header): register fewer or shorter ones"
    )


@db_independent
def test_scopes_audiences_and_fixed_claims_fit_a_token_together(admin: Any) -> None:
    """Nothing bounded how many scopes or audiences a client registered, and a token gets
    all its scopes by default: 4,000 scopes made a 74 KB token, which no sync server's HTTP
    server takes in a header. The CLI says the same words (tests/e2e/test_cli.py)."""
    assert registered_size(tuple(FITTING_SCOPES), (), {}) == MAX_REGISTERED_BYTES
    created = create(admin, scopes=FITTING_SCOPES)
    body = assert_error(
        admin.post(
            "/admin/clients", json={"name": "b", "scopes": [*FITTING_SCOPES, "s"]}, headers=AUTH
        ),
        400,
        "invalid_request",
    )
    assert body["error_description"] == too_large(2050)
    # Audiences and fixed claims count with the scopes: one more byte of either is refused.
    path = f"/admin/clients/{created['client_id']}"
    for change in ({"audiences": ["a"]}, {"fixed_claims": {"f": 1}}):
        refused = assert_error(admin.patch(path, json=change, headers=AUTH), 400)
        assert refused["error_description"].startswith("scopes, audiences and fixed claims")
    shown = admin.get(path, headers=AUTH).get_json()
    assert (shown["audiences"], shown["fixed_claims"]) == ([], {})
    assert admin.patch(path, json={"scopes": FITTING_SCOPES[2:]}, headers=AUTH).status_code == 200
    assert admin.patch(path, json={"audiences": ["a"]}, headers=AUTH).status_code == 200


@db_independent
def test_allowed_claims_are_bounded(admin: Any) -> None:
    """Nothing bounded them: 8,000 names were registered, each then checked on every token
    request and kept in every cache, though a request's claims could name a few hundred."""
    names = [f"claim{i}" for i in range(MAX_ALLOWED_CLAIMS + 1)]
    body = assert_error(
        admin.post("/admin/clients", json={"name": "b", "allowed_claims": names}, headers=AUTH),
        400,
        "invalid_request",
    )
    assert body["error_description"] == "at most 256 allowed claims"
    created = create(admin, allowed_claims=names[:-1])
    assert len(created["allowed_claims"]) == MAX_ALLOWED_CLAIMS
    patched = admin.patch(
        f"/admin/clients/{created['client_id']}", json={"allowed_claims": names}, headers=AUTH
    )
    assert assert_error(patched, 400)["error_description"] == "at most 256 allowed claims"


@db_independent
def test_a_claim_is_fixed_or_allowed_not_both(admin: Any) -> None:
    """No request may send a fixed claim: allowing it as well was accepted, and made every
    request that sent it fail."""
    body = assert_error(
        admin.post(
            "/admin/clients",
            json={"name": "both", "fixed_claims": {"tier": "pro"}, "allowed_claims": ["tier"]},
            headers=AUTH,
        ),
        400,
        "invalid_request",
    )
    assert (
        body["error_description"] == "a claim cannot be both fixed and allowed in a request: tier"
    )
    created = admin.post(
        "/admin/clients", json={"name": "fixed", "fixed_claims": {"tier": "pro"}}, headers=AUTH
    ).get_json()
    patched = admin.patch(
        f"/admin/clients/{created['client_id']}", json={"allowed_claims": ["tier"]}, headers=AUTH
    )
    assert_error(patched, 400, "invalid_request")
    shown = admin.get(f"/admin/clients/{created['client_id']}", headers=AUTH).get_json()
    assert shown["allowed_claims"] == []


@db_independent
def test_a_fixed_claim_changed_to_an_equal_python_value_is_a_change(admin: Any) -> None:
    """1 to true is a change every token of the client shows (Python's 1 == True said
    "changed": []); 1 to 1.0 is the same JSON number, no change, so nothing is recorded."""
    client = create(admin, fixed_claims={"admin": 1, "seats": [2]})
    url = f"/admin/clients/{client['client_id']}"
    for fixed in ({"admin": True, "seats": [2]}, {"admin": True, "seats": [2.0]}):
        assert admin.patch(url, json={"fixed_claims": fixed}, headers=AUTH).status_code == 200
    events = admin.get("/admin/audit?action=client.updated", headers=AUTH).get_json()["events"]
    assert [e["detail"]["changed"] for e in reversed(events)] == [["fixed_claims"]]
    stored = admin.get(url, headers=AUTH).get_json()["fixed_claims"]
    assert stored == {"admin": True, "seats": [2.0]}


class _CountedText(str):
    """A string that counts how often it is compared for equality."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _CountedText.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


@db_independent
def test_repeated_list_values_are_found_in_linear_time(services: Services) -> None:
    """A client's lists keep the first of each value, in order, and finding the repeats
    compares each value a bounded number of times, not once per value before it."""
    values = [_CountedText(f"scope-{i}") for i in range(5000)]
    _CountedText.compared = 0
    with services.unit_of_work(), pytest.raises(InvalidInput, match="bytes in a token"):
        services.clients.create(name="many", scopes=values)
    assert _CountedText.compared <= 2 * len(values), _CountedText.compared
    with services.unit_of_work():
        client, _ = services.clients.create(
            name="repeats", scopes=["b", "a", "b", "c", "a"], audiences=["x", "x"]
        )
    assert client.policy.scopes == ("b", "a", "c")
    assert client.policy.audiences == ("x",)


def _events(admin: Any, action: str, client_id: str) -> list[dict[str, Any]]:
    query = f"/admin/audit?action={action}&client_id={client_id}"
    return admin.get(query, headers=AUTH).get_json()["events"]  # type: ignore[no-any-return]


def _clients_version(svc: Services) -> int:
    """The counter every worker's client cache is checked against (or, on PostgreSQL,
    whose announcement empties it)."""
    return svc.db.read_counter(CLIENTS_VERSION)


def test_an_update_that_changes_nothing_is_answered_and_not_recorded(
    admin: Any, admin_services: Services, settings: Settings, env_for: Any
) -> None:
    """A PATCH (or ``clients update``) giving every field as it is answers the client as
    it stands, updated_at included, and records no client.updated event: the audit trail
    says what an operator changed, and a script applying its configuration on every run
    changes nothing on the runs that change nothing. A real change is recorded once."""
    env = env_for(settings.database_url)
    client = create(admin, name="same", scopes=["a", "b"], token_ttl=60)
    cid = client["client_id"]
    url = f"/admin/clients/{cid}"
    shown = admin.get(url, headers=AUTH).get_json()
    version = _clients_version(admin_services)
    same = {"name": "same", "scopes": ["a", "b", "a"], "token_ttl": 60, "require_sub": False}
    answer = admin.patch(url, json=same, headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == shown
    by_cli = cli_json_here(
        env, "clients", "update", cid, "--name", "same", "--scope", "a", "--scope", "b"
    )
    assert by_cli == shown
    assert _events(admin, "client.updated", cid) == []
    # Nor is any worker's cache of clients emptied: the version they check is unmoved.
    assert _clients_version(admin_services) == version
    changed = admin.patch(url, json={"name": "other", "token_ttl": 60}, headers=AUTH)
    assert changed.get_json()["name"] == "other"
    assert _clients_version(admin_services) > version
    (event,) = _events(admin, "client.updated", cid)
    assert event["detail"]["changed"] == ["name"]


def test_disable_and_enable_say_what_happened_once(
    admin: Any, admin_services: Services, settings: Settings, env_for: Any
) -> None:
    """Disabling a disabled client (or enabling an enabled one), through the admin API or
    the CLI, answers the client as it stands and records nothing: one client.disabled
    event and one revocation of its tokens per real disable."""
    env = env_for(settings.database_url)
    client = create(admin, audiences=[AUD])
    cid, secret = client["client_id"], client["client_secret"]
    token_response(admin, (cid, secret))
    url = f"/admin/clients/{cid}"
    first = admin.post(f"{url}/disable", headers=AUTH)
    assert first.status_code == 200
    assert first.get_json()["enabled"] is False
    version = _clients_version(admin_services)
    again = admin.post(f"{url}/disable", headers=AUTH)
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert cli_json_here(env, "clients", "disable", cid) == first.get_json()
    assert _clients_version(admin_services) == version
    assert len(_events(admin, "client.disabled", cid)) == 1
    enabled = admin.post(f"{url}/enable", headers=AUTH).get_json()
    assert enabled["enabled"] is True
    assert admin.post(f"{url}/enable", headers=AUTH).get_json() == enabled
    assert cli_json_here(env, "clients", "enable", cid) == enabled
    assert len(_events(admin, "client.enabled", cid)) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_disables_at_once_disable_and_record_once(
    admin_services: Services, settings: Settings
) -> None:
    """Two operators (or a retried request) disabling one client at the same moment, from
    two processes' worth of services on PostgreSQL: each answers the client disabled, and
    the trail holds one client.disabled event, its tokens revoked once."""
    admin = create_app(services=admin_services).test_client()
    client = create(admin, audiences=[AUD])
    cid = client["client_id"]
    tokens = [token_response(admin, (cid, client["client_secret"])) for _ in range(3)]
    others = [make_services(settings.replace(admin_token=ADMIN_TOKEN)) for _ in range(2)]
    start = threading.Barrier(2)
    answers: list[Any] = []
    # The apps are built here, one after the other: Werkzeug compiles each route with
    # ast.parse, and CPython 3.11's AST recursion counter is not thread-safe (two apps
    # built at once failed with "AST constructor recursion depth mismatch" in a CI run).
    clients = [create_app(services=svc).test_client() for svc in others]

    def disable(http: Any) -> None:
        start.wait()
        answers.append(http.post(f"/admin/clients/{cid}/disable", headers=AUTH))

    try:
        threads = [threading.Thread(target=disable, args=(http,)) for http in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for svc in others:
            svc.close()
    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.get_json()["enabled"] is False for a in answers)
    assert len(_events(admin, "client.disabled", cid)) == 1
    with admin_services.unit_of_work():
        for body in tokens:
            claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
            assert admin_services.status_lists.is_revoked(claims)


def test_a_name_with_whitespace_at_either_end_is_refused_by_api_and_cli(
    admin: Any, settings: Settings, env_for: Any
) -> None:
    """Refused with the same words by the admin API (create and PATCH) and the CLI
    (create and update), and nothing is stored or changed; a name is kept as sent."""
    env = env_for(settings.database_url)
    said = "name must not begin or end with whitespace"
    for name in (" lead", "trail ", "\u3000both\u3000"):
        refused = assert_error(admin.post("/admin/clients", json={"name": name}, headers=AUTH), 400)
        assert said in refused["error_description"]
        cli = run_cli_here(env, "clients", "create", "--name", name)
        assert cli.returncode != 0
        assert said in cli.stderr
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    client = create(admin, name="inner  spaces kept")
    assert client["name"] == "inner  spaces kept"
    cid = client["client_id"]
    refused = assert_error(
        admin.patch(f"/admin/clients/{cid}", json={"name": "x "}, headers=AUTH), 400
    )
    assert said in refused["error_description"]
    cli = run_cli_here(env, "clients", "update", cid, "--name", " x")
    assert cli.returncode != 0
    assert said in cli.stderr
    listed = admin.get("/admin/clients", headers=AUTH).get_json()["clients"]
    assert [c["name"] for c in listed] == ["inner  spaces kept"]


def test_the_cli_and_the_api_read_a_duration_ago_by_the_services_clock(
    admin: Any,
    settings: Settings,
    env_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """``audit --since 2d`` and ``?since=2d`` count back from the same clock, the
    services' (the CLI read the system's own), so with that clock three days ahead the
    event of a moment ago is before "2 days ago" for both, and an out-of-range duration
    is said to be out of range, on one line."""
    created = create(admin)
    ahead = FixedClock(time.time() + 3 * 86400)
    ahead_services = make_services(settings.replace(admin_token=ADMIN_TOKEN), clock=ahead)
    request.addfinalizer(ahead_services.close)
    later = create_app(services=ahead_services).test_client()
    monkeypatch.setattr(container, "SystemClock", lambda: ahead)
    env = env_for(settings.database_url)

    def api(query: str) -> list[str]:
        response = later.get(f"/admin/audit?action=client.created&{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [e["client_id"] for e in response.get_json()["events"]]

    def cli(*args: str) -> list[str]:
        events = cli_json_here(env, "audit", "--action", "client.created", *args)["events"]
        return [e["client_id"] for e in events]

    assert api("since=2d") == cli("--since", "2d") == []
    assert api("until=2d") == cli("--until", "2d") == [created["client_id"]]
    assert api("since=4d") == cli("--since", "4d") == [created["client_id"]]
    refused = run_cli_here(env, "audit", "--since", "99999999999999999d")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "authserver: error: --since: out of range: a duration must be at most 2147483647 "
        "seconds (about 68 years)"
    ]
