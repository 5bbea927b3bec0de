"""Property-based fuzzing (Hypothesis) of what strangers and buggy backends send, with real
credentials so requests get past client authentication, through the real WSGI app on a
real SQLite file.

The generated classes are the ones that once gave 500s or broken tokens: lone surrogates,
``NaN``/``Infinity``/``1e400``, integers beyond 2^53, deep nesting (to a few thousand
levels), empty and whitespace-only identities, identities without ``sub``, and client
assertions whose header or payload is any of these. Properties:

- no request answers 5xx;
- a token that is issued is strict JSON (``JSON.parse`` would accept it), names a real
  user or none (non-empty ``sub``; ``email``/``name`` only with a ``sub`` that was asked
  for), and its extra claims are what was asked, bounded in depth;
- an admin client that is created reads back as strict JSON.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import make_services

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "hostile-properties-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
IDENTITY = ("sub", "email", "name")


def _strict_loads(text: str | bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    value = json.loads(text, parse_constant=refuse)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            assert math.isfinite(item)
        elif isinstance(item, str):
            item.encode("utf-8")  # a lone surrogate raises here
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# -- strategies: JSON *text*, so values json.dumps could not write can be sent too ------------

surrogates = st.characters(categories=["Cs"])
blank = st.text(alphabet=" \t\u00a0\u2003\u3000", max_size=3)
hostile_text = (
    st.text(max_size=8)
    | blank
    | st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), surrogates, st.text(max_size=3))
)
hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53, -(2**53), 10**400, 10**30]),
)
scalars = st.one_of(st.none(), st.booleans(), hostile_numbers, hostile_text)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)


def as_text(value: Any) -> str:
    # json.dumps writes NaN/Infinity and \\udXXX escapes for lone surrogates, exactly the
    # text a careless backend (or Python's own json module) sends.
    return json.dumps(value)


def nested_text(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


value_texts = st.one_of(
    values.map(as_text),
    st.builds(nested_text, st.integers(min_value=1, max_value=3000), values.map(as_text)),
)


@st.composite
def token_bodies(draw: st.DrawFn) -> tuple[str, dict[str, tuple[str, bool]]]:
    """A JSON /token body as text, and which identity fields it sets: (JSON text, whether
    it is a top-level parameter rather than inside ``claims``)."""
    members = ['"grant_type": "client_credentials"']
    sent: dict[str, tuple[str, bool]] = {}
    for field in draw(st.lists(st.sampled_from(IDENTITY), unique=True, max_size=3)):
        # Some plain, so enough requests get a token for the properties to cover it (a null
        # identity is refused, no longer read as "not sent").
        plain = draw(st.integers(min_value=0, max_value=2)) == 0
        text = '"user-1"' if plain else draw(value_texts | hostile_text.map(as_text))
        members.append(f"{json.dumps(field)}: {text}")
        sent[field] = (text, True)
    claims: list[str] = []
    if draw(st.booleans()):
        claims.append(f'"libraryId": {draw(value_texts)}')
    if draw(st.booleans()):
        field = draw(st.sampled_from(IDENTITY))
        if field not in sent:
            text = draw(hostile_text.map(as_text))
            claims.append(f"{json.dumps(field)}: {text}")
            sent[field] = (text, False)
    if claims:
        members.append('"claims": {' + ", ".join(claims) + "}")
    if draw(st.booleans()):
        members.append(f'"expires_in": {draw(value_texts)}')
    return "{" + ", ".join(members) + "}", sent


# -- the app: real SQLite, real credentials -------------------------------------------------------


class Target:
    def __init__(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="authserver-hostile-"))
        settings = Settings.from_env(
            {
                "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'fuzz.db'}",
                "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
                "AUTHSERVER_ISSUER": "http://localhost",
                "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
                "AUTHSERVER_AUTH_FAILURES_PER_CLIENT": "off",
                "AUTHSERVER_AUTH_FAILURES_PER_ADDRESS": "off",
            }
        )
        self.services = make_services(settings)
        with self.services.unit_of_work():
            client, secret = self.services.clients.create(name="fuzz", allowed_claims=["libraryId"])
        assert secret is not None
        self.client_id = str(client.client_id)
        raw = f"{self.client_id}:{secret}".encode()
        self.basic = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        self.http = create_app(services=self.services).test_client()
        token = self.http.post(
            "/token", data={"grant_type": "client_credentials"}, headers=self.basic
        )
        self.token = token.get_json()["access_token"]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.services.close()


COMMON = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_token_never_fails_and_never_mints_a_wrong_identity(target: Target) -> None:
    issued: list[int] = []

    @COMMON
    @given(token_bodies())
    def check(generated: tuple[str, dict[str, tuple[str, bool]]]) -> None:
        body, sent = generated
        response = target.http.post(
            "/token", data=body.encode(), content_type="application/json", headers=target.basic
        )
        assert response.status_code < 500, (body[:300], response.get_data(as_text=True)[:300])
        if response.status_code != 200:
            assert response.get_json()["error"] in ("invalid_request", "invalid_scope")
            return
        issued.append(1)
        token = response.get_json()["access_token"]
        segment = token.split(".")[1]
        claims = _strict_loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        assert claims == jwt.decode(token, options={"verify_signature": False})
        assert isinstance(claims["sub"], str)
        assert claims["sub"].strip()
        # In JSON an identity sent empty or null is a value (refused), as a parameter and
        # inside ``claims``: a 200 names exactly the identity that was sent.
        asked = {field: json.loads(text) for field, (text, _) in sent.items()}
        if "sub" in asked:
            assert claims["sub"] == asked["sub"]
        else:
            # The client's own token: no user's email or name may ride on it.
            assert claims["sub"] == target.client_id
            assert "email" not in claims
            assert "name" not in claims
        for field in ("email", "name"):
            if field in claims:
                assert claims[field] == asked[field]
                assert claims[field].strip()
        if "libraryId" in claims:
            assert _depth(claims["libraryId"]) <= 8

    check()
    # The generated requests did get tokens: the properties covered the issuing path,
    # not only refusals.
    assert len(issued) >= 10, len(issued)


@COMMON
@given(st.sampled_from(["/introspect", "/revoke"]), value_texts, value_texts)
def test_introspect_and_revoke_never_fail(target: Target, path: str, token: str, hint: str) -> None:
    body = f'{{"token": {token}, "token_type_hint": {hint}}}'
    response = target.http.post(
        path, data=body.encode(), content_type="application/json", headers=target.basic
    )
    assert response.status_code < 500, (body[:300], response.get_data(as_text=True)[:300])
    if response.status_code == 200 and path == "/introspect":
        assert response.get_json() == {"active": False}


@st.composite
def assertions(draw: st.DrawFn) -> str:
    """A compact JWS-shaped string whose header and payload are generated JSON text."""
    header = draw(
        st.one_of(
            st.just('{"alg": "RS256", "kid": "k1"}'),
            st.just('{"alg": "none"}'),
            value_texts,
        )
    )
    exp = draw(value_texts)
    payload = draw(
        st.one_of(
            st.just(f'{{"iss": "x", "sub": "x", "aud": "http://localhost/token", "exp": {exp}}}'),
            value_texts,
        )
    )

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(payload)}.{b64('signature')}"


@COMMON
@given(assertions())
def test_client_assertions_never_fail(target: Target, assertion: str) -> None:
    # The subject names the real client, so a lenient parser would go on to its keys.
    assertion = assertion.replace(base64.urlsafe_b64encode(b'"sub": "x"').rstrip(b"=").decode(), "")
    response = target.http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )
    assert response.status_code in (400, 401), response.get_data(as_text=True)[:300]


@st.composite
def admin_bodies(draw: st.DrawFn) -> str:
    members = [f'"name": {draw(value_texts | st.just(chr(34) + "ok" + chr(34)))}']
    for field in draw(
        st.lists(
            st.sampled_from(["audiences", "scopes", "allowed_claims", "token_ttl", "jwks"]),
            unique=True,
            max_size=3,
        )
    ):
        members.append(f'"{field}": {draw(value_texts)}')
    return "{" + ", ".join(members) + "}"


@COMMON
@given(st.sampled_from(["POST", "PATCH"]), admin_bodies())
def test_admin_never_fails_and_stores_only_strict_json(
    target: Target, method: str, body: str
) -> None:
    path = "/admin/clients" if method == "POST" else f"/admin/clients/{target.client_id}"
    response = target.http.open(
        path,
        method=method,
        data=body.encode(),
        content_type="application/json",
        headers=ADMIN,
    )
    assert response.status_code < 500, (body[:300], response.get_data(as_text=True)[:300])
    if response.status_code in (200, 201):
        _strict_loads(response.get_data())
        listed = target.http.get("/admin/clients", headers=ADMIN)
        assert listed.status_code == 200
        _strict_loads(listed.get_data())
