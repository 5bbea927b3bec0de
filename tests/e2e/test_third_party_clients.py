"""Backends that call ``POST /token`` through a third-party OAuth 2.0 client library, with
that library's own defaults, against a real ``authserver serve``.

The libraries a Python backend reaches for: Authlib's ``OAuth2Session`` (requests), with
``client_secret_basic``, ``client_secret_post`` and ``private_key_jwt`` (its own
``PrivateKeyJWT`` assertions: no ``kid``, ``typ: JWT``, a one-hour ``exp``), and
requests-oauthlib's ``BackendApplicationClient``. Each gets a token carrying the user it
named, verified with PyJWT against the JWKS (not this server's JOSE code), and reads this
server's errors (RFC 6749 §5.2) as the error they are. The JavaScript libraries are tested
in ``test_third_party_clients_node.py`` (openid-client, oauth4webapi,
express-oauth2-jwt-bearer, jsonwebtoken with jwks-rsa) and, with the verifier package, in
``verifiers/js/test/clients.test.js`` (also simple-oauth2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6750 import InvalidTokenError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import KeySet
from jwt.algorithms import RSAAlgorithm
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2 import InvalidClientError
from requests_oauthlib import OAuth2Session as RequestsOAuthlibSession

from authserver.oauth.client_auth import MAX_ASSERTION_LIFETIME
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here

pytestmark = [pytest.mark.e2e]

AUDIENCE = "https://sync.example.com"


@dataclass
class Deployment:
    server: ServerProcess
    env: dict[str, str]
    secret_client: tuple[str, str]
    jwt_client: str
    jwt_key_pem: bytes

    @property
    def token_url(self) -> str:
        return self.server.base_url + "/token"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("third-party-clients")
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
    }
    server = ServerProcess(env, log_path=tmp / "server.log").start()
    try:
        env["AUTHSERVER_ISSUER"] = server.base_url
        created = cli_json_here(
            env, "clients", "create", "--name", "backend", "--audience", AUDIENCE
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid="backend-key-1", use="sig", alg="RS256")
        jwks_file = tmp / "backend-jwks.json"
        jwks_file.write_text(json.dumps({"keys": [jwk]}))
        jwt_client = cli_json_here(
            env, "clients", "create", "--name", "jwt backend", "--audience", AUDIENCE,
            "--jwks-file", str(jwks_file),
        )  # fmt: skip
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        yield Deployment(
            server,
            env,
            (created["client_id"], created["client_secret"]),
            jwt_client["client_id"],
            pem,
        )
    finally:
        server.stop()
    assert "Traceback" not in (tmp / "server.log").read_text(errors="replace")


def verified(deployment: Deployment, token: dict[str, Any]) -> dict[str, Any]:
    """The access token's claims, verified with PyJWT against the served JWKS."""
    access_token = token["access_token"]
    assert token["token_type"].lower() == "bearer"
    assert jwt.get_unverified_header(access_token)["typ"] == "at+jwt"
    keys = jwt.PyJWKClient(deployment.server.base_url + "/.well-known/jwks.json")
    claims: dict[str, Any] = jwt.decode(
        access_token,
        keys.get_signing_key_from_jwt(access_token).key,
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=deployment.server.base_url,
        options={"require": ["exp", "iat", "nbf", "jti", "sub", "client_id"]},
    )
    # What the answer says is what the token says (RFC 6749 §5.1): its lifetime and scope.
    assert claims["exp"] - claims["iat"] == token["expires_in"] > 0
    assert claims.get("scope") == token.get("scope")
    # The Token Status List reference every token carries, on this issuer.
    reference = claims["status"]["status_list"]
    assert isinstance(reference["idx"], int)
    assert reference["uri"].startswith(deployment.server.base_url + "/statuslists/")
    return claims


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_session_with_a_secret(deployment: Deployment, method: str) -> None:
    client_id, secret = deployment.secret_client
    session = OAuth2Session(client_id, secret, token_endpoint_auth_method=method)
    token = session.fetch_token(
        deployment.token_url,
        grant_type="client_credentials",
        sub="user-1",
        email="user-1@example.com",
        name="User One",
        audience=AUDIENCE,
    )
    claims = verified(deployment, token)
    assert (claims["sub"], claims["email"], claims["name"]) == (
        "user-1",
        "user-1@example.com",
        "User One",
    )
    assert claims["client_id"] == client_id
    # Authlib computed the expiry from expires_in.
    assert token["expires_at"] == pytest.approx(claims["exp"], abs=5)


def test_authlib_private_key_jwt_with_its_default_assertions(deployment: Deployment) -> None:
    """Authlib's ``PrivateKeyJWT`` as it comes: no ``kid`` and an ``exp`` an hour ahead
    (the server's bound); one fresh ``jti`` per request, so two requests both work."""
    session = OAuth2Session(
        deployment.jwt_client,
        deployment.jwt_key_pem,
        token_endpoint_auth_method=PrivateKeyJWT(deployment.token_url),
    )
    sent: list[str] = []
    session.hooks["response"].append(
        lambda response, **_: sent.append(parse_qs(response.request.body)["client_assertion"][0])
    )
    for sub in ("user-2", "user-3"):
        token = session.fetch_token(
            deployment.token_url, grant_type="client_credentials", sub=sub, audience=AUDIENCE
        )
        claims = verified(deployment, token)
        assert (claims["sub"], claims["client_id"]) == (sub, deployment.jwt_client)
    # The assertions were Authlib's defaults, the case this test is about.
    assert len(sent) == 2
    for assertion in sent:
        payload = jwt.decode(assertion, options={"verify_signature": False})
        assert payload["exp"] - payload["iat"] == MAX_ASSERTION_LIFETIME
        assert "kid" not in jwt.get_unverified_header(assertion)


def test_authlib_resource_server_validates_the_tokens_as_rfc_9068_says(
    deployment: Deployment,
) -> None:
    """Authlib's RFC 9068 validator (a resource server's view: ``typ``, ``iss``, ``aud``,
    ``exp``, ``iat``, ``jti``, ``client_id``, ``sub``) accepts the server's tokens, with or
    without a user, and refuses them for another audience."""
    client_id, secret = deployment.secret_client
    keys = KeySet.import_key_set(
        requests.get(deployment.server.base_url + "/.well-known/jwks.json", timeout=10).json()
    )

    class Validator(JWTBearerTokenValidator):  # type: ignore[misc]
        def get_jwks(self) -> KeySet:
            return keys

    session = OAuth2Session(client_id, secret)
    for params in ({"sub": "user-rs", "audience": AUDIENCE}, {}):
        token = session.fetch_token(
            deployment.token_url, grant_type="client_credentials", **params
        )["access_token"]
        validator = Validator(issuer=deployment.server.base_url, resource_server=AUDIENCE)
        claims = validator.authenticate_token(token)
        validator.validate_token(claims, scopes=None, request=None)
        assert claims["sub"] == params.get("sub", client_id)
        assert claims["client_id"] == client_id
        elsewhere = Validator(
            issuer=deployment.server.base_url, resource_server="https://elsewhere.example.com"
        )
        with pytest.raises(InvalidTokenError):
            elsewhere.validate_token(elsewhere.authenticate_token(token), scopes=None, request=None)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "private_key_jwt"])
def test_authlib_session_introspects_and_revokes(deployment: Deployment, method: str) -> None:
    """RFC 7662 and RFC 7009 through Authlib's own client calls; with ``private_key_jwt``,
    Authlib's ``PrivateKeyJWT`` without a token URL makes each assertion's ``aud`` the URL
    it is sent to (``/token``, ``/introspect``, ``/revoke``)."""
    if method == "private_key_jwt":
        assertions = PrivateKeyJWT()
        session = OAuth2Session(
            deployment.jwt_client,
            deployment.jwt_key_pem,
            token_endpoint_auth_method=assertions,
            revocation_endpoint_auth_method=assertions,
        )
        session.register_client_auth_method(assertions)
    else:
        client_id, secret = deployment.secret_client
        session = OAuth2Session(
            client_id,
            secret,
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
        )
    token = session.fetch_token(deployment.token_url, grant_type="client_credentials", sub="user-6")
    base = deployment.server.base_url
    answer = session.introspect_token(base + "/introspect", token=token["access_token"])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["active"], answer.json()["sub"]) == (True, "user-6")
    revoked = session.revoke_token(
        base + "/revoke", token=token["access_token"], token_type_hint="access_token"
    )
    assert revoked.status_code == 200, revoked.text
    answer = session.introspect_token(base + "/introspect", token=token["access_token"])
    assert answer.json() == {"active": False}


@pytest.mark.parametrize("in_body", [False, True], ids=["basic", "body"])
def test_requests_oauthlib_backend_application_client(
    deployment: Deployment, in_body: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oauthlib refuses plain http unless told; the server here is on loopback.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    client_id, secret = deployment.secret_client
    session = RequestsOAuthlibSession(client=BackendApplicationClient(client_id=client_id))
    extra: dict[str, Any] = {"include_client_id": True, "auth": False} if in_body else {}
    token = session.fetch_token(
        token_url=deployment.token_url,
        client_id=client_id,
        client_secret=secret,
        sub="user-4",
        audience=AUDIENCE,
        **extra,
    )
    claims = verified(deployment, token)
    assert (claims["sub"], claims["client_id"]) == ("user-4", client_id)


def test_the_libraries_read_the_servers_errors(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, secret = deployment.secret_client
    wrong = OAuth2Session(client_id, "not-the-secret")
    with pytest.raises(OAuthError) as refused:
        wrong.fetch_token(deployment.token_url, grant_type="client_credentials", sub="user-5")
    assert refused.value.error == "invalid_client"

    right = OAuth2Session(client_id, secret)
    with pytest.raises(OAuthError) as refused:
        right.fetch_token(
            deployment.token_url,
            grant_type="client_credentials",
            sub="user-5",
            audience="https://not-registered.example.com",
        )
    assert refused.value.error == "invalid_target"

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    session = RequestsOAuthlibSession(client=BackendApplicationClient(client_id=client_id))
    with pytest.raises(InvalidClientError):
        session.fetch_token(
            token_url=deployment.token_url, client_id=client_id, client_secret="not-the-secret"
        )
