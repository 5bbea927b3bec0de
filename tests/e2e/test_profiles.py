"""Profiles end to end (issue 16): each dialect's exact request gets that dialect's exact
response, through the whole app (Flask test client, SQLite and PostgreSQL); the policy
checks still apply; the stream path authenticates by Bearer secret.

tests/e2e/test_profiles_live.py does the same through a real ``authserver serve`` and
feeds the answers to the vendors' own client code in Node.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.factories import UNKNOWN_KEY_TYPE_PEM

pytestmark = pytest.mark.e2e

AUD = "https://sync.example"
STREAM_PATH = "/auth/v1/access-tokens"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def post_json(
    http: Any, body: dict[str, Any], *, auth: str | None = None, path: str = "/token"
) -> Any:
    headers = {"Authorization": auth} if auth else {}
    return http.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def test_the_silent_mis_issue_is_refused(http: Any, register: Callable[..., Any]) -> None:
    """A stream-dialect body sent with Basic to /token by an oauth2 client used to get a
    token for the client itself, with the default lifetime and every scope."""
    cid, secret = register(audiences=[AUD], scopes=["media", "chat"], token_ttl=86400)
    response = post_json(
        http,
        {"grant_type": "client_credentials", "ttl": 600, "userId": "viewer-1", "scopes": ["media"]},
        auth=basic(cid, secret),
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert "scopes, ttl, userId" in body["error_description"]


def test_dexie(http: Any, register: Callable[..., Any]) -> None:
    cid, secret = register(audiences=[AUD], scopes=["ACCESS_DB"], profile="dexie", token_ttl=3600)
    response = post_json(
        http,
        {
            "grant_type": "client_credentials",
            "scopes": ["ACCESS_DB"],
            "client_id": cid,
            "client_secret": secret,
            "claims": {"sub": "u1", "email": "u1@example.com", "name": "U One"},
            "expires_in": "2d",  # above the client's hour: clamped, and said so
        },
    )
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"type", "claims", "accessToken", "accessTokenExpiration", "userType"}
    claims = claims_of(body["accessToken"])
    assert body["type"] == "tokens"
    assert body["userType"] == "prod"
    assert body["accessTokenExpiration"] == claims["exp"] * 1000
    assert claims["exp"] - claims["iat"] == 3600
    assert (claims["sub"], claims["email"], claims["name"]) == ("u1", "u1@example.com", "U One")
    assert claims["scope"] == "ACCESS_DB"
    assert body["claims"] == claims


def test_profiles_keep_the_policy_checks(http: Any, register: Callable[..., Any]) -> None:
    cid, secret = register(audiences=[AUD], scopes=["ACCESS_DB"], profile="dexie")
    base = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
    unregistered = post_json(http, {**base, "scopes": ["MANAGE_DB"], "claims": {"sub": "u"}})
    assert unregistered.get_json()["error"] == "invalid_scope"
    not_allowed = post_json(http, {**base, "claims": {"sub": "u", "tenant": "t"}})
    assert not_allowed.get_json()["error"] == "invalid_request"
    reserved = post_json(http, {**base, "claims": {"sub": "u", "iss": "evil"}})
    assert reserved.get_json()["error"] == "invalid_request"
    wrong_secret = post_json(http, {**base, "client_secret": secret + "x", "claims": {"sub": "u"}})
    assert wrong_secret.status_code == 401


def test_verdant_with_a_fixed_sync_url(http: Any, register: Callable[..., Any]) -> None:
    cid, secret = register(
        audiences=[AUD],
        profile="verdant",
        allowed_claims=["lib", "role", "type", "file"],
        fixed_claims={"url": "wss://sync.example/lofi"},
    )
    request = {
        "grant_type": "client_credentials",
        "userId": "u1",
        "libraryId": "lib-1",
        "role": "owner",
    }
    response = post_json(http, request, auth=basic(cid, secret))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"accessToken", "syncEndpoint", "expiresIn"}
    claims = claims_of(body["accessToken"])
    assert claims["sub"] == "u1"
    assert claims["lib"] == "lib-1"
    assert claims["type"] == 0
    assert claims["url"] == body["syncEndpoint"] == "wss://sync.example/lofi"
    same = post_json(
        http, {**request, "syncEndpoint": "wss://sync.example/lofi"}, auth=basic(cid, secret)
    )
    assert same.status_code == 200
    other = post_json(
        http, {**request, "syncEndpoint": "wss://evil.example"}, auth=basic(cid, secret)
    )
    assert other.status_code == 400
    assert "url is a fixed claim" in other.get_json()["error_description"]


def test_twilio(http: Any, register: Callable[..., Any]) -> None:
    cid, secret = register(
        audiences=[AUD], profile="twilio", allowed_claims=["grants"], token_ttl=86400
    )
    response = post_json(
        http,
        {
            "grant_type": "client_credentials",
            "identity": "alice",
            "grants": {"data_sync": {"service_sid": "IS0123"}},
        },
        auth=basic(cid, secret),
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"identity", "token", "ttl"}
    claims = claims_of(body["token"])
    assert body["identity"] == claims["sub"] == "alice"
    assert claims["grants"] == {"identity": "alice", "data_sync": {"service_sid": "IS0123"}}
    assert body["ttl"] == claims["exp"] - claims["iat"] == 3600  # Twilio's default


@pytest.mark.parametrize(
    ("profile", "body"),
    [
        ("twilio", {"identity": "alice", "nbf": None, "region": None}),
        (
            "verdant",
            {
                "userId": "alice",
                "libraryId": "lib-1",
                "syncEndpoint": "wss://s.example",
                "role": None,
                "fileEndpoint": None,
            },
        ),
    ],
)
def test_a_null_optional_vendor_option_is_left_unset(
    http: Any, register: Callable[..., Any], profile: str, body: dict[str, Any]
) -> None:
    """The vendors' own libraries leave an optional option given as null unset (twilio's
    AccessToken nbf and region, Verdant's TokenProvider role and fileEndpoint): a backend
    passing a user's null role got a 400 once a JSON null stopped meaning "not sent"."""
    allowed = ["grants"] if profile == "twilio" else ["lib", "role", "type", "file", "url"]
    cid, secret = register(audiences=[AUD], profile=profile, allowed_claims=allowed)
    response = post_json(
        http, {"grant_type": "client_credentials", **body}, auth=basic(cid, secret)
    )
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    claims = claims_of(answer["token"] if profile == "twilio" else answer["accessToken"])
    assert claims["sub"] == "alice"
    assert "role" not in claims
    assert "file" not in claims


def test_stream_bearer_at_its_path(http: Any, register: Callable[..., Any]) -> None:
    cid, secret = register(
        audiences=[AUD], scopes=["media", "chat"], profile="stream", allowed_claims=["chatUser"]
    )
    body = {"ttl": 600, "userId": "viewer-1", "scopes": ["chat"], "chatUser": {"username": "v"}}
    response = post_json(http, body, auth=f"Bearer {secret}", path=STREAM_PATH)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert set(answer) == {"token", "ttl"}
    assert answer["ttl"] == 600
    claims = claims_of(answer["token"])
    assert (claims["sub"], claims["scope"], claims["client_id"]) == ("viewer-1", "chat", cid)
    assert claims["chatUser"] == {"username": "v"}
    # The same dialect at /token with Basic (the client's profile decides the dialect).
    at_token = post_json(
        http, {"grant_type": "client_credentials", **body}, auth=basic(cid, secret)
    )
    assert at_token.status_code == 200
    assert set(at_token.get_json()) == {"token", "ttl"}


@pytest.mark.parametrize(
    ("profile", "body"),
    [
        ("stream", {"userId": ""}),
        ("stream", {"userId": None}),
        ("verdant", {"userId": "", "libraryId": "lib-1", "syncEndpoint": "https://s.example"}),
        ("twilio", {"identity": ""}),
        ("dexie", {"scopes": [], "claims": {"sub": None}}),
        ("dexie", {"scopes": [], "claims": None}),
    ],
)
def test_an_empty_user_in_a_dialect_is_refused(
    http: Any, register: Callable[..., Any], profile: str, body: dict[str, Any]
) -> None:
    """An empty or null user field is a value the dialect's check refuses, never "no
    user": the stream dialect, where userId may be left out, gave the client's own token
    for it, and so did a null userId, or a null dexie claims object or sub."""
    cid, secret = register(audiences=[AUD], profile=profile)
    response = post_json(
        http, {"grant_type": "client_credentials", **body}, auth=basic(cid, secret)
    )
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_request"


def test_stream_path_refuses_everyone_else(http: Any, register: Callable[..., Any]) -> None:
    stream_id, stream_secret = register(audiences=[AUD], profile="stream")
    _oauth_id, oauth_secret = register(audiences=[AUD])
    body = {"userId": "u"}
    # A Bearer endpoint answers with a Bearer challenge (RFC 6750 §3): invalid_token for a
    # token that was sent and is refused, no error code when none was sent. The body is
    # the endpoint's documented invalid_client.
    refused = 'Bearer realm="authserver", error="invalid_token"'
    none_sent = 'Bearer realm="authserver"'
    for auth, challenge in (
        (f"Bearer {oauth_secret}", refused),  # a real secret, of a client of another profile
        (f"Bearer {stream_secret}x", refused),  # wrong
        ("Bearer ", none_sent),  # empty
        (basic(stream_id, stream_secret), none_sent),  # right secret, wrong method here
        (None, none_sent),
    ):
        response = post_json(http, body, auth=auth, path=STREAM_PATH)
        assert response.status_code == 401, auth
        assert response.get_json() == {
            "error": "invalid_client",
            "error_description": "client authentication failed",
        }
        assert response.headers.get_all("WWW-Authenticate") == [challenge], auth
    # Body credentials are not a Bearer token either.
    posted = post_json(
        http, {**body, "client_id": stream_id, "client_secret": stream_secret}, path=STREAM_PATH
    )
    assert posted.status_code == 401
    assert posted.headers["WWW-Authenticate"] == none_sent
    # /token keeps its Basic challenge.
    at_token = post_json(http, {"grant_type": "client_credentials"}, auth=f"Bearer {stream_secret}")
    assert at_token.status_code == 401
    assert (
        at_token.headers["WWW-Authenticate"] == 'Basic realm="authserver", error="invalid_client"'
    )


def test_a_disabled_stream_client_is_refused(
    http: Any, register: Callable[..., Any], services: Any
) -> None:
    cid, secret = register(audiences=[AUD], profile="stream")
    with services.unit_of_work():
        services.clients.set_enabled(cid, False)
    response = post_json(http, {"userId": "u"}, auth=f"Bearer {secret}", path=STREAM_PATH)
    assert response.status_code == 401
    assert (
        response.headers["WWW-Authenticate"] == 'Bearer realm="authserver", error="invalid_token"'
    )


def test_stream_bearer_with_the_previous_secret_during_a_grace_period(
    http: Any, register: Callable[..., Any], services: Any
) -> None:
    cid, old = register(audiences=[AUD], profile="stream")
    with services.unit_of_work():
        _, new = services.clients.rotate_secret(cid, grace=3600)
    for secret in (old, new):
        response = post_json(http, {"userId": "u"}, auth=f"Bearer {secret}", path=STREAM_PATH)
        assert response.status_code == 200, response.get_json()
    with services.unit_of_work():
        services.clients.rotate_secret(cid)  # no grace: only the newest works
    response = post_json(http, {"userId": "u"}, auth=f"Bearer {new}", path=STREAM_PATH)
    assert response.status_code == 401


def test_dialect_refusals_are_rfc6749_errors(http: Any, register: Callable[..., Any]) -> None:
    """A refusal's description stays within RFC 6749's character set (a quote in it made
    Authlib raise, answering 500)."""
    cid, secret = register(audiences=[AUD], scopes=["ACCESS_DB"], profile="dexie")
    base = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
    for bad in ("600", "ten minutes", 1.5, "-1m"):
        response = post_json(http, {**base, "claims": {"sub": "u"}, "expires_in": bad})
        assert response.status_code == 400, (bad, response.status_code)
        assert response.get_json()["error"] == "invalid_request"
        assert "expires_in" in response.get_json()["error_description"]


def test_an_unknown_parameter_with_a_trailing_newline_is_400_without_its_name(
    http: Any, register: Callable[..., Any]
) -> None:
    """Repeated into the description, the name would make Authlib refuse to build the
    error (a 500): a name is matched whole, and this one is not plain."""
    cid, secret = register(audiences=[AUD])
    response = http.post(
        "/token",
        data={"grant_type": "client_credentials", "zz\n": "v"},
        headers={"Authorization": basic(cid, secret)},
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "zz" not in response.get_json()["error_description"]


def test_dialect_values_outside_the_libraries_ranges_are_400(
    http: Any, register: Callable[..., Any]
) -> None:
    """Values that made a library raise something other than ValueError were 500s: a PEM
    public key of a type cryptography does not know (UnsupportedAlgorithm), and a stream
    ``expire`` whose conversion to UTC leaves datetime's range (OverflowError)."""
    cid, secret = register(audiences=[AUD], profile="dexie")
    body = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}
    response = post_json(http, {**body, "claims": {"sub": "u"}, "public_key": UNKNOWN_KEY_TYPE_PEM})
    assert response.status_code == 400, response.get_json()
    assert "public_key" in response.get_json()["error_description"]
    _, secret = register(audiences=[AUD], profile="stream")
    for expire in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        response = post_json(http, {"expire": expire}, auth=f"Bearer {secret}", path=STREAM_PATH)
        assert response.status_code == 400, (expire, response.get_json())
        assert response.get_json()["error"] == "invalid_request"
        assert "expire" in response.get_json()["error_description"]


@pytest.mark.parametrize(
    ("profile", "body", "path"),
    [
        ("dexie", {"grant_type": "client_credentials", "claims": {"sub": "u"}}, "/token"),
        ("twilio", {"grant_type": "client_credentials", "identity": "u"}, "/token"),
        ("stream", {"userId": "u"}, STREAM_PATH),
    ],
)
def test_a_profile_client_with_several_audiences_is_told_what_to_do(
    http: Any,
    register: Callable[..., Any],
    services: Any,
    monkeypatch: pytest.MonkeyPatch,
    profile: str,
    body: dict[str, Any],
    path: str,
) -> None:
    """No dialect names an audience, so a profile client with several could get no token,
    and the refusal said to name one with the audience parameter, which the profile then
    refuses as a field it does not support. Such a client is refused at registration now
    (test_admin_api_refuses_bad_profiles_and_fixed_claims); this is one registered before."""
    monkeypatch.setattr(services.clients, "_single_audience", ())
    cid, secret = register(
        audiences=[AUD, "https://other.example"], profile=profile, allowed_claims=["grants"]
    )
    auth = f"Bearer {secret}" if path == STREAM_PATH else basic(cid, secret)
    response = post_json(http, body, auth=auth, path=path)
    assert response.status_code == 400, response.get_json()
    answer = response.get_json()
    assert answer["error"] == "invalid_target"
    assert "register the client with one audience" in answer["error_description"]
    assert "audience or resource parameter" not in answer["error_description"]


def test_require_sub_holds_under_a_profile(http: Any, register: Callable[..., Any]) -> None:
    _, secret = register(audiences=[AUD], profile="stream", require_sub=True)
    response = post_json(http, {"scopes": []}, auth=f"Bearer {secret}", path=STREAM_PATH)
    assert response.status_code == 400
    assert "sub" in response.get_json()["error_description"]


# -- registration: admin API and CLI ---------------------------------------------------------

ADMIN_TOKEN = "admin-token-for-profile-tests-5b8e2d1c9a"


@pytest.fixture
def admin(settings: Any) -> Any:
    from authserver.web.app import create_app
    from tests.conftest import make_services

    svc = make_services(settings.replace(admin_token=ADMIN_TOKEN))
    yield create_app(services=svc).test_client()
    svc.close()


def test_admin_api_sets_and_changes_profile_and_fixed_claims(admin: Any) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = admin.post(
        "/admin/clients",
        json={
            "name": "verdant backend",
            "audiences": [AUD],
            "profile": "verdant",
            "fixed_claims": {"url": "wss://sync.example", "type": 4},
        },
        headers=auth,
    )
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert (body["profile"], body["fixed_claims"]) == (
        "verdant",
        {"url": "wss://sync.example", "type": 4},
    )
    cid = body["client_id"]
    changed = admin.patch(
        f"/admin/clients/{cid}", json={"profile": "twilio", "fixed_claims": {}}, headers=auth
    )
    assert changed.status_code == 200
    assert (changed.get_json()["profile"], changed.get_json()["fixed_claims"]) == ("twilio", {})
    default = admin.post("/admin/clients", json={"name": "plain"}, headers=auth).get_json()
    assert (default["profile"], default["fixed_claims"]) == ("oauth2", {})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"profile": "acme"}, "unknown profile"),
        ({"profile": 3}, "profile"),
        ({"fixed_claims": {"iss": "x"}}, "iss"),
        ({"fixed_claims": {"sub": "x"}}, "sub"),
        ({"fixed_claims": {"status": 1}}, "status"),
        ({"fixed_claims": {"bad name": 1}}, "claim name"),
        ({"fixed_claims": {"url": ""}}, "empty"),
        ({"fixed_claims": {"n": 2**60}}, "2^53"),
        ({"fixed_claims": ["url"]}, "fixed_claims"),
        # No dialect but oauth2 names an audience: a second one could never be asked for.
        ({"profile": "dexie", "audiences": [AUD, "https://b.example"]}, "one audience"),
        ({"profile": "stream", "audiences": [AUD, "https://b.example"]}, "one audience"),
        # A trailing newline is not part of a name (re.match with "$" took it).
        ({"fixed_claims": {"fx\n": 1}}, "fixed claim name is not valid"),
        ({"allowed_claims": ["abc\n"]}, "allowed claim name is not valid"),
        ({"scopes": ["read\n"]}, "a scope must be"),
    ],
)
def test_admin_api_refuses_bad_profiles_and_fixed_claims(
    admin: Any, body: dict[str, Any], named: str
) -> None:
    response = admin.post(
        "/admin/clients",
        json={"name": "x", **body},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == "invalid_request"
    assert named in response.get_json()["error_description"]


def test_cli_profile_and_fixed_claims(
    env_for: Callable[..., dict[str, str]], tmp_path: Any
) -> None:
    from tests.helpers import cli_json_here
    from tests.helpers import run_cli_here

    env = env_for(f"sqlite:///{tmp_path / 'cli.db'}")
    made = cli_json_here(
        env,
        *("clients", "create", "--name", "b", "--profile", "verdant"),
        *("--fixed-claim", "url=wss://sync.example/x", "--fixed-claim", "type=4"),
        *("--fixed-claim", 'tenant="123"', "--fixed-claim", 'grants={"a": [1]}'),
        *("--fixed-claim", "level=NaN", "--fixed-claim", "limit=-Infinity"),
    )
    assert made["profile"] == "verdant"
    assert made["fixed_claims"] == {
        "url": "wss://sync.example/x",  # not JSON: the string as written
        "type": 4,
        "tenant": "123",  # quoted JSON: a string
        "grants": {"a": [1]},
        "level": "NaN",  # not JSON either (RFC 8259 has no NaN)
        "limit": "-Infinity",
    }
    cid = made["client_id"]
    updated = cli_json_here(
        env, "clients", "update", cid, "--profile", "stream", "--clear-fixed-claims"
    )
    assert (updated["profile"], updated["fixed_claims"]) == ("stream", {})
    for args, message in (
        (("--profile", "acme"), "unknown profile"),
        (("--fixed-claim", "noequals"), "NAME=VALUE"),
        (("--fixed-claim", "exp=1"), "exp"),
        (("--fixed-claim", "a=1", "--fixed-claim", "a=2"), "twice"),
        (("--audience", AUD, "--audience", "https://b.example"), "one audience"),
    ):
        result = run_cli_here(env, "clients", "update", cid, *args)
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_refuses_an_empty_profile(
    env_for: Callable[..., dict[str, str]], tmp_path: Any
) -> None:
    """--profile '' (an empty shell variable) is refused as the admin API refuses "", at
    create and at update; only a --profile left out is the default."""
    from tests.helpers import cli_json_here
    from tests.helpers import run_cli_here

    env = env_for(f"sqlite:///{tmp_path / 'cli.db'}")
    made = cli_json_here(env, "clients", "create", "--name", "b", "--profile", "verdant")
    for args in (
        ("clients", "create", "--name", "c", "--profile", ""),
        ("clients", "update", made["client_id"], "--profile", ""),
    ):
        result = run_cli_here(env, *args)
        assert result.returncode == 1, (args, result)
        assert result.stderr.startswith("authserver: error: unknown profile"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    listed = cli_json_here(env, "clients", "list")["clients"]
    assert [(c["name"], c["profile"]) for c in listed] == [("b", "verdant")]


def test_stream_path_refuses_contradicting_protocol_fields(
    http: Any, register: Callable[..., Any]
) -> None:
    cid, secret = register(audiences=[AUD], profile="stream")
    other, _ = register(audiences=[AUD])
    bearer = f"Bearer {secret}"
    wrong_grant = post_json(http, {"grant_type": "password"}, auth=bearer, path=STREAM_PATH)
    assert wrong_grant.get_json()["error"] == "unsupported_grant_type"
    other_id = post_json(http, {"client_id": other}, auth=bearer, path=STREAM_PATH)
    assert other_id.status_code == 400
    assert "client_id" in other_id.get_json()["error_description"]
    same = {"grant_type": "client_credentials", "client_id": cid, "userId": "u"}
    assert post_json(http, same, auth=bearer, path=STREAM_PATH).status_code == 200


# -- the paths profiles serve ------------------------------------------------------------------


class JwksHijack:
    """A plug-in profile that claims the JWKS path (served before every other route)."""

    name = "hijack"
    fields = frozenset({"sub"})
    paths = ("/.well-known/jwks.json",)

    def translate(self, request: Any, client: Any) -> dict[str, Any]:
        return dict(request.fields)

    def render(self, issued: Any, request: Any) -> dict[str, Any]:
        return {"token": issued.access_token}


def test_no_profile_may_claim_a_path_the_server_serves(settings: Any) -> None:
    """Every route of the application (both layers, the operator API and /metrics on) is
    refused as a profile's path: only /token, /introspect, /revoke, /metrics and the health
    checks were, and a plug-in could take over the JWKS, the metadata, the status lists,
    the OpenAPI document or the operator API."""
    from authserver.profiles.registry import ProfileRegistry
    from authserver.profiles.registry import builtin_profiles
    from authserver.web.app import create_app
    from authserver.web.app import routes
    from tests.conftest import make_services

    svc = make_services(settings.replace(admin_token=ADMIN_TOKEN, metrics_token=ADMIN_TOKEN))
    try:
        served = routes(create_app(services=svc))
    finally:
        svc.close()
    assert "/.well-known/jwks.json" in served
    assert "/admin/clients" in served
    for route in served:
        path = re.sub(r"<[^>]+>", "1", route)  # /statuslists/<int:list_id> -> /statuslists/1
        claiming = type("Claiming", (JwksHijack,), {"name": "claiming", "paths": (path,)})
        with pytest.raises(ValueError, match="path"):
            ProfileRegistry([*builtin_profiles(), claiming()])


def test_a_plugin_claiming_the_jwks_path_is_skipped(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    from authserver.profiles import registry
    from authserver.web.app import create_app
    from tests.conftest import make_services

    ep = EntryPoint("hijack", f"{__name__}:JwksHijack", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    svc = make_services(settings)
    try:
        assert "hijack" not in svc.profiles.names()
        response = create_app(services=svc).test_client().get("/.well-known/jwks.json")
        assert response.status_code == 200
        assert response.get_json()["keys"]
    finally:
        svc.close()


class OwnPath:
    """A plug-in profile served at a path of its own, authenticated by Bearer secret."""

    name = "ownpath"
    fields = frozenset({"sub"})
    paths = ("/ownpath/v1/tokens",)

    def translate(self, request: Any, client: Any) -> dict[str, Any]:
        return dict(request.fields)

    def render(self, issued: Any, request: Any) -> dict[str, Any]:
        return {"token": issued.access_token}


def test_a_bearer_client_is_served_only_at_its_own_profiles_path(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two profiles with paths of their own: a client of one authenticates by Bearer
    secret at either path, and is refused (unauthorized_client) at the other's, not
    answered in a dialect its backend does not speak."""
    from importlib.metadata import EntryPoint

    from authserver.profiles import registry
    from authserver.web.app import create_app
    from tests.conftest import make_services

    ep = EntryPoint("ownpath", f"{__name__}:OwnPath", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    svc = make_services(settings)
    try:
        assert "ownpath" in svc.profiles.names()
        with svc.unit_of_work():
            client, secret = svc.clients.create(name="own", audiences=[AUD], profile="ownpath")
        http = create_app(services=svc).test_client()
        bearer = f"Bearer {secret}"
        own = post_json(http, {"sub": "u"}, auth=bearer, path=OwnPath.paths[0])
        assert own.status_code == 200, own.get_data(as_text=True)
        assert claims_of(own.get_json()["token"])["client_id"] == str(client.client_id)
        elsewhere = post_json(http, {"sub": "u"}, auth=bearer, path=STREAM_PATH)
        assert elsewhere.status_code == 400, elsewhere.get_data(as_text=True)
        assert elsewhere.get_json()["error"] == "unauthorized_client"
    finally:
        svc.close()
