"""A sync server's view: verify access tokens offline with PyJWT (an independent JOSE
library, never authserver's own code) against the served JWKS (docs/reference.md "The access
token", "Signing keys and rotation"; RFC 7517, RFC 7638, RFC 9068)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from authserver.clients.auth_methods import CLIENT_SECRET_POST
from tests.conftest import db_independent
from tests.factories import issue_token

pytestmark = pytest.mark.e2e

ISSUER = "http://localhost:8000"  # AUTHSERVER_ISSUER in the `settings` fixture
AUD = "https://sync.example"
JWKS_PATH = "/.well-known/jwks.json"
REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members in lexicographic order, no
    whitespace, then base64url without padding."""
    required = {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode("utf-8")
    digest = hashlib.sha256(canonical).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@pytest.fixture
def credentials(register: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    return register(audiences=[AUD], scopes=["sync"], allowed_claims=["libraryId"])


def served_jwks(http: Any) -> dict[str, Any]:
    response = http.get(JWKS_PATH)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return json.loads(response.get_data())  # type: ignore[no-any-return]


def verify(token: str, jwks: dict[str, Any], audience: str = AUD) -> dict[str, Any]:
    """What a sync server does: pick the key by kid from the JWKS and verify with PyJWT."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header.get("kid"), header
    key_set = jwt.PyJWKSet.from_dict(jwks)
    assert header["kid"] in {k.key_id for k in key_set.keys}
    key = key_set[header["kid"]]
    return jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": REQUIRED},
    )


def test_client_token_verifies_offline(http: Any, credentials: tuple[str, str]) -> None:
    token = issue_token(http, credentials, method=CLIENT_SECRET_POST)
    claims = verify(token, served_jwks(http))
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUD
    assert claims["sub"] == credentials[0]
    assert claims["client_id"] == credentials[0]
    assert claims["scope"] == "sync"
    assert claims["nbf"] <= claims["iat"] < claims["exp"]


def test_user_token_verifies_offline(http: Any, credentials: tuple[str, str]) -> None:
    token = issue_token(
        http,
        credentials,
        method=CLIENT_SECRET_POST,
        sub="user-1",
        email="u1@example.com",
        name="User One",
        claims=json.dumps({"libraryId": "lib-1"}),
        expires_in="120",
    )
    claims = verify(token, served_jwks(http))
    assert claims["sub"] == "user-1"
    assert claims["email"] == "u1@example.com"
    assert claims["name"] == "User One"
    assert claims["libraryId"] == "lib-1"
    assert claims["exp"] - claims["iat"] == 120


def test_token_verified_with_single_pyjwk(http: Any, credentials: tuple[str, str]) -> None:
    token = issue_token(http, credentials, method=CLIENT_SECRET_POST)
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in served_jwks(http)["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=AUD, issuer=ISSUER)
    assert claims["aud"] == AUD


def test_wrong_audience_or_issuer_is_rejected_by_the_verifier(
    http: Any, credentials: tuple[str, str]
) -> None:
    token = issue_token(http, credentials, method=CLIENT_SECRET_POST)
    jwks = served_jwks(http)
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, jwks, audience="https://elsewhere.example")
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(token, key, algorithms=["RS256"], audience=AUD, issuer="https://evil.example")


def test_tampered_token_is_rejected(http: Any, credentials: tuple[str, str]) -> None:
    token = issue_token(http, credentials, method=CLIENT_SECRET_POST)
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["sub"] = "someone-else"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{header}.{forged_payload}.{signature}", served_jwks(http))


def test_jti_is_unique(http: Any, credentials: tuple[str, str]) -> None:
    jwks = served_jwks(http)
    tokens = [
        issue_token(http, credentials, method=CLIENT_SECRET_POST, sub="same-user")
        for _ in range(50)
    ]
    jtis = [verify(token, jwks)["jti"] for token in tokens]
    assert all(isinstance(j, str) and j for j in jtis)
    assert len(set(jtis)) == 50


@db_independent
def test_jwks_holds_public_rsa_signing_keys_only(http: Any) -> None:
    jwks = served_jwks(http)
    assert set(jwks) == {"keys"}
    assert jwks["keys"], "the JWKS must publish at least the current key"
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "kid", "use", "alg", "n", "e"}, jwk
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["kty"] == "RSA"
        assert jwk["use"] == "sig"
        assert jwk["alg"] == "RS256"
        assert len(b64url_decode(jwk["n"])) * 8 >= 2048
        for member in ("n", "e"):
            # RFC 7518 §6.3.1: base64url without padding, minimal (no leading zero octet).
            assert re.fullmatch(r"[A-Za-z0-9_-]+", jwk[member]), member
            assert b64url_decode(jwk[member])[0] != 0, member
    assert len({k["kid"] for k in jwks["keys"]}) == len(jwks["keys"])


@db_independent
def test_kid_is_rfc7638_thumbprint(http: Any) -> None:
    for jwk in served_jwks(http)["keys"]:
        assert jwk["kid"] == rfc7638_thumbprint(jwk)


def test_rfc7638_thumbprint_helper_matches_the_rfc_example() -> None:
    # RFC 7638 §3.1: the example key and its thumbprint, so the helper above is trusted.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v"
        "-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbIS"
        "D08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
        "kEgU8awapJzKnqDKgw"
    )
    jwk = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert rfc7638_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_every_token_kid_is_published(http: Any, credentials: tuple[str, str]) -> None:
    kids = {k["kid"] for k in served_jwks(http)["keys"]}
    for _ in range(5):
        token = issue_token(http, credentials, method=CLIENT_SECRET_POST)
        assert jwt.get_unverified_header(token)["kid"] in kids


@db_independent
def test_jwks_caching_headers(http: Any) -> None:
    response = http.get(JWKS_PATH)
    cache_control = response.headers.get("Cache-Control", "")
    match = re.search(r"max-age=(\d+)", cache_control)
    assert match, cache_control
    assert 0 < int(match.group(1)) <= 3600
    assert "no-store" not in cache_control
    etag = response.headers.get("ETag")
    assert etag

    again = http.get(JWKS_PATH, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""
    assert again.headers.get("ETag") == etag
    # RFC 9110 §8.6: no Content-Length on a 304 unless it is the 200's (it said 0).
    assert again.headers.get("Content-Length") is None
    head = http.head(JWKS_PATH)
    assert head.headers["Content-Length"] == str(len(response.get_data()))

    other = http.get(JWKS_PATH, headers={"If-None-Match": '"not-the-etag"'})
    assert other.status_code == 200
    assert json.loads(other.get_data()) == json.loads(response.get_data())
