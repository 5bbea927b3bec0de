"""The claim vocabulary (``authserver.vocabulary``) and the strict client assertion reader:
their limits at the boundary, without HTTP."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from authserver import vocabulary as v
from authserver.clients.model import is_valid_scope_token
from authserver.oauth.client_auth import MAX_ASSERTION_LIFETIME
from authserver.oauth.client_auth import read_assertion
from authserver.profiles.base import field_list
from authserver.web import accesslog


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_claim_depth_limit_is_inclusive() -> None:
    v.check_claim_values({"a": deep(v.MAX_CLAIM_DEPTH)})
    with pytest.raises(v.InvalidValue) as exc:
        v.check_claim_values({"a": deep(v.MAX_CLAIM_DEPTH + 1)})
    assert str(exc.value) == f"claims has a value nested deeper than {v.MAX_CLAIM_DEPTH} levels"


def test_claims_size_limit_is_inclusive() -> None:
    overhead = len(json.dumps({"a": ""}, separators=(",", ":")))
    v.check_claim_values({"a": "x" * (v.MAX_CLAIMS_BYTES - overhead)})
    with pytest.raises(v.InvalidValue, match="larger than"):
        v.check_claim_values({"a": "x" * (v.MAX_CLAIMS_BYTES - overhead + 1)})
    # Bytes, not characters: a multi-byte character counts for what it costs in the token.
    with pytest.raises(v.InvalidValue, match="larger than"):
        v.check_claim_values({"a": "\u00e9" * (v.MAX_CLAIMS_BYTES // 2)})


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), 2**53, -(2**53), 10**400, "\ud800", {"\udfff": 1}],
    ids=["nan", "inf", "-inf", "2^53", "-2^53", "10^400", "surrogate", "surrogate key"],
)
def test_values_strict_parsers_cannot_read_are_refused(value: Any) -> None:
    with pytest.raises(v.InvalidValue):
        v.check_claim_values({"a": value})


@pytest.mark.parametrize("value", [2**53 - 1, -(2**53) + 1, 0.5, "\U0001f600", None, True, {}])
def test_interoperable_values_are_accepted(value: Any) -> None:
    v.check_claim_values({"a": value})


@pytest.mark.parametrize("value", [object(), b"bytes", (1, 2)], ids=["object", "bytes", "tuple"])
def test_non_json_types_are_refused(value: Any) -> None:
    with pytest.raises(v.InvalidValue, match="not a JSON value"):
        v.check_json_value(value, "x", max_depth=4)


def test_loads_strict_never_raises_recursion_error() -> None:
    for depth in (999, 5000, 100_000):
        with pytest.raises(v.InvalidValue, match="nested deeper"):
            v.loads_strict("[" * depth + "]" * depth, max_depth=10)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e400", '"\\ud800"'])
def test_loads_strict_refuses_what_rfc_8259_does_not_allow(text: str) -> None:
    with pytest.raises(v.InvalidValue):
        v.loads_strict(text, max_depth=4)


@pytest.mark.parametrize(
    "value",
    # Whitespace, and the invisible format characters (zero width space and joiner, byte
    # order mark, word joiner, a bidi mark): each looks empty wherever it is shown.
    # Then what shows nothing without being either: the Hangul fillers, the blank Braille
    # pattern, combining marks with nothing to combine with.
    [
        "",
        " ",
        "\u3000 ",
        "\u00a0",
        "\u2003",
        "\u200b",
        "\ufeff",
        " \u200d\u2060 ",
        "\u200e",
        "\u3164",
        "\u115f\u1160",
        "\uffa0",
        "\u2800\u2800",
        "\u0301",
        " \u20dd",
        "\ufe0f",
    ],
)
@pytest.mark.parametrize("field", ["sub", "email", "name"])
def test_blank_identities_are_refused(field: str, value: str) -> None:
    with pytest.raises(v.InvalidValue, match="empty"):
        v.check_identity(value, field)


@pytest.mark.parametrize(
    "value",
    # C0, DEL, C1 (NEL), and the Unicode line and paragraph separators: not one line.
    [
        "a\x00b",
        "a\x7f",
        "\t",
        "a\x85b",
        "a\x9f",
        "a\u2028b",
        "a\u2029",
        "\ud800",
        "x" * 256,
        5,
        None,
    ],
)
def test_bad_identities_are_refused(value: Any) -> None:
    with pytest.raises(v.InvalidValue):
        v.check_identity(value, "sub")


def test_identities_with_a_visible_character_are_kept_as_given() -> None:
    # Combining marks after a letter (a decomposed é, a Devanagari vowel sign), a Hangul
    # syllable, right-to-left text and its marks (U+200F): real names.
    for value in (
        "a\u200b",
        "\u200bA",
        "user 1",
        "名前",
        "\u00e9",
        "a\u00a0b",
        "e\u0301",
        "\u0915\u093f",
        "한국",
        "\u05e9\u05dc\u05d5\u05dd\u200f",
    ):
        assert v.check_identity(value, "sub") == value


@pytest.mark.parametrize("control", ["\u202a", "\u202b", "\u202d", "\u202e", "\u2066", "\u2069"])
@pytest.mark.parametrize("field", ["sub", "email", "name"])
def test_identities_with_bidirectional_controls_are_refused(field: str, control: str) -> None:
    """``user-1<RLO>24-resu`` shows as another user in the audit trail and every console;
    client names refuse these characters for the same reason."""
    with pytest.raises(v.InvalidValue, match="bidirectional"):
        v.check_identity(f"user-1{control}24-resu", field)


def test_claim_name_rule() -> None:
    assert v.is_valid_claim_name("libraryId")
    assert v.is_valid_claim_name("_x.y:z-1")
    assert v.is_valid_claim_name("a" * v.MAX_CLAIM_NAME_LENGTH)
    for name in ("", "1a", "a b", "a" * (v.MAX_CLAIM_NAME_LENGTH + 1), "\u00e9", "a\n"):
        assert not v.is_valid_claim_name(name), name


def test_the_name_shapes_take_no_trailing_newline() -> None:
    """An anchored pattern read with ``re.match`` takes a trailing newline (``$`` matches
    before one), which would let in a scope "read\\n", a claim name "abc\\n", and an unknown
    parameter "zz\\n" repeated into an error description Authlib refuses to build (a 500).
    Each shape is matched whole."""
    assert is_valid_scope_token("read")
    assert not is_valid_scope_token("read\n")
    assert field_list(["zz\n"]) == "a field whose name cannot be shown"
    assert field_list(["zz", "zz\n"]) == "zz and more"
    assert accesslog._VALID_ID.fullmatch("abc")
    assert not accesslog._VALID_ID.fullmatch("abc\n")


def test_reserved_text_is_written_from_the_set() -> None:
    text = v.reserved_claims_text()
    assert sorted(text.split(", ")) == sorted(v.RESERVED_CLAIMS)


# -- the client assertion reader ------------------------------------------------------------------


def b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact(header: Any, payload: Any) -> str:
    return f"{b64(header)}.{b64(payload)}.{b64(b'signature')}"


NOW = time.time()
_MATCHES = frozenset(
    {
        "public-key",
        "kid",
        "no sub",
        "exp",
        "too far",
        "finite",
        "2\\^53",
        "nested deeper",
        "Unicode",
        "compact JWS of JSON",
        "JSON objects",
        "compact JWS",
        "too long",
        "repeated name",
    }
)
HEADER = {"alg": "RS256", "kid": "k1"}


def test_a_well_formed_assertion_is_read() -> None:
    header, claims = read_assertion(compact(HEADER, {"sub": "c", "exp": NOW + 60}), NOW)
    assert header == HEADER
    assert claims["sub"] == "c"


@pytest.mark.parametrize(
    ("assertion", "match"),
    [
        # Built at import time from NOW: ids must not show them (pytest-xdist workers
        # collect separately and must see the same ids).
        (compact({"alg": "none"}, {"sub": "c", "exp": NOW + 60}), "public-key"),
        (compact({"alg": "HS256"}, {"sub": "c", "exp": NOW + 60}), "public-key"),
        (compact({"alg": "RS256", "kid": 1}, {"sub": "c", "exp": NOW + 60}), "kid"),
        (compact(HEADER, {"exp": NOW + 60}), "no sub"),
        (compact(HEADER, {"sub": "", "exp": NOW + 60}), "no sub"),
        (compact(HEADER, {"sub": "c"}), "exp"),
        (compact(HEADER, {"sub": "c", "exp": "soon"}), "exp"),
        (compact(HEADER, {"sub": "c", "exp": True}), "exp"),
        (compact(HEADER, {"sub": "c", "exp": NOW + MAX_ASSERTION_LIFETIME + 31}), "too far"),
        (compact(HEADER, {"sub": "c", "exp": 2**52}), "too far"),
        (compact(HEADER, b'{"sub": "c", "exp": 1e400}'), "finite"),
        (compact(HEADER, b'{"sub": "c", "exp": ' + str(10**400).encode() + b"}"), "2\\^53"),
        (compact(b"[" * 2000 + b"]" * 2000, {"sub": "c"}), "nested deeper"),
        (compact(HEADER, b"[" * 2000 + b"]" * 2000), "nested deeper"),
        (compact(HEADER, b'{"sub": "\\ud800", "exp": 1}'), "Unicode"),
        (compact(HEADER, b"not json"), "compact JWS of JSON"),
        (compact(HEADER, [1]), "JSON objects"),
        (
            compact(b'{"alg": "none", "alg": "RS256"}', {"sub": "c", "exp": NOW + 60}),
            "repeated name",
        ),
        (
            compact(HEADER, b'{"sub": "a", "sub": "c", "exp": ' + str(NOW + 60).encode() + b"}"),
            "repeated name",
        ),
        (compact(HEADER, b'{"sub": "c", "exp": 1, "x": [{"y": 1, "y": 2}]}'), "repeated name"),
        ("a.b", "compact JWS"),
        ("a.b.c.d", "compact JWS"),
        ("a+b.c.d", "compact JWS"),
        ("x" * 9000, "too long"),
    ],
    ids=lambda value: value if value in _MATCHES else "",
)
def test_unusable_assertions_are_refused_before_anything_is_looked_up(
    assertion: str, match: str
) -> None:
    with pytest.raises(v.InvalidValue, match=match):
        read_assertion(assertion, NOW)


def test_loads_strict_names_an_integer_too_long_for_python_as_beyond_2_53() -> None:
    """Python refuses to convert more than 4300 digits with a ValueError that callers
    would report as "not JSON"; the rule it breaks is RFC 7493's."""
    with pytest.raises(v.InvalidValue, match=r"claims has an integer beyond \+-2\^53"):
        v.loads_strict('{"n": -%s}' % ("9" * 5000), "claims", max_depth=2)
    assert v.loads_strict("[9007199254740991, -9007199254740991]", max_depth=1) == [
        v.MAX_SAFE_INTEGER,
        -v.MAX_SAFE_INTEGER,
    ]


def test_repeated_names_are_found_where_they_are() -> None:
    names = v.RepeatedNames()
    text = '{"a": 1, "b": [{"c": 1, "c": 2}]}'
    value = v.loads_strict(text, max_depth=4, object_pairs_hook=names)
    assert not names.repeat_in(value)
    with pytest.raises(v.InvalidValue, match=r"^x has an object with a repeated name inside it$"):
        names.check(value, "x")
    names.check(value["a"], "a")
    top = v.RepeatedNames()
    value = v.loads_strict('{"a": 1, "a": 1}', max_depth=1, object_pairs_hook=top)
    assert top.repeat_in(value)
    with pytest.raises(v.InvalidValue, match=r"^x has a repeated name$"):
        top.check(value, "x")
    clean = v.RepeatedNames()
    clean.check(v.loads_strict('{"a": {"b": 1}}', max_depth=2, object_pairs_hook=clean), "x")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("60", 60),
        ("0", 0),
        ("0" * 5000 + "60", 60),
        (str(v.MAX_SAFE_INTEGER), v.MAX_SAFE_INTEGER),
        (str(v.MAX_SAFE_INTEGER + 1), None),
        ("1" + "0" * 5000, None),  # int() refuses it with a ValueError
        ("", None),
        (" 60", None),
        ("+60", None),
        ("-60", None),
        ("\u0663", None),  # a digit, not an ASCII one
    ],
)
def test_digits_value(text: str, value: int | None) -> None:
    assert v.digits_value(text) == value
