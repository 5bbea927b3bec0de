"""Property tests on token request parsing: whatever the bytes, the parser either returns a
well-formed request or raises ``invalid_request`` (``invalid_scope`` for a malformed
scope, RFC 6749 §5.2), never anything else."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from authserver.oauth.errors import InvalidTargetError
from authserver.oauth.grants import parse_token_request
from authserver.oauth.requests import parse_body
from authserver.tokens.model import TokenRequest
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import check_identity

MAX_BODY = 65536

json_values = st.recursive(
    # NaN, Infinity and lone surrogates included: json.dumps writes them, strict parsers
    # refuse them, and the parser must answer invalid_request, not crash or pass them on.
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, 2**53])
    | st.floats()
    | st.text(max_size=20)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
PARAMS = [
    "grant_type",
    "sub",
    "email",
    "name",
    "scope",
    "audience",
    "resource",
    "expires_in",
    "claims",
    "client_id",
    "client_secret",
]


def _parse(body: bytes, content_type: str) -> TokenRequest | None:
    environ = EnvironBuilder(
        "/token", method="POST", data=body, content_type=content_type
    ).get_environ()
    try:
        return parse_token_request(parse_body(environ, MAX_BODY))
    except (InvalidRequestError, InvalidScopeError, InvalidTargetError):
        return None


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400),
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/json",
            "text/plain",
            "",
            "application/x-www-form-urlencoded; charset=latin-1",
        ]
    ),
)
def test_arbitrary_bytes_never_crash(body: bytes, content_type: str) -> None:
    _parse(body, content_type)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(PARAMS) | st.text(max_size=10), json_values, max_size=8))
@example({"scope": '"'})  # a malformed scope token: invalid_scope (RFC 6749 §3.3, §5.2)
@example({"resource": "0"})  # no absolute URI: invalid_target (RFC 8707 §2)
def test_arbitrary_json_objects_never_crash(data: dict[str, Any]) -> None:
    _parse(json.dumps(data).encode(), "application/json")


def _valid_identity(value: str) -> bool:
    try:
        check_identity(value, "sub")
    except InvalidValue:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(
    # Any sub the identity rule accepts (this test is about the two body forms, not it).
    sub=st.text(min_size=1, max_size=50).filter(_valid_identity),
    scopes=st.lists(st.from_regex(r"[a-z][a-z:._-]{0,15}", fullmatch=True), max_size=4),
    expires_in=st.integers(min_value=1, max_value=86400),
    extra=st.dictionaries(
        st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,15}", fullmatch=True),
        st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.text(max_size=10),
        max_size=3,
    ),
)
def test_form_and_json_bodies_parse_alike(
    sub: str, scopes: list[str], expires_in: int, extra: dict[str, Any]
) -> None:
    extra = {k: v for k, v in extra.items() if k not in ("sub", "email", "name")}
    form = {
        "grant_type": "client_credentials",
        "sub": sub,
        "expires_in": str(expires_in),
        "claims": json.dumps(extra),
    }
    if scopes:
        form["scope"] = " ".join(scopes)
    body: dict[str, Any] = {
        "grant_type": "client_credentials",
        "sub": sub,
        "expires_in": expires_in,
        "claims": extra,
    }
    if scopes:
        body["scope"] = scopes
    from_form = _parse(urlencode(form).encode(), "application/x-www-form-urlencoded")
    from_json = _parse(json.dumps(body).encode(), "application/json")
    assert from_form is not None
    assert from_form == from_json
    assert from_form.sub == sub
    assert from_form.expires_in == expires_in
    assert from_form.claims == extra
