"""The access token claim set (authserver.tokens.claims), with hand-built clients."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.clients.model import ClientPolicy
from authserver.tokens.claims import build_claims
from authserver.tokens.claims import extra_claims
from authserver.tokens.claims import resolve_audience
from authserver.tokens.claims import resolve_lifetime
from authserver.tokens.claims import resolve_scope
from authserver.tokens.model import AudienceNotAllowed
from authserver.tokens.model import ScopeNotAllowed
from authserver.tokens.model import TokenRequest
from authserver.tokens.model import TokenRequestError
from authserver.vocabulary import MAX_CLAIMS_BYTES

ISSUER = "https://auth.example.com"
NOW = 1_700_000_000.75
CLIENT_ID = ClientId("as_client_test")
API = "https://api.example.com"
SYNC = "https://sync.example.com"

#: docs/reference.md: these can never be set through ``claims``. Written out, not read from
#: vocabulary.RESERVED_CLAIMS, so that a name dropped there (``cnf``: a forged proof-of-
#: possession key) fails here.
INTERFACE_RESERVED = (
    "iss",
    "exp",
    "iat",
    "nbf",
    "jti",
    "aud",
    "client_id",
    "scope",
    "typ",
    "cnf",
    "status",
)


def make_client(**policy: Any) -> Client:
    return Client(
        client_id=CLIENT_ID,
        name="backend",
        policy=ClientPolicy(**policy),
        enabled=True,
        created_at=NOW - 100,
        updated_at=NOW - 100,
        secret_hash="sha256$" + "0" * 64,
    )


def claims_for(
    client: Client, request: TokenRequest | None = None, *, ttl: int = 3600, now: float = NOW
) -> dict[str, Any]:
    return build_claims(
        issuer=ISSUER, client=client, request=request or TokenRequest(), client_ttl=ttl, now=now
    ).claims


# -- audience (RFC 8707) --------------------------------------------------------------------


def test_requested_registered_audience() -> None:
    client = make_client(audiences=(API, SYNC))
    assert resolve_audience(client, (SYNC,)) == SYNC


def test_several_requested_registered_audiences_keep_their_order() -> None:
    client = make_client(audiences=(API, SYNC))
    assert resolve_audience(client, (SYNC, API)) == [SYNC, API]


@pytest.mark.parametrize("registered", [(API,), (API, SYNC), ()])
def test_requested_unregistered_audience_is_refused(registered: tuple[str, ...]) -> None:
    with pytest.raises(AudienceNotAllowed):
        resolve_audience(make_client(audiences=registered), ("https://evil.example",))


def test_one_unregistered_among_requested_is_refused() -> None:
    with pytest.raises(AudienceNotAllowed):
        resolve_audience(make_client(audiences=(API,)), (API, "https://evil.example"))


def test_audience_match_is_exact() -> None:
    client = make_client(audiences=(API,))
    for near in (API + "/", API.upper(), API + "/v1", "https://api.example.co"):
        with pytest.raises(AudienceNotAllowed):
            resolve_audience(client, (near,))


def test_single_registered_audience_is_the_default() -> None:
    assert resolve_audience(make_client(audiences=(API,)), ()) == API


def test_no_registered_audience_defaults_to_the_client_id() -> None:
    assert resolve_audience(make_client(), ()) == str(CLIENT_ID)


def test_several_registered_audiences_need_a_choice() -> None:
    with pytest.raises(AudienceNotAllowed):
        resolve_audience(make_client(audiences=(API, SYNC)), ())


def test_audience_errors_are_token_request_errors() -> None:
    assert issubclass(AudienceNotAllowed, TokenRequestError)
    assert issubclass(ScopeNotAllowed, TokenRequestError)


# -- scope (RFC 6749 §3.3) --------------------------------------------------------------------


def test_no_scope_requested_gives_every_registered_scope() -> None:
    assert resolve_scope(make_client(scopes=("read", "write")), None) == "read write"


def test_no_scope_requested_and_none_registered_gives_no_scope() -> None:
    assert resolve_scope(make_client(), None) is None


def test_requested_subset_of_scopes() -> None:
    assert resolve_scope(make_client(scopes=("read", "write", "admin")), ("write",)) == "write"


def test_requested_scopes_are_deduplicated_in_order() -> None:
    client = make_client(scopes=("read", "write"))
    assert resolve_scope(client, ("write", "read", "write")) == "write read"


@pytest.mark.parametrize("registered", [("read",), ()])
def test_unregistered_scope_is_refused(registered: tuple[str, ...]) -> None:
    with pytest.raises(ScopeNotAllowed):
        resolve_scope(make_client(scopes=registered), ("read", "admin"))


def test_empty_scope_request_gives_no_scope() -> None:
    assert resolve_scope(make_client(scopes=("read",)), ()) is None


# -- lifetime --------------------------------------------------------------------------------


def test_lifetime_defaults_to_the_client_ttl() -> None:
    assert resolve_lifetime(3600, None) == 3600


def test_shorter_lifetime_is_honoured() -> None:
    assert resolve_lifetime(3600, 60) == 60


@pytest.mark.parametrize("requested", [3600, 3601, 86400 * 365])
def test_lifetime_is_never_longer_than_the_client_ttl(requested: int) -> None:
    assert resolve_lifetime(3600, requested) == 3600


@pytest.mark.parametrize("requested", [0, -1])
def test_non_positive_lifetime_is_refused(requested: int) -> None:
    with pytest.raises(TokenRequestError):
        resolve_lifetime(3600, requested)


def test_exp_follows_the_clamped_lifetime() -> None:
    client = make_client()
    short = build_claims(
        issuer=ISSUER, client=client, request=TokenRequest(expires_in=120), client_ttl=3600, now=NOW
    )
    assert short.expires_in == 120
    assert short.claims["exp"] == short.claims["iat"] + 120
    long = build_claims(
        issuer=ISSUER,
        client=client,
        request=TokenRequest(expires_in=99999),
        client_ttl=3600,
        now=NOW,
    )
    assert long.expires_in == 3600
    assert long.claims["exp"] == long.claims["iat"] + 3600


# -- extra claims ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", INTERFACE_RESERVED)
def test_reserved_claims_are_refused(name: str) -> None:
    client = make_client(allowed_claims=("libraryId",))
    with pytest.raises(TokenRequestError):
        claims_for(client, TokenRequest(claims={name: "forged"}))


@pytest.mark.parametrize("name", INTERFACE_RESERVED)
def test_reserved_claims_are_refused_even_if_a_policy_allows_them(name: str) -> None:
    # ClientService never registers these, but a hand-built (or corrupt) policy must not
    # open a way around the rule.
    client = make_client(allowed_claims=(name,))
    with pytest.raises(TokenRequestError):
        extra_claims(client, {name: "forged"})


@pytest.mark.parametrize("name", ["Sub", "ISS", "Exp", "AUD", "Client_ID", "Scope", "EMAIL"])
def test_reserved_and_identity_names_in_another_letter_case_are_refused_even_if_allowed(
    name: str,
) -> None:
    """A consumer that looks claims up without regard to case would read a request's
    ``Sub`` as the ``sub``: no request may set one, whatever a (hand-built) policy says."""
    client = make_client(allowed_claims=(name,))
    with pytest.raises(TokenRequestError, match="server sets itself"):
        extra_claims(client, {name: "forged"})


@pytest.mark.parametrize(
    ("fixed", "sent"),
    [
        (1, True),
        (True, 1),
        (0, False),
        (False, 0),
        ("1", 1),
        (1, 1.5),
        ([1], [True]),
        ({"a": [0]}, {"a": [False]}),
        ([1, 2], [1]),
    ],
    ids=[
        "1-true",
        "true-1",
        "0-false",
        "false-0",
        "string-number",
        "other-number",
        "nested-list",
        "nested-object",
        "shorter-list",
    ],
)
def test_a_request_cannot_change_a_fixed_claim_even_to_an_equal_python_value(
    fixed: Any, sent: Any
) -> None:
    """A fixed claim may be repeated only as the same JSON value: ``true`` is not ``1``
    (Python's ``True == 1``), which a sync server reading ``"admin": true`` tells apart, at
    any depth (``[true]`` was taken for ``[1]``: the request was accepted, not refused)."""
    client = make_client(fixed_claims={"admin": fixed})
    with pytest.raises(TokenRequestError, match="fixed claim of this client"):
        extra_claims(client, {"admin": sent})
    assert extra_claims(client, {"admin": fixed}) == {"admin": fixed}


@pytest.mark.parametrize(
    ("fixed", "sent"),
    [
        (1.0, 1),
        (1, 1.0),
        (-0.0, 0),
        ({"level": [2.0, {"n": 3}]}, {"level": [2, {"n": 3.0}]}),
    ],
    ids=["float-int", "int-float", "minus-zero", "nested"],
)
def test_a_fixed_number_may_be_repeated_in_another_spelling(fixed: Any, sent: Any) -> None:
    """JSON has one type of number (RFC 8259 §6): ``1`` repeats a fixed ``1.0`` (a Node
    backend cannot send ``1.0``: ``JSON.stringify(1.0)`` is ``"1"``), and the token carries
    the fixed value as the operator wrote it."""
    client = make_client(fixed_claims={"tier": fixed})
    merged = extra_claims(client, {"tier": sent})
    assert merged == {"tier": fixed}
    assert json.dumps(merged) == json.dumps({"tier": fixed})


def test_the_request_claims_and_the_fixed_claims_fit_the_size_bound_together() -> None:
    """Each is bounded alone (the fixed ones at registration); what the token carries is
    both, and it travels in a header: together they must fit too."""
    half = MAX_CLAIMS_BYTES // 2
    client = make_client(allowed_claims=("big",), fixed_claims={"fixed": "F" * half})
    assert extra_claims(client, {"big": "b" * (half - 40)})["fixed"] == "F" * half
    with pytest.raises(TokenRequestError, match="together with this client's fixed claims"):
        extra_claims(client, {"big": "b" * (half + 10)})


def test_allowed_extra_claims_are_copied() -> None:
    client = make_client(allowed_claims=("libraryId", "grants"))
    grants = [{"library": "abc", "role": "editor"}]
    claims = claims_for(client, TokenRequest(claims={"libraryId": "lib-1", "grants": grants}))
    assert claims["libraryId"] == "lib-1"
    assert claims["grants"] == grants


def test_claims_not_allowed_for_the_client_are_refused() -> None:
    client = make_client(allowed_claims=("libraryId",))
    # The refused name is named: a profile adds claims of its own that the backend never
    # sent, so the message is the only place it learns which one.
    with pytest.raises(TokenRequestError, match=r"a claim \(admin\) this client is not allowed"):
        claims_for(client, TokenRequest(claims={"libraryId": "x", "admin": True}))
    with pytest.raises(TokenRequestError, match=r"\(libraryId\)"):
        claims_for(make_client(), TokenRequest(claims={"libraryId": "x"}))
    # A name outside the claim-name rule is never echoed (it reaches here only from code).
    with pytest.raises(TokenRequestError, match="names a claim this client") as refused:
        claims_for(make_client(), TokenRequest(claims={"bad name\n": 1}))
    assert "bad name" not in str(refused.value)


def test_identity_names_in_extra_claims_are_refused() -> None:
    """The request parser moves sub/email/name out of ``claims``; one that reaches the
    claim builder inside the extra claims is refused, never silently dropped or merged."""
    client = make_client(allowed_claims=("libraryId",))
    for name in ("sub", "email", "name"):
        with pytest.raises(TokenRequestError, match="sub, email and name"):
            claims_for(client, TokenRequest(sub="alice", claims={name: "alice"}))


# -- the whole claim set (RFC 9068 §2.2) --------------------------------------------------------


def test_build_claims_has_every_required_claim() -> None:
    client = make_client(audiences=(API,), scopes=("read",))
    result = build_claims(
        issuer=ISSUER, client=client, request=TokenRequest(sub="alice"), client_ttl=900, now=NOW
    )
    claims = result.claims
    for name in ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"):
        assert name in claims, name
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == API
    assert claims["client_id"] == str(CLIENT_ID)
    assert claims["iat"] == int(NOW)
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == int(NOW) + 900
    for name in ("exp", "iat", "nbf"):
        assert isinstance(claims[name], int), name  # NumericDate, whole seconds
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert claims["scope"] == "read"
    assert result.expires_in == 900
    assert result.scope == "read"
    assert result.audience == API


def test_sub_defaults_to_the_client_id() -> None:
    assert claims_for(make_client())["sub"] == str(CLIENT_ID)


def test_scope_only_when_any() -> None:
    claims = claims_for(make_client())
    assert "scope" not in claims
    claims = claims_for(make_client(scopes=("read",)), TokenRequest(scopes=()))
    assert "scope" not in claims
    assert claims_for(make_client(scopes=("read", "write")))["scope"] == "read write"


def test_email_and_name_only_when_given() -> None:
    claims = claims_for(make_client())
    assert "email" not in claims
    assert "name" not in claims
    claims = claims_for(make_client(), TokenRequest(sub="u1", email="a@example.com", name="A B"))
    assert claims["email"] == "a@example.com"
    assert claims["name"] == "A B"


def test_jti_is_unique_per_token() -> None:
    client = make_client()
    jtis = {claims_for(client)["jti"] for _ in range(500)}
    assert len(jtis) == 500


def test_no_unexpected_claims() -> None:
    claims = claims_for(make_client(audiences=(API,)), TokenRequest(sub="alice"))
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"}
    assert None not in claims.values()


def test_build_claims_propagates_policy_errors() -> None:
    client = make_client(audiences=(API, SYNC), scopes=("read",))
    with pytest.raises(AudienceNotAllowed):
        claims_for(client)
    with pytest.raises(ScopeNotAllowed):
        claims_for(client, TokenRequest(audiences=(API,), scopes=("write",)))
    with pytest.raises(TokenRequestError):
        claims_for(client, TokenRequest(audiences=(API,), expires_in=0))


# -- whom the token is for ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["sub", "email", "name"])
@pytest.mark.parametrize("value", ["", " ", "\u3000"])
def test_blank_identity_values_are_refused(field: str, value: str) -> None:
    with_sub = {} if field == "sub" else {"sub": "alice"}
    with pytest.raises(TokenRequestError, match="empty"):
        claims_for(make_client(), TokenRequest(**{**with_sub, field: value}))


@pytest.mark.parametrize("fields", [{"email": "a@example.com"}, {"name": "A"}])
def test_email_and_name_need_a_sub(fields: dict[str, str]) -> None:
    with pytest.raises(TokenRequestError, match="need the sub"):
        claims_for(make_client(), TokenRequest(**fields))


def test_require_sub_policy() -> None:
    strict = make_client(require_sub=True)
    with pytest.raises(TokenRequestError, match="must name the user"):
        claims_for(strict)
    assert claims_for(strict, TokenRequest(sub="alice"))["sub"] == "alice"
    assert claims_for(make_client())["sub"] == str(CLIENT_ID)


def test_extra_claim_values_are_checked() -> None:
    client = make_client(allowed_claims=("libraryId",))
    for value in (float("nan"), "\ud800", 10**400, [[[[[[[[[1]]]]]]]]]):
        with pytest.raises(TokenRequestError):
            claims_for(client, TokenRequest(claims={"libraryId": value}))


def test_the_reserved_claim_message_names_every_reserved_claim() -> None:
    from authserver.vocabulary import RESERVED_CLAIMS

    client = make_client(allowed_claims=("libraryId",))
    with pytest.raises(TokenRequestError) as info:
        claims_for(client, TokenRequest(claims={"iss": "x"}))
    for name in RESERVED_CLAIMS:
        assert name in str(info.value)
