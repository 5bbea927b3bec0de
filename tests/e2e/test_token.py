"""POST /token end to end through the Flask test client (docs/reference.md "POST /token";
RFC 6749 §4.4, §5; RFC 8707; RFC 9068).

Claims are read here without checking the signature; tests/e2e/test_verify_offline.py
verifies every kind of token against the served JWKS with an independent library.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from authserver.clock import FixedClock
from authserver.settings import Settings
from authserver.vocabulary import MAX_REGISTERED_BYTES
from authserver.vocabulary import MAX_TOKEN_LENGTH
from authserver.vocabulary import registered_size
from tests.conftest import db_independent
from tests.conftest import make_services

pytestmark = pytest.mark.e2e

AUD = "https://sync.example"
OTHER_AUD = "https://other.example"
TTL = 600
RESERVED = ("iss", "exp", "iat", "nbf", "jti", "aud", "client_id")


# -- helpers ------------------------------------------------------------------------------


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then RFC 7617 Basic."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def basic_raw(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


def post(
    http: Any,
    *,
    form: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    raw: bytes | None = None,
    content_type: str | None = None,
    auth: str | None = None,
    path: str = "/token",
) -> Any:
    """POST to /token with a form body (*form*), a JSON body (*body*) or raw bytes."""
    headers = {"Authorization": auth} if auth else {}
    if form is not None:
        return http.post(path, data=form, headers=headers)
    if body is not None:
        return http.post(
            path, data=json.dumps(body), content_type="application/json", headers=headers
        )
    return http.post(path, data=raw or b"", content_type=content_type, headers=headers)


def grant(**params: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", **params}


def claims_of(response: Any) -> dict[str, Any]:
    """The access token's claims (unverified: signature checks live elsewhere)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    token = response.get_json()["access_token"]
    return jwt.decode(token, options={"verify_signature": False})


def assert_error(response: Any, status: int, error: str) -> dict[str, Any]:
    """RFC 6749 §5.2 error shape with exactly *status* and *error*."""
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    data = response.get_json()
    assert data["error"] == error, data
    assert isinstance(data.get("error_description"), str), data
    return data  # type: ignore[no-any-return]


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def client(register: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    """A typical trusted backend: one audience, two scopes, two extra claims."""
    return register(
        audiences=[AUD],
        scopes=["read", "write"],
        allowed_claims=["libraryId", "grants"],
        token_ttl=TTL,
    )


@pytest.fixture
def auth(client: tuple[str, str]) -> str:
    return basic(*client)


# -- success ------------------------------------------------------------------------------


def assert_token_response(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert "no-store" in response.headers.get("Cache-Control", "")
    data = response.get_json()
    assert isinstance(data["access_token"], str)
    assert data["access_token"].count(".") == 2
    assert data["token_type"] == "Bearer"
    assert isinstance(data["expires_in"], int)
    assert data["expires_in"] > 0
    # RFC 6749 §4.4.3: no refresh token for client credentials (nor anything else unlisted).
    assert "refresh_token" not in data
    assert set(data) <= {"access_token", "token_type", "expires_in", "scope"}, data
    return data  # type: ignore[no-any-return]


def test_client_secret_basic(http: Any, client: tuple[str, str]) -> None:
    data = assert_token_response(post(http, form=grant(), auth=basic(*client)))
    assert data["expires_in"] == TTL
    assert data["scope"] == "read write"
    claims = jwt.decode(data["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client[0]
    assert claims["aud"] == AUD


def test_a_body_client_id_naming_another_client_than_basic_is_refused(
    http: Any, client: tuple[str, str], register: Callable[..., tuple[str, str]]
) -> None:
    """RFC 6749 §2.3.1: the client the Basic header authenticates is the one the request
    is for; a client_id in the body naming anyone else is an error, not ignored (whether
    it names a registered client or not)."""
    other, _ = register(audiences=[AUD])
    for named in (other, "someone-else"):
        response = post(http, form=grant(client_id=named), auth=basic(*client))
        data = assert_error(response, 400, "invalid_request")
        assert "does not match" in data["error_description"]
    # The same id in both places is fine.
    assert_token_response(post(http, form=grant(client_id=client[0]), auth=basic(*client)))


def test_client_secret_post(http: Any, client: tuple[str, str]) -> None:
    client_id, secret = client
    response = post(http, form=grant(client_id=client_id, client_secret=secret))
    assert_token_response(response)
    assert claims_of(response)["client_id"] == client_id


def test_json_body_with_credentials_in_body(http: Any, client: tuple[str, str]) -> None:
    client_id, secret = client
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    response = post(http, body=body)
    assert_token_response(response)
    assert claims_of(response)["client_id"] == client_id


def test_json_body_with_basic(http: Any, client: tuple[str, str]) -> None:
    response = post(http, body={"grant_type": "client_credentials"}, auth=basic(*client))
    assert_token_response(response)
    assert claims_of(response)["client_id"] == client[0]


@pytest.mark.parametrize("value", [5, ["client_credentials"]])
@pytest.mark.parametrize("name", ["grant_type", "client_id", "client_secret", "client_assertion"])
def test_a_protocol_parameter_that_is_no_string_in_json_is_named(
    http: Any, client: tuple[str, str], name: str, value: Any
) -> None:
    """OAuth's own parameters are strings: another JSON type is refused by name, not read
    as "not sent" (``{"grant_type": 5}`` was told "missing grant_type parameter")."""
    client_id, secret = client
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    body[name] = value
    error = assert_error(post(http, body=body), 400, "invalid_request")
    assert error["error_description"] == f"{name} must be a string"


def test_scope_omitted_from_response_when_none(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    auth = basic(*register(audiences=[AUD]))
    data = assert_token_response(post(http, form=grant(), auth=auth))
    assert "scope" not in data
    assert "scope" not in jwt.decode(data["access_token"], options={"verify_signature": False})


def test_user_identity_lands_in_token(http: Any, auth: str) -> None:
    response = post(http, form=grant(sub="user-42", email="u@example.com", name="Ada L"), auth=auth)
    claims = claims_of(response)
    assert claims["sub"] == "user-42"
    assert claims["email"] == "u@example.com"
    assert claims["name"] == "Ada L"


def test_without_sub_the_token_is_the_clients_own(http: Any, client: tuple[str, str]) -> None:
    claims = claims_of(post(http, form=grant(), auth=basic(*client)))
    assert claims["sub"] == client[0]
    assert "email" not in claims
    assert "name" not in claims


def test_identity_inside_json_claims(http: Any, auth: str) -> None:
    body = {
        "grant_type": "client_credentials",
        "claims": {
            "sub": "user-7",
            "email": "seven@example.com",
            "name": "Seven",
            "libraryId": "lib-7",
        },
    }
    claims = claims_of(post(http, body=body, auth=auth))
    assert claims["sub"] == "user-7"
    assert claims["email"] == "seven@example.com"
    assert claims["name"] == "Seven"
    assert claims["libraryId"] == "lib-7"


@pytest.mark.parametrize("field", ["sub", "email", "name"])
def test_identity_given_twice_must_agree(http: Any, auth: str, field: str) -> None:
    value = "x@example.com" if field == "email" else "same-value"
    # email and name only ever come with the sub of the user they describe.
    base = {"grant_type": "client_credentials"} | ({} if field == "sub" else {"sub": "u-1"})
    agree = {**base, field: value, "claims": {field: value}}
    assert claims_of(post(http, body=agree, auth=auth))[field] == value

    other = "y@example.com" if field == "email" else "other-value"
    disagree = {**base, field: value, "claims": {field: other}}
    assert_error(post(http, body=disagree, auth=auth), 400, "invalid_request")


def test_scope_as_string(http: Any, auth: str) -> None:
    response = post(http, form=grant(scope="read"), auth=auth)
    assert response.get_json()["scope"] == "read"
    assert claims_of(response)["scope"] == "read"


def test_scope_as_json_array(http: Any, auth: str) -> None:
    response = post(
        http, body={"grant_type": "client_credentials", "scope": ["write", "read"]}, auth=auth
    )
    assert response.get_json()["scope"] == "write read"
    assert claims_of(response)["scope"] == "write read"


def test_scope_tokens_are_separated_by_spaces_and_repeated_spaces_are_tolerated(
    http: Any, auth: str
) -> None:
    response = post(http, form=grant(scope=" read  write "), auth=auth)
    assert response.get_json()["scope"] == "read write"


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("read\twrite", id="tab"),
        pytest.param("read\u00a0write", id="no-break space"),
        pytest.param("read\u3000write", id="ideographic space"),
        pytest.param("read\x1cwrite", id="file separator"),
        pytest.param("read\nwrite", id="newline"),
        pytest.param('read "write"', id="quote"),
        pytest.param(" ", id="only a space"),
        pytest.param("\t", id="only a tab"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_a_malformed_scope_is_invalid_scope_never_read_another_way(
    http: Any, auth: str, scope: str, as_json: bool
) -> None:
    """RFC 6749 §3.3: scope tokens are separated by U+0020 only. Splitting at any
    whitespace issued "read write" for "read<tab>write" (a scope the client did not
    write), and a scope of only spaces issued a token with no scope at all."""
    body = {"grant_type": "client_credentials", "scope": scope}
    response = post(http, body=body, auth=auth) if as_json else post(http, form=body, auth=auth)
    assert_error(response, 400, "invalid_scope")


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_unregistered_scope_is_invalid_scope(http: Any, auth: str, as_json: bool) -> None:
    if as_json:
        response = post(
            http, body={"grant_type": "client_credentials", "scope": ["read", "admin"]}, auth=auth
        )
    else:
        response = post(http, form=grant(scope="read admin"), auth=auth)
    assert_error(response, 400, "invalid_scope")


def test_no_token_is_longer_than_an_http_header_takes(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    """A token travels in an Authorization header, which HTTP servers cap at about 8 KB.
    A client at the registration bound gets tokens well within MAX_TOKEN_LENGTH, the
    longest identity included; a request whose claims would push it over is refused
    instead of issued (before, 4,000 registered scopes made a 74 KB token)."""
    scopes = [*(f"scope-{i:04d}" for i in range(185)), "a"]
    assert registered_size(tuple(scopes), (), {}) == MAX_REGISTERED_BYTES
    auth = basic(*register(scopes=scopes, allowed_claims=["big"]))
    identity = {"sub": "s" * 255, "email": "e" * 64 + "@" + "d" * 251 + ".io", "name": "n" * 255}
    issued = post(http, body={**grant(**identity), "claims": {"big": "x" * 1000}}, auth=auth)
    assert len(issued.get_json()["access_token"]) <= MAX_TOKEN_LENGTH
    assert claims_of(issued)["scope"] == " ".join(scopes)
    big = {**grant(**identity), "claims": {"big": "x" * 4000}}  # within the claims' 4096
    data = assert_error(post(http, body=big, auth=auth), 400, "invalid_request")
    assert data["error_description"].startswith("the token would be ")
    assert f"more than the {MAX_TOKEN_LENGTH} a token may have" in data["error_description"]
    # Fewer scopes leave room for it.
    issued = post(http, body={**big, "scope": "a"}, auth=auth)
    assert len(issued.get_json()["access_token"]) <= MAX_TOKEN_LENGTH


@pytest.mark.parametrize("param", ["audience", "resource"])
def test_registered_audience_is_accepted(
    http: Any, register: Callable[..., tuple[str, str]], param: str
) -> None:
    auth = basic(*register(audiences=[AUD, OTHER_AUD]))
    assert claims_of(post(http, form=grant(**{param: OTHER_AUD}), auth=auth))["aud"] == OTHER_AUD
    response = post(http, body={"grant_type": "client_credentials", param: AUD}, auth=auth)
    assert claims_of(response)["aud"] == AUD


@pytest.mark.parametrize("value", ["sync-server", "/api", "//sync.example/api", f"{AUD}/#a"])
def test_a_resource_that_is_no_absolute_uri_is_invalid_target(
    http: Any, register: Callable[..., tuple[str, str]], value: str
) -> None:
    """RFC 8707 §2: ``resource`` "MUST be an absolute URI" without a fragment, else
    ``invalid_target``, even when the client registered that string as an audience; the
    ``audience`` parameter (a logical name, RFC 8693 §2.1) still names it."""
    auth = basic(*register(audiences=[AUD, value]))
    for body in ({"form": grant(resource=value)}, {"body": {**grant(), "resource": [AUD, value]}}):
        error = assert_error(post(http, auth=auth, **body), 400, "invalid_target")
        assert "absolute URI" in error["error_description"]
    assert claims_of(post(http, form=grant(audience=value), auth=auth))["aud"] == value


@pytest.mark.parametrize("param", ["audience", "resource"])
@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_unregistered_audience_is_invalid_target(
    http: Any, auth: str, param: str, as_json: bool
) -> None:
    if as_json:
        response = post(
            http, body={"grant_type": "client_credentials", param: OTHER_AUD}, auth=auth
        )
    else:
        response = post(http, form=grant(**{param: OTHER_AUD}), auth=auth)
    assert_error(response, 400, "invalid_target")


def test_single_registered_audience_is_the_default(http: Any, auth: str) -> None:
    assert claims_of(post(http, form=grant(), auth=auth))["aud"] == AUD


def test_several_audiences_and_none_requested_is_invalid_target(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    auth = basic(*register(audiences=[AUD, OTHER_AUD]))
    assert_error(post(http, form=grant(), auth=auth), 400, "invalid_target")


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_shorter_expires_in_is_honoured(http: Any, auth: str, as_json: bool) -> None:
    if as_json:
        response = post(
            http, body={"grant_type": "client_credentials", "expires_in": 60}, auth=auth
        )
    else:
        response = post(http, form=grant(expires_in="60"), auth=auth)
    assert response.get_json()["expires_in"] == 60
    claims = claims_of(response)
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize("longer", [TTL * 100, 2**31 - 1, 2**53 - 1], ids=["100x", "int32", "2^53"])
@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_longer_expires_in_is_clamped(http: Any, auth: str, as_json: bool, longer: int) -> None:
    """However much longer (a backend asking for "as long as allowed" with INT32_MAX was
    refused as not "a positive whole number of seconds" beyond ten years)."""
    if as_json:
        response = post(
            http, body={"grant_type": "client_credentials", "expires_in": longer}, auth=auth
        )
    else:
        response = post(http, form=grant(expires_in=str(longer)), auth=auth)
    assert response.get_json()["expires_in"] == TTL
    claims = claims_of(response)
    assert claims["exp"] - claims["iat"] == TTL


def test_a_client_lifetime_above_a_lowered_maximum_is_cut_to_it(
    settings: Any, register: Callable[..., tuple[str, str]]
) -> None:
    """AUTHSERVER_MAX_TOKEN_TTL lowered after a client was registered with a longer
    lifetime: its tokens live at most the new maximum (the keys' retention and the
    status lists' leases are counted from it), with or without an expires_in."""
    from authserver.web.app import create_app
    from tests.conftest import make_services

    client = register(audiences=[AUD], token_ttl=3600)
    lowered = make_services(settings.replace(max_token_ttl=600, default_token_ttl=300))
    try:
        http = create_app(services=lowered).test_client()
        for form in (grant(), grant(expires_in="3600")):
            response = post(http, form=form, auth=basic(*client))
            assert response.get_json()["expires_in"] == 600
            claims = claims_of(response)
            assert claims["exp"] - claims["iat"] == 600
    finally:
        lowered.close()


#: More digits than Python's int() converts (4300): a ValueError, and a 500, before.
HUGE_DIGITS = "1" + "0" * 5000


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "60s", " 60", HUGE_DIGITS])
def test_bad_expires_in_in_form_is_invalid_request(http: Any, auth: str, value: str) -> None:
    assert_error(post(http, form=grant(expires_in=value), auth=auth), 400, "invalid_request")


@pytest.mark.parametrize(
    "value",
    [str(2**53), HUGE_DIGITS, 2.0**53 + 2, 1e300],
    ids=["form-2^53", "form-5001-digits", "json-2^53+2", "json-1e300"],
)
def test_an_expires_in_beyond_2_53_is_refused_as_such(http: Any, auth: str, value: Any) -> None:
    """A positive whole number beyond 2^53 (digits in a form, a whole float in JSON) was
    refused as not "a positive whole number of seconds", the misleading words that were
    already gone for lifetimes beyond ten years; the refusal names the bound, as the JSON
    body's check does for an integer."""
    if isinstance(value, str):
        response = post(http, form=grant(expires_in=value), auth=auth)
    else:
        response = post(
            http, body={"grant_type": "client_credentials", "expires_in": value}, auth=auth
        )
    error = assert_error(response, 400, "invalid_request")
    assert "at most 9007199254740991 seconds" in error["error_description"]


def test_expires_in_with_leading_zeros_is_its_number(http: Any, auth: str) -> None:
    response = post(http, form=grant(expires_in="0" * 5000 + "60"), auth=auth)
    assert response.get_json()["expires_in"] == 60, response.get_data(as_text=True)


def test_expires_in_written_with_a_point_in_json_is_its_number(http: Any, auth: str) -> None:
    """JSON has one type of number: 60.0 is 60 (some encoders write every number so)."""
    body = {"grant_type": "client_credentials", "expires_in": 60.0}
    response = post(http, body=body, auth=auth)
    assert response.get_json()["expires_in"] == 60, response.get_data(as_text=True)
    claims = claims_of(response)
    assert claims["exp"] - claims["iat"] == 60
    assert isinstance(claims["exp"], int)


@pytest.mark.parametrize(
    "value", ["abc", 0, -5, 1.5, 60.000001, 1e300, True, [60], {"s": 60}, HUGE_DIGITS]
)
def test_bad_expires_in_in_json_is_invalid_request(http: Any, auth: str, value: Any) -> None:
    body = {"grant_type": "client_credentials", "expires_in": value}
    assert_error(post(http, body=body, auth=auth), 400, "invalid_request")


def test_allowed_claims_from_form_json_string(http: Any, auth: str) -> None:
    extra = {"libraryId": "lib-1", "grants": ["read:books", "write:notes"]}
    claims = claims_of(post(http, form=grant(claims=json.dumps(extra)), auth=auth))
    assert claims["libraryId"] == "lib-1"
    assert claims["grants"] == ["read:books", "write:notes"]


def test_allowed_claims_from_json_object(http: Any, auth: str) -> None:
    body = {
        "grant_type": "client_credentials",
        "sub": "u1",
        "claims": {"libraryId": "lib-2", "grants": {"books": "rw"}},
    }
    claims = claims_of(post(http, body=body, auth=auth))
    assert claims["libraryId"] == "lib-2"
    assert claims["grants"] == {"books": "rw"}
    assert claims["sub"] == "u1"


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_a_fixed_number_is_repeated_in_any_spelling_of_it(
    http: Any, register: Callable[..., tuple[str, str]], as_json: bool
) -> None:
    """RFC 8259 §6, one type of number: a backend repeating a fixed 1.0 as 1 (all a Node
    backend can send: JSON.stringify(1.0) is "1") gets its token, which carries the fixed
    value; true for 1 is still another value."""
    auth = basic(*register(audiences=[AUD], fixed_claims={"tier": 1.0, "plan": {"seats": [2]}}))
    extra: dict[str, Any] = {"tier": 1, "plan": {"seats": [2.0]}}
    if as_json:
        response = post(http, body={"grant_type": "client_credentials", "claims": extra}, auth=auth)
    else:
        response = post(http, form=grant(claims=json.dumps(extra)), auth=auth)
    claims = claims_of(response)
    assert (claims["tier"], claims["plan"]) == (1.0, {"seats": [2]})
    payload = response.get_json()["access_token"].split(".")[1]
    assert b'"tier":1.0' in base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    refused = post(http, form=grant(claims=json.dumps({"tier": True})), auth=auth)
    error = assert_error(refused, 400, "invalid_request")
    assert "tier is a fixed claim" in error["error_description"]


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_claim_not_allowed_is_invalid_request(http: Any, auth: str, as_json: bool) -> None:
    extra = {"libraryId": "lib-1", "role": "admin"}
    if as_json:
        response = post(http, body={"grant_type": "client_credentials", "claims": extra}, auth=auth)
    else:
        response = post(http, form=grant(claims=json.dumps(extra)), auth=auth)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
@pytest.mark.parametrize("name", RESERVED)
def test_reserved_claim_is_invalid_request(http: Any, auth: str, name: str, as_json: bool) -> None:
    extra = {name: "forged" if name not in ("exp", "iat", "nbf") else 4102444800}
    if as_json:
        response = post(http, body={"grant_type": "client_credentials", "claims": extra}, auth=auth)
    else:
        response = post(http, form=grant(claims=json.dumps(extra)), auth=auth)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"libraryId"', "null"])
def test_claims_that_are_not_a_json_object_in_form(http: Any, auth: str, raw: str) -> None:
    assert_error(post(http, form=grant(claims=raw), auth=auth), 400, "invalid_request")


def _claims_request(http: Any, auth: str, claims_text: str, *, as_json: bool) -> Any:
    """*claims_text* as the form's claims parameter, or spliced as is into a JSON body (so
    it may hold what ``json.dumps`` cannot write: a repeated name)."""
    if not as_json:
        return post(http, form=grant(claims=claims_text), auth=auth)
    raw = '{"grant_type": "client_credentials", "claims": %s}' % claims_text  # noqa: UP031
    return post(http, raw=raw.encode(), content_type="application/json", auth=auth)


@db_independent
@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
@pytest.mark.parametrize(
    ("claims_text", "description"),
    [
        ('{"libraryId": "lib-first", "libraryId": "lib-second"}', "claims has a repeated name"),
        (
            '{"grants": {"books": "lib-first", "books": "lib-second"}}',
            "claims has an object with a repeated name inside it",
        ),
    ],
    ids=["claim-name", "inside-a-value"],
)
def test_a_repeated_name_in_claims_is_refused_in_form_and_json_alike(
    http: Any, auth: str, claims_text: str, description: str, as_json: bool
) -> None:
    """json.loads keeps the last of repeated names: the token would carry whichever the
    client did not mean. Refused, without echoing either value."""
    data = assert_error(
        _claims_request(http, auth, claims_text, as_json=as_json), 400, "invalid_request"
    )
    assert data["error_description"] == description, data
    assert "lib-" not in data["error_description"]


@db_independent
@pytest.mark.parametrize("coding", ["gzip", "br", "deflate"])
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_a_compressed_body_is_refused_by_name(http: Any, auth: str, coding: str, path: str) -> None:
    """A gzip body read as text would be "not valid UTF-8": the sender is told what is
    wrong instead."""
    raw = gzip.compress(b"grant_type=client_credentials&token=x")
    response = http.post(
        path,
        data=raw,
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": auth, "Content-Encoding": coding},
    )
    data = assert_error(response, 400, "invalid_request")
    assert "Content-Encoding" in data["error_description"]
    identity = http.post(
        "/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": auth, "Content-Encoding": "identity"},
    )
    assert identity.status_code == 200, identity.get_data(as_text=True)


@db_independent
def test_a_repeated_parameter_in_a_json_body_is_named_as_such(http: Any, auth: str) -> None:
    raw = b'{"grant_type": "client_credentials", "sub": "u1", "sub": "u2"}'
    response = post(http, raw=raw, content_type="application/json", auth=auth)
    data = assert_error(response, 400, "invalid_request")
    assert data["error_description"] == "a request parameter is repeated (RFC 6749 section 3.2)"


@db_independent
@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
@pytest.mark.parametrize(
    ("claims_text", "description"),
    [
        ('{"libraryId": %s}' % ("9" * 5000), "has an integer beyond +-2^53"),
        ('{"libraryId": 9007199254740992}', "has an integer beyond +-2^53"),
    ],
    ids=["5000-digits", "2^53"],
)
def test_a_huge_integer_in_claims_is_named_as_such(
    http: Any, auth: str, claims_text: str, description: str, as_json: bool
) -> None:
    """Not "must be a JSON object" nor "not valid JSON" (Python's own 4300-digit limit)."""
    data = assert_error(
        _claims_request(http, auth, claims_text, as_json=as_json), 400, "invalid_request"
    )
    where = "the request body" if as_json else "claims"
    assert data["error_description"].startswith(f"{where} {description}"), data


@db_independent
@pytest.mark.parametrize("as_json", [False, True], ids=["form", "json"])
def test_a_claim_value_may_nest_8_levels_and_the_refusal_says_8(
    http: Any, auth: str, as_json: bool
) -> None:
    """The rule (docs/reference.md) is per claim value: 8 nested arrays pass, 9 do not, and
    the message states that rule, not the depth of the object holding the claims."""
    eight = {"grants": [[[[[[[["read"]]]]]]]]}
    if as_json:
        ok = post(http, body={"grant_type": "client_credentials", "claims": eight}, auth=auth)
    else:
        ok = post(http, form=grant(claims=json.dumps(eight)), auth=auth)
    assert claims_of(ok)["grants"] == eight["grants"]
    nine = json.dumps({"grants": [eight["grants"]]})
    data = assert_error(_claims_request(http, auth, nine, as_json=as_json), 400, "invalid_request")
    if as_json:
        assert data["error_description"] == (
            "the request body is nested deeper than 10 levels "
            "(the body, claims, and a claim value of at most 8 levels)"
        ), data
    else:
        assert data["error_description"] == "claims has a value nested deeper than 8 levels", data


@db_independent
@pytest.mark.parametrize(
    ("raw", "description"),
    [
        ("not json", "claims is not valid JSON"),
        ('{"libraryId": "lib-1"', "claims is not valid JSON"),
        ("[1, 2]", "claims must be a JSON object"),
        ("null", "claims must be a JSON object"),
    ],
)
def test_each_refusal_of_form_claims_says_what_is_wrong(
    http: Any, auth: str, raw: str, description: str
) -> None:
    data = assert_error(post(http, form=grant(claims=raw), auth=auth), 400, "invalid_request")
    assert data["error_description"] == description, data


# -- client authentication ------------------------------------------------------------------


def assert_invalid_client(response: Any) -> dict[str, Any]:
    data = assert_error(response, 401, "invalid_client")
    assert response.headers.get("WWW-Authenticate", "").startswith("Basic"), response.headers
    return data


def test_wrong_and_unknown_client_are_indistinguishable(http: Any, client: tuple[str, str]) -> None:
    client_id, secret = client
    wrong = assert_invalid_client(post(http, form=grant(), auth=basic(client_id, secret + "x")))
    unknown = assert_invalid_client(post(http, form=grant(), auth=basic("no-such-client", secret)))
    assert wrong["error_description"] == unknown["error_description"]


def test_wrong_secret_with_client_secret_post(http: Any, client: tuple[str, str]) -> None:
    client_id, secret = client
    response = post(http, form=grant(client_id=client_id, client_secret=secret[:-1]))
    assert_error(response, 401, "invalid_client")


def test_disabled_client_is_refused(http: Any, services: Any, client: tuple[str, str]) -> None:
    client_id, secret = client
    with services.unit_of_work():
        services.clients.set_enabled(client_id, False)
    assert_invalid_client(post(http, form=grant(), auth=basic(client_id, secret)))
    assert_error(
        post(http, form=grant(client_id=client_id, client_secret=secret)), 401, "invalid_client"
    )
    with services.unit_of_work():
        services.clients.set_enabled(client_id, True)
    assert_token_response(post(http, form=grant(), auth=basic(client_id, secret)))


def test_rotated_secret_replaces_the_old_one_at_once(
    http: Any, services: Any, client: tuple[str, str]
) -> None:
    client_id, old = client
    assert_token_response(post(http, form=grant(), auth=basic(client_id, old)))
    with services.unit_of_work():
        _, new = services.clients.rotate_secret(client_id)
    assert_invalid_client(post(http, form=grant(), auth=basic(client_id, old)))
    assert_error(
        post(http, form=grant(client_id=client_id, client_secret=old)), 401, "invalid_client"
    )
    assert_token_response(post(http, form=grant(), auth=basic(client_id, new)))


def test_previous_secret_works_for_the_grace_period_by_the_services_clock(
    settings: Settings, clock: FixedClock
) -> None:
    """A rotation's previous secret is accepted until its grace period ends by the
    services' clock, the clock every other expiry is read by: inside it (a second before
    the end) by Basic and by form, refused from its end on. The check read the system
    time, so with the clock stepped past the end the old secret still got tokens."""
    from authserver.web.app import create_app

    svc = make_services(settings, clock=clock)
    try:
        http = create_app(services=svc).test_client()
        with svc.unit_of_work():
            created, old = svc.clients.create(name="rotating", audiences=[AUD])
            client_id = str(created.client_id)
            _, new = svc.clients.rotate_secret(client_id, grace=600)
        assert old is not None

        def by_basic(secret: str) -> Any:
            return post(http, form=grant(), auth=basic(client_id, secret))

        def by_form(secret: str) -> Any:
            return post(http, form=grant(client_id=client_id, client_secret=secret))

        clock.advance(599)
        assert_token_response(by_basic(old))
        assert_token_response(by_form(old))
        clock.advance(1)
        assert_invalid_client(by_basic(old))
        assert_error(by_form(old), 401, "invalid_client")
        assert_token_response(by_basic(new))
    finally:
        svc.close()


# -- the error matrix -----------------------------------------------------------------------
#
# Each case: (id, expected status, expected error, request builder). A builder gets the
# test client and a registered (client_id, secret) and returns the response.

Case = tuple[str, int, str, Callable[[Any, tuple[str, str]], Any]]

BAD_REQUESTS: list[Case] = [
    (
        "wrong-secret",
        401,
        "invalid_client",
        lambda h, c: post(h, form=grant(), auth=basic(c[0], "wrong-" + c[1])),
    ),
    (
        "unknown-client",
        401,
        "invalid_client",
        lambda h, c: post(h, form=grant(), auth=basic("unknown-" + c[0], c[1])),
    ),
    (
        "missing-grant-type",
        400,
        "invalid_request",
        lambda h, c: post(h, form={"sub": "u"}, auth=basic(*c)),
    ),
    (
        "unsupported-grant-type",
        400,
        "unsupported_grant_type",
        lambda h, c: post(
            h, form={"grant_type": "password", "username": "u", "password": "p"}, auth=basic(*c)
        ),
    ),
    (
        "malformed-json",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b'{"grant_type": "client_credentials",',
            auth=basic(*c),
            content_type="application/json",
        ),
    ),
    (
        "json-not-an-object",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b'["grant_type", "client_credentials"]',
            auth=basic(*c),
            content_type="application/json",
        ),
    ),
    (
        "json-string",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b'"grant_type=client_credentials"',
            auth=basic(*c),
            content_type="application/json",
        ),
    ),
    (
        "text-plain",
        400,
        "invalid_request",
        lambda h, c: post(
            h, raw=b"grant_type=client_credentials", auth=basic(*c), content_type="text/plain"
        ),
    ),
    (
        "oversize-form",
        413,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b"grant_type=client_credentials&sub=" + b"a" * 200_000,
            auth=basic(*c),
            content_type="application/x-www-form-urlencoded",
        ),
    ),
    (
        "oversize-json",
        413,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=json.dumps({"grant_type": "client_credentials", "sub": "a" * 200_000}).encode(),
            auth=basic(*c),
            content_type="application/json",
        ),
    ),
    (
        "repeated-grant-type",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b"grant_type=client_credentials&grant_type=client_credentials",
            auth=basic(*c),
            content_type="application/x-www-form-urlencoded",
        ),
    ),
    (
        "repeated-sub",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b"grant_type=client_credentials&sub=a&sub=b",
            auth=basic(*c),
            content_type="application/x-www-form-urlencoded",
        ),
    ),
    (
        "repeated-sub-json",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b'{"grant_type": "client_credentials", "sub": "alice", "sub": "mallory"}',
            auth=basic(*c),
            content_type="application/json",
        ),
    ),
    (
        "deeply-nested-json",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b'{"grant_type": "client_credentials", "claims": '
            + b"[" * 30_000
            + b"]" * 30_000
            + b"}",
            auth=basic(*c),
            content_type="application/json",
        ),
    ),
    (
        "form-latin1-charset",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b"grant_type=client_credentials&sub=caf\xe9",
            auth=basic(*c),
            content_type="application/x-www-form-urlencoded; charset=iso-8859-1",
        ),
    ),
    (
        "non-utf8-form-bytes",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b"grant_type=client_credentials&sub=\xff\xfe",
            auth=basic(*c),
            content_type="application/x-www-form-urlencoded",
        ),
    ),
    (
        "non-utf8-form-percent",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b"grant_type=client_credentials&sub=%FF%FE",
            auth=basic(*c),
            content_type="application/x-www-form-urlencoded",
        ),
    ),
    (
        "non-utf8-json",
        400,
        "invalid_request",
        lambda h, c: post(
            h,
            raw=b'{"grant_type": "client_credentials", "sub": "\xff"}',
            auth=basic(*c),
            content_type="application/json",
        ),
    ),
    (
        "non-utf8-basic",
        401,
        "invalid_client",
        lambda h, c: post(h, form=grant(), auth=basic_raw(b"\xff\xfe:" + c[1].encode())),
    ),
    (
        "non-ascii-basic-header",
        401,
        "invalid_client",
        lambda h, c: post(h, form=grant(), auth="Basic \xe9\xe9\xe9="),
    ),
    (
        "basic-not-base64",
        401,
        "invalid_client",
        lambda h, c: post(h, form=grant(), auth="Basic !!!not-base64!!!"),
    ),
    (
        "basic-no-colon",
        401,
        "invalid_client",
        lambda h, c: post(h, form=grant(), auth=basic_raw(c[0].encode() + c[1].encode())),
    ),
    (
        "basic-and-secret-in-body",
        400,
        "invalid_request",
        lambda h, c: post(h, form=grant(client_id=c[0], client_secret=c[1]), auth=basic(*c)),
    ),
    (
        "basic-and-secret-in-json",
        400,
        "invalid_request",
        lambda h, c: post(
            h, body={"grant_type": "client_credentials", "client_secret": c[1]}, auth=basic(*c)
        ),
    ),
    (
        "query-string-params",
        400,
        "invalid_request",
        lambda h, c: post(
            h, form={"sub": "u"}, auth=basic(*c), path="/token?grant_type=client_credentials"
        ),
    ),
    (
        "query-string-credentials",
        400,
        "invalid_request",
        lambda h, c: post(h, form=grant(), path=f"/token?client_id={c[0]}&client_secret={c[1]}"),
    ),
]


@db_independent
@pytest.mark.parametrize(
    ("status", "error", "send"),
    [pytest.param(status, error, send, id=name) for name, status, error, send in BAD_REQUESTS],
)
def test_bad_request(
    http: Any,
    client: tuple[str, str],
    status: int,
    error: str,
    send: Callable[[Any, tuple[str, str]], Any],
) -> None:
    response = send(http, client)
    assert_error(response, status, error)
    if status == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Basic")


def test_wrong_secret_and_unknown_client_share_one_description(
    http: Any, client: tuple[str, str]
) -> None:
    cases = dict((name, send) for name, _, _, send in BAD_REQUESTS)
    wrong = cases["wrong-secret"](http, client).get_json()
    unknown = cases["unknown-client"](http, client).get_json()
    assert wrong == unknown


def test_app_still_issues_tokens_after_the_barrage(http: Any, client: tuple[str, str]) -> None:
    # The exact codes are pinned by test_bad_request; here only: no server error, JSON.
    for name, _, _, send in BAD_REQUESTS:
        response = send(http, client)
        assert response.status_code < 500, name
        assert response.mimetype == "application/json", name
    response = post(http, form=grant(sub="after-barrage"), auth=basic(*client))
    assert_token_response(response)
    assert claims_of(response)["sub"] == "after-barrage"
