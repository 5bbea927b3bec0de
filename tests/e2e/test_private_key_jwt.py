"""``private_key_jwt`` client authentication (RFC 7523 §2.2, OIDC Core §9) end to end.

Client assertions are built with PyJWT, independently of the server's JOSE libraries:
``iss`` = ``sub`` = client id, ``aud`` = the token endpoint URL, ``exp``, and a ``jti`` the
server accepts once (RFC 7523 §3 item 7), across instances.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authserver.clients.jwks import MAX_RSA_BITS
from authserver.clock import FixedClock
from authserver.container import Services
from authserver.oauth.client_auth import LEEWAY
from authserver.oauth.client_auth import MAX_ASSERTION_LIFETIME
from authserver.scheduler import housekeeping
from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services
from tests.factories import client_public_jwk
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KID = "client-key-1"


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str = KID) -> dict[str, Any]:
    return client_public_jwk(key, kid)


def assertion(
    client_id: str,
    key: rsa.RSAPrivateKey,
    *,
    aud: str,
    kid: str | None = KID,
    alg: str = "RS256",
    lifetime: int = 60,
    drop: tuple[str, ...] = (),
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    for name in drop:
        claims.pop(name, None)
    headers = {"kid": kid} if kid is not None else None
    # The key itself, not its PEM: PyJWT parses a PEM at every call, and parsing checks the
    # RSA key (tens of ms each, for each of some hundred assertions).
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


@pytest.fixture
def token_url(settings: Settings) -> str:
    return settings.issuer + "/token"


@pytest.fixture
def jwt_client(services: Services, rsa_private_key: rsa.RSAPrivateKey) -> str:
    with services.unit_of_work():
        client, secret = services.clients.create(
            name="jwt backend",
            audiences=["https://sync.example"],
            jwks={"keys": [public_jwk(rsa_private_key)]},
        )
    assert secret is None
    return str(client.client_id)


def token_request(
    http: Any,
    client_assertion: str,
    *,
    as_json: bool = False,
    auth: tuple[str, str] | None = None,
    **params: str,
) -> Any:
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **params,
    }
    if as_json:
        return http.post("/token", json=data, auth=auth)
    return http.post("/token", data=data, auth=auth)


def assert_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str)


# -- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_assertion_gets_a_token(
    http: Any, jwt_client: str, token_url: str, rsa_private_key: rsa.RSAPrivateKey, as_json: bool
) -> None:
    response = token_request(
        http, assertion(jwt_client, rsa_private_key, aud=token_url), as_json=as_json, sub="user-1"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    claims = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == jwt_client
    assert claims["sub"] == "user-1"


def test_client_id_in_the_body_may_accompany_the_assertion(
    http: Any, jwt_client: str, token_url: str, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    response = token_request(
        http, assertion(jwt_client, rsa_private_key, aud=token_url), client_id=jwt_client
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_a_client_id_naming_another_client_than_the_assertion_is_refused(
    http: Any,
    jwt_client: str,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
    register: Callable[..., tuple[str, str]],
    as_json: bool,
) -> None:
    """RFC 7521 §4.2: a client_id present beside the assertion must identify the same
    client; neither an unknown id nor another registered client's is ignored."""
    other, _ = register()
    for client_id in ("someone-else", other):
        response = token_request(
            http,
            assertion(jwt_client, rsa_private_key, aud=token_url),
            as_json=as_json,
            client_id=client_id,
        )
        assert_error(response, 400, "invalid_request")
        assert "client assertion" in response.get_json()["error_description"]


def test_issuer_is_an_accepted_audience(
    http: Any, jwt_client: str, settings: Settings, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    response = token_request(http, assertion(jwt_client, rsa_private_key, aud=settings.issuer))
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/jwks",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/statuslists",
        "/admin",
        "/tokens",
    ],
)
def test_another_url_of_this_server_is_no_accepted_audience(
    http: Any, jwt_client: str, settings: Settings, rsa_private_key: rsa.RSAPrivateKey, path: str
) -> None:
    """RFC 7523 §3 item 3: the audience names this server as the one the assertion is
    for; only the issuer and the endpoints that take assertions do, not every URL it
    serves (an assertion made out for a key or metadata document is not one for it)."""
    signed = assertion(jwt_client, rsa_private_key, aud=settings.issuer + path)
    assert_error(token_request(http, signed), 401, "invalid_client")


def test_assertion_authenticates_at_introspection_and_revocation(
    http: Any,
    jwt_client: str,
    token_url: str,
    settings: Settings,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    response = token_request(http, assertion(jwt_client, rsa_private_key, aud=token_url))
    access_token = response.get_json()["access_token"]
    introspected = http.post(
        "/introspect",
        data={
            "token": access_token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(
                jwt_client, rsa_private_key, aud=settings.issuer + "/introspect"
            ),
        },
    )
    assert introspected.status_code == 200, introspected.get_data(as_text=True)
    assert introspected.get_json()["active"] is True
    revoked = http.post(
        "/revoke",
        data={
            "token": access_token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(
                jwt_client, rsa_private_key, aud=settings.issuer + "/revoke"
            ),
        },
    )
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    introspected = http.post(
        "/introspect",
        data={
            "token": access_token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(
                jwt_client, rsa_private_key, aud=settings.issuer + "/introspect"
            ),
        },
    )
    assert introspected.get_json() == {"active": False}


def test_every_advertised_assertion_algorithm_is_accepted(
    http: Any, services: Services, token_url: str, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """The metadata lists PS256 beside RS256 for private_key_jwt; joserfc's default
    registry refused it ("not recommended"), so a PS256 assertion was 401."""
    metadata = http.get("/.well-known/oauth-authorization-server").get_json()
    advertised = metadata["token_endpoint_auth_signing_alg_values_supported"]
    rsa_algs = [alg for alg in advertised if alg[:2] in ("RS", "PS")]
    assert "PS256" in rsa_algs
    jwk = public_jwk(rsa_private_key)
    del jwk["alg"]  # a key not bound to one algorithm
    with services.unit_of_work():
        client, _ = services.clients.create(
            name="any rsa alg", audiences=["https://sync.example"], jwks={"keys": [jwk]}
        )
    for alg in rsa_algs:
        signed = assertion(str(client.client_id), rsa_private_key, aud=token_url, alg=alg)
        response = token_request(http, signed)
        assert response.status_code == 200, (alg, response.get_data(as_text=True))


def test_an_assertion_without_kid_is_checked_against_each_registered_key(
    http: Any,
    services: Services,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
) -> None:
    """RFC 7515 §4.1.4: kid is optional (Authlib's client sends none). A client that has
    registered a second key for its rotation was refused whatever it signed with: a
    kid-less assertion was checked against a set of one key only."""
    with services.unit_of_work():
        client, _ = services.clients.create(
            name="rotating keys",
            audiences=["https://sync.example"],
            jwks={"keys": [public_jwk(other_key, "new"), public_jwk(rsa_private_key, "old")]},
        )
    client_id = str(client.client_id)
    for key in (rsa_private_key, other_key):
        once = assertion(client_id, key, aud=token_url, kid=None)
        response = token_request(http, once)
        assert response.status_code == 200, response.get_data(as_text=True)
        # Checked once, for the key that signed it: the jti is spent.
        assert_error(token_request(http, once), 401, "invalid_client")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = token_request(http, assertion(client_id, stranger, aud=token_url, kid=None))
    assert_error(refused, 401, "invalid_client")


@pytest.fixture(scope="module")
def largest_rsa_key() -> rsa.RSAPrivateKey:
    """An RSA key of the largest size a client may register, from a file: generating one
    takes from seconds to a minute."""
    pem = (Path(__file__).parent / "data" / "client-rsa-8192.pem").read_bytes()
    # Checking an 8192-bit private key takes seconds; this one is known good.
    key = serialization.load_pem_private_key(
        pem, password=None, unsafe_skip_rsa_key_validation=True
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == MAX_RSA_BITS
    return key


@db_independent
def test_the_largest_rsa_key_a_client_may_register_authenticates(
    http: Any, services: Services, token_url: str, largest_rsa_key: rsa.RSAPrivateKey
) -> None:
    """joserfc's default registry takes signatures of at most 1024 base64url characters,
    a 6144-bit key's: a client registered with an 8192-bit key (then accepted up to 16384
    bits) had every assertion refused as "Signature of exceeds 1024 bytes"."""
    with services.unit_of_work():
        client, _ = services.clients.create(
            name="large key",
            audiences=["https://sync.example"],
            jwks={"keys": [public_jwk(largest_rsa_key)]},
        )
    client_id, now = str(client.client_id), int(time.time())
    for kid in (KID, None):
        claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 60}
        headers = {"kid": kid} if kid else None
        # The key itself, not its PEM (assertion()): PyJWT would check it again each time.
        signed = jwt.encode({**claims, "jti": str(uuid.uuid4())}, largest_rsa_key, "RS256", headers)
        response = token_request(http, signed)
        assert response.status_code == 200, response.get_data(as_text=True)


# -- refused assertions ----------------------------------------------------------------------


def test_replayed_assertion_is_refused(
    http: Any, jwt_client: str, token_url: str, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    once = assertion(jwt_client, rsa_private_key, aud=token_url)
    assert token_request(http, once).status_code == 200
    replay = token_request(http, once)
    assert_error(replay, 401, "invalid_client")
    assert replay.headers.get("WWW-Authenticate")


def test_replay_is_refused_by_another_instance(
    http: Any,
    jwt_client: str,
    token_url: str,
    settings: Settings,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    once = assertion(jwt_client, rsa_private_key, aud=token_url)
    assert token_request(http, once).status_code == 200
    other = make_services(settings)
    try:
        other_http = create_app(services=other).test_client()
        assert_error(token_request(other_http, once), 401, "invalid_client")
    finally:
        other.close()


def test_jti_is_per_client(
    http: Any,
    services: Services,
    jwt_client: str,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    """Another client may happen to use the same jti: that is not a replay."""
    with services.unit_of_work():
        second, _ = services.clients.create(
            name="second", jwks={"keys": [public_jwk(rsa_private_key)]}
        )
    jti = str(uuid.uuid4())
    assert (
        token_request(
            http, assertion(jwt_client, rsa_private_key, aud=token_url, jti=jti)
        ).status_code
        == 200
    )
    response = token_request(
        http, assertion(str(second.client_id), rsa_private_key, aud=token_url, jti=jti)
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong aud",
        "missing jti",
        "missing exp",
        "missing aud",
        "iss is another",
        "sub is another",
        "empty jti",
        "NUL in jti",
        "control character in jti",
        "lone surrogate in jti",
        "jti not a string",
        "jti too long",
    ],
)
def test_bad_assertion_is_invalid_client(
    http: Any, jwt_client: str, token_url: str, rsa_private_key: rsa.RSAPrivateKey, case: str
) -> None:
    now = int(time.time())
    kwargs: dict[str, Any] = {
        "expired": {"exp": now - 120, "iat": now - 180},
        "wrong aud": {"aud": "https://evil.example/token"},
        "missing jti": {"drop": ("jti",)},
        "missing exp": {"drop": ("exp",)},
        "missing aud": {"drop": ("aud",)},
        "iss is another": {"iss": "someone-else"},
        "sub is another": {"sub": "someone-else"},
        "empty jti": {"jti": ""},
        # Stored for replay protection: PostgreSQL takes no NUL in text (it was a 500).
        "NUL in jti": {"jti": "a\x00b"},
        "control character in jti": {"jti": "a\x01b"},
        "lone surrogate in jti": {"jti": "a\ud800b"},
        "jti not a string": {"jti": 5},
        "jti too long": {"jti": "j" * 256},
    }[case]
    kwargs.setdefault("aud", token_url)
    response = token_request(http, assertion(jwt_client, rsa_private_key, **kwargs))
    assert_error(response, 401, "invalid_client")


@db_independent
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        # Refused while it is read, before its subject names a client.
        (
            {"lifetime": MAX_ASSERTION_LIFETIME + LEEWAY + 60},
            "private_key_jwt assertion refused: the client assertion expires too far in the future",
        ),
        ({"drop": ("sub",)}, "private_key_jwt assertion refused: the client assertion has no sub"),
        # Refused once its client is known.
        ({"aud": "https://evil.example/token"}, "private_key_jwt assertion refused"),
    ],
    ids=["exp too far", "no sub", "wrong aud"],
)
def test_the_log_says_why_an_assertion_was_refused(
    http: Any,
    jwt_client: str,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    """The operator's log line names the assertion's defect, whichever step refused it
    (it said "no client credentials" for an assertion refused before its subject was
    read); the client is told only "client authentication failed"."""
    overrides.setdefault("aud", token_url)
    with caplog.at_level(logging.INFO, logger="authserver.auth"):
        response = token_request(http, assertion(jwt_client, rsa_private_key, **overrides))
    assert_error(response, 401, "invalid_client")
    assert response.get_json()["error_description"] == "client authentication failed"
    lines = [r.getMessage() for r in caplog.records if r.name == "authserver.auth"]
    assert len(lines) == 1, lines
    assert reason in lines[0], lines[0]
    assert "no client credentials" not in lines[0]


@pytest.mark.parametrize("kid", ["é", 'a"b', "a\\b", "a\x00b", "\u2028"])
def test_an_unknown_kid_of_any_characters_is_invalid_client(
    http: Any, jwt_client: str, token_url: str, rsa_private_key: rsa.RSAPrivateKey, kid: str
) -> None:
    """Authlib copies the key lookup's message, with the kid, into the error it raises and
    refuses to build one with characters RFC 6749 §5.2 forbids: that was a 500 for anyone
    who knows a private_key_jwt client's id."""
    response = token_request(http, assertion(jwt_client, rsa_private_key, aud=token_url, kid=kid))
    assert_error(response, 401, "invalid_client")


def test_assertion_signed_by_another_key_is_refused(
    http: Any, jwt_client: str, token_url: str, other_key: rsa.RSAPrivateKey
) -> None:
    # The registered kid, a key that is not the registered one.
    response = token_request(http, assertion(jwt_client, other_key, aud=token_url))
    assert_error(response, 401, "invalid_client")
    response = token_request(
        http, assertion(jwt_client, other_key, aud=token_url, kid="unknown-kid")
    )
    assert_error(response, 401, "invalid_client")


def test_unsigned_and_symmetric_assertions_are_refused(
    http: Any, jwt_client: str, token_url: str, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    claims = {
        "iss": jwt_client,
        "sub": jwt_client,
        "aud": token_url,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert_error(token_request(http, unsigned), 401, "invalid_client")
    public_pem = rsa_private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims["jti"] = str(uuid.uuid4())
    import hashlib
    import hmac

    from jwt.utils import base64url_encode

    head = base64url_encode(json.dumps({"alg": "HS256", "kid": KID}).encode())
    body = base64url_encode(json.dumps(claims).encode())
    mac = hmac.new(public_pem, head + b"." + body, hashlib.sha256).digest()
    confused = (head + b"." + body + b"." + base64url_encode(mac)).decode()
    assert_error(token_request(http, confused), 401, "invalid_client")


@db_independent
def test_garbage_assertion_is_refused(http: Any, jwt_client: str) -> None:
    for value in ("garbage", "a.b.c", "e30.e30.e30", "x" * 5000):
        response = token_request(http, value)
        assert response.status_code in (400, 401), response.get_data(as_text=True)
        assert response.get_json()["error"] in ("invalid_client", "invalid_request")


def test_assertion_with_a_secret_is_invalid_request(
    http: Any,
    jwt_client: str,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
    register: Callable[..., tuple[str, str]],
) -> None:
    """RFC 6749 §2.3: exactly one client authentication method."""
    secret_id, secret = register()
    response = token_request(
        http,
        assertion(jwt_client, rsa_private_key, aud=token_url),
        client_id=jwt_client,
        client_secret="anything",
    )
    assert_error(response, 400, "invalid_request")
    response = token_request(
        http,
        assertion(jwt_client, rsa_private_key, aud=token_url),
        client_id=secret_id,
        client_secret=secret,
    )
    assert_error(response, 400, "invalid_request")
    response = token_request(
        http, assertion(jwt_client, rsa_private_key, aud=token_url), auth=(secret_id, secret)
    )
    assert_error(response, 400, "invalid_request")
    response = token_request(
        http,
        assertion(jwt_client, rsa_private_key, aud=token_url),
        as_json=True,
        client_secret="anything",
    )
    assert_error(response, 400, "invalid_request")


def test_secret_client_cannot_use_an_assertion(
    http: Any,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
    register: Callable[..., tuple[str, str]],
) -> None:
    secret_id, _ = register()
    response = token_request(http, assertion(secret_id, rsa_private_key, aud=token_url))
    assert_error(response, 401, "invalid_client")


def test_jwt_client_cannot_use_a_secret(http: Any, jwt_client: str) -> None:
    response = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(jwt_client, "guess")
    )
    assert_error(response, 401, "invalid_client")
    response = http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": jwt_client,
            "client_secret": "guess",
        },
    )
    assert_error(response, 401, "invalid_client")


def test_disabled_jwt_client_is_refused(
    http: Any,
    services: Services,
    jwt_client: str,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    with services.unit_of_work():
        services.clients.set_enabled(jwt_client, False)
    response = token_request(http, assertion(jwt_client, rsa_private_key, aud=token_url))
    assert_error(response, 401, "invalid_client")


# -- the command line ------------------------------------------------------------------------


def test_cli_registers_a_jwks_client_without_a_secret(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    services: Services,
    http: Any,
    tmp_path: Path,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    jwks_file = tmp_path / "client-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public_jwk(rsa_private_key)]}))
    created = cli_json_here(
        env_for(db_url), "clients", "create", "--name", "x", "--jwks-file", str(jwks_file)
    )
    assert created["client_id"]
    assert created.get("client_secret") is None
    assert created["token_endpoint_auth_methods"] == ["private_key_jwt"]
    response = token_request(http, assertion(created["client_id"], rsa_private_key, aud=token_url))
    assert response.status_code == 200, response.get_data(as_text=True)
    shown = cli_json_here(env_for(db_url), "clients", "show", created["client_id"])
    assert "client_secret" not in shown


@db_independent
def test_cli_reads_a_jwk_set_saved_with_a_byte_order_mark(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    services: Services,
    http: Any,
    tmp_path: Path,
    token_url: str,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    """A set saved by a Windows editor starts with a UTF-8 byte order mark: the admin API
    and --config read past it, --jwks-file said "not valid JSON". A file in another
    encoding is named as such, as --config and the admin API name it."""
    text = json.dumps({"keys": [public_jwk(rsa_private_key)]})
    jwks_file = tmp_path / "notepad-jwks.json"
    jwks_file.write_bytes(b"\xef\xbb\xbf" + text.encode())
    created = cli_json_here(
        env_for(db_url), "clients", "create", "--name", "x", "--jwks-file", str(jwks_file)
    )
    response = token_request(http, assertion(created["client_id"], rsa_private_key, aud=token_url))
    assert response.status_code == 200, response.get_data(as_text=True)

    utf16 = tmp_path / "utf16-jwks.json"
    utf16.write_bytes(text.encode("utf-16"))
    result = run_cli_here(
        env_for(db_url), "clients", "create", "--name", "y", "--jwks-file", str(utf16)
    )
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        f"authserver: error: --jwks-file: {utf16} is not UTF-8 text (JSON is UTF-8, RFC 8259)"
    ]


def test_cli_refuses_a_private_jwk_set(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    services: Services,
    tmp_path: Path,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    private = json.loads(RSAAlgorithm.to_jwk(rsa_private_key))
    jwks_file = tmp_path / "private-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [private]}))
    result = run_cli_here(
        env_for(db_url), "clients", "create", "--name", "x", "--jwks-file", str(jwks_file), "--json"
    )
    assert result.returncode != 0
    assert private["d"] not in result.stdout + result.stderr


@db_independent
def test_cli_refuses_a_key_with_a_costly_exponent(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    services: Services,
    tmp_path: Path,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    """A set of RSA keys with e as long as the modulus made every assertion naming the
    client cost up to a third of a second of CPU (20 keys of 3072 bits, an assertion
    without kid): a stranger sending a few a second cut a real server's throughput for
    other clients from about 700 tokens a second to 12. Such a key is refused."""
    key = public_jwk(rsa_private_key)
    key["e"] = jwt.utils.to_base64url_uint((1 << 2046) + 1).decode()
    jwks_file = tmp_path / "costly.json"
    jwks_file.write_text(json.dumps({"keys": [key]}))
    result = run_cli_here(
        env_for(db_url), "clients", "create", "--name", "x", "--jwks-file", str(jwks_file)
    )
    assert result.returncode != 0
    assert '"e" must be at most 32 bits' in result.stderr
    assert "Traceback" not in result.stderr
    with services.unit_of_work():
        assert services.clients.list() == []


@db_independent
def test_cli_refuses_a_jwk_set_with_two_keys_of_one_kid(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    services: Services,
    tmp_path: Path,
    rsa_private_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
) -> None:
    jwks_file = tmp_path / "twice.json"
    jwks_file.write_text(
        json.dumps({"keys": [public_jwk(rsa_private_key, "k"), public_jwk(other_key, "k")]})
    )
    result = run_cli_here(
        env_for(db_url), "clients", "create", "--name", "x", "--jwks-file", str(jwks_file)
    )
    assert result.returncode == 1, result
    assert result.stderr.startswith("authserver: error: "), result.stderr
    assert "same kid" in result.stderr.splitlines()[0], result.stderr
    with services.unit_of_work():
        assert services.clients.list() == []


def test_a_client_rotates_its_keys_and_keeps_its_id(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    services: Services,
    http: Any,
    tmp_path: Path,
    token_url: str,
    jwt_client: str,
    rsa_private_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
) -> None:
    """A private_key_jwt client's keys are replaced in place (``clients update
    --jwks-file``): the new key is added beside the old one, then the old one dropped. The
    same request works throughout the overlap; the dropped key is refused at once (the
    change reaches the client cache of the serving app), and the client id stays."""
    env = env_for(db_url)

    def replace_keys(*keys: dict[str, Any]) -> dict[str, Any]:
        path = tmp_path / "client-jwks.json"
        path.write_text(json.dumps({"keys": list(keys)}))
        return cli_json_here(env, "clients", "update", jwt_client, "--jwks-file", str(path))  # type: ignore[no-any-return]

    def status(key: rsa.RSAPrivateKey, kid: str) -> int:
        signed = assertion(jwt_client, key, aud=token_url, kid=kid)
        return int(token_request(http, signed).status_code)

    assert status(rsa_private_key, KID) == 200
    assert status(other_key, "client-key-2") == 401
    both = replace_keys(public_jwk(rsa_private_key), public_jwk(other_key, "client-key-2"))
    assert both["client_id"] == jwt_client
    assert status(rsa_private_key, KID) == 200
    assert status(other_key, "client-key-2") == 200
    replace_keys(public_jwk(other_key, "client-key-2"))
    assert status(rsa_private_key, KID) == 401
    assert status(other_key, "client-key-2") == 200
    audit = cli_json_here(env, "audit", "--action", "client.updated", "--json")["events"]
    assert len(audit) == 2
    assert all(e["client_id"] == jwt_client for e in audit)


def test_keys_are_replaced_only_for_a_client_registered_with_keys(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    services: Services,
    register: Callable[..., tuple[str, str]],
    jwt_client: str,
    tmp_path: Path,
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    """A secret client cannot be given keys (its secret would stay valid beside them, and
    the method it uses would change behind the backend's back); a private set is refused
    as at registration; the two key sources exclude each other. Nothing changes."""
    env = env_for(db_url)
    secret_client, _ = register()
    public = tmp_path / "public.json"
    public.write_text(json.dumps({"keys": [public_jwk(rsa_private_key)]}))
    private = tmp_path / "private.json"
    private_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_private_key))
    private.write_text(json.dumps({"keys": [private_jwk]}))
    before = cli_json_here(env, "clients", "show", jwt_client)
    refusals = [
        ((secret_client, "--jwks-file", str(public)), "authenticates with a secret"),
        ((secret_client, "--jwks-uri", "https://keys.example/jwks.json"), "with a secret"),
        ((jwt_client, "--jwks-file", str(private)), "private"),
        (
            (jwt_client, "--jwks-file", str(public), "--jwks-uri", "https://keys.example/j"),
            "mutually exclusive",
        ),
    ]
    for args, said in refusals:
        result = run_cli_here(env, "clients", "update", *args)
        assert result.returncode != 0, args
        assert said in result.stderr, (args, result.stderr)
        assert private_jwk["d"] not in result.stdout + result.stderr
    assert cli_json_here(env, "clients", "show", jwt_client) == before
    assert cli_json_here(env, "clients", "show", secret_client)["token_endpoint_auth_methods"] != [
        "private_key_jwt"
    ]


def test_a_replay_is_refused_after_the_clock_is_stepped_back_past_a_purge(
    settings: Settings,
    clock: FixedClock,
    rsa_private_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A purge at a later time (this host before NTP stepped it back, or an instance
    ahead of this one) forgets the jti of an assertion expired by its clock. Back at the
    earlier time the captured assertion's ``exp`` lies ahead again: it must be refused as
    expired (RFC 7523 §3), not accepted as new."""
    svc = make_services(settings, clock=clock)
    try:
        http = create_app(services=svc).test_client()
        with svc.unit_of_work():
            client, _ = svc.clients.create(
                name="jwt backend",
                audiences=["https://sync.example"],
                jwks={"keys": [public_jwk(rsa_private_key)]},
            )
        captured = assertion(client.client_id, rsa_private_key, aud=settings.issuer + "/token")
        assert token_request(http, captured).status_code == 200
        start = clock.now()
        clock.advance(3600)
        assert housekeeping(svc) >= 1
        clock.set(start)
        with caplog.at_level(logging.INFO, logger="authserver.auth"):
            replay = token_request(http, captured)
        assert_error(replay, 401, "invalid_client")
        lines = [r.getMessage() for r in caplog.records if r.name == "authserver.auth"]
        assert any("the client assertion has expired" in line for line in lines), lines
        # A new assertion that expires after the purge's cutoff is accepted.
        fresh = assertion(
            client.client_id,
            rsa_private_key,
            aud=settings.issuer + "/token",
            lifetime=MAX_ASSERTION_LIFETIME,
        )
        assert token_request(http, fresh).status_code == 200
    finally:
        svc.close()
