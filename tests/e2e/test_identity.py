"""Whom a token is for (docs/reference.md "The access token": identity values are non-empty;
``email``/``name`` never come without ``sub``), and the per-client ``require_sub`` policy
from the CLI, the admin API and the database to ``POST /token``."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest

from authserver.container import Services
from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services
from tests.e2e.test_token import assert_error
from tests.e2e.test_token import basic
from tests.e2e.test_token import claims_of
from tests.e2e.test_token import post
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "identity-tests-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def auth(register: Callable[..., tuple[str, str]]) -> str:
    return basic(*register(allowed_claims=["libraryId"]))


# -- identity values ----------------------------------------------------------------------


UNREADABLE = [
    "",
    " ",
    "\t",
    "   ",
    "\u3000",
    "\u00a0",
    "\u200b",
    "\ufeff\u200d",
    "\u3164",  # a Hangul filler: a letter that shows nothing
    "\u2800",  # the blank Braille pattern
    "\u0301",  # a combining mark with nothing to combine with
    "user-1\u202e24-resu",  # not blank, but shown reordered: another user than it is
]


@db_independent
@pytest.mark.parametrize("field", ["sub", "email", "name"])
@pytest.mark.parametrize("value", [v for v in UNREADABLE if v], ids=repr)
def test_blank_or_unreadable_identity_values_are_refused(
    http: Any, auth: str, field: str, value: str
) -> None:
    with_sub = {} if field == "sub" else {"sub": "user-1"}
    for body in (
        {"grant_type": "client_credentials", **with_sub, field: value},
        {"grant_type": "client_credentials", **with_sub, "claims": {field: value}},
    ):
        assert_error(post(http, body=body, auth=auth), 400, "invalid_request")
    form = {"grant_type": "client_credentials", **with_sub, field: value}
    assert_error(post(http, form=form, auth=auth), 400, "invalid_request")


@db_independent
@pytest.mark.parametrize("empty", ["", None], ids=["empty-string", "null"])
@pytest.mark.parametrize("field", ["sub", "email", "name"])
def test_an_empty_identity_in_a_json_body_is_refused(
    http: Any, auth: str, field: str, empty: str | None
) -> None:
    """In a JSON body an empty string or ``null`` is a value, at the top level as inside
    ``claims``: an empty identity is refused, never read as "no user" (a client's own token
    for a backend whose user variable was empty or whose user lookup came back ``null``).
    RFC 6749 §3.1's "sent without a value ... omitted" holds in JSON for OAuth's own
    parameters only (``scope``, ``audience``, ...)."""
    with_sub = {} if field == "sub" else {"sub": "user-1"}
    for body in (
        {"grant_type": "client_credentials", **with_sub, field: empty},
        {"grant_type": "client_credentials", **with_sub, "claims": {field: empty}},
    ):
        error = assert_error(post(http, body=body, auth=auth), 400, "invalid_request")
        assert field in error["error_description"]
    form = {
        "grant_type": "client_credentials",
        **with_sub,
        "claims": json.dumps({field: ""}),
    }
    assert_error(post(http, form=form, auth=auth), 400, "invalid_request")


@db_independent
def test_empty_parameters_of_a_form_and_oauth_parameters_of_json_count_as_absent(
    http: Any, auth: str
) -> None:
    """RFC 6749 §3.1: in a form body every parameter sent without a value is omitted
    (``sub=`` included: ``--require-sub`` is how a client refuses it); in a JSON body the
    OAuth parameters are."""
    form = {"grant_type": "client_credentials", "sub": "", "scope": ""}
    claims = claims_of(post(http, form=form, auth=auth))
    assert claims["sub"] == claims["client_id"]
    body = {"grant_type": "client_credentials", "sub": "user-1", "scope": "", "audience": ""}
    claims = claims_of(post(http, body=body, auth=auth))
    assert claims["sub"] == "user-1"
    body = {"grant_type": "client_credentials", "sub": "user-1", "scope": None, "resource": None}
    claims = claims_of(post(http, body=body, auth=auth))
    assert claims["sub"] == "user-1"


@db_independent
def test_a_null_claims_object_is_refused(http: Any, auth: str) -> None:
    """``claims`` carries the identity in the JSON shape vendors' backends send: ``null``
    there is no object, refused like any other, never read as "no claims, no user"."""
    body = {"grant_type": "client_credentials", "claims": None}
    error = assert_error(post(http, body=body, auth=auth), 400, "invalid_request")
    assert error["error_description"] == "claims must be a JSON object"


@db_independent
@pytest.mark.parametrize(
    "params",
    [
        {"email": "a@example.com"},
        {"name": "Ada"},
        {"email": "a@example.com", "name": "Ada"},
        {"claims": {"email": "a@example.com"}},
        {"claims": {"name": "Ada", "libraryId": "lib-1"}},
    ],
    ids=["email", "name", "both", "claims-email", "claims-name"],
)
def test_email_or_name_without_sub_is_refused(http: Any, auth: str, params: dict[str, Any]) -> None:
    """Without ``sub`` the token's subject is the client itself: a user's email on it
    would merge every user of the backend into one identity at the sync server."""
    response = post(http, body={"grant_type": "client_credentials", **params}, auth=auth)
    body = assert_error(response, 400, "invalid_request")
    assert "sub" in body["error_description"]


@db_independent
def test_a_request_without_identity_still_gets_the_clients_own_token(
    http: Any, auth: str, register: Callable[..., tuple[str, str]]
) -> None:
    """RFC 9068 client tokens: no user at all is still fine for a client that does not
    require one."""
    claims = claims_of(post(http, form={"grant_type": "client_credentials"}, auth=auth))
    assert claims["sub"] == claims["client_id"]
    assert "email" not in claims
    claims = claims_of(
        post(
            http,
            body={"grant_type": "client_credentials", "claims": {"libraryId": "lib-1"}},
            auth=auth,
        )
    )
    assert claims["libraryId"] == "lib-1"


@db_independent
def test_identity_values_with_surrounding_text_are_kept_as_given(http: Any, auth: str) -> None:
    claims = claims_of(
        post(
            http,
            form={"grant_type": "client_credentials", "sub": " user 1 ", "name": "Ada L"},
            auth=auth,
        )
    )
    assert claims["sub"] == " user 1 "


# -- require_sub --------------------------------------------------------------------------


def test_require_sub_refuses_requests_without_a_user(
    http: Any, register: Callable[..., tuple[str, str]], services: Services
) -> None:
    client_id, secret = register(require_sub=True)
    auth = basic(client_id, secret)
    response = post(http, form={"grant_type": "client_credentials"}, auth=auth)
    body = assert_error(response, 400, "invalid_request")
    assert "sub" in body["error_description"]
    assert claims_of(post(http, form={"grant_type": "client_credentials", "sub": "u"}, auth=auth))
    # Turned off, the same request is the client's own token again; the change is seen
    # by the very next request (the client cache is validated against the store).
    with services.unit_of_work():
        services.clients.update(client_id, require_sub=False)
    claims = claims_of(post(http, form={"grant_type": "client_credentials"}, auth=auth))
    assert claims["sub"] == client_id


@pytest.mark.parametrize("require_sub", [False, True], ids=["plain", "require-sub"])
def test_a_user_named_like_the_client_is_refused(
    http: Any, register: Callable[..., tuple[str, str]], require_sub: bool
) -> None:
    """A ``sub`` equal to the client's own ``client_id`` (which every token carries, so
    anyone can choose it as a user name) made a token no sync server can tell from the
    client's own, and gave a ``--require-sub`` client its own token after all."""
    client_id, secret = register(require_sub=require_sub, allowed_claims=["libraryId"])
    auth = basic(client_id, secret)
    for request in (
        {"form": {"grant_type": "client_credentials", "sub": client_id}},
        {"body": {"grant_type": "client_credentials", "claims": {"sub": client_id}}},
    ):
        error = assert_error(post(http, auth=auth, **request), 400, "invalid_request")
        assert "client_id" in error["error_description"]
    # Another client's id is a user like any other (its tokens carry this client_id).
    other_id, _ = register()
    form = {"grant_type": "client_credentials", "sub": other_id}
    assert claims_of(post(http, form=form, auth=auth))["sub"] == other_id


def test_require_sub_is_stored_and_read_back(services: Services, settings: Settings) -> None:
    with services.unit_of_work():
        client, _ = services.clients.create(name="strict", require_sub=True)
        plain, _ = services.clients.create(name="plain")
    other = make_services(settings)  # another process's view: a fresh read of the row
    try:
        with other.unit_of_work():
            assert other.clients.get(client.client_id).policy.require_sub is True
            assert other.clients.get(plain.client_id).policy.require_sub is False
            listed = {c.client_id: c.policy.require_sub for c in other.clients.list()}
        assert listed == {client.client_id: True, plain.client_id: False}
        assert other.clients.find(client.client_id).policy.require_sub is True  # type: ignore[union-attr]
    finally:
        other.close()


@pytest.fixture
def admin(settings: Settings) -> Iterator[Any]:
    svc = make_services(settings.replace(admin_token=ADMIN_TOKEN))
    yield create_app(services=svc).test_client()
    svc.close()


def test_admin_api_sets_and_clears_require_sub(admin: Any) -> None:
    created = admin.post("/admin/clients", json={"name": "b", "require_sub": True}, headers=ADMIN)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["require_sub"] is True
    client_id, secret = created.get_json()["client_id"], created.get_json()["client_secret"]
    refused = post(admin, form={"grant_type": "client_credentials"}, auth=basic(client_id, secret))
    assert_error(refused, 400, "invalid_request")
    patched = admin.patch(f"/admin/clients/{client_id}", json={"require_sub": False}, headers=ADMIN)
    assert patched.status_code == 200, patched.get_data(as_text=True)
    assert patched.get_json()["require_sub"] is False
    shown = admin.get(f"/admin/clients/{client_id}", headers=ADMIN).get_json()
    assert shown["require_sub"] is False
    assert claims_of(
        post(admin, form={"grant_type": "client_credentials"}, auth=basic(client_id, secret))
    )
    default = admin.post("/admin/clients", json={"name": "c"}, headers=ADMIN).get_json()
    assert default["require_sub"] is False


@db_independent
@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_admin_api_refuses_a_non_boolean_require_sub(admin: Any, value: Any) -> None:
    response = admin.post("/admin/clients", json={"name": "b", "require_sub": value}, headers=ADMIN)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_request"


def test_cli_require_sub_on_create_and_update(
    env_for: Callable[..., dict[str, str]], db_url: str, services: Services, http: Any
) -> None:
    env = env_for(db_url)
    created = cli_json_here(env, "clients", "create", "--name", "strict", "--require-sub")
    assert created["require_sub"] is True
    auth = basic(created["client_id"], created["client_secret"])
    assert_error(
        post(http, form={"grant_type": "client_credentials"}, auth=auth), 400, "invalid_request"
    )
    updated = cli_json_here(env, "clients", "update", created["client_id"], "--no-require-sub")
    assert updated["require_sub"] is False
    assert claims_of(post(http, form={"grant_type": "client_credentials"}, auth=auth))
    # Leaving the option out changes nothing.
    renamed = cli_json_here(env, "clients", "update", created["client_id"], "--name", "renamed")
    assert renamed["require_sub"] is False
    shown = run_cli_here(env, "clients", "show", created["client_id"])
    assert "require_sub" in shown.stdout
    plain = cli_json_here(env, "clients", "create", "--name", "plain")
    assert plain["require_sub"] is False
