"""Each built-in profile's translation, against the vendors' field names and units
(authserver/profiles/*.py name the vendor packages they follow), and the registry."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authserver.clients.model import DEFAULT_PROFILE
from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.clients.model import ClientPolicy
from authserver.profiles import values
from authserver.profiles.base import DialectRequest
from authserver.profiles.base import Profile
from authserver.profiles.base import ProfileError
from authserver.profiles.base import refuse_unknown
from authserver.profiles.dexie import DexieProfile
from authserver.profiles.oauth2 import OAuth2Profile
from authserver.profiles.registry import ProfileRegistry
from authserver.profiles.registry import builtin_profiles
from authserver.profiles.stream import StreamProfile
from authserver.profiles.twilio import TwilioProfile
from authserver.profiles.verdant import VerdantProfile
from authserver.storage.sql.tables import CLIENTS
from authserver.tokens.model import IssuedToken
from tests.factories import UNKNOWN_KEY_TYPE_PEM

NOW = 1_800_000_000.0
#: RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (Authlib raises on
#: anything else, which would turn a refusal into a server error).
DESCRIBABLE = re.compile(r"^[\x20-\x21\x23-\x5B\x5D-\x7E]+$")


def refused(profile: Profile, fields: dict[str, Any], named: str, **policy: Any) -> None:
    with pytest.raises(ProfileError, match=named) as exc:
        translate(profile, fields, **policy)
    assert DESCRIBABLE.match(str(exc.value)), str(exc.value)


def client(**policy: Any) -> Client:
    return Client(
        client_id=ClientId("as_client_x"),
        name="x",
        policy=ClientPolicy(**policy),
        enabled=True,
        created_at=0,
        updated_at=0,
        secret_hash="sha256$00",
    )


def req(fields: dict[str, Any], *, is_json: bool = True) -> DialectRequest:
    return DialectRequest(fields=fields, is_json=is_json, now=NOW)


def translate(profile: Profile, fields: dict[str, Any], **policy: Any) -> dict[str, Any]:
    request = req(fields)
    refuse_unknown(profile, request)
    return profile.translate(request, client(**policy))


def issued(sub: str = "user-1", **claims: Any) -> IssuedToken:
    all_claims = {
        "sub": sub,
        "client_id": "as_client_x",
        "exp": int(NOW) + 600,
        "iat": int(NOW),
        **claims,
    }
    return IssuedToken(
        access_token="header.payload.sig",
        expires_in=600,
        scope="ACCESS_DB",
        jti="j",
        sub=sub,
        audience="a",
        kid="k",
        claims=all_claims,
    )


# -- registry ------------------------------------------------------------------------------


def test_builtins_are_the_five_named_profiles() -> None:
    registry = ProfileRegistry(builtin_profiles())
    assert registry.names() == ["dexie", "oauth2", "stream", "twilio", "verdant"]
    assert all(isinstance(p, Profile) for p in builtin_profiles())
    assert registry.paths() == {"/auth/v1/access-tokens": registry.get("stream")}


def test_registry_refuses_duplicates_and_taken_paths() -> None:
    class Other(StreamProfile):
        name = "other"

    with pytest.raises(ValueError, match="path"):
        ProfileRegistry([*builtin_profiles(), Other()])
    with pytest.raises(ValueError, match="two profiles"):
        ProfileRegistry([*builtin_profiles(), DexieProfile()])


def test_a_broken_plugin_is_skipped_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from authserver.profiles import registry as module

    eps = [
        EntryPoint("broken", "no_such_module_xyz:Profile", module.ENTRY_POINT_GROUP),
        EntryPoint("dexie", "authserver.profiles.oauth2:OAuth2Profile", module.ENTRY_POINT_GROUP),
        EntryPoint(
            "mismatch", "authserver.profiles.oauth2:OAuth2Profile", module.ENTRY_POINT_GROUP
        ),
    ]
    monkeypatch.setattr(module, "entry_points", lambda group: eps)
    registry = ProfileRegistry.load()
    assert registry.names() == ["dexie", "oauth2", "stream", "twilio", "verdant"]
    assert isinstance(registry.get("dexie"), DexieProfile)


def test_an_entry_point_profile_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from authserver.profiles import registry as module

    ep = EntryPoint("example", f"{__name__}:ExampleProfile", module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(module, "entry_points", lambda group: [ep])
    registry = ProfileRegistry.load()
    assert isinstance(registry.get("example"), ExampleProfile)


class ExampleProfile(OAuth2Profile):
    name = "example"


# -- oauth2 ----------------------------------------------------------------------------------


def test_oauth2_refuses_a_stream_body_naming_its_fields() -> None:
    """The silent mis-issue of issue 16: {ttl, userId, scopes} at /token."""
    with pytest.raises(ProfileError) as exc:
        translate(OAuth2Profile(), {"ttl": 60, "userId": "u", "scopes": ["a"]})
    assert "scopes, ttl, userId" in str(exc.value)


def test_error_descriptions_never_echo_unprintable_names() -> None:
    with pytest.raises(ProfileError) as exc:
        translate(OAuth2Profile(), {'bad"name\\': 1})
    assert '"' not in str(exc.value)
    assert "\\" not in str(exc.value)


def test_oauth2_renders_rfc6749() -> None:
    body = OAuth2Profile().render(issued(), req({}))
    assert body == {
        "access_token": "header.payload.sig",
        "token_type": "Bearer",
        "expires_in": 600,
        "scope": "ACCESS_DB",
    }


# -- dexie -----------------------------------------------------------------------------------


def pem_public_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - shape only
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_dexie_request_as_the_documented_backend_sends_it() -> None:
    params = translate(
        DexieProfile(),
        {
            "scopes": ["ACCESS_DB"],
            "public_key": pem_public_key(),
            "claims": {"sub": "u1", "email": "u1@example.com", "name": "U One"},
            "expires_in": "10m",
        },
    )
    assert params == {
        "scope": ["ACCESS_DB"],
        "claims": {"sub": "u1", "email": "u1@example.com", "name": "U One"},
        "expires_in": 600,
    }


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"not_before": "1m"}, "not_before"),
        ({"public_key": "not a key"}, "public_key"),
        # Well-formed PEM of a key type cryptography does not know: UnsupportedAlgorithm,
        # no ValueError (a 500 at /token).
        ({"public_key": UNKNOWN_KEY_TYPE_PEM}, "public_key"),
        ({"expires_in": "600"}, "expires_in"),  # unitless: milliseconds in jsonwebtoken
        ({"scopes": "ACCESS_DB"}, "scopes"),
        ({"claims": ["sub"]}, "claims"),
        ({"refresh_token": "x"}, "refresh_token"),
    ],
)
def test_dexie_refuses_what_it_cannot_honour(fields: dict[str, Any], named: str) -> None:
    refused(DexieProfile(), fields, named)


def test_dexie_response_is_a_token_final_response() -> None:
    body = DexieProfile().render(issued(email="e@x"), req({}))
    assert body["type"] == "tokens"
    assert body["accessToken"] == "header.payload.sig"
    assert body["accessTokenExpiration"] == (int(NOW) + 600) * 1000  # epoch milliseconds
    assert body["claims"]["sub"] == "user-1"
    assert body["claims"]["email"] == "e@x"
    assert body["userType"] == "prod"
    assert "refreshToken" not in body
    own = DexieProfile().render(issued(sub="as_client_x"), req({}))
    assert own["userType"] == "client"


# -- verdant ---------------------------------------------------------------------------------


def test_verdant_maps_token_provider_options_onto_its_claims() -> None:
    params = translate(
        VerdantProfile(),
        {
            "userId": "u1",
            "libraryId": "lib-1",
            "syncEndpoint": "https://sync.example/lofi",
            "fileEndpoint": "https://sync.example/files",
            "role": "owner",
            "type": 4,
            "expiresIn": "1d",
        },
    )
    assert params == {
        "sub": "u1",
        "expires_in": 86400,
        "claims": {
            "lib": "lib-1",
            "url": "https://sync.example/lofi",
            "file": "https://sync.example/files",
            "role": "owner",
            "type": 4,
        },
    }


def test_verdant_defaults_type_to_realtime_and_takes_the_url_from_a_fixed_claim() -> None:
    params = translate(
        VerdantProfile(),
        {"userId": "u1", "libraryId": "l"},
        fixed_claims={"url": "wss://sync.example"},
    )
    assert params["claims"] == {"lib": "l", "type": 0}


def test_verdant_reads_a_null_role_or_file_endpoint_as_unset() -> None:
    """TokenProvider's optional ``role`` and ``fileEndpoint``: a backend passing a user's
    null role (JSON keeps null) got a token from Verdant, and a 400 here once null
    stopped meaning "not sent" for every member."""
    params = translate(
        VerdantProfile(),
        {"userId": "u1", "libraryId": "l", "syncEndpoint": "s", "role": None, "fileEndpoint": None},
    )
    assert params["claims"] == {"lib": "l", "url": "s", "type": 0}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"libraryId": "l", "syncEndpoint": "u"}, "userId"),
        ({"userId": "u", "syncEndpoint": "u"}, "libraryId"),
        ({"userId": "u", "libraryId": "l"}, "syncEndpoint"),
        ({"userId": "u", "libraryId": "l", "syncEndpoint": "s", "type": 6}, "type"),
        ({"userId": "u", "libraryId": "l", "syncEndpoint": "s", "type": True}, "type"),
        ({"userId": "u", "libraryId": "l", "syncEndpoint": "s", "expiresIn": "3"}, "expiresIn"),
        # TokenProvider signs these as given: a null user or library, or no sync URL, is
        # no token anyone can use, and jsonwebtoken throws on a null expiresIn.
        ({"userId": None, "libraryId": "l", "syncEndpoint": "s"}, "userId"),
        ({"userId": "u", "libraryId": "l", "syncEndpoint": None}, "syncEndpoint"),
        ({"userId": "u", "libraryId": "l", "syncEndpoint": "s", "expiresIn": None}, "expiresIn"),
        ({"userId": "u", "libraryId": "l", "syncEndpoint": "s", "role": ""}, "role"),
        ({"userId": "u", "libraryId": "l", "syncEndpoint": "s", "secret": "x"}, "secret"),
    ],
)
def test_verdant_refuses(fields: dict[str, Any], named: str) -> None:
    refused(VerdantProfile(), fields, named)


def test_verdant_response() -> None:
    body = VerdantProfile().render(issued(url="wss://s"), req({}))
    assert body == {
        "accessToken": "header.payload.sig",
        "syncEndpoint": "wss://s",
        "expiresIn": 600,
    }


# -- twilio ----------------------------------------------------------------------------------


def test_twilio_identity_ttl_and_sync_grant() -> None:
    params = translate(
        TwilioProfile(),
        {"identity": "alice", "ttl": 7200, "grants": {"data_sync": {"service_sid": "IS123"}}},
    )
    assert params == {
        "sub": "alice",
        "expires_in": 7200,
        "claims": {"grants": {"identity": "alice", "data_sync": {"service_sid": "IS123"}}},
    }


def test_twilio_takes_a_whole_number_identity_as_twilio_writes_it() -> None:
    """twilio's AccessToken writes an integer identity as its decimal string (a backend
    passing a numeric user id); it was refused as not a string."""
    params = translate(TwilioProfile(), {"identity": 42})
    assert params["sub"] == "42"
    assert params["claims"]["grants"]["identity"] == "42"
    assert translate(TwilioProfile(), {"identity": -7})["sub"] == "-7"


def test_twilio_default_ttl_is_twilios_3600() -> None:
    assert translate(TwilioProfile(), {"identity": "a"})["expires_in"] == 3600
    # AccessToken's ``options.ttl || 3600``: a JSON null reaches the profile as None, and
    # 0 is falsy there too (it was refused: "ttl must be a positive whole number").
    for ttl in (None, 0):
        assert translate(TwilioProfile(), {"identity": "a", "ttl": ttl})["expires_in"] == 3600


def test_twilio_reads_a_null_nbf_or_region_as_unset() -> None:
    """AccessToken sets ``nbf`` only when it is a number and the region header only for a
    non-empty string: a null one is an option left unset, not one this profile refuses."""
    params = translate(TwilioProfile(), {"identity": "a", "nbf": None, "region": None})
    assert params["sub"] == "a"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, "identity"),
        ({"identity": 0}, "identity"),  # AccessToken: "identity is required"
        ({"identity": True}, "identity"),
        ({"identity": 4.5}, "identity"),
        ({"identity": "a", "ttl": 86401}, "ttl"),
        ({"identity": "a", "ttl": "1h"}, "ttl"),
        ({"identity": "a", "ttl": -1}, "ttl"),
        ({"identity": "a", "ttl": ""}, "ttl"),
        ({"identity": "a", "nbf": 1}, "nbf"),
        ({"identity": "a", "region": "ie1"}, "region"),
        ({"identity": "a", "grants": {"video": {"room": "r"}}}, "grants.video"),
        ({"identity": "a", "grants": {"data_sync": {"x": "y"}}}, "grants.data_sync.x"),
    ],
)
def test_twilio_refuses(fields: dict[str, Any], named: str) -> None:
    refused(TwilioProfile(), fields, named)


def test_twilio_response() -> None:
    body = TwilioProfile().render(issued(sub="alice"), req({}))
    assert body == {"identity": "alice", "token": "header.payload.sig", "ttl": 600}


# -- stream ----------------------------------------------------------------------------------


def test_stream_body() -> None:
    params = translate(
        StreamProfile(),
        {
            "userId": "viewer-1",
            "scopes": ["private-viewer"],
            "ttl": 3600,
            "data": {"displayName": "V"},
            "chatUser": {"username": "v"},
        },
    )
    assert params == {
        "sub": "viewer-1",
        "scope": ["private-viewer"],
        "expires_in": 3600,
        "claims": {"data": {"displayName": "V"}, "chatUser": {"username": "v"}},
    }


def test_stream_ttl_written_with_a_point_is_its_number() -> None:
    params = translate(StreamProfile(), {"userId": "viewer-1", "ttl": 3600.0})
    assert params["expires_in"] == 3600
    assert isinstance(params["expires_in"], int)


def test_stream_expire_is_an_absolute_time() -> None:
    params = translate(StreamProfile(), {"expire": "2027-01-15T08:10:00Z"})
    expected = 1_800_000_000 + 600  # NOW is 2027-01-15T08:00:00Z
    assert params["expires_in"] == expected - int(NOW)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"ttl": 60, "expire": "2027-01-15T08:10:00Z"}, "ttl or expire"),
        ({"expire": "2027-01-15T08:10:00"}, "expire"),  # no offset
        ({"expire": "2020-01-01T00:00:00Z"}, "expire"),  # past
        # Converted to UTC these leave datetime's range (an OverflowError, a 500 at /token).
        ({"expire": "0001-01-01T00:00:00+14:00"}, "expire"),
        ({"expire": "9999-12-31T23:59:59-14:00"}, "expire"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": 1.5}, "ttl"),
        ({"data": "x"}, "data"),
        ({"kid": "k"}, "kid"),
    ],
)
def test_stream_refuses(fields: dict[str, Any], named: str) -> None:
    refused(StreamProfile(), fields, named)


@pytest.mark.parametrize("bad", ["u\x00", "u\n", "user-1\u202e", "\u200b", " "])
@pytest.mark.parametrize(
    ("profile", "fields", "field"),
    [
        (TwilioProfile(), {}, "identity"),
        (VerdantProfile(), {"libraryId": "l", "syncEndpoint": "s"}, "userId"),
        (StreamProfile(), {}, "userId"),
    ],
)
def test_a_dialects_user_field_is_refused_by_its_own_name(
    profile: Profile, fields: dict[str, Any], field: str, bad: str
) -> None:
    """The user field becomes ``sub`` and gets its rules; a refusal named ``sub``, a field
    the request did not send (the dialect's check only looked for a non-empty string)."""
    with pytest.raises(ProfileError) as exc:
        translate(profile, {**fields, field: bad})
    assert str(exc.value).startswith(f"{field} "), str(exc.value)
    assert DESCRIBABLE.match(str(exc.value)), str(exc.value)


def test_dialects_other_than_oauth2_take_json_only() -> None:
    for profile in (DexieProfile(), VerdantProfile(), TwilioProfile(), StreamProfile()):
        with pytest.raises(ProfileError, match="JSON"):
            profile.translate(req({}, is_json=False), client())


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600),
        ("1d", 86400),
        ("2 hours", 7200),
        ("1.5h", 5400),
        ("90s", 90),
        ("1500ms", 1),
        ("1w", 604800),
        ("1y", 31557600),
        (45, 45),
    ],
)
def test_durations_follow_vercel_ms(text: Any, seconds: int) -> None:
    assert values.duration(text, "d") == seconds


@pytest.mark.parametrize(
    "text",
    # A number float() reads as infinity: floor() raised OverflowError (a 500) on it.
    # Digits of other scripts (Arabic-Indic, fullwidth) are no number to vercel/ms, nor
    # to ``seconds``; Python's regex and float() read "\u0661\u0660m" as ten minutes.
    [
        *("600", "-1m", "10 fortnights", "", "0s", "999ms", True, None, "1" * 400 + "s"),
        *("\u0661\u0660m", "\uff11\uff10m", "1.\u0665h"),
    ],
)
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ProfileError) as exc:
        values.duration(text, "d")
    assert DESCRIBABLE.match(str(exc.value)), str(exc.value)


@pytest.mark.parametrize("text", ["1" + "0" * 5000, "0", "", "1.5", " 60", "\u0663"])
def test_bad_seconds(text: str) -> None:
    """More digits than int() converts was a ValueError (a 500), not the ProfileError."""
    with pytest.raises(ProfileError) as exc:
        values.seconds(text, "ttl")
    assert DESCRIBABLE.match(str(exc.value)), str(exc.value)


@pytest.mark.parametrize(
    "number",
    [values.MAX_SECONDS + 1, 2**31 - 1, str(2**31 - 1), str(2**53), "1" + "0" * 5000, 1e300],
)
def test_seconds_beyond_ten_years_are_refused_as_such(number: Any) -> None:
    """A dialect's lifetime beyond ten years is refused saying so, not as "no positive whole
    number of seconds", which it is."""
    with pytest.raises(ProfileError, match="at most ten years"):
        values.seconds(number, "ttl")


def test_seconds_read_digits_with_leading_zeros() -> None:
    assert values.seconds("0" * 5000 + "60", "ttl") == 60


def test_the_default_profile_is_the_built_in_oauth2_and_the_schemas_default() -> None:
    """The name is written once (``clients.model.DEFAULT_PROFILE``); the schema spells it
    as its migration wrote it, which must agree."""
    assert OAuth2Profile().name == DEFAULT_PROFILE
    assert ClientPolicy().profile == DEFAULT_PROFILE
    assert ProfileRegistry(builtin_profiles()).get(DEFAULT_PROFILE) is not None
    assert CLIENTS.c.profile.server_default.arg == DEFAULT_PROFILE  # type: ignore[union-attr]
