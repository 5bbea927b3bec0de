"""authserver_verifier against a JWKS we control, served by a loopback ``http.server``.

Every check RFC 9068 §4 asks of a resource server, the JWKS cache (max-age, cap, ETag,
stale-if-error), refetch on an unknown ``kid`` and its rate limit (a forged-kid flood
costs one fetch per interval), rotation and retire, the WSGI middleware, and that the
package imports neither Flask nor SQLAlchemy nor any authserver server module.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from authserver_verifier import CLAIMS_ENVIRON_KEY
from authserver_verifier import REASONS
from authserver_verifier import InvalidToken
from authserver_verifier import TokenVerifier
from authserver_verifier import bearer_token
from authserver_verifier import require_token
from authserver_verifier import require_token_asgi
from authserver_verifier import rules
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import RSAKey

AUDIENCE = "https://sync.example.com"
#: The path of the one status list the double serves.
STATUS_LIST = "/statuslists/1"


@pytest.fixture(scope="module")
def keys() -> list[RSAKey]:
    """Three RSA keys (generation is slow), kid = RFC 7638 thumbprint."""
    generated = [RSAKey.generate_key(2048, private=True) for _ in range(3)]
    for key in generated:
        key.ensure_kid()
    return generated


def public_jwk(key: RSAKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "use": "sig", "alg": "RS256"}


@dataclass
class AuthServerDouble:
    """What the verifier sees of an authserver: metadata and a JWKS, with knobs."""

    issuer: str = ""
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    cache_control: str | None = "public, max-age=300"
    jwks_status: int = 200
    jwks_location: str | None = None
    metadata_override: dict[str, Any] | None = None
    jwks_fetches: int = 0
    not_modified: int = 0
    #: A JWKS body served as it is instead of :attr:`jwks` (a malformed document).
    raw_jwks: bytes | None = None
    #: Send header names lower-cased, as HTTP/2 and some servers (granian) do.
    lowercase_headers: bool = False
    #: Status List Tokens by path (``/statuslists/1``), served as application/statuslist+jwt.
    status_lists: dict[str, str] = field(default_factory=dict)
    status_list_status: int = 200
    status_list_fetches: int = 0
    #: Conditional GETs of a status list answered 304 (its ETag is the body's hash).
    status_list_not_modified: int = 0
    #: Seconds the double waits before answering a JWKS or status list request: an issuer
    #: that accepts connections and does not answer (longer than the verifier's timeout).
    hang: float = 0.0
    #: As :attr:`hang`, for status lists only.
    list_hang: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, *published: RSAKey) -> None:
        self.jwks = {"keys": [public_jwk(k) for k in published]}

    def body(self) -> bytes:
        return json.dumps(self.jwks).encode()


@pytest.fixture
def server() -> Iterator[AuthServerDouble]:
    state = AuthServerDouble()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/.well-known/oauth-authorization-server":
                document = state.metadata_override or {
                    "issuer": state.issuer,
                    "jwks_uri": state.issuer + "/.well-known/jwks.json",
                }
                self._send(200, json.dumps(document).encode(), {})
            elif self.path == "/.well-known/jwks.json":
                with state.lock:
                    state.jwks_fetches += 1
                time.sleep(state.hang)
                if state.jwks_location:
                    self._send(302, b"", {"Location": state.jwks_location})
                    return
                body = state.raw_jwks if state.raw_jwks is not None else state.body()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                headers = {"ETag": etag}
                if state.cache_control is not None:
                    headers["Cache-Control"] = state.cache_control
                if state.jwks_status == 200 and self.headers.get("If-None-Match") == etag:
                    with state.lock:
                        state.not_modified += 1
                    self._send(304, b"", headers)
                else:
                    self._send(state.jwks_status, body, headers)
            elif self.path in state.status_lists:
                with state.lock:
                    state.status_list_fetches += 1
                body = state.status_lists[self.path].encode()  # as it stands now, sent late
                time.sleep(state.hang + state.list_hang)
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                media_type = "application/statuslist+jwt"
                if state.status_list_status == 200 and self.headers.get("If-None-Match") == etag:
                    with state.lock:
                        state.status_list_not_modified += 1
                    self._send(304, b"", {"ETag": etag}, media_type)
                else:
                    self._send(state.status_list_status, body, {"ETag": etag}, media_type)
            else:
                self._send(404, b"{}", {})

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str],
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in headers.items():
                self.send_header(name.lower() if state.lowercase_headers else name, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.issuer = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def claims_for(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-42",
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": uuid.uuid4().hex,
        "client_id": "backend-1",
        "libraryId": "lib-7",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_rs256(key: RSAKey, header: dict[str, Any], payload: bytes) -> str:
    """RS256 by hand (cryptography), so headers joserfc would refuse can be signed too."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}"
    private = key.private_key
    assert private is not None
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def sign(key: RSAKey, claims: dict[str, Any], **header: Any) -> str:
    protected: dict[str, Any] = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
    protected.update(header)
    protected = {k: v for k, v in protected.items() if v is not None}
    return raw_rs256(key, protected, json.dumps(claims).encode())


@dataclass
class Issuer:
    """The authserver as the tokens see it: the double with the signing key published."""

    server: AuthServerDouble
    key: RSAKey

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """:func:`claims_for` this issuer."""
        return claims_for(self.server.issuer, **overrides)

    def token(
        self, claims: dict[str, Any] | None = None, *, key: RSAKey | None = None, **header: Any
    ) -> str:
        """An access token with *claims* (default: :meth:`claims`), signed by the issuer's
        key or *key*; *header* overrides header members (``None`` drops one)."""
        signer = self.key if key is None else key
        return sign(signer, self.claims() if claims is None else claims, **header)

    def serve_status_list(
        self, revoked: set[int], *, now: float, key: RSAKey | None = None, **options: Any
    ) -> None:
        """The double serves :data:`STATUS_LIST` with the indices in *revoked* set, signed
        by the issuer's key or *key*; *options* as for :func:`status_list_token`."""
        uri = self.server.issuer + STATUS_LIST
        signer = self.key if key is None else key
        self.server.status_lists[STATUS_LIST] = status_list_token(
            signer, uri, revoked, now=now, **options
        )


@pytest.fixture
def issuer(server: AuthServerDouble, keys: list[RSAKey]) -> Issuer:
    """The double with ``keys[0]`` published as the issuer's signing key."""
    server.publish(keys[0])
    return Issuer(server, keys[0])


def verifier_for(state: AuthServerDouble, **options: Any) -> TokenVerifier:
    options.setdefault("min_refetch_interval", 0.0)
    return TokenVerifier(state.issuer, AUDIENCE, **options)


def outcome(verifier: TokenVerifier, token: str | bytes) -> str:
    """The reason *verifier* refuses *token* with, or ``"accepted"``."""
    try:
        verifier.verify(token)
    except InvalidToken as exc:
        return exc.reason
    return "accepted"


def reason_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason in REASONS
    return caught.value.reason


# -- the happy path ---------------------------------------------------------------------------


def test_valid_token_returns_its_claims(server: AuthServerDouble, issuer: Issuer) -> None:
    claims = issuer.claims()
    assert verifier_for(server).verify(issuer.token(claims)) == claims


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+JWT"])
def test_typ_accepts_both_rfc9068_spellings_case_insensitively(
    server: AuthServerDouble, issuer: Issuer, typ: str
) -> None:
    verifier_for(server).verify(issuer.token(typ=typ))


def test_audience_list_containing_ours_is_accepted(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    token = issuer.token(issuer.claims(aud=["https://other", AUDIENCE]))
    assert verifier_for(server).verify(token)["aud"] == ["https://other", AUDIENCE]


def test_bytes_tokens_are_accepted(server: AuthServerDouble, issuer: Issuer) -> None:
    verifier_for(server).verify(issuer.token().encode())


# -- header checks ----------------------------------------------------------------------------


def test_alg_is_pinned_to_rs256(server: AuthServerDouble, issuer: Issuer) -> None:
    verifier = verifier_for(server)
    claims = issuer.claims()
    # Same key, another RSA algorithm.
    ps256 = jws.serialize_compact(
        {"alg": "PS256", "typ": "at+jwt", "kid": issuer.key.kid},
        json.dumps(claims).encode(),
        issuer.key,
        algorithms=["PS256"],
    )
    assert reason_of(verifier, ps256) == "unsupported_alg"
    # The classic confusion: HMAC keyed with the public key's bytes.
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": issuer.key.kid}).encode())
    payload = b64(json.dumps(claims).encode())
    secret = json.dumps(public_jwk(issuer.key)).encode()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert reason_of(verifier, f"{header}.{payload}.{b64(mac)}") == "unsupported_alg"
    # alg none.
    none = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": issuer.key.kid}).encode())
    assert reason_of(verifier, f"{none}.{payload}.") == "unsupported_alg"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        *(
            pytest.param({"typ": typ}, "wrong_typ", id=f"typ={typ!r}")
            for typ in ["JWT", "jwt", "application/jwt", "at+jwt2", None, 1]
        ),
        pytest.param({"kid": None}, "missing_kid", id="no kid"),
        pytest.param({"crit": ["exp"], "exp": 1}, "unsupported_header", id="crit"),
    ],
)
def test_header_checks(
    server: AuthServerDouble, issuer: Issuer, header: dict[str, Any], reason: str
) -> None:
    token = issuer.token(**header)
    assert reason_of(verifier_for(server), token) == reason
    assert server.jwks_fetches == 0  # refused on its header, before any key is looked up


def test_an_object_that_fails_every_comparison_is_still_an_invalid_token(
    server: AuthServerDouble,
) -> None:
    """The promise is InvalidToken and nothing else, whatever is passed: the empty-token
    check compared the argument with "" outside the guard, so an object whose __eq__
    raises escaped with its own exception."""

    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing me")

        __hash__ = object.__hash__

    assert outcome(verifier_for(server), Hostile()) == "malformed"  # type: ignore[arg-type]


def _flip_low_bit(char: str) -> str:
    """The base64url digit one unit away: the same bytes when the last digit's low bits
    are unused (a 256-byte RSA signature leaves four)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(char) ^ 1]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: t + "\n", id="trailing newline"),
        pytest.param(lambda t: t + "\t", id="trailing tab"),
        pytest.param(lambda t: t + "==", id="padding"),
        pytest.param(lambda t: t.replace("-", "+").replace("_", "/"), id="the + / alphabet"),
        pytest.param(lambda t: t[:-1] + _flip_low_bit(t[-1]), id="other unused low bits"),
    ],
)
def test_a_token_not_in_the_exact_compact_form_is_malformed(
    server: AuthServerDouble, issuer: Issuer, change: Callable[[str], str]
) -> None:
    """RFC 7515 §7.1: a lenient decoder reads these as the same token (a denylist or a
    cache keyed on the string is sidestepped); the JS verifier refuses them alike."""
    token = issuer.token()
    changed = change(token)
    if changed == token:  # no - or _ to swap in this token
        pytest.skip("nothing to change")
    assert reason_of(verifier_for(server), changed) == "malformed"


@pytest.mark.parametrize(
    "text", ["AQAB=", "AQ==", "A+/B", "AQ AB", "AQAB\n", "A", "AAAAA", "é"], ids=repr
)
def test_the_base64url_decoder_takes_only_what_rfc_7515_writes(text: str) -> None:
    """One decoder for the server and this package: Python's own skips characters outside
    its alphabet and takes padding."""
    with pytest.raises(binascii.Error):
        rules.b64url_decode(text)


def test_the_base64url_decoder_reads_unpadded_base64url() -> None:
    assert rules.b64url_decode("") == b""
    assert rules.b64url_decode("AQAB") == b"\x01\x00\x01"
    assert rules.b64url_decode("-_8") == b"\xfb\xff"
    assert rules.b64url_decode("AQ") == b"\x01"


@pytest.mark.parametrize("written", [str(10**400), "1e400", "-1e400"])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_time_beyond_a_double_is_not_a_time(
    server: AuthServerDouble, issuer: Issuer, claim: str, written: str
) -> None:
    """10**400 is an integer joserfc compares as a time ("never expires"), 1e400 and -1e400
    are floats Python reads as infinities (an nbf of -1e400 was "not_yet_valid", an iat of
    1e400 "issued_in_future"); JavaScript reads them all as Infinity and refuses them as
    invalid_claim."""
    claims = issuer.claims(**{claim: 123456789})
    payload = json.dumps(claims).replace(f'"{claim}": 123456789', f'"{claim}": {written}')
    assert written in payload
    header = {"alg": "RS256", "typ": "at+jwt", "kid": issuer.key.kid}
    token = raw_rs256(issuer.key, header, payload.encode())
    assert reason_of(verifier_for(server), token) == "invalid_claim"


def test_a_status_index_written_as_a_whole_float_is_that_index(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """JSON's 1.0 is the number 1 (the JS verifier reads it so)."""
    issuer.serve_status_list({5}, now=clock.wall)
    verifier = status_verifier(server, clock)
    claims = with_status(server, 5)
    claims["status"]["status_list"]["idx"] = 5.0
    assert reason_of(verifier, issuer.token(claims)) == "revoked"


@pytest.mark.parametrize(
    "token",
    ["abc", "a.b", "a.b.c.d", "..", "!!!.e30.sig", b64(b"[1]") + ".e30.sig", "x" * 20000],
)
def test_malformed_tokens(server: AuthServerDouble, token: str) -> None:
    assert reason_of(verifier_for(server), token) == "malformed"


# -- signature --------------------------------------------------------------------------------


def test_tampered_payload_fails_the_signature(server: AuthServerDouble, issuer: Issuer) -> None:
    header, _, signature = issuer.token().split(".")
    forged = b64(json.dumps(issuer.claims(sub="admin")).encode())
    assert reason_of(verifier_for(server), f"{header}.{forged}.{signature}") == "bad_signature"


def test_another_key_claiming_a_published_kid_fails(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey]
) -> None:
    token = issuer.token(key=keys[1], kid=issuer.key.kid)
    assert reason_of(verifier_for(server), token) == "bad_signature"


def test_payload_that_is_not_a_json_object(server: AuthServerDouble, issuer: Issuer) -> None:
    key = issuer.key
    token = raw_rs256(key, {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}, b"[1]")
    assert reason_of(verifier_for(server), token) == "malformed"


# -- claims -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "https://evil.example.com"}, "wrong_issuer"),
        ({"iss": None}, "missing_claim"),
        ({"aud": "https://other.example.com"}, "wrong_audience"),
        ({"aud": ["https://a", "https://b"]}, "wrong_audience"),
        ({"aud": {"x": AUDIENCE}}, "wrong_audience"),
        ({"aud": None}, "missing_claim"),
        ({"exp": None}, "missing_claim"),
        ({"sub": None}, "missing_claim"),
        ({"jti": None}, "missing_claim"),
        ({"client_id": None}, "missing_claim"),
        ({"iat": None}, "missing_claim"),
        ({"exp": "tomorrow"}, "invalid_claim"),
        ({"exp": True}, "invalid_claim"),
        # NaN and Infinity are not JSON (RFC 8259): the payload is malformed, as the JS
        # verifier says too.
        ({"exp": float("nan")}, "malformed"),
        ({"iat": float("nan")}, "malformed"),
        ({"nbf": float("inf")}, "malformed"),
        ({"sub": ""}, "invalid_claim"),
        ({"iss": 7}, "wrong_issuer"),
    ],
)
def test_claim_checks(
    server: AuthServerDouble, issuer: Issuer, overrides: dict[str, Any], reason: str
) -> None:
    token = issuer.token(issuer.claims(**overrides))
    assert reason_of(verifier_for(server), token) == reason


@pytest.mark.parametrize(
    ("offsets", "expected"),
    [
        pytest.param({"exp": -10}, "accepted", id="expired within the leeway"),
        pytest.param({"exp": -60, "iat": -400, "nbf": -400}, "expired", id="expired"),
        pytest.param({"nbf": 10}, "accepted", id="nbf within the leeway"),
        pytest.param({"nbf": 120}, "not_yet_valid", id="not yet valid"),
        pytest.param({"iat": 10}, "accepted", id="iat within the leeway"),
        pytest.param({"iat": 120, "nbf": None}, "issued_in_future", id="issued in the future"),
        pytest.param({"nbf": None}, "accepted", id="no nbf, optional in RFC 9068"),
    ],
)
def test_time_claims_with_leeway(
    server: AuthServerDouble, issuer: Issuer, offsets: dict[str, int | None], expected: str
) -> None:
    """A 30 s leeway; *offsets* are seconds from now (``None`` leaves the claim out)."""
    now = int(time.time())
    times = {name: None if offset is None else now + offset for name, offset in offsets.items()}
    token = issuer.token(issuer.claims(**times))
    assert outcome(verifier_for(server, leeway=30), token) == expected


def test_leeway_zero_and_injected_clock(server: AuthServerDouble, issuer: Issuer) -> None:
    now = int(time.time())
    token = issuer.token(issuer.claims(exp=now + 100))
    assert verifier_for(server, leeway=0, clock=lambda: now + 99.5).verify(token)
    assert reason_of(verifier_for(server, leeway=0, clock=lambda: now + 100), token) == "expired"


# -- the JWKS cache ---------------------------------------------------------------------------


def test_jwks_is_discovered_and_cached(server: AuthServerDouble, issuer: Issuer) -> None:
    verifier = verifier_for(server)
    for _ in range(20):
        verifier.verify(issuer.token())
    assert server.jwks_fetches == 1


def test_an_issuer_with_a_trailing_slash_is_discovered_without_it(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    """authserver's issuer never ends in / (it drops one from AUTHSERVER_ISSUER): the
    verifier given "https://auth.example.com/" asks <issuer>/.well-known/... of the same
    issuer, accepts its metadata and tokens, and says which issuer it checks."""
    verifier = TokenVerifier(server.issuer + "/", AUDIENCE)
    assert verifier.issuer == server.issuer
    assert verifier.verify(issuer.token())["iss"] == server.issuer
    assert server.jwks_fetches == 1


def test_metadata_for_another_issuer_is_refused(server: AuthServerDouble, issuer: Issuer) -> None:
    server.metadata_override = {
        "issuer": "https://evil.example.com",
        "jwks_uri": server.issuer + "/.well-known/jwks.json",
    }
    token = issuer.token()
    assert reason_of(verifier_for(server), token) == "jwks_unavailable"
    # The error names the URL tried and what it said instead.
    with pytest.raises(InvalidToken) as caught:
        verifier_for(server).verify(token)
    message = str(caught.value)
    assert f"{server.issuer}/.well-known/oauth-authorization-server" in message
    assert "https://evil.example.com" in message


@pytest.mark.parametrize(
    "options",
    [{"min_refetch_interval": 0.0}, {"timeout": 1}],
    ids=["no refetch wait", "timeout 1s"],
)
def test_unreachable_authserver_is_named_with_the_cause(
    keys: list[RSAKey], options: dict[str, float]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{probe.getsockname()[1]}"
    verifier = TokenVerifier(issuer, AUDIENCE, **options)
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(sign(keys[0], claims_for(issuer)))
    assert caught.value.reason == "jwks_unavailable"
    assert issuer in str(caught.value)
    assert "connection refused" in str(caught.value)


@pytest.mark.parametrize("jwks_uri", ["file:///etc/passwd", "ftp://127.0.0.1/jwks.json"])
def test_jwks_uri_other_than_http_is_refused(
    server: AuthServerDouble, issuer: Issuer, jwks_uri: str
) -> None:
    server.metadata_override = {"issuer": server.issuer, "jwks_uri": jwks_uri}
    token = issuer.token()
    assert reason_of(verifier_for(server), token) == "jwks_unavailable"
    with pytest.raises(ValueError, match="jwks_uri"):
        TokenVerifier(server.issuer, AUDIENCE, jwks_uri=jwks_uri)


@pytest.mark.parametrize(
    "issuer",
    [
        "auth.example.com",
        "ftp://auth.example.com",
        "https://",
        "http:///x",
        "https://[::1",
        # What authserver never puts in iss (its AUTHSERVER_ISSUER rule) and the Node
        # package refuses too: each was built here, then refused every token.
        "HTTPS://auth.example.com",
        "https://auth.example.com:99999",
        "https://auth.example.com:0",
        "https://auth.example.com:",
        "https://auth example.com",
        "https://auth.example.com/a\tb",
        "https://auth.example.com?x=1",
        "https://auth.example.com/#a",
        "https://user@auth.example.com",
    ],
)
def test_an_issuer_that_is_no_http_url_is_refused_at_construction(issuer: str) -> None:
    """As the Node package's createVerifier refuses it: such a verifier was built, then
    refused every token (jwks_unavailable, a 503 per request for a typo in the settings),
    and "https://[::1" had every token blamed as "malformed" (a ValueError of urlsplit)."""
    with pytest.raises(ValueError, match="issuer must be"):
        TokenVerifier(issuer, AUDIENCE)


@pytest.mark.parametrize("audience", [[AUDIENCE], (AUDIENCE,), AUDIENCE.encode(), 5])
def test_an_audience_that_is_no_string_is_refused_at_construction(
    server: AuthServerDouble, audience: Any
) -> None:
    """A list of audiences (the Node package's createVerifier takes one) was accepted and
    compared as a whole with each token's aud: every token refused as wrong_audience."""
    with pytest.raises(TypeError, match="audience must be"):
        TokenVerifier(server.issuer, audience)


def test_explicit_jwks_uri_skips_discovery(server: AuthServerDouble, issuer: Issuer) -> None:
    server.metadata_override = {"issuer": "broken"}
    verifier = verifier_for(server, jwks_uri=server.issuer + "/.well-known/jwks.json")
    verifier.verify(issuer.token())


@pytest.mark.parametrize("lowercase", [False, True], ids=["Cache-Control", "cache-control"])
def test_max_age_is_honoured(
    server: AuthServerDouble, issuer: Issuer, lowercase: bool, clock: Clock
) -> None:
    # Header names are case-insensitive (RFC 9110 §5.1): max-age and ETag are honoured
    # however the server spells them.
    server.lowercase_headers = lowercase
    server.cache_control = "public, max-age=1"
    verifier = verifier_for(server, monotonic=lambda: clock.mono)
    token = issuer.token()
    verifier.verify(token)
    clock.advance(0.7)  # before the last fifth of the max-age, where a use refreshes ahead
    verifier.verify(token)
    assert server.jwks_fetches == 1
    clock.advance(0.4)
    verifier.verify(token)
    assert server.jwks_fetches == 2
    assert server.not_modified == 1  # If-None-Match with the ETag: the set had not changed


def test_max_age_is_capped(server: AuthServerDouble, issuer: Issuer, clock: Clock) -> None:
    server.cache_control = "max-age=86400"
    verifier = verifier_for(server, max_cache_seconds=0.3, monotonic=lambda: clock.mono)
    token = issuer.token()
    verifier.verify(token)
    clock.advance(0.4)
    verifier.verify(token)
    assert server.jwks_fetches == 2


@pytest.mark.parametrize("cache_control", ["no-store", "no-cache, max-age=300", "max-age=0"])
def test_uncacheable_jwks_is_still_rate_limited(
    server: AuthServerDouble, issuer: Issuer, cache_control: str
) -> None:
    server.cache_control = cache_control
    verifier = verifier_for(server, min_refetch_interval=60)
    for _ in range(10):
        verifier.verify(issuer.token())
    assert server.jwks_fetches == 1


def test_non_rsa_and_private_and_encryption_keys_are_ignored(
    server: AuthServerDouble, keys: list[RSAKey]
) -> None:
    server.jwks = {
        "keys": [
            {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "ec"},
            {**keys[1].as_dict(private=True), "kid": keys[1].kid},
            {**public_jwk(keys[2]), "use": "enc"},
            {**public_jwk(keys[0]), "n": "not base64!"},
        ]
    }
    verifier = verifier_for(server)
    for key in keys:
        assert reason_of(verifier, sign(key, claims_for(server.issuer))) == "unknown_kid"


def test_a_key_shorter_than_2048_bits_is_not_used(server: AuthServerDouble) -> None:
    """RFC 7518 §3.3: a key of 2048 bits or larger MUST be used with RS256. A 1024-bit key
    in the set verified its tokens here (with joserfc's SecurityWarning), while the Node
    verifier (jose) refused them; both treat such a key as absent now: unknown_kid."""
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    numbers = small.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "small", "use": "sig", "n": b64(numbers.n.to_bytes(128, "big"))}
    server.jwks = {"keys": [{**jwk, "e": b64(numbers.e.to_bytes(3, "big"))}]}
    header = b64(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": "small"}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims_for(server.issuer)).encode())}"
    signature = small.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    # Warnings are errors here: joserfc's SecurityWarning is not met on the way either.
    assert reason_of(verifier_for(server), f"{signing_input}.{b64(signature)}") == "unknown_kid"


def test_keys_sharing_a_kid_are_each_tried(server: AuthServerDouble, keys: list[RSAKey]) -> None:
    """RFC 7517 §4.5 only says kids SHOULD differ: a set with two keys under one kid (or
    one key published twice) verifies a token signed by either, as the Node verifier
    (jose's candidates) does now. The last entry replaced the others: a token signed by
    the first was bad_signature, and Node said unknown_kid for all."""
    shared = {"kid": "shared"}
    server.jwks = {
        "keys": [
            {**public_jwk(keys[0]), **shared},
            {**public_jwk(keys[0]), **shared, "n": "AAAA"},  # cannot be used: skipped
            {**public_jwk(keys[1]), **shared},
            {**public_jwk(keys[1]), **shared},
        ]
    }
    verifier = verifier_for(server)
    for key in keys[:2]:
        token = raw_rs256(
            key,
            {"alg": "RS256", "typ": "at+jwt", "kid": "shared"},
            json.dumps(claims_for(server.issuer)).encode(),
        )
        assert verifier.verify(token)
    token = raw_rs256(
        keys[2],
        {"alg": "RS256", "typ": "at+jwt", "kid": "shared"},
        json.dumps(claims_for(server.issuer)).encode(),
    )
    assert reason_of(verifier, token) == "bad_signature"


def test_entries_of_the_set_that_are_no_json_object_are_skipped(
    server: AuthServerDouble, keys: list[RSAKey]
) -> None:
    """RFC 7517 §5: keys a verifier cannot use are skipped, not the whole set; the Node
    verifier refused every token for one such entry until it skipped them too."""
    server.jwks = {"keys": [public_jwk(keys[0]), "junk", None, [1, 2], 7]}
    token = raw_rs256(
        keys[0],
        {"alg": "RS256", "typ": "at+jwt", "kid": public_jwk(keys[0])["kid"]},
        json.dumps(claims_for(server.issuer)).encode(),
    )
    assert verifier_for(server).verify(token)


# -- rotation, unknown kid, rate limit, retire --------------------------------------------------


def test_unknown_kid_triggers_a_refetch(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey]
) -> None:
    verifier = verifier_for(server)
    verifier.verify(issuer.token())
    server.publish(keys[0], keys[1])  # rotation: the new key appears
    verifier.verify(issuer.token(key=keys[1]))
    assert server.jwks_fetches == 2
    verifier.verify(issuer.token())  # the old one still works
    assert server.jwks_fetches == 2


def test_unknown_kid_refetch_is_rate_limited(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey], clock: Clock
) -> None:
    verifier = verifier_for(server, min_refetch_interval=0.5, monotonic=lambda: clock.mono)
    verifier.verify(issuer.token())
    server.publish(keys[0], keys[1])
    new = issuer.token(key=keys[1])
    clock.advance(0.45)
    assert reason_of(verifier, new) == "unknown_kid"  # fetched just now: no refetch yet
    assert server.jwks_fetches == 1
    clock.advance(0.1)
    assert verifier.verify(new)
    assert server.jwks_fetches == 2


def test_forged_kid_flood_costs_one_fetch_per_interval(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey]
) -> None:
    verifier = verifier_for(server, min_refetch_interval=10)
    claims = json.dumps(issuer.claims()).encode()
    header = {"alg": "RS256", "typ": "at+jwt"}
    forged = [raw_rs256(keys[1], {**header, "kid": uuid.uuid4().hex}, claims) for _ in range(50)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        reasons = list(pool.map(lambda token: outcome(verifier, token), forged * 10))
    assert set(reasons) == {"unknown_kid"}
    assert server.jwks_fetches == 1
    assert verifier.fetch_count == 1
    verifier.verify(issuer.token())  # real tokens still pass


def test_retired_key_is_dropped_when_the_cache_expires(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey], clock: Clock
) -> None:
    server.publish(keys[0], keys[1])
    server.cache_control = "max-age=1"
    verifier = verifier_for(server, min_refetch_interval=0.2, monotonic=lambda: clock.mono)
    old = issuer.token()
    verifier.verify(old)
    server.publish(keys[1])  # keys retire KID: it leaves the JWKS at once
    clock.advance(0.9)
    verifier.verify(old)  # still cached
    clock.advance(0.2)
    assert reason_of(verifier, old) == "unknown_kid"
    verifier.verify(issuer.token(key=keys[1]))


def test_refresh_drops_a_retired_key_at_once(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey]
) -> None:
    """``refresh()`` is what the docs tell an operator to call after a retire: it fetches
    at once, even moments after another fetch (it waited out min_refetch_interval, and a
    retired key kept verifying until the cache expired)."""
    server.publish(keys[0], keys[1])
    verifier = verifier_for(server, min_refetch_interval=10.0)
    old = issuer.token()
    verifier.verify(old)
    server.publish(keys[1])
    verifier.refresh()
    assert server.jwks_fetches == 2
    assert reason_of(verifier, old) == "unknown_kid"


def test_refresh_makes_the_status_lists_be_fetched_at_their_next_use(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    issuer.serve_status_list(set(), now=clock.wall, ttl=3600)
    verifier = status_verifier(server, clock, min_refetch_interval=10.0)
    token = issuer.token(with_status(server, 5))
    assert verifier.verify(token)
    issuer.serve_status_list({5}, now=clock.wall, ttl=3600)
    verifier.refresh()
    assert reason_of(verifier, token) == "revoked"


# -- failures of the authserver -----------------------------------------------------------------


def test_last_good_set_is_used_while_refresh_fails(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey]
) -> None:
    server.cache_control = "max-age=0"
    verifier = verifier_for(server, stale_if_error=60)
    token = issuer.token()
    verifier.verify(token)
    server.jwks_status = 500
    verifier.verify(token)
    assert server.jwks_fetches == 2
    # A kid we cannot look up while the authserver fails is not the token's fault.
    assert reason_of(verifier, issuer.token(key=keys[1])) == "jwks_unavailable"


def test_stale_if_error_bounds_the_last_good_set(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    server.cache_control = "max-age=0"
    verifier = verifier_for(server, stale_if_error=0.3, monotonic=lambda: clock.mono)
    token = issuer.token()
    verifier.verify(token)
    server.jwks_status = 503
    clock.advance(0.35)
    assert reason_of(verifier, token) == "jwks_unavailable"
    server.jwks_status = 200
    verifier.verify(token)


def test_response_size_is_capped(server: AuthServerDouble, issuer: Issuer) -> None:
    server.jwks["padding"] = "x" * 5000
    token = issuer.token()
    assert reason_of(verifier_for(server, max_response_bytes=4096), token) == "jwks_unavailable"
    verifier_for(server, max_response_bytes=8192).verify(token)


def test_redirects_are_not_followed(server: AuthServerDouble, issuer: Issuer) -> None:
    server.jwks_location = "http://127.0.0.1:1/elsewhere.json"
    token = issuer.token()
    assert reason_of(verifier_for(server), token) == "jwks_unavailable"


def test_https_issuer_never_fetches_keys_over_http(keys: list[RSAKey]) -> None:
    verifier = TokenVerifier("https://auth.invalid", AUDIENCE)
    assert verifier._check_url("https://auth.invalid/jwks") == "https://auth.invalid/jwks"
    with pytest.raises(InvalidToken):
        verifier._check_url("http://auth.invalid/jwks")


# -- threads ----------------------------------------------------------------------------------


def test_thread_safety_across_a_rotation(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey]
) -> None:
    server.cache_control = "max-age=0"
    verifier = verifier_for(server, min_refetch_interval=0.05)
    tokens = [issuer.token(issuer.claims(sub=f"user-{i}"), key=k) for i, k in enumerate(keys)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def rotate() -> None:
        for published in ([keys[0], keys[1]], [keys[0], keys[1], keys[2]]):
            time.sleep(0.1)
            server.publish(*published)
        stop.set()

    def work() -> None:
        try:
            while not stop.is_set():
                assert verifier.verify(tokens[0])["sub"] == "user-0"
            for token in tokens:  # after the rotation every key is known
                deadline = time.monotonic() + 2
                while (reason := outcome(verifier, token)) == "unknown_kid":
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                assert reason == "accepted"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    rotator = threading.Thread(target=rotate)
    for thread in [*threads, rotator]:
        thread.start()
    for thread in [*threads, rotator]:
        thread.join(30)
    assert not errors, errors[0]
    # max-age=0 and 16 busy threads, yet fetches stay within the rate limit (0.05 s).
    assert server.jwks_fetches < 0.3 / 0.05 + 40


# -- WSGI -------------------------------------------------------------------------------------


def call(app: Any, path: str = "/sync", authorization: str | None = None) -> tuple[str, Any, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], json.loads(body)


def test_require_token_middleware(server: AuthServerDouble, issuer: Issuer) -> None:
    @require_token(verifier_for(server), public_paths={"/healthz"})
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"claims": environ.get(CLAIMS_ENVIRON_KEY)}).encode()]

    claims = issuer.claims()
    status, _, body = call(app, authorization="Bearer " + issuer.token(claims))
    assert (status, body) == ("200 OK", {"claims": claims})
    status, _, body = call(app, authorization="bearer " + issuer.token(claims))
    assert status == "200 OK"

    status, headers, body = call(app)
    assert status == "401 Unauthorized"
    assert headers["WWW-Authenticate"] == "Bearer"  # RFC 6750 §3.1: no error without a token
    assert body == {"error": "invalid_token", "reason": "missing_token"}

    status, headers, body = call(app, authorization="Basic dXNlcjpwYXNz")
    assert (status, body["reason"]) == ("401 Unauthorized", "missing_token")
    assert headers["WWW-Authenticate"] == "Bearer"

    # RFC 6750 §3.1: a malformed Authorization header is 400 invalid_request.
    for malformed in ("Bearer", "Bearer  ", "Bearer " + issuer.token(claims) + " extra"):
        status, headers, body = call(app, authorization=malformed)
        assert status == "400 Bad Request"
        assert headers["WWW-Authenticate"] == 'Bearer error="invalid_request"'
        assert headers["Cache-Control"] == "no-store"
        assert body == {"error": "invalid_request", "reason": "invalid_request"}

    wrong = issuer.token(issuer.claims(aud="https://other"))
    status, headers, body = call(app, authorization=f"Bearer {wrong}")
    assert status == "401 Unauthorized"
    assert headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="wrong_audience"'
    )
    assert headers["Cache-Control"] == "no-store"
    assert body == {"error": "invalid_token", "reason": "wrong_audience"}

    assert call(app, path="/healthz")[:3:2] == ("200 OK", {"claims": None})

    # Claims an outer layer left in the environ do not reach a public path's app.
    def outer(environ: dict[str, Any], start_response: Any) -> Any:
        environ[CLAIMS_ENVIRON_KEY] = {"sub": "forged"}
        return app(environ, start_response)

    assert call(outer, path="/healthz")[2] == {"claims": None}


def call_asgi(
    app: Any,
    path: str = "/sync",
    authorization: list[str] | str | None = None,
    *,
    kind: str = "http",
    extensions: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """What an ASGI app sends for one request (or WebSocket handshake) with *authorization*
    (a list: the header repeated)."""
    values = [authorization] if isinstance(authorization, str) else authorization or []
    scope: dict[str, Any] = {
        "type": kind,
        "path": path,
        "headers": [(b"authorization", value.encode("latin-1")) for value in values],
        "extensions": extensions if extensions is not None else {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return (
            {"type": "http.request", "body": b""}
            if kind == "http"
            else {"type": "websocket.connect"}
        )

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def _asgi_answer(sent: list[dict[str, Any]]) -> tuple[str, dict[str, str], Any]:
    """The status line, headers and JSON body of an ASGI answer, in call()'s form."""
    start, body = sent[0], sent[1]
    assert start["type"].endswith("response.start")
    assert body["type"].endswith("response.body")
    reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 503: "Service Unavailable"}
    headers = {
        name.decode("latin-1").title().replace("Www-", "WWW-"): value.decode("latin-1")
        for name, value in start["headers"]
    }
    return f"{start['status']} {reasons[start['status']]}", headers, json.loads(body["body"])


def test_require_token_asgi_answers_as_the_wsgi_middleware(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    """The ASGI middleware gives every answer the WSGI one gives, header for header, and
    hands the app the claims in its scope (None on a public path, whatever was there)."""
    verifier = verifier_for(server)

    @require_token(verifier, public_paths={"/healthz"})
    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"claims": environ.get(CLAIMS_ENVIRON_KEY)}).encode()]

    @require_token_asgi(verifier, public_paths={"/healthz"})
    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = json.dumps({"claims": scope.get(CLAIMS_ENVIRON_KEY)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    claims = issuer.claims()
    good = issuer.token(claims)
    cases: list[tuple[str, str | None]] = [
        ("/sync", "Bearer " + good),
        ("/sync", "bearer " + good),
        ("/sync", None),
        ("/sync", "Basic dXNlcjpwYXNz"),
        ("/sync", "Bearer"),
        ("/sync", "Bearer " + good + " extra"),
        ("/sync", "Bearer " + issuer.token(issuer.claims(aud="https://other"))),
        ("/sync", "Bearer " + issuer.token(issuer.claims(exp=int(time.time()) - 3600))),
        ("/sync", "Bearer not-a-token"),
        ("/healthz", None),
        ("/healthz", "Bearer not-a-token"),
    ]
    for path, authorization in cases:
        assert _asgi_answer(call_asgi(asgi_app, path, authorization)) == call(
            wsgi_app, path, authorization
        ), (path, authorization)
    assert _asgi_answer(call_asgi(asgi_app, authorization="Bearer " + good))[2] == {
        "claims": claims
    }
    # A repeated header (which a WSGI server joins with ", ") is a malformed request.
    status, _, body = _asgi_answer(call_asgi(asgi_app, authorization=["Bearer " + good] * 2))
    assert (status, body["reason"]) == ("400 Bad Request", "invalid_request")

    async def outer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asgi_app({**scope, CLAIMS_ENVIRON_KEY: {"sub": "forged"}}, receive, send)

    assert _asgi_answer(call_asgi(outer, "/healthz"))[2] == {"claims": None}
    assert _asgi_answer(call_asgi(outer, "/sync", "Bearer " + good))[2] == {"claims": claims}


def test_require_token_asgi_refuses_websocket_handshakes(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    """A WebSocket handshake with a valid token reaches the app with its claims; a refused
    one never does: the HTTP answer through ASGI's WebSocket Denial Response where the
    server has it, else a close before accept (the server's own 403). Lifespan passes."""
    reached: list[Any] = []

    @require_token_asgi(verifier_for(server))
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope.get(CLAIMS_ENVIRON_KEY, scope["type"]))
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})

    claims = issuer.claims()
    sent = call_asgi(app, authorization="Bearer " + issuer.token(claims), kind="websocket")
    assert (reached, sent) == ([claims], [{"type": "websocket.accept"}])

    reached.clear()
    expired = "Bearer " + issuer.token(issuer.claims(exp=int(time.time()) - 3600))
    denial = {"websocket.http.response": {}}
    sent = call_asgi(app, authorization=expired, kind="websocket", extensions=denial)
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    status, headers, body = _asgi_answer(sent)
    assert status == "401 Unauthorized"
    assert (
        headers["WWW-Authenticate"] == 'Bearer error="invalid_token", error_description="expired"'
    )
    assert body == {"error": "invalid_token", "reason": "expired"}
    assert call_asgi(app, kind="websocket") == [{"type": "websocket.close", "code": 1008}]
    assert reached == []

    call_asgi(app, kind="lifespan")
    assert reached == ["lifespan"]


def test_require_token_answers_503_when_keys_cannot_be_fetched(keys: list[RSAKey]) -> None:
    issuer = "http://127.0.0.1:1"
    app = require_token(TokenVerifier(issuer, AUDIENCE, timeout=1))(lambda e, s: [b""])
    status, headers, body = call(app, authorization="Bearer " + sign(keys[0], claims_for(issuer)))
    assert status == "503 Service Unavailable"
    assert "Retry-After" in headers
    assert body == {"error": "temporarily_unavailable", "reason": "jwks_unavailable"}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("Token abc", "missing_token"),
        ("Basic dXNlcjpwYXNz", "missing_token"),
        ("Bearerabc", "missing_token"),
        # RFC 6750 §3.1: a malformed request, not one without credentials.
        ("Bearer", "invalid_request"),
        ("Bearer ", "invalid_request"),
        ("bearer    ", "invalid_request"),
        ("Bearer a b", "invalid_request"),
        # White space as the Node middleware reads it (both were 401 malformed here).
        ("Bearer a\tb", "invalid_request"),
        ("Bearer a\xa0b", "invalid_request"),
        ("Bearer a.b.c, Bearer d.e.f", "invalid_request"),  # repeated headers, joined
    ],
)
def test_bearer_token_parsing(header: str | None, reason: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        bearer_token(header)
    assert caught.value.reason == reason


def test_bearer_token_parsing_ok() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("  BEARER   abc  ") == "abc"
    assert bearer_token("\tBearer abc\t") == "abc"


# -- packaging --------------------------------------------------------------------------------


def test_verifier_imports_no_framework_and_no_server_module() -> None:
    code = (
        "import sys, authserver_verifier\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flask', 'werkzeug', 'sqlalchemy', 'authlib', 'click', 'authserver', 'psycopg',"
        " 'granian'))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# -- status lists (draft-ietf-oauth-status-list-17) --------------------------------------------


class Clock:
    """Wall and monotonic time that move only when told to."""

    def __init__(self) -> None:
        self.wall = time.time()
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def status_list_token(
    key: RSAKey,
    uri: str,
    revoked: set[int],
    *,
    now: float,
    ttl: int | None = 60,
    expiry: int = 900,
    size: int = 1024,
    typ: str = "statuslist+jwt",
    **overrides: Any,
) -> str:
    array = bytearray(size // 8)
    for idx in revoked:
        array[idx // 8] |= 1 << (idx % 8)
    claims: dict[str, Any] = {
        "sub": uri,
        "iat": int(now),
        "exp": int(now) + expiry,
        "ttl": ttl,
        "status_list": {"bits": 1, "lst": b64(zlib.compress(bytes(array), 9))},
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    header = {"alg": "RS256", "typ": typ, "kid": key.kid}
    return raw_rs256(key, header, json.dumps(claims).encode())


def with_status(server: AuthServerDouble, idx: int, path: str = "/statuslists/1") -> dict[str, Any]:
    return claims_for(
        server.issuer, status={"status_list": {"idx": idx, "uri": server.issuer + path}}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


def status_verifier(server: AuthServerDouble, clock: Clock, **options: Any) -> TokenVerifier:
    return verifier_for(server, clock=lambda: clock.wall, monotonic=lambda: clock.mono, **options)


def verified_with_a_list(
    server: AuthServerDouble, issuer: Issuer, clock: Clock, **options: Any
) -> tuple[TokenVerifier, str]:
    """A verifier (with *options*) that has verified a token whose index 5 is VALID in a
    list served now with a 60 s ttl: its copy of the list is fresh."""
    issuer.serve_status_list(set(), now=clock.wall, ttl=60, expiry=3600)
    verifier = status_verifier(server, clock, **options)
    token = issuer.token({**with_status(server, 5), "exp": int(clock.wall) + 3600})
    assert verifier.verify(token)
    return verifier, token


def wait_for_background_refreshes() -> None:
    """Until no background status-list refresh of this process runs (at most 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        t.name == "authserver-verifier-status" for t in threading.enumerate()
    ):
        time.sleep(0.01)


def wait_for_reason(verifier: TokenVerifier, token: str, reason: str) -> None:
    """Verify until *token* is refused (a background refresh lands within milliseconds)."""
    deadline = time.monotonic() + 5
    seen: str | None = None
    while seen is None and time.monotonic() < deadline:
        try:
            verifier.verify(token)
        except InvalidToken as exc:
            seen = exc.reason
        else:
            time.sleep(0.01)
    assert seen == reason


def test_a_revoked_bit_refuses_the_token_and_others_pass(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    issuer.serve_status_list({3}, now=clock.wall)
    verifier = status_verifier(server, clock)
    good = issuer.token(with_status(server, 2))
    bad = issuer.token(with_status(server, 3))
    assert verifier.verify(good)["sub"] == "user-42"
    assert reason_of(verifier, bad) == "revoked"
    # Cached for its ttl: many tokens, one fetch.
    for _ in range(20):
        verifier.verify(good)
    assert server.status_list_fetches == 1


@pytest.mark.parametrize(
    ("ttl", "min_refetch_interval"),
    [
        pytest.param(60, 0.0, id="ttl 60s"),
        # A ttl below the default 10 s min_refetch_interval is honoured too: that interval
        # only spaces out attempts after a failure.
        pytest.param(2, 10.0, id="ttl 2s below the refetch interval"),
    ],
)
def test_a_revocation_is_seen_once_the_ttl_has_passed(
    server: AuthServerDouble, issuer: Issuer, clock: Clock, ttl: int, min_refetch_interval: float
) -> None:
    issuer.serve_status_list(set(), now=clock.wall, ttl=ttl)
    verifier = status_verifier(server, clock, min_refetch_interval=min_refetch_interval)
    token = issuer.token(with_status(server, 5))
    assert verifier.verify(token)
    issuer.serve_status_list({5}, now=clock.wall, ttl=ttl)
    clock.advance(ttl - 1)
    assert verifier.verify(token)  # within the ttl the cached copy answers
    clock.advance(2)
    # Past the ttl: the first use fetches the list (it answered from its stale copy and
    # fetched in the background, so with tokens coming seldom a revoked one passed once
    # per ttl, and up to status_max_stale after the revocation).
    assert reason_of(verifier, token) == "revoked"
    assert server.status_list_fetches == 2


def test_under_steady_use_a_list_is_refreshed_before_its_ttl_ends(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """In the last fifth of its ttl a use starts a background refresh, so the copy that
    answers past the ttl is already the new one and no request waits for a fetch."""
    issuer.serve_status_list(set(), now=clock.wall, ttl=60)
    verifier = status_verifier(server, clock, min_refetch_interval=0.0)
    token = issuer.token(with_status(server, 5))
    assert verifier.verify(token)
    clock.advance(40)
    assert verifier.verify(token)
    time.sleep(0.2)
    assert server.status_list_fetches == 1  # not yet in the last fifth
    issuer.serve_status_list({5}, now=clock.wall, ttl=60)
    clock.advance(10)
    assert verifier.verify(token)  # the copy still answers; a refresh starts meanwhile
    wait_for_background_refreshes()
    assert server.status_list_fetches == 2
    assert reason_of(verifier, token) == "revoked"  # the new copy, fetched ahead
    assert server.status_list_fetches == 2


@pytest.mark.parametrize("later", [61, 600], ids=["at the ttl", "long after"])
def test_an_old_failure_does_not_make_a_stale_copy_answer(
    server: AuthServerDouble, issuer: Issuer, clock: Clock, later: int
) -> None:
    """One failed refresh ahead (a restart's 502) says nothing of the issuer afterwards:
    the first use past the ttl still fetches the list, and sees a revocation made since
    (an old failure made the stale copy answer, up to status_max_stale)."""
    verifier, token = verified_with_a_list(server, issuer, clock, min_refetch_interval=10.0)
    server.status_list_status = 502
    clock.advance(50)
    assert verifier.verify(token)  # in the last fifth: a refresh ahead, which fails
    wait_for_background_refreshes()
    assert server.status_list_fetches == 2
    server.status_list_status = 200
    issuer.serve_status_list({5}, now=clock.wall, ttl=60, expiry=3600)
    clock.advance(later - 50)
    assert reason_of(verifier, token) == "revoked"


def test_refresh_is_not_undone_by_a_list_fetch_already_under_way(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """A refresh ahead that read the list before a revocation lands after ``refresh()``:
    its copy does not count as fresh (the revocation refresh() was called for would be
    hidden for a ttl)."""
    verifier, token = verified_with_a_list(server, issuer, clock, min_refetch_interval=0.0)
    server.list_hang = 1.0
    clock.advance(50)
    assert verifier.verify(token)  # a refresh ahead starts, reading the list as it is
    time.sleep(0.1)
    issuer.serve_status_list({5}, now=clock.wall, ttl=60, expiry=3600)
    verifier.refresh()
    wait_for_background_refreshes()  # the old list lands after the refresh() call
    server.list_hang = 0.0
    assert reason_of(verifier, token) == "revoked"


def test_a_hung_issuer_is_named_as_a_timeout(server: AuthServerDouble, issuer: Issuer) -> None:
    """The deadline shuts the connection, which http.client reports as "remote end closed
    connection": the operator is told it timed out."""
    server.hang = 1.0
    verifier = verifier_for(server, timeout=0.3)
    try:
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(issuer.token())
    finally:
        server.hang = 0.0
    assert caught.value.reason == "jwks_unavailable"
    assert "timed out after 0.3 s" in str(caught.value.detail), caught.value.detail


def test_a_list_uri_that_is_not_ascii_is_named_as_such(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    verifier = status_verifier(server, clock)
    token = issuer.token(with_status(server, 1, path="/statuslists/\u00e9"))
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason == "status_unavailable"
    assert "UnicodeEncodeError" in str(caught.value.detail), caught.value.detail


def _timed(verifier: TokenVerifier, token: str) -> tuple[str, float]:
    started = time.monotonic()
    return outcome(verifier, token), time.monotonic() - started


def test_an_issuer_that_stops_answering_holds_back_one_request_not_every_refetch(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """An issuer that accepts connections and never answers: the first use past the ttl
    waits for the timeout and gets the last copy; from then on, while the issuer is known
    to fail, uses answer from the last copies at once and the refetches run in the
    background (every use past a refetch interval waited the whole timeout, for the keys
    and then for the list)."""
    server.cache_control = "max-age=60"
    # A timeout well above what a loaded machine adds to an answer from the cache: "at
    # once" (< 1 s) and "waited the timeout" (>= 2 s) stay apart under load.
    verifier, token = verified_with_a_list(
        server, issuer, clock, timeout=2.0, min_refetch_interval=10.0
    )
    server.hang = 3.0
    clock.advance(61)  # past the ttl and the max-age
    first, waited = _timed(verifier, token)
    assert first == "accepted"
    assert waited >= 2.0  # the one request that found out
    for _ in range(3):
        clock.advance(11)  # past the refetch interval each time: background retries
        answer, waited = _timed(verifier, token)
        assert answer == "accepted"
        assert waited < 1.0, waited
    server.hang = 0.0
    wait_for_background_refreshes()


def test_a_list_without_a_ttl_is_held_until_its_exp(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """No ttl says nothing of how long a list stays current: it is held until its exp
    (at most the upper ttl bound), as the JS verifier holds it, not refetched every second."""
    issuer.serve_status_list(set(), now=clock.wall, ttl=None, expiry=600)
    verifier = status_verifier(server, clock)
    token = issuer.token(with_status(server, 5))
    assert verifier.verify(token)
    clock.advance(300)
    assert verifier.verify(token)
    time.sleep(0.3)  # a refresh past the ttl would start in the background: none does
    assert server.status_list_fetches == 1


def test_an_unreachable_list_is_used_until_its_exp_then_fails_closed(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    issuer.serve_status_list(set(), now=clock.wall, ttl=60, expiry=300)
    verifier = status_verifier(server, clock)
    token = issuer.token({**with_status(server, 1), "exp": int(clock.wall) + 3600})
    assert verifier.verify(token)
    server.status_list_status = 503
    clock.advance(250)  # stale (ttl 60) but before exp (300): still answered
    assert verifier.verify(token)
    clock.advance(60)  # past exp: no copy may be relied upon
    wait_for_reason(verifier, token, "status_unavailable")


@pytest.mark.parametrize(
    ("options", "max_stale", "failing"),
    [
        pytest.param({"status_max_stale": 120}, 120, 500, id="status_max_stale=120"),
        # The JS verifier's statusListMaxStale default is the same.
        pytest.param({}, 900, 503, id="default 900 s"),
    ],
)
def test_status_max_stale_bounds_a_long_exp(
    server: AuthServerDouble,
    issuer: Issuer,
    clock: Clock,
    options: dict[str, float],
    max_stale: int,
    failing: int,
) -> None:
    """With a list whose exp is far away, an unreachable issuer leaves the last copy in use
    for status_max_stale seconds, then fails closed."""
    issuer.serve_status_list(set(), now=clock.wall, expiry=86400)
    verifier = status_verifier(server, clock, **options)
    assert verifier.status_max_stale == max_stale
    token = issuer.token({**with_status(server, 1), "exp": int(clock.wall) + 3600})
    assert verifier.verify(token)
    server.status_list_status = failing
    clock.advance(max_stale - 1)
    assert verifier.verify(token)
    clock.advance(2)
    wait_for_reason(verifier, token, "status_unavailable")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"sub": "https://elsewhere.example/statuslists/1"}, "sub"),
        # Signed with the issuer's key but naming another issuer (the JS verifier's
        # wrong-iss case): not this issuer's list.
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"exp": 1}, "expired"),
        ({"status_list": {"bits": 3, "lst": "eJwDAAAAAAE"}}, "bits"),
        ({"status_list": {"bits": 1, "lst": "!!!"}}, "lst"),
        ({"status_list": {"bits": 1, "lst": b64(zlib.compress(bytes(128))) + "="}}, "padded lst"),
        ({"status_list": {"bits": 1, "lst": " " + b64(zlib.compress(bytes(128)))}}, "lst spaced"),
        ({"status_list": None}, "status_list"),
        ({"iat": None}, "iat"),
        ({"nbf": 4102444800}, "nbf in the future"),
        ({"iat": 4102444800}, "iat in the future"),
        ({"ttl": "60"}, "ttl a string"),
        ({"ttl": 0}, "ttl zero"),
        ({"ttl": -5}, "ttl negative"),
        # float() of these overflowed: "malformed", blaming the token, and no back-off.
        ({"exp": 10**400}, "exp beyond any time"),
        ({"ttl": 10**400}, "ttl beyond any duration"),
        (
            {"status_list": {"bits": 1, "lst": b64(zlib.compress(bytes(128)) + b"tail")}},
            "bytes after the compressed stream",
        ),
    ],
)
def test_a_list_that_breaks_the_draft_is_not_used(
    server: AuthServerDouble,
    issuer: Issuer,
    clock: Clock,
    change: dict[str, Any],
    why: str,
) -> None:
    issuer.serve_status_list(set(), now=clock.wall, **change)
    token = issuer.token(with_status(server, 1))
    assert reason_of(status_verifier(server, clock), token) == "status_unavailable", why


def test_a_list_is_refetched_at_its_exp_even_within_its_ttl(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """A list whose exp comes before its ttl runs out is not "fresh" past its exp: the
    copy held past it answered for a token the issuer had revoked since."""
    issuer.serve_status_list(set(), now=clock.wall, ttl=60, expiry=3)
    verifier = status_verifier(server, clock)
    token = issuer.token({**with_status(server, 0), "exp": int(clock.wall) + 3600})
    assert verifier.verify(token)
    issuer.serve_status_list({0}, now=clock.wall + 5, ttl=60, expiry=900)
    clock.advance(5)
    assert reason_of(verifier, token) == "revoked"
    assert server.status_list_fetches == 2


def test_a_list_without_a_ttl_is_not_used_past_status_max_stale(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    issuer.serve_status_list(set(), now=clock.wall, ttl=None, expiry=86400)
    verifier = status_verifier(server, clock, status_max_stale=2)
    token = issuer.token({**with_status(server, 0), "exp": int(clock.wall) + 3600})
    assert verifier.verify(token)
    server.status_list_status = 503
    clock.advance(3)
    assert reason_of(verifier, token) == "status_unavailable"


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b"[" * 100000 + b"]" * 100000, id="JWKS nested beyond reason"),
        pytest.param(None, id="jwks_uri not a URL"),
    ],
)
def test_odd_key_documents_are_jwks_unavailable(
    server: AuthServerDouble, issuer: Issuer, document: bytes | None
) -> None:
    """The keys could not be had: jwks_unavailable, never "malformed" (which blames the
    token) and never another exception from refresh()."""
    if document is None:
        server.metadata_override = {"issuer": server.issuer, "jwks_uri": "http://[::1"}
    else:
        server.raw_jwks = document
    verifier = verifier_for(server)
    assert reason_of(verifier, issuer.token()) == "jwks_unavailable"
    verifier.refresh()  # keeps the last good set (none): no exception


@pytest.mark.parametrize("typ", ["application/statuslist+jwt", "STATUSLIST+JWT"])
def test_a_list_typed_with_the_full_media_type_is_used(
    server: AuthServerDouble, issuer: Issuer, clock: Clock, typ: str
) -> None:
    """RFC 7515 §4.1.9: a typ without a '/' has "application/" before it, so the two
    spellings are one media type (and case-insensitive); the long one was refused
    (status_unavailable for every token naming the list) while the Node verifier used it,
    as both accept at+jwt and application/at+jwt for access tokens."""
    issuer.serve_status_list({1}, now=clock.wall, typ=typ)
    verifier = status_verifier(server, clock)
    assert reason_of(verifier, issuer.token(with_status(server, 1))) == "revoked"


def test_a_list_whose_bits_are_written_as_a_whole_float_is_used(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """JSON's 1.0 is the number 1: the Node verifier reads "bits": 1.0 so, and this one
    reads a status index 1.0 so; the list was refused (status_unavailable)."""
    lst = b64(zlib.compress(bytes([0b10]) + bytes(127), 9))
    issuer.serve_status_list(set(), now=clock.wall, status_list={"bits": 1.0, "lst": lst})
    verifier = status_verifier(server, clock)
    assert reason_of(verifier, issuer.token(with_status(server, 1))) == "revoked"
    assert verifier.verify(issuer.token(with_status(server, 0)))


def test_a_list_served_with_a_byte_order_mark_is_used(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """A UTF-8 byte order mark before the token (some servers write one): the Node verifier
    reads the body as UTF-8 text, which drops it; this one refused the list ("not a JWT")."""
    issuer.serve_status_list({1}, now=clock.wall)
    server.status_lists[STATUS_LIST] = "\ufeff" + server.status_lists[STATUS_LIST] + "\n"
    verifier = status_verifier(server, clock)
    assert reason_of(verifier, issuer.token(with_status(server, 1))) == "revoked"


def test_a_list_signed_by_a_stranger_or_typed_wrong_is_not_used(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey], clock: Clock
) -> None:
    # keys[1] is not published: its kid is unknown.
    issuer.serve_status_list(set(), now=clock.wall, key=keys[1])
    token = issuer.token(with_status(server, 1))
    assert reason_of(status_verifier(server, clock), token) == "status_unavailable"
    header = {"alg": "RS256", "typ": "at+jwt", "kid": issuer.key.kid}
    uri = server.issuer + STATUS_LIST
    payload = json.dumps(
        {"sub": uri, "iat": int(clock.wall), "status_list": {"bits": 1, "lst": "eJwDAAAAAAE"}}
    )
    server.status_lists[STATUS_LIST] = raw_rs256(issuer.key, header, payload.encode())
    assert reason_of(status_verifier(server, clock), token) == "status_unavailable"


def test_a_compression_bomb_is_refused(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    bomb = b64(zlib.compress(bytes(64 * 1024 * 1024), 9))  # 64 MiB of zeros, ~64 KB
    issuer.serve_status_list(set(), now=clock.wall, status_list={"bits": 1, "lst": bomb})
    token = issuer.token(with_status(server, 1))
    assert reason_of(status_verifier(server, clock), token) == "status_unavailable"


@pytest.mark.parametrize(
    "status",
    [
        {"status_list": {"idx": -1, "uri": "/statuslists/1"}},
        {"status_list": {"idx": "1", "uri": "/statuslists/1"}},
        {"status_list": {"idx": 1}},
        {"status_list": {"idx": 1, "uri": "https://evil.example/statuslists/1"}},
        # The issuer's URL as a prefix but not its origin: the host is evil.invalid.
        {"status_list": {"idx": 1, "uri": "@evil.invalid/statuslists/1"}},
        {"status_list": "x"},
    ],
)
def test_a_status_claim_that_is_not_ours_is_refused(
    server: AuthServerDouble, issuer: Issuer, clock: Clock, status: dict[str, Any]
) -> None:
    ref = status["status_list"]
    if isinstance(ref, dict) and str(ref.get("uri", "")).startswith(("/", "@")):
        ref["uri"] = server.issuer + ref["uri"]
    token = issuer.token(issuer.claims(status=status))
    assert reason_of(status_verifier(server, clock), token) == "invalid_status"
    assert server.status_list_fetches == 0  # nothing was fetched for it


def test_tokens_without_status_pass_unless_required(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    token = issuer.token()
    assert status_verifier(server, clock).verify(token)
    assert reason_of(status_verifier(server, clock, require_status=True), token) == "invalid_status"


#: The cases both verifiers must answer alike; the JS verifier's test/alignment.test.js
#: generates its tests from the same file, whose "about" says what each field means.
ALIGNMENT_CASES = Path(__file__).resolve().parents[2] / "alignment" / "cases.json"
_TOKEN_FIELDS = {"header", "drop_header", "claims", "drop_claims", "claims_from_now", "iss_suffix"}


def _alignment_cases() -> list[Any]:
    cases = json.loads(ALIGNMENT_CASES.read_text(encoding="utf-8"))["cases"]
    return [pytest.param(case, id=case["name"]) for case in cases]


@pytest.mark.parametrize("case", _alignment_cases())
def test_answers_alike_with_the_js_verifier(
    server: AuthServerDouble, issuer: Issuer, case: dict[str, Any]
) -> None:
    spec, options = case["token"], case.get("options", {})
    # A field this runner does not know would be ignored here and honoured in JS.
    assert set(spec) <= _TOKEN_FIELDS, case
    assert set(options) <= {"status", "issuer_suffix"}, case
    now = int(time.time())
    claims = issuer.claims(iss=server.issuer + spec.get("iss_suffix", ""))
    claims.update(spec.get("claims", {}))
    claims.update({name: now + offset for name, offset in spec.get("claims_from_now", {}).items()})
    header = {"alg": "RS256", "typ": "at+jwt", "kid": issuer.key.kid, **spec.get("header", {})}
    for name in spec.get("drop_claims", []):
        del claims[name]
    for name in spec.get("drop_header", []):
        del header[name]
    token = raw_rs256(issuer.key, header, json.dumps(claims).encode())
    status = options.get("status", "if-present")
    assert status in ("if-present", "required", "off"), case
    verifier = TokenVerifier(
        server.issuer + options.get("issuer_suffix", ""),
        AUDIENCE,
        min_refetch_interval=0.0,
        check_status=status != "off",
        require_status=status == "required",
    )
    expected = "accepted" if case["expect"] == "ok" else case["expect"]
    assert expected == "accepted" or expected in REASONS, case
    assert outcome(verifier, token) == expected
    # No case names a status list: a status this verifier cannot check fetches nothing.
    assert server.status_list_fetches == 0


def test_each_status_value_has_its_reason(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """§7.1 with a 2-bit list: VALID passes, INVALID is revoked, SUSPENDED suspended, the
    rest and an index outside the list invalid_status (the JS verifier's names)."""
    packed = bytes([0b11100100])  # entries 0..3 = 0, 1, 2, 3
    issuer.serve_status_list(
        set(), now=clock.wall, status_list={"bits": 2, "lst": b64(zlib.compress(packed, 9))}
    )
    verifier = status_verifier(server, clock)
    assert verifier.verify(issuer.token(with_status(server, 0)))
    reasons = [reason_of(verifier, issuer.token(with_status(server, i))) for i in range(1, 5)]
    assert reasons == ["revoked", "suspended", "invalid_status", "invalid_status"]


def test_a_refresh_is_a_conditional_get_and_304_keeps_the_copy_fresh(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    issuer.serve_status_list(set(), now=clock.wall, ttl=60, expiry=86400)
    verifier = status_verifier(server, clock, status_max_stale=100)
    token = issuer.token({**with_status(server, 5), "exp": int(clock.wall) + 3600})
    assert verifier.verify(token)
    clock.advance(61)
    verifier.verify(token)  # past the ttl: the list is fetched (a conditional GET) first
    assert (server.status_list_fetches, server.status_list_not_modified) == (2, 1)
    # The 304 made the copy fresh again (no fetch within the next ttl), and it counts as
    # confirmed now: 61 + 90 s after the first fetch is past status_max_stale from then,
    # but within it from the 304.
    server.status_list_status = 503
    clock.advance(40)  # before the last fifth of the ttl, where a use refreshes ahead
    for _ in range(5):
        assert verifier.verify(token)
    assert server.status_list_fetches == 2
    clock.advance(50)
    assert verifier.verify(token)  # past the ttl: the fetch fails (503), the copy answers
    # Let any refresh end first: a failure recorded after the clock step below would put
    # the next attempt another retry interval away (seen under load).
    wait_for_background_refreshes()
    # A changed list is a 200 with a new ETag, and its bits count.
    server.status_list_status = 200
    issuer.serve_status_list({5}, now=clock.wall, ttl=60, expiry=86400)
    clock.advance(11)  # past the retry interval after the failed attempt
    wait_for_reason(verifier, token, "revoked")
    assert server.status_list_not_modified == 1


def test_a_304_for_a_copy_past_its_exp_is_a_failed_fetch(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """An issuer (or a cache before it) that answers 304 for a copy whose exp has passed
    renews nothing: the copy stays unusable, and the fetch counts as failed, so it is not
    asked again before min_refetch_interval. It counted as a success: every verification
    fetched the list again (30 verifications, 30 conditional GETs)."""
    issuer.serve_status_list(set(), now=clock.wall, ttl=60, expiry=120)
    verifier = status_verifier(server, clock, min_refetch_interval=10.0)
    token = issuer.token({**with_status(server, 5), "exp": int(clock.wall) + 3600})
    assert verifier.verify(token)
    clock.advance(121)  # past the list's exp; the issuer still serves that copy
    for _ in range(5):
        assert reason_of(verifier, token) == "status_unavailable"
    assert (server.status_list_fetches, server.status_list_not_modified) == (2, 1)
    clock.advance(11)  # past min_refetch_interval: asked again
    assert reason_of(verifier, token) == "status_unavailable"
    assert server.status_list_fetches == 3


def test_an_unavailable_list_is_a_503_in_the_middleware(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    token = issuer.token(with_status(server, 1))  # no list served at all: 404
    app = require_token(status_verifier(server, clock))(lambda env, start: [b"ok"])
    seen: list[str] = []
    app({"HTTP_AUTHORIZATION": f"Bearer {token}"}, lambda status, headers: seen.append(status))
    assert seen == ["503 Service Unavailable"]


# -- hostile tokens (Hypothesis) --------------------------------------------------------------


def _segment(data: bytes) -> str:
    return b64(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


hostile_headers = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=100, max_value=100_000).map(_nested),
    st.integers(min_value=100, max_value=5_000).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
    st.binary(max_size=200),
    st.just(rb'{"alg":"RS256","typ":"at+jwt","kid":"\ud800"}'),
    st.just(b'{"alg":"RS256","typ":"at+jwt","kid":1e400}'),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=hostile_headers,
    payload=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100)),
    signature=st.binary(max_size=300),
    glue=st.sampled_from([".", "..", "", " "]),
)
def test_hostile_tokens_only_ever_raise_invalid_token(
    server: AuthServerDouble,
    issuer: Issuer,
    header: bytes,
    payload: bytes,
    signature: bytes,
    glue: str,
) -> None:
    """Issue 11: a header of nested JSON raised RecursionError (a 500 at every sync server).
    Whatever arrives, verify returns claims or raises InvalidToken, nothing else."""
    verifier = verifier_for(server)
    token = glue.join([_segment(header), _segment(payload), _segment(signature)])
    for candidate in (token, token.encode(), token[:50], "." + token):
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(candidate)
        assert caught.value.reason in REASONS


def test_a_deeply_nested_header_is_malformed_not_a_recursion_error(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    for depth in (500, 5_000, 100_000):
        token = f"{_segment(_nested(depth))}.{_segment(b'{}')}.{_segment(b'x')}"
        assert reason_of(verifier_for(server, max_token_bytes=10**7), token) == "malformed"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "jti", "client_id", "status"]),
        json_values,
        max_size=9,
    )
)
def test_hostile_claims_signed_by_the_issuer_only_ever_raise_invalid_token(
    server: AuthServerDouble, issuer: Issuer, claims: dict[str, Any]
) -> None:
    """Even a validly signed token with claims of every wrong type and value."""
    verifier = verifier_for(server)
    token = raw_rs256(
        issuer.key,
        {"alg": "RS256", "typ": "at+jwt", "kid": issuer.key.kid},
        json.dumps({**issuer.claims(), **claims}).encode(),
    )
    assert outcome(verifier, token) in {*REASONS, "accepted"}


def test_the_header_rule_caps_the_segment_before_decoding() -> None:
    """The fix itself, below verify()'s catch-all: parse_header refuses a nested header
    with a RuleViolation, never a RecursionError, however deep."""
    from authserver_verifier import rules

    for depth in (200, 2_000, 200_000):
        token = f"{_segment(_nested(depth))}.{_segment(b'{}')}.{_segment(b'x')}"
        with pytest.raises(rules.RuleViolation) as caught:
            rules.parse_header(token, max_bytes=10**7)
        assert caught.value.reason == "malformed"


def test_a_failing_list_is_retried_at_most_once_per_interval(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    server.status_list_status = 503
    issuer.serve_status_list(set(), now=clock.wall)
    verifier = status_verifier(server, clock, min_refetch_interval=10.0)
    token = issuer.token(with_status(server, 4))
    for _ in range(20):
        assert reason_of(verifier, token) == "status_unavailable"
    assert server.status_list_fetches == 1
    clock.advance(10.5)
    server.status_list_status = 200
    assert verifier.verify(token)
    assert server.status_list_fetches == 2


@contextlib.contextmanager
def dripping_server(head_first: bool) -> Iterator[str]:
    """A loopback HTTP server that answers every request a byte every 0.2 s: its body
    after a complete head (*head_first*), or the head itself. Each byte arrives well
    within a per-read timeout; only a deadline for the whole fetch ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            )
            data = (b"" if head_first else head) + b"{" + b" " * 198 + b"}"
            if head_first:
                conn.sendall(head)
            for byte in data:
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_keys_are_fetched_from_a_host_name(server: AuthServerDouble, issuer: Issuer) -> None:
    """A name is resolved (on a thread of its own, within the timeout) and each of its
    addresses tried in turn: "localhost" may name ::1 first, where the double does not
    listen."""
    port = server.issuer.rsplit(":", 1)[1]
    verifier = verifier_for(server, jwks_uri=f"http://localhost:{port}/.well-known/jwks.json")
    assert verifier.verify(issuer.token())["sub"] == "user-42"


#: Run in a network and mount namespace of its own, where the only name server is a
#: socket on 127.0.0.1:53 that reads the queries and never answers.
SILENT_NAME_SERVER = """
import json, socket, sys, threading, time
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 53))
threading.Thread(target=lambda: [sink.recv(2048) for _ in iter(int, 1)], daemon=True).start()
from authserver_verifier import InvalidToken, TokenVerifier
verifier = TokenVerifier("https://auth.example.com", "https://sync.example.com", timeout=1)
started = time.monotonic()
try:
    verifier.verify(sys.argv[1])
except InvalidToken as exc:
    print(json.dumps([exc.reason, exc.detail, time.monotonic() - started]))
"""


def test_a_silent_name_server_is_cut_at_the_timeout(tmp_path: Path, issuer: Issuer) -> None:
    """The resolver takes no timeout: with a name server that does not answer, verify()
    with timeout=1 waited 10 s (resolv.conf's 5 s times 2 attempts) and then said "timed
    out after 1 s". Resolution is now within the fetch's time and said as what it is."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip or subprocess.run([unshare, "-n", "-m", "true"]).returncode:
        pytest.skip("needs unshare and ip, and the right to make namespaces (root)")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
    setup = f"{ip} link set lo up && mount --bind {resolv} /etc/resolv.conf"
    ran = subprocess.run(
        [unshare, "-n", "-m", "sh", "-c", f'{setup} && exec "$0" -c "$1" "$2"',
         sys.executable, SILENT_NAME_SERVER, issuer.token()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    reason, detail, waited = json.loads(ran.stdout)
    assert reason == "jwks_unavailable"
    assert "unknown host (the name server did not answer in time)" in detail, detail
    assert waited < 2.5, waited


@pytest.mark.parametrize("head_first", [True, False], ids=["slow body", "slow head"])
def test_a_dripping_server_is_cut_at_the_timeout(head_first: bool, keys: list[RSAKey]) -> None:
    """timeout bounds a fetch as a whole: a metadata document dripped a byte at a time
    (40 s in all) is jwks_unavailable after about timeout, not once it has all arrived,
    and said to have timed out: the part of a body read before the deadline shut the
    socket is not taken for the whole of it (it read as "not a metadata document")."""
    with dripping_server(head_first) as issuer:
        verifier = TokenVerifier(issuer, AUDIENCE, timeout=1)
        token = sign(keys[0], claims_for(issuer))
        assert_cut_at_the_timeout(verifier, token)


def assert_cut_at_the_timeout(verifier: TokenVerifier, token: str) -> None:
    """*verifier* (``timeout=1``) refuses *token* as jwks_unavailable within 3 s, saying
    its fetch timed out."""
    started = time.monotonic()
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason == "jwks_unavailable"
    assert time.monotonic() - started < 3
    assert "timed out after 1 s" in str(caught.value.detail), caught.value.detail


def test_a_proxy_dripping_its_connect_answer_is_cut_at_the_timeout(
    keys: list[RSAKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An https issuer reached through HTTPS_PROXY: the tunnel is set up inside connect(),
    before the connection's socket was put under the fetch's deadline, so a proxy
    answering CONNECT a byte every 0.2 s held verify() for 16 s with timeout=1."""
    with dripping_server(head_first=False) as proxy:
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("https_proxy", proxy)
        issuer = "https://auth.example.com"
        verifier = TokenVerifier(issuer, AUDIENCE, jwks_uri=issuer + "/jwks.json", timeout=1)
        token = sign(keys[0], claims_for(issuer))
        assert_cut_at_the_timeout(verifier, token)


def test_a_body_cut_short_is_not_taken_for_the_whole(keys: list[RSAKey]) -> None:
    """A server that closes the connection before the Content-Length it announced: the
    part that came was read as the whole document (here a metadata naming another issuer);
    the operator is told the body was cut."""
    listener = socket.create_server(("127.0.0.1", 0))
    issuer = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            )
            conn.sendall(head + b'{"issuer": "x"}' + b" " * 50)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(InvalidToken) as caught:
            TokenVerifier(issuer, AUDIENCE).verify(sign(keys[0], claims_for(issuer)))
    finally:
        thread.join(5)
        listener.close()
    assert caught.value.reason == "jwks_unavailable"
    assert "closed 135 bytes before the end of the body" in str(caught.value.detail)


@pytest.mark.parametrize(
    ("token", "reason"),
    [("", "missing_token"), (b"", "missing_token"), (None, "missing_token"), (42, "malformed")],
)
def test_no_token_and_not_a_token_as_the_js_verifier_says(
    server: AuthServerDouble, token: Any, reason: str
) -> None:
    assert reason_of(verifier_for(server), token) == reason


def test_an_unsecured_jws_is_refused_for_its_alg(server: AuthServerDouble) -> None:
    """alg "none" with the empty signature an unsecured JWS has (RFC 7515 appendix A.5):
    unsupported_alg, as the JS verifier says, not merely malformed."""
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt","kid":"k"}').rstrip(b"=")
    claims = base64.urlsafe_b64encode(json.dumps(claims_for(server.issuer)).encode()).rstrip(b"=")
    token = f"{header.decode()}.{claims.decode()}."
    assert reason_of(verifier_for(server), token) == "unsupported_alg"


# -- asyncio and fork ---------------------------------------------------------------------------


def test_averify_answers_as_verify_does(
    server: AuthServerDouble, issuer: Issuer, keys: list[RSAKey], clock: Clock
) -> None:
    """The same claims, or the same reason, for the same tokens: the first (the keys and
    the list to fetch) answered from a worker thread, the others on the loop."""
    verifier, token = verified_with_a_list(server, issuer, clock)
    fresh = status_verifier(server, clock)
    hostile = [
        token,
        issuer.token(),
        issuer.token(issuer.claims(aud="https://other.example.com")),
        issuer.token(key=keys[1], kid=keys[0].kid),
        issuer.token(kid="forged"),
        "x.y.z",
        "",
        b"\xff",
        None,
        42,
    ]

    async def both(v: TokenVerifier) -> list[Any]:
        answers = []
        for t in hostile:
            try:
                answers.append(await v.averify(t))  # type: ignore[arg-type]
            except InvalidToken as exc:
                answers.append(exc.reason)
        return answers

    def sync_answers(v: TokenVerifier) -> list[Any]:
        answers: list[Any] = []
        for t in hostile:
            try:
                answers.append(v.verify(t))  # type: ignore[arg-type]
            except InvalidToken as exc:
                answers.append(exc.reason)
        return answers

    expected = sync_answers(verifier)
    assert expected[0]["sub"] == "user-42"
    assert expected[3:] == [
        "bad_signature", "unknown_kid", "malformed", "missing_token", "malformed",
        "missing_token", "malformed",
    ]  # fmt: skip
    assert asyncio.run(both(fresh)) == expected


def test_averify_leaves_the_event_loop_free_while_the_issuer_hangs(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    """verify() on the loop held it for the whole timeout; averify() waits in a worker
    thread, and once the keys are cached answers on the loop (no thread)."""
    server.hang = 1.0
    verifier = verifier_for(server, timeout=3.0)
    token = issuer.token()

    async def scenario() -> tuple[list[float], Any]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        ticking = asyncio.create_task(ticker())
        claims = await verifier.averify(token)
        cached = await verifier.averify(token)
        assert cached == claims
        ticking.cancel()
        return ticks, claims

    try:
        ticks, claims = asyncio.run(scenario())
    finally:
        server.hang = 0.0
    assert claims["sub"] == "user-42"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 10
    assert max(gaps) < 0.5, gaps
    assert server.jwks_fetches == 1


def test_a_child_forked_during_a_fetch_fetches_for_itself(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    """gunicorn --preload: the master's fetch held the fetch lock when the worker was
    forked; in the worker nothing ever released it, and verify() waited for good."""
    server.hang = 1.0
    verifier = verifier_for(server, timeout=3.0)
    warming = threading.Thread(target=verifier.refresh, daemon=True)
    warming.start()
    deadline = time.monotonic() + 5
    while server.jwks_fetches == 0:  # the fetch is under way
        assert time.monotonic() < deadline
        time.sleep(0.01)
    token = issuer.token()
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, whatever happens
        code = 1
        try:
            signal.alarm(8)  # a hung child dies rather than hangs the test
            os.write(write, json.dumps(outcome(verifier, token)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        with os.fdopen(read) as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
    finally:
        server.hang = 0.0
    warming.join()
    assert (answer, os.waitstatus_to_exitcode(status)) == ('"accepted"', 0)
    assert server.jwks_fetches == 2  # the parent's and the child's own


def test_a_fetch_imports_nothing_a_fork_could_leave_locked() -> None:
    """The codec getaddrinfo takes the host name through (encodings.idna) was imported by
    the first fetch: a gunicorn --preload master forked its workers while its warming
    thread held that module's import lock, and a worker's fetches then waited on the lock
    for good (seen with py-spy in the gunicorn test, about one run in four under load).
    The package imports it itself, in a fresh interpreter as in any other."""
    check = "import sys, authserver_verifier; print('encodings.idna' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "True"


def test_averify_calls_waiting_for_one_fetch_hold_no_executor_thread(
    server: AuthServerDouble, issuer: Issuer
) -> None:
    """20 handshakes at once while the keys are fetched (1 s): one worker thread fetches,
    the others wait on the loop. They each held a thread of the loop's executor for the
    whole fetch, so whatever else the app ran there (the loop's own getaddrinfo, an
    aiohttp client's name lookups) waited too; calls made before the fetching thread took
    its lock went to threads of their own too."""
    server.hang = 1.0
    verifier = verifier_for(server, timeout=3.0)
    token = issuer.token()

    async def scenario() -> tuple[list[Any], float]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=4))
        # Its threads started and idle, as in a server that has run a while: a fetch
        # handed to one may start after the other calls have looked at its lock.
        await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.05) for _ in range(4)))
        calls = [asyncio.create_task(verifier.averify(token)) for _ in range(20)]
        await asyncio.sleep(0.2)  # the fetch is under way
        started = time.monotonic()
        await loop.run_in_executor(None, lambda: None)
        other = time.monotonic() - started
        return await asyncio.gather(*calls), other

    try:
        answers, other = asyncio.run(scenario())
    finally:
        server.hang = 0.0
    assert [claims["sub"] for claims in answers] == ["user-42"] * 20
    assert other < 0.3, other
    assert server.jwks_fetches == 1


def test_averify_calls_needing_different_lists_do_not_wait_for_each_other(
    server: AuthServerDouble, issuer: Issuer, clock: Clock
) -> None:
    """Three tokens naming three lists, each list taking 1 s to come: each call hands its
    own fetch to a worker thread, as verify() on three threads fetches them at once. Every
    call that would fetch waited for the loop's last hand-off whatever it fetched, so the
    third call answered after 3 s (three timeouts against a hung issuer)."""
    paths = ["/statuslists/1", "/statuslists/2", "/statuslists/3"]
    for path in paths:
        uri = server.issuer + path
        server.status_lists[path] = status_list_token(issuer.key, uri, set(), now=clock.wall)
    verifier = status_verifier(server, clock)
    assert verifier.verify(issuer.token())  # the keys cached: only the lists to fetch
    tokens = [issuer.token(with_status(server, 5, path)) for path in paths]
    server.list_hang = 1.0

    async def scenario() -> tuple[list[Any], float]:
        started = time.monotonic()
        answers = await asyncio.gather(*(verifier.averify(token) for token in tokens))
        return answers, time.monotonic() - started

    try:
        answers, took = asyncio.run(scenario())
    finally:
        server.list_hang = 0.0
    assert [claims["sub"] for claims in answers] == ["user-42"] * 3
    assert took < 1.8, took
    assert server.status_list_fetches == 3


# -- a process that cannot start threads ---------------------------------------------------------


@pytest.fixture
def no_new_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Thread.start fails, as under a thread limit (RLIMIT_NPROC, a container's pids
    limit), for the threads this test's own thread starts (the verifier's fetch deadline,
    resolver and background refreshes; the double's server threads start as usual). The
    names of the threads refused are listed in what it returns."""
    refused: list[str] = []
    start = threading.Thread.start
    caller = threading.get_ident()

    def limited(self: threading.Thread) -> None:
        if threading.get_ident() == caller:
            refused.append(self.name)
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", limited)
    return refused


def test_a_valid_token_verifies_when_no_thread_can_be_started(
    server: AuthServerDouble, issuer: Issuer, clock: Clock, no_new_threads: list[str]
) -> None:
    """The keys and the status list fetched cold, refreshed ahead (a background refresh
    that cannot start) and refetched once stale, all without a new thread: each time the
    valid token verifies and the revoked one is revoked, never 'malformed'."""
    issuer.serve_status_list({6}, now=clock.wall, ttl=60, expiry=3600)
    verifier = status_verifier(server, clock)
    valid = issuer.token({**with_status(server, 5), "exp": int(clock.wall) + 3600})
    revoked = issuer.token({**with_status(server, 6), "exp": int(clock.wall) + 3600})
    assert verifier.verify(valid)["sub"] == "user-42"
    assert reason_of(verifier, revoked) == "revoked"
    assert (server.jwks_fetches, server.status_list_fetches) == (1, 1)
    for seconds in (50, 15, 250):  # the list's last fifth, past its ttl, the keys' max-age
        clock.advance(seconds)
        assert verifier.verify(valid)["sub"] == "user-42"
        assert reason_of(verifier, revoked) == "revoked"
    # The list was fetched again once past its ttl, the keys once past their max-age.
    assert server.status_list_fetches >= 2
    assert server.jwks_fetches >= 2
    assert no_new_threads  # the verifier did try to start threads, and went on without


def test_a_host_name_is_resolved_when_no_thread_can_be_started(
    server: AuthServerDouble, issuer: Issuer, no_new_threads: list[str]
) -> None:
    """The resolver's thread cannot start: the name is resolved in the verifying thread."""
    port = server.issuer.rsplit(":", 1)[1]
    verifier = verifier_for(server, jwks_uri=f"http://localhost:{port}/.well-known/jwks.json")
    assert verifier.verify(issuer.token())["sub"] == "user-42"
    assert "authserver-verifier-resolve" in no_new_threads


def test_averify_verifies_when_no_worker_thread_can_be_started(
    server: AuthServerDouble, issuer: Issuer, no_new_threads: list[str]
) -> None:
    """averify hands a fetch to a worker thread; when none can be started it fetches on
    the loop's thread instead of failing with the executor's RuntimeError."""
    verifier = verifier_for(server)
    token = issuer.token()

    async def main() -> list[dict[str, Any]]:
        return await asyncio.gather(verifier.averify(token), verifier.averify(token))

    # Not asyncio.run: its shutdown starts a thread of its own.
    loop = asyncio.new_event_loop()
    try:
        answers = loop.run_until_complete(main())
    finally:
        loop.close()
    assert [claims["sub"] for claims in answers] == ["user-42", "user-42"]
    assert server.jwks_fetches == 1
