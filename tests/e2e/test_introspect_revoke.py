"""Token introspection (RFC 7662) and revocation (RFC 7009) over HTTP.

Who may see a token: the client it was issued to, or a client whose registered audience
is the token's audience (a sync server registered as a client). Everything else, and every
token that is revoked, expired, forged, malformed or signed by a retired key, is
``{"active": false}``. Revocation is seen at once, by every instance on the database.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update

from authserver.clock import FixedClock
from authserver.container import Services
from authserver.scheduler import housekeeping
from authserver.settings import Settings
from authserver.storage.sql.statuslist import VERSION as STATUS_VERSION
from authserver.storage.sql.tables import LOCKS
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services
from tests.factories import issue_token

pytestmark = pytest.mark.e2e

AUD = "https://sync.example"
OTHER_AUD = "https://other.example"

Register = Callable[..., tuple[str, str]]


def introspect(
    http: Any,
    token: str | None,
    auth: tuple[str, str] | None,
    *,
    as_json: bool = False,
    **extra: str,
) -> Any:
    params = {"token": token, **extra} if token is not None else dict(extra)
    if as_json:
        return http.post("/introspect", json=params, auth=auth)
    return http.post("/introspect", data=params, auth=auth)


def revoke(http: Any, token: str | None, auth: tuple[str, str] | None, **extra: str) -> Any:
    params = {"token": token, **extra} if token is not None else dict(extra)
    return http.post("/revoke", data=params, auth=auth)


def active(http: Any, token: str, auth: tuple[str, str]) -> bool:
    response = introspect(http, token, auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body["active"], bool)
    if not body["active"]:
        # RFC 7662 §2.2: nothing else about an inactive token.
        assert body == {"active": False}, body
    return body["active"]  # type: ignore[no-any-return]


def assert_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str), body


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return header, claims


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def server_private_key(services: Services) -> tuple[str, bytes]:
    """The current signing key of the server, as (kid, PEM) (for tokens that are signed
    correctly but are not the server's own shape)."""
    kid, key = services.key_ring.current()
    return kid, key.as_pem(private=True)


@pytest.fixture
def pair(register: Register) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two unrelated clients with different audiences."""
    return register(
        name="a", audiences=[AUD], scopes=["sync"], allowed_claims=["libraryId"]
    ), register(name="b", audiences=[OTHER_AUD])


# -- active tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_active_token_with_its_claims(http: Any, register: Register, as_json: bool) -> None:
    creds = register(audiences=[AUD], scopes=["sync"], allowed_claims=["libraryId"])
    token = issue_token(
        http,
        creds,
        sub="user-1",
        email="u@example.com",
        name="U",
        scope="sync",
        claims=json.dumps({"libraryId": "lib-1"}),
    )
    response = introspect(http, token, creds, as_json=as_json)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "no-store" in response.headers.get("Cache-Control", "")
    body = response.get_json()
    _, claims = parts(token)
    assert body["active"] is True
    for name in (
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "scope",
        "email",
        "name",
        "libraryId",
    ):
        assert body[name] == claims[name], name
    assert body["sub"] == "user-1"
    assert body["client_id"] == creds[0]
    assert body["scope"] == "sync"
    assert body["token_type"].lower() == "bearer"


def test_a_tokens_own_claims_cannot_override_the_introspection_answer(
    http: Any, register: Register
) -> None:
    """RFC 7662 §2.2: ``active`` and ``token_type`` are the server's judgement. An allowed
    extra claim of those names overrode them: an active token was introspected as
    ``{"active": false, ...claims}`` (or ``"active": "yes"``), with a token type of its
    own choosing."""
    creds = register(audiences=[AUD], allowed_claims=["active", "token_type"])
    for value in (False, "no"):
        token = issue_token(
            http, creds, sub="user-1", claims=json.dumps({"active": value, "token_type": "N_A"})
        )
        body = introspect(http, token, creds).get_json()
        assert body["active"] is True, body
        assert body["token_type"] == "Bearer", body
        assert body["sub"] == "user-1"


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "no_such_type"])
def test_token_type_hint_is_accepted(http: Any, register: Register, hint: str) -> None:
    """Any hint, an unknown one too (RFC 7009 §2.1, RFC 7662 §2.1: the server searches
    all its tokens); /openapi.json promised unsupported_token_type for an unknown hint,
    which no request gets."""
    creds = register()
    token = issue_token(http, creds)
    response = introspect(http, token, creds, token_type_hint=hint)
    assert response.status_code == 200
    assert response.get_json()["active"] is True
    assert revoke(http, token, creds, token_type_hint=hint).status_code == 200
    assert introspect(http, token, creds, token_type_hint=hint).get_json()["active"] is False
    described = http.get("/openapi.json").get_json()["components"]["responses"]
    assert "unsupported_token_type" not in described["OAuthBadRequest"]["description"]


def test_client_secret_post_authenticates(http: Any, register: Register) -> None:
    client_id, secret = register()
    token = issue_token(http, (client_id, secret))
    response = http.post(
        "/introspect", data={"token": token, "client_id": client_id, "client_secret": secret}
    )
    assert response.status_code == 200
    assert response.get_json()["active"] is True
    response = http.post(
        "/revoke", data={"token": token, "client_id": client_id, "client_secret": secret}
    )
    assert response.status_code == 200
    assert not active(http, token, (client_id, secret))


# -- revocation ------------------------------------------------------------------------------


def test_revoked_token_is_inactive_at_once(http: Any, register: Register) -> None:
    creds = register()
    token = issue_token(http, creds)
    other = issue_token(http, creds)
    assert active(http, token, creds)
    response = revoke(http, token, creds)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert not active(http, token, creds)
    # Only that token.
    assert active(http, other, creds)
    # Revoking again is not an error (RFC 7009 §2.2).
    assert revoke(http, token, creds).status_code == 200
    assert not active(http, token, creds)


def test_revocation_works_past_a_32_bit_version_counter(
    http: Any, register: Register, services: Services
) -> None:
    """Every revocation moves the status lists' version counter (``locks``), which never
    goes back. As a PostgreSQL ``integer`` it stopped at 2^31 - 1, and from then on
    ``/revoke`` answered 500 there ("integer out of range") and the token stayed valid,
    while SQLite went on; it is 64 bits on both."""
    creds = register()
    token = issue_token(http, creds)
    with services.unit_of_work():
        conn = services.db.connection()
        conn.execute(update(LOCKS).where(LOCKS.c.name == STATUS_VERSION).values(counter=2**31 - 1))
    response = revoke(http, token, creds)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert not active(http, token, creds)
    assert services.db.read_counter(STATUS_VERSION) == 2**31


def test_a_token_without_a_status_entry_is_revoked_by_its_jti(
    http: Any, register: Register, services: Services
) -> None:
    """A token issued before status lists names no entry: its revocation is the jti's
    record alone, and introspection reads it (the status list has no bit to set)."""
    creds = register()
    _, claims = parts(issue_token(http, creds))
    kid, pem = server_private_key(services)
    del claims["status"]
    claims["jti"] = "before-status-lists"
    token = jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})
    assert active(http, token, creds)
    assert revoke(http, token, creds).status_code == 200
    assert not active(http, token, creds)


def test_revocation_is_seen_by_another_instance(
    http: Any, register: Register, settings: Settings
) -> None:
    creds = register()
    first, second = issue_token(http, creds), issue_token(http, creds)
    other = make_services(settings)
    try:
        other_http = create_app(services=other).test_client()
        assert active(other_http, first, creds)
        assert revoke(http, first, creds).status_code == 200
        assert not active(other_http, first, creds)
        # And the other way round.
        assert revoke(other_http, second, creds).status_code == 200
        assert not active(http, second, creds)
    finally:
        other.close()


def test_revocation_is_audited_without_the_token(
    http: Any, register: Register, services: Services
) -> None:
    from authserver.audit.model import AuditQuery

    creds = register()
    token = issue_token(http, creds, sub="user-9")
    # Revoked once: a client repeating the call (a retry) adds no record, and neither does
    # revoking a token its user's tokens were revoked with.
    for _ in range(3):
        assert revoke(http, token, creds).status_code == 200
    withdrawn = issue_token(http, creds, sub="user-10")
    with services.unit_of_work():
        services.status_lists.revoke_user("user-10")
    assert revoke(http, withdrawn, creds).status_code == 200
    with services.unit_of_work():
        events = services.audit.query(
            AuditQuery(client_id=creds[0], action="token.revoked", limit=10)
        )
    assert len(events) == 1
    assert events[0].jti == parts(token)[1]["jti"]
    assert token not in json.dumps(events[0].detail)


def test_revoking_another_clients_token_is_refused_and_revokes_nothing(
    http: Any, pair: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    """RFC 7009 §2.1: the server "verifies whether the token was issued to the client
    making the revocation request. If this validation fails, the request is refused and
    the client is informed of the error": ``invalid_grant`` (RFC 6749 §5.2, a grant
    "issued to another client"). A token no longer live is no error (§2.2)."""
    a, b = pair
    token = issue_token(http, a)
    response = revoke(http, token, b)
    assert_error(response, 400, "invalid_grant")
    assert response.get_json()["error_description"] == "the token was issued to another client"
    assert active(http, token, a)
    assert revoke(http, token, a).status_code == 200
    assert revoke(http, token, b).status_code == 200  # revoked: nothing live to refuse


def test_audience_client_cannot_revoke(http: Any, register: Register) -> None:
    """A sync server may introspect tokens for its audience, but only the client a token
    was issued to may revoke it (RFC 7009 §2.1)."""
    issuer_client = register(audiences=[AUD])
    sync_server = register(name="sync", audiences=[AUD])
    token = issue_token(http, issuer_client)
    assert_error(revoke(http, token, sync_server), 400, "invalid_grant")
    assert active(http, token, issuer_client)


def test_revoking_garbage_is_not_an_error(http: Any, register: Register) -> None:
    creds = register()
    for token in ["garbage", "a.b.c", "x" * 20000]:
        response = revoke(http, token, creds)
        assert response.status_code == 200, response.get_data(as_text=True)


# -- inactive tokens -------------------------------------------------------------------------


def test_expired_token_is_inactive(settings: Settings, clock: FixedClock) -> None:
    svc = make_services(settings, clock=clock)
    try:
        http = create_app(services=svc).test_client()
        with svc.unit_of_work():
            client, secret = svc.clients.create(name="short", token_ttl=60)
        assert secret is not None
        creds = (client.client_id, secret)
        token = issue_token(http, creds)
        assert active(http, token, creds)
        clock.advance(59)
        assert active(http, token, creds)
        clock.advance(2)
        assert not active(http, token, creds)
        # Revoking an expired token is not an error either.
        assert revoke(http, token, creds).status_code == 200
    finally:
        svc.close()


@pytest.mark.slow
def test_expired_token_is_inactive_in_real_time(http: Any, register: Register) -> None:
    """Active until ``exp``, inactive from then on (no leeway). ``iat`` is whole seconds,
    so a 2 s lifetime leaves at least 1 s for the first check."""
    creds = register(token_ttl=2)
    token = issue_token(http, creds)
    assert active(http, token, creds)
    _, claims = parts(token)
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.2)
    assert not active(http, token, creds)


def test_forged_tokens_are_inactive(
    http: Any, register: Register, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    creds = register(audiences=[AUD])
    token = issue_token(http, creds, sub="user-1")
    header, claims = parts(token)
    head, payload, signature = token.split(".")

    forged: dict[str, str] = {}
    # The signature altered (one byte of the decoded signature flipped).
    raw_sig = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw_sig[len(raw_sig) // 2] ^= 0x01
    forged["signature altered"] = f"{head}.{payload}.{b64url(bytes(raw_sig))}"
    forged["signature removed"] = f"{head}.{payload}."
    # The payload altered, the signature kept.
    evil = dict(claims, sub="admin")
    forged["payload altered"] = f"{head}.{b64url(json.dumps(evil).encode())}.{signature}"
    # Signed by a foreign key that claims the server's kid.
    forged["foreign key, same kid"] = jwt.encode(
        claims,
        private_pem(rsa_private_key),
        algorithm="RS256",
        headers={"kid": header["kid"], "typ": "at+jwt"},
    )
    # alg=none.
    none_head = b64url(json.dumps({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}).encode())
    forged["alg none"] = f"{none_head}.{payload}."
    # HS256 keyed with the public JWK (the classic algorithm confusion).
    jwk = next(
        k
        for k in http.get("/.well-known/jwks.json").get_json()["keys"]
        if k["kid"] == header["kid"]
    )
    hs_head = b64url(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}).encode())
    import hashlib
    import hmac

    signing_input = f"{hs_head}.{payload}".encode()
    mac = hmac.new(json.dumps(jwk).encode(), signing_input, hashlib.sha256).digest()
    forged["hs256 confusion"] = f"{hs_head}.{payload}.{b64url(mac)}"

    for name, value in forged.items():
        assert value != token
        assert not active(http, value, creds), name
    assert active(http, token, creds)


def test_tokens_signed_by_the_server_key_but_not_its_shape_are_inactive(
    http: Any, register: Register, services: Services
) -> None:
    """The right key does not suffice: the issuer, the type, an expiry, a jti and a
    client_id are all required."""
    creds = register()
    token = issue_token(http, creds)
    header, claims = parts(token)
    kid, pem = server_private_key(services)
    assert header["kid"] == kid

    def sign(claims: dict[str, Any], **head: Any) -> str:
        return jwt.encode(
            claims, pem, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt", **head}
        )

    assert active(http, sign(claims), creds), "control: a faithful re-signing is active"
    cases = {
        "other issuer": sign(dict(claims, iss="https://evil.example")),
        "typ JWT": sign(claims, typ="JWT"),
        "no exp": sign({k: v for k, v in claims.items() if k != "exp"}),
        "no jti": sign({k: v for k, v in claims.items() if k != "jti"}),
        "no client_id": sign({k: v for k, v in claims.items() if k != "client_id"}),
        "expired": sign(dict(claims, exp=int(time.time()) - 10)),
    }
    for name, value in cases.items():
        assert not active(http, value, creds), name


def test_garbage_is_inactive(http: Any, register: Register) -> None:
    creds = register()
    for garbage in [
        "garbage",
        "a.b.c",
        "....",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        "\u00e9\u00e8",
        "x" * 20000,
        "Bearer abc",
        "e30.e30.e30",
    ]:
        assert not active(http, garbage, creds), garbage


def test_garbage_in_a_json_body_is_inactive_or_invalid(http: Any, register: Register) -> None:
    creds = register()
    for value in (123, ["a"], {"a": 1}, True):
        response = http.post("/introspect", json={"token": value}, auth=creds)
        assert response.status_code < 500, response.get_data(as_text=True)
        if response.status_code == 200:
            assert response.get_json() == {"active": False}
        else:
            assert_error(response, 400, "invalid_request")


def test_retired_keys_tokens_are_inactive_at_once(
    http: Any, register: Register, services: Services
) -> None:
    creds = register()
    token = issue_token(http, creds)
    kid = parts(token)[0]["kid"]
    assert active(http, token, creds)
    with services.unit_of_work():
        services.keys.retire(kid)
    assert not active(http, token, creds)
    # A token from the key that replaced it is active.
    fresh = issue_token(http, creds)
    assert parts(fresh)[0]["kid"] != kid
    assert active(http, fresh, creds)


def test_retired_key_is_seen_by_another_instance_at_once(
    http: Any, register: Register, services: Services, settings: Settings
) -> None:
    creds = register()
    token = issue_token(http, creds)
    other = make_services(settings)
    try:
        other_http = create_app(services=other).test_client()
        assert active(other_http, token, creds)
        with services.unit_of_work():
            services.keys.retire(parts(token)[0]["kid"])
        assert not active(other_http, token, creds)
    finally:
        other.close()


# -- who may see a token ---------------------------------------------------------------------


def test_another_clients_token_is_inactive(
    http: Any, pair: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    a, b = pair
    token = issue_token(http, a)
    assert not active(http, token, b)
    assert active(http, token, a)


def test_audience_client_may_introspect(http: Any, register: Register) -> None:
    """A sync server registered as a client with the token's audience sees it active."""
    backend = register(name="backend", audiences=[AUD])
    sync_server = register(name="sync", audiences=[AUD])
    stranger = register(name="stranger", audiences=[OTHER_AUD])
    token = issue_token(http, backend, sub="user-1")
    assert parts(token)[1]["aud"] in (AUD, [AUD])
    response = introspect(http, token, sync_server)
    body = response.get_json()
    assert body["active"] is True
    assert body["sub"] == "user-1"
    assert body["client_id"] == backend[0]
    assert not active(http, token, stranger)


def test_disabled_client_cannot_introspect(
    http: Any, register: Register, services: Services
) -> None:
    creds = register()
    token = issue_token(http, creds)
    with services.unit_of_work():
        services.clients.set_enabled(creds[0], False)
    assert_error(introspect(http, token, creds), 401, "invalid_client")
    assert_error(revoke(http, token, creds), 401, "invalid_client")


# -- request errors --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
def test_missing_token_is_invalid_request(http: Any, register: Register, path: str) -> None:
    creds = register()
    assert_error(http.post(path, data={}, auth=creds), 400, "invalid_request")
    assert_error(
        http.post(path, data={"token_type_hint": "access_token"}, auth=creds),
        400,
        "invalid_request",
    )
    assert_error(http.post(path, json={}, auth=creds), 400, "invalid_request")


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
@pytest.mark.parametrize("name", ["token", "token_type_hint"])
def test_a_token_parameter_that_is_no_string_in_json_is_named(
    http: Any, register: Register, path: str, name: str
) -> None:
    """``{"token": ["..."]}`` was told "missing token parameter": the parameter was sent,
    in a type it cannot have, and the answer says so."""
    creds = register()
    body: dict[str, Any] = {"token": "x", name: ["x"]}
    response = http.post(path, json=body, auth=creds)
    assert_error(response, 400, "invalid_request")
    assert response.get_json()["error_description"] == f"{name} must be a string"


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
def test_bad_client_authentication_is_401(http: Any, register: Register, path: str) -> None:
    creds = register()
    token = issue_token(http, creds)
    for auth in [(creds[0], "wrong"), ("no-such-client", creds[1]), None]:
        response = http.post(path, data={"token": token}, auth=auth)
        assert_error(response, 401, "invalid_client")
        assert response.headers.get("WWW-Authenticate"), auth
    response = http.post(
        path, data={"token": token, "client_id": creds[0], "client_secret": "wrong"}
    )
    assert_error(response, 401, "invalid_client")
    # Nothing was revoked by the failed attempts.
    assert active(http, token, creds)


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
def test_parameters_in_the_url_are_refused(http: Any, register: Register, path: str) -> None:
    creds = register()
    token = issue_token(http, creds)
    response = http.post(f"{path}?token={token}", data={}, auth=creds)
    assert_error(response, 400, "invalid_request")


@db_independent
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_other_methods_are_405_with_an_rfc_6749_error(http: Any, path: str, method: str) -> None:
    """RFC 6749 §5.2's codes on the OAuth endpoints, whatever the failure: a request in the
    wrong method is a malformed request."""
    response = http.open(path, method=method)
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == "invalid_request"
    assert "POST" in response.headers["Allow"]


@db_independent
def test_the_access_line_names_the_client_at_every_endpoint(
    http: Any, pair: tuple[tuple[str, str], tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """The client a request authenticated as is on its access line whatever it asked: an
    introspection, a revocation that revoked nothing, a token; a failed authentication
    names the id it presented."""
    a, b = pair
    token = issue_token(http, a)
    with caplog.at_level(logging.INFO, logger="authserver.access"):
        caplog.clear()  # the line of the token above, when an earlier test left INFO on
        introspect(http, token, b)
        revoke(http, "garbage", b)
        revoke(http, token, a)
        issue_token(http, b)
        revoke(http, "garbage", (b[0], "not-the-secret"))
    lines = [r.getMessage() for r in caplog.records if r.name == "authserver.access"]
    expected = [
        ("POST /introspect 200", b[0]),
        ("POST /revoke 200", b[0]),
        ("POST /revoke 200", a[0]),
        ("POST /token 200", b[0]),
        ("POST /revoke 401", b[0]),
    ]
    assert len(lines) == len(expected), lines
    for line, (start, client_id) in zip(lines, expected, strict=True):
        assert line.startswith(start), line
        assert f"client={client_id} " in line, line


def test_a_revoked_token_stays_inactive_after_the_clock_is_stepped_back_past_a_purge(
    settings: Settings, clock: FixedClock
) -> None:
    """A purge at a later time (this host before NTP stepped it back, or an instance
    ahead of this one) forgets the revocations of tokens expired by its clock. Back at
    the earlier time such a token's ``exp`` lies ahead again: it must not introspect as
    active because its revocation record is gone."""
    svc = make_services(settings, clock=clock)
    try:
        http = create_app(services=svc).test_client()
        with svc.unit_of_work():
            client, secret = svc.clients.create(name="stepped", token_ttl=600)
        assert secret is not None
        creds = (client.client_id, secret)
        token = issue_token(http, creds)
        assert revoke(http, token, creds).status_code == 200
        assert not active(http, token, creds)
        start = clock.now()
        clock.advance(3600)
        assert housekeeping(svc) >= 1
        clock.set(start + 10)
        assert not active(http, token, creds)
        # A token issued after the step, expiring after the one forgotten, is active.
        assert active(http, issue_token(http, creds), creds)
    finally:
        svc.close()
