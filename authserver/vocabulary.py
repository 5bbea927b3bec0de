"""The claim vocabulary: which claim names exist, who may set them, and what a value may be.

Every rule about claim names and claim values lives here and nowhere else; the client
policy (``clients``), the request parser (``oauth.grants``), the claim builder
(``tokens.claims``) and the admin API import it.

A token is read by strict JSON parsers (JavaScript's ``JSON.parse``, Go's
``encoding/json``) in sync servers, and its claims travel in HTTP headers. So a value a
request may put into a token is JSON in the strict sense (RFC 8259: no NaN or Infinity,
strings of Unicode scalar values, which a lone surrogate is not) and bounded in nesting
depth and serialized size.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

#: Claims the server always sets itself; no request and no policy may set them.
#: ``iss``, ``exp``, ``iat``, ``nbf``, ``jti``, ``aud`` and ``client_id`` are RFC 9068 §2.2
#: claims; ``scope`` comes from the scope parameter; ``typ`` and ``cnf`` are JOSE and
#: RFC 7800 members whose meaning a caller must not forge; ``status`` is the Token Status
#: List reference (draft-ietf-oauth-status-list §6.1).
RESERVED_CLAIMS = frozenset(
    {"iss", "exp", "iat", "nbf", "jti", "aud", "client_id", "scope", "typ", "cnf", "status"}
)
#: The user-identity claims, given as parameters (or inside a JSON body's ``claims``).
#: A token carries ``email`` or ``name`` only together with the ``sub`` they describe.
IDENTITY_CLAIMS = frozenset({"sub", "email", "name"})

#: Longest accepted identity values, in characters. ``email``: RFC 5321 §4.5.3.1 limits a
#: path to 256 octets; 320 is the common bound of local part (64) + "@" + domain (255).
MAX_IDENTITY_LENGTH = {"sub": 255, "email": 320, "name": 255}
#: Longest URI (audience, resource, jwks_uri) accepted anywhere.
MAX_URI_LENGTH = 2048
#: Longest client name (a label for operators; the column is ``String(200)``).
MAX_CLIENT_NAME_LENGTH = 200
#: Deepest nesting of a claim value: ``{"a": [1]}`` is depth 2. Real extra claims (grant
#: lists, library ids) are two or three levels deep.
MAX_CLAIM_DEPTH = 8
#: The depth rule as a caller reads it: of each claim value, not of the object holding them
#: (which the checks count as one level more).
CLAIMS_TOO_DEEP = f"claims has a value nested deeper than {MAX_CLAIM_DEPTH} levels"
#: Largest serialized size of all extra claims of one request, in UTF-8 bytes: the token
#: travels in an ``Authorization`` header, which servers commonly cap at 8 KiB in total.
MAX_CLAIMS_BYTES = 4096
#: The longest access token issued, in characters. Sync clients send it in an
#: ``Authorization: Bearer`` header (or a URL), and common HTTP servers accept about 8 KB
#: for one (Apache's LimitRequestFieldSize is 8190 bytes with the header's name, nginx's
#: large_client_header_buffers 8k): a longer token would be refused by the sync server, not
#: here. A request whose token would be longer is refused (``invalid_request``).
MAX_TOKEN_LENGTH = 8000
#: The longest issuer identifier (``AUTHSERVER_ISSUER``, or the address it follows when
#: unset), in characters. Every token carries it twice, as ``iss`` and in its status
#: list's URI (4/3 of each byte in base64url): at this length a client at
#: :data:`MAX_REGISTERED_BYTES` asking for the longest identity and 1,000 bytes of claims
#: still gets a token (about 7,000 characters with a 4096-bit key) within
#: :data:`MAX_TOKEN_LENGTH`; a longer issuer had every such request refused. A DNS name
#: has at most 253 characters.
MAX_ISSUER_LENGTH = 255
#: What a client's registration puts in every token it gets, at most: all its scopes (the
#: default ``scope``), all its audiences (a request may ask for all of them) and its fixed
#: claims, in UTF-8 bytes as the token's JSON carries them. Together with the claims the
#: server sets, the identity and a request's own claims, that keeps a token well inside
#: :data:`MAX_TOKEN_LENGTH` (signed with a 4096-bit key, its base64url header and
#: signature take about 780 characters, and the payload 4/3 of its bytes).
MAX_REGISTERED_BYTES = 2048
#: RFC 7493 §2.2 (I-JSON): integers beyond this lose precision in JavaScript and in any
#: parser that reads numbers as IEEE 754 doubles.
MAX_SAFE_INTEGER = 2**53 - 1
#: A claim name: a letter or underscore, then letters, digits and ``_ . : -``.
MAX_CLAIM_NAME_LENGTH = 64
_CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,%d}" % (MAX_CLAIM_NAME_LENGTH - 1))  # noqa: UP031 - a regex with braces
CLAIM_NAME_RULE = (
    "a claim name starts with a letter or underscore and uses only letters, digits and "
    f"_ . : - (at most {MAX_CLAIM_NAME_LENGTH} characters)"
)


_BEYOND_SAFE_INTEGER = "has an integer beyond +-2^53 (RFC 7493 section 2.2)"


class InvalidValue(ValueError):
    """A value breaks one of the rules above; the message says which, never echoing it."""


def is_valid_claim_name(name: str) -> bool:
    return isinstance(name, str) and bool(_CLAIM_NAME.fullmatch(name))


#: Every name the server sets itself, in lower case (:func:`is_server_claim`).
_SERVER_CLAIMS_FOLDED = frozenset(name.lower() for name in RESERVED_CLAIMS | IDENTITY_CLAIMS)


def is_server_claim(name: str) -> bool:
    """Whether *name* is a claim the server sets itself (reserved or identity), in any
    letter case. JWT claim names are case-sensitive (RFC 7519), so ``Sub`` is another
    claim than ``sub``; but a consumer that looks claims up without regard to case
    (.NET's claim lookups, some gateways) would take a request's ``Sub`` or ``ISS`` for
    the server's, so no client may be allowed or given one."""
    return name.lower() in _SERVER_CLAIMS_FOLDED


def reserved_claims_text() -> str:
    """The reserved names for an error message, written from :data:`RESERVED_CLAIMS`."""
    return ", ".join(sorted(RESERVED_CLAIMS))


def is_utf8(text: str) -> bool:
    """False for strings no UTF-8 encoder accepts (lone surrogates such as ``"\\ud800"``,
    which a JSON ``\\u`` escape can produce)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: Control characters (C0, DEL and C1) and the Unicode line and paragraph separators: none
#: belongs in one line of text (``str.splitlines`` breaks at U+0085, U+2028 and U+2029, and
#: so do log viewers).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control(value: str) -> bool:
    """Whether *value* holds a control character or a line or paragraph separator."""
    return _CONTROL.search(value) is not None


def check_text(value: str, what: str, *, max_length: int) -> str:
    """A single-line text value: UTF-8 encodable, no control characters, bounded."""
    if not is_utf8(value):
        raise InvalidValue(f"{what} is not valid Unicode text")
    if len(value) > max_length or has_control(value):
        raise InvalidValue(f"{what} is too long or has control characters")
    return value


def check_identity(value: Any, field: str, *, what: str | None = None) -> str:
    """``sub``, ``email`` or ``name``: a non-empty string with a visible character, not
    only whitespace or invisible format characters (U+200B zero width space, U+FEFF...).
    Errors name *what* (a profile's own name for the field, e.g. ``userId``), else *field*.

    An empty ``sub`` is no user at all, and an empty one at a sync server is easily read
    as "anonymous" or merged with every other empty one; an invisible one looks empty in
    every log and console while it names a user of its own.
    """
    name = what or field
    if not isinstance(value, str):
        raise InvalidValue(f"{name} must be a string")
    check_text(value, name, max_length=MAX_IDENTITY_LENGTH[field])
    if not has_visible(value):
        raise InvalidValue(f"{name} must not be empty or only whitespace or invisible characters")
    if BIDI_CONTROLS.search(value) is not None:
        # A sub shown reordered ("user-1<RLO>24-resu") in the audit trail, a log or the
        # sync server's console names another user than it seems to.
        raise InvalidValue(f"{name} must not have bidirectional control characters")
    return value


#: Characters that are neither whitespace nor format characters and still show nothing:
#: the Hangul fillers (Default_Ignorable_Code_Point, yet letters) and the blank Braille
#: pattern, used to make names that look empty.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
#: Categories that show nothing on their own: format characters (U+200B, U+FEFF, the
#: bidirectional controls...) and combining marks, which only decorate a character before
#: them (a value of marks alone shows nothing, or a dotted circle).
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me"})


def _visible(char: str) -> bool:
    return (
        not char.isspace()
        and char not in _BLANK_LETTERS
        and unicodedata.category(char) not in _INVISIBLE_CATEGORIES
    )


def has_visible(value: str) -> bool:
    """Whether *value* shows anything: a character that is not whitespace, an invisible
    format character, a combining mark or a blank letter (:data:`_BLANK_LETTERS`)."""
    return any(_visible(c) for c in value)


#: The bidirectional embedding, override and isolate controls: in a label an operator
#: reads, they reorder what is shown ("Trojan Source"), and no label needs them.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def check_json_value(value: Any, what: str, *, max_depth: int, too_deep: str | None = None) -> None:
    """Refuse what is not strict, interoperable JSON (RFC 8259 and RFC 7493: finite
    numbers, integers within +-2^53, Unicode strings) or nests deeper than *max_depth*
    (said as *too_deep* when given: the rule as its reader knows it).

    Iterative, so no depth of input reaches Python's recursion limit. Accepts the types
    :func:`json.loads` produces (dict with str keys, list, str, int, float, bool, None).
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not is_utf8(item):
                raise InvalidValue(f"{what} has a string that is not valid Unicode text")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise InvalidValue(f"{what} {_BEYOND_SAFE_INTEGER}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidValue(f"{what} has a number that is not finite (NaN or Infinity)")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidValue(too_deep or f"{what} is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str) or not is_utf8(key):
                        raise InvalidValue(f"{what} has a name that is not valid Unicode text")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        else:
            raise InvalidValue(f"{what} is not a JSON value")


def check_claim_values(claims: dict[str, Any]) -> None:
    """The extra claims of a request: strict JSON, bounded in depth and in size."""
    # One level more than a claim value may have: the object holding them.
    check_json_value(claims, "claims", max_depth=MAX_CLAIM_DEPTH + 1, too_deep=CLAIMS_TOO_DEEP)
    check_claims_size(claims)


def check_claims_size(claims: dict[str, Any], what: str = "claims") -> None:
    """All the extra claims a token carries, serialized, fit :data:`MAX_CLAIMS_BYTES`."""
    size = len(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_CLAIMS_BYTES:
        raise InvalidValue(f"{what} is larger than {MAX_CLAIMS_BYTES} bytes")


def registered_size(
    scopes: tuple[str, ...], audiences: tuple[str, ...], fixed_claims: Mapping[str, Any]
) -> int:
    """The UTF-8 bytes a client's scopes, audiences and fixed claims take in a token that
    carries all of them (see :data:`MAX_REGISTERED_BYTES`)."""
    carried: dict[str, Any] = dict(fixed_claims)
    if scopes:
        carried["scope"] = " ".join(scopes)
    if audiences:
        carried["aud"] = list(audiences)
    if not carried:
        return 0
    return len(json.dumps(carried, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _refuse_constant(name: str) -> Any:
    raise InvalidValue("JSON numbers must be finite (NaN and Infinity are not JSON)")


#: Digits of :data:`MAX_SAFE_INTEGER`: a JSON integer with more (JSON has no leading
#: zeros) is beyond it.
_SAFE_DIGITS = len(str(MAX_SAFE_INTEGER))


def digits_value(text: str) -> int | None:
    """The whole number *text* writes in ASCII digits (a number sent as a form value or a
    JSON string), or ``None`` when it is anything else or beyond :data:`MAX_SAFE_INTEGER`:
    ``int()`` refuses more than 4300 digits with a ``ValueError`` that a caller checking
    ``isdigit()`` first does not expect (it was a 500 at ``/token``)."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > _SAFE_DIGITS:
        return None
    value = int(significant)
    return value if value <= MAX_SAFE_INTEGER else None


def whole_number(value: Any) -> int | None:
    """*value*, a decoded JSON number, as a whole number, or ``None`` when it is anything
    else: an ``int``, or a ``float`` with no fractional part (``3600.0``: JSON has one type
    of number, and some encoders write every number with a point); never a ``bool``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    return None


def same_json(a: Any, b: Any) -> bool:
    """*a* and *b*, decoded JSON, are the same JSON value, at every depth.

    Python's ``==`` takes ``True`` for ``1`` and ``[True]`` for ``[1]``, which a sync server
    reading the token tells apart: a boolean is only ever the same boolean. A number is the
    same number whatever its spelling: JSON has one type of number (RFC 8259 §6), ``1`` and
    ``1.0`` are one value to every JavaScript reader, and a Node backend cannot even send
    ``1.0`` (``JSON.stringify(1.0)`` is ``"1"``), as :func:`whole_number` reads them too."""
    if _is_json_number(a) and _is_json_number(b):
        return bool(a == b)  # exact: an int and a float compare by their values
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def beyond_safe_integer(value: Any) -> bool:
    """Whether *value* is a whole number as a request body carries it (ASCII digits, or a
    JSON number with no fractional part) that is only refused by :func:`sent_whole_number`
    for lying beyond :data:`MAX_SAFE_INTEGER`: its refusal should say so, not call it
    no whole number."""
    if isinstance(value, str):
        return value.isascii() and value.isdigit() and digits_value(value) is None
    return (
        isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
        and value > MAX_SAFE_INTEGER
    )


def sent_whole_number(value: Any) -> int | None:
    """A whole number as a request body carries it: ASCII digits (a form value, where
    everything is text: :func:`digits_value`) or a JSON number (:func:`whole_number`);
    ``None`` for anything else."""
    return digits_value(value) if isinstance(value, str) else whole_number(value)


class RepeatedNames:
    """An ``object_pairs_hook`` for :func:`loads_strict` that notes each object naming a
    member more than once. ``json.loads`` keeps the last value in silence, so
    ``{"a": 1, "a": 2}`` would mean whatever the reader after us picks; noting rather than
    raising at once lets the caller say where the repetition is (a repeated request
    parameter is not a repeated name inside ``claims``)."""

    def __init__(self) -> None:
        # The objects themselves are kept so that their ids stay theirs.
        self._repeating: dict[int, dict[str, Any]] = {}

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(pairs)
        if len(data) < len(pairs):
            self._repeating[id(data)] = data
        return data

    def repeat_in(self, value: Any) -> bool:
        """Whether *value* itself is an object that repeats a name."""
        return id(value) in self._repeating

    def check(self, value: Any, what: str) -> None:
        """Refuse *value* when it is, or holds, an object that repeats a name."""
        if not self._repeating:
            return
        if self.repeat_in(value):
            raise InvalidValue(f"{what} has a repeated name")
        stack = [value]
        while stack:
            item = stack.pop()
            if self.repeat_in(item):
                raise InvalidValue(f"{what} has an object with a repeated name inside it")
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


def loads_strict(
    text: str | bytes,
    what: str = "the JSON document",
    *,
    max_depth: int,
    too_deep: str | None = None,
    object_pairs_hook: Any = None,
) -> Any:
    """``json.loads`` for input from outside: RFC 8259 JSON only (no NaN/Infinity, no lone
    surrogates), at most *max_depth* levels deep (said as *too_deep*, when given, as in
    :func:`check_json_value`). Raises :class:`InvalidValue`, or
    ``ValueError`` for text that is not JSON; never ``RecursionError``."""

    def parse_int(digits: str) -> int:
        # Python refuses to convert more than 4300 digits (a ValueError that would read
        # as "not JSON"); any integer this long breaks the +-2^53 rule of check_json_value.
        if len(digits.lstrip("-")) > _SAFE_DIGITS:
            raise InvalidValue(f"{what} {_BEYOND_SAFE_INTEGER}")
        return int(digits)

    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=parse_int,
            object_pairs_hook=object_pairs_hook,
        )
    except RecursionError:
        raise InvalidValue(too_deep or f"{what} is nested deeper than {max_depth} levels") from None
    check_json_value(value, what, max_depth=max_depth, too_deep=too_deep)
    return value
