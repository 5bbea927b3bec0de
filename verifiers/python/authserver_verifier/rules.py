"""The JWT validation rules for authserver access tokens, written once.

Used by :class:`authserver_verifier.TokenVerifier` (sync servers, offline) and by the
server's own introspection and revocation (``authserver/tokens/inspection.py``), so both
give the same answer for the same token at the same time. Built on joserfc's compact-JWS
helpers and its claims registry. A violation raises :class:`RuleViolation` with one of
:data:`REASONS`; nothing else escapes, whatever the input.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable
from typing import Any
from typing import Final

from joserfc import jws
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.errors import ExpiredTokenError
from joserfc.errors import InvalidClaimError
from joserfc.errors import JoseError
from joserfc.errors import MissingClaimError
from joserfc.jwk import RSAKey

ALGORITHM: Final = "RS256"
#: RFC 9068 §4: "at+jwt" or "application/at+jwt"; media types compare case-insensitively.
ACCEPTED_TYP: Final = frozenset({"at+jwt", "application/at+jwt"})
#: RFC 9068 §2.2: claims every access token carries.
REQUIRED_CLAIMS: Final = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
#: Claims authserver writes only as non-empty strings when it writes them: ``scope`` is
#: space-delimited (RFC 9068 §2.2.3, RFC 8693 §4.2), ``email`` and ``name`` are the user's
#: (OpenID Connect Core §5.1). Any other type is refused as ``invalid_claim``, as the JS
#: verifier refuses it.
STRING_CLAIMS: Final = ("scope", "email", "name")
#: Seconds of clock skew tolerated for ``exp``, ``nbf`` and ``iat``, on both sides.
DEFAULT_LEEWAY: Final = 30
#: authserver's tokens are about 1 KB; anything much longer is not one of them.
MAX_TOKEN_BYTES: Final = 16 * 1024
#: The header segment is capped before it is decoded: ours is about 120 characters, and a
#: bound here is what keeps a hostile header (deeply nested JSON, megabytes of base64) from
#: costing more than a token check should.
MAX_HEADER_SEGMENT: Final = 1024

#: The header parameters an authserver token has; any other (``crit``, ``jku``, ``x5u``,
#: ``jwk``, ``x5c``, ``cty``, ``b64``...) is refused: this verifier honours none of them,
#: and the JS verifier refuses the same set.
KNOWN_HEADER: Final = frozenset({"alg", "typ", "kid"})
#: A compact JWS part as RFC 7515 §2 writes it: base64url without padding.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

#: Every reason a rule can give.
REASONS: Final = {
    "malformed": "not a JWS compact serialization with JSON header and claims",
    "unsupported_alg": "alg is not RS256",
    "wrong_typ": "typ is not at+jwt (RFC 9068 §4)",
    "unsupported_header": "the header has a parameter other than alg, typ and kid (crit, jku...)",
    "missing_kid": "the header names no kid",
    "bad_signature": "the signature does not verify",
    "missing_claim": "a claim required by RFC 9068 §2.2 is absent or null",
    "invalid_claim": "a claim has the wrong type or an empty value",
    "wrong_issuer": "iss is not the configured issuer",
    "wrong_audience": "aud does not contain the configured audience",
    "expired": "exp is in the past (beyond the leeway)",
    "not_yet_valid": "nbf is in the future (beyond the leeway)",
    "issued_in_future": "iat is in the future (beyond the leeway)",
}


class RuleViolation(Exception):
    """The token breaks a rule; :attr:`reason` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail or REASONS.get(reason, reason)}")


def parse_header(token: str | bytes, *, max_bytes: int = MAX_TOKEN_BYTES) -> dict[str, Any]:
    """The protected header of a compact JWS, size-capped before anything is decoded."""
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise RuleViolation("malformed", "not ASCII") from None
    if not isinstance(token, str) or not token:
        raise RuleViolation("malformed")
    if len(token) > max_bytes:
        raise RuleViolation("malformed", "token too large")
    parts = token.split(".")
    # An empty signature is left to the header check: an unsecured JWS (alg "none") is
    # refused for its alg, as the JS verifier refuses it.
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise RuleViolation("malformed")
    if len(parts[0]) > MAX_HEADER_SEGMENT:
        raise RuleViolation("malformed", "header too large")
    if not all(_canonical(part) for part in parts):
        # The compact form exactly (RFC 7515 §7.1): a lenient decoder takes "token\t",
        # "token==" or the + / alphabet for the same token, so a denylist or a cache keyed
        # on the string would be sidestepped (the JS verifier refuses them alike).
        raise RuleViolation("malformed", "not a compact JWS")
    try:
        # Decoded here, not by joserfc's extract_compact: that one already acts on some
        # parameters (a "b64" without "crit" raised, read as "malformed"), and every
        # parameter other than alg/typ/kid is check_header's to refuse, as the JS verifier
        # refuses it (unsupported_header).
        header = json.loads(b64url_decode(parts[0]), parse_constant=_not_json)
    except (ValueError, RecursionError):
        # RecursionError: nested JSON within the cap still cannot reach here unchecked.
        raise RuleViolation("malformed") from None
    if not isinstance(header, dict):
        raise RuleViolation("malformed")
    return header


def is_b64url(part: str) -> bool:
    """*part* is written in base64url as RFC 7515 §2 writes it: the URL-safe alphabet only,
    no padding, no white space (its length is not checked)."""
    return _BASE64URL.fullmatch(part) is not None


def b64url_decode(part: str) -> bytes:
    """The bytes *part* encodes in base64url as RFC 7515 §2 writes it, for the server and
    this package alike.

    Python's decoder alone skips characters outside its alphabet and takes ``=`` padding;
    this one refuses both. Stray low bits in the last character are not refused (see
    :func:`_canonical`).

    :raises ValueError: (``binascii.Error``) for a character outside the URL-safe
        alphabet, padding, or a length no encoding has (``4n + 1``).
    """
    if not is_b64url(part):
        raise binascii.Error("not base64url (RFC 7515 §2)")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _canonical(part: str) -> bool:
    """*part* is base64url as RFC 7515 writes it: no padding, and the one encoding of its
    bytes (no stray low bits in the last character)."""
    try:
        data = b64url_decode(part)
    except ValueError:
        return False
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") == part


def check_header(header: dict[str, Any], *, typ: Iterable[str] = ACCEPTED_TYP) -> str:
    """RFC 8725 §3.1, RFC 9068 §4, RFC 7515 §4.1.11; returns the ``kid``."""
    # RFC 8725 §3.1: the algorithm is ours, never the token's.
    if header.get("alg") != ALGORITHM:
        raise RuleViolation("unsupported_alg")
    value = header.get("typ")
    # RFC 9068 §4: the resource server MUST verify typ (media types are case-insensitive).
    if not isinstance(value, str) or value.lower() not in frozenset(typ):
        raise RuleViolation("wrong_typ")
    # RFC 7515 §4.1.11: unknown critical extensions MUST make the JWS invalid; and no
    # other parameter is honoured (a jku or x5u naming keys elsewhere is never fetched).
    if not KNOWN_HEADER.issuperset(header):
        raise RuleViolation("unsupported_header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise RuleViolation("missing_kid")
    return kid


def verified_claims(token: str | bytes, key: RSAKey) -> dict[str, Any]:
    """The claims of *token* once its RS256 signature verifies with *key*."""
    try:
        obj = jws.deserialize_compact(token, key, algorithms=[ALGORITHM])
    except BadSignatureError:
        raise RuleViolation("bad_signature") from None
    except (JoseError, ValueError, TypeError, UnicodeError, RecursionError):
        raise RuleViolation("malformed") from None
    try:
        # RFC 8259 JSON only: NaN and Infinity are not JSON (and no NumericDate).
        claims = json.loads(obj.payload or b"", parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise RuleViolation("malformed") from None
    if not isinstance(claims, dict):
        raise RuleViolation("malformed")
    return claims


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


_CLAIM_REASONS = {
    "iss": "wrong_issuer",
    "aud": "wrong_audience",
    "nbf": "not_yet_valid",
    "iat": "issued_in_future",
}


def check_claims(
    claims: dict[str, Any],
    *,
    issuer: str,
    audience: str | None,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
    required: Iterable[str] = REQUIRED_CLAIMS,
    strict_exp: bool = False,
) -> None:
    """RFC 9068 §4 on joserfc's claims registry: the required claims present and
    non-empty; ``iss`` exactly *issuer*; ``aud`` (a string or a list) containing *audience*
    (not checked when ``None``: the server's introspection serves every audience);
    ``exp``/``nbf``/``iat`` NumericDates within *leeway* of *now*.

    *strict_exp*: no leeway on ``exp``. The issuer itself uses it (introspection and
    revocation): it set ``exp`` from its own clock, so an expired token is inactive at
    once, while ``nbf``/``iat`` keep the leeway for other instances' clocks."""
    options: dict[str, Any] = {name: {"essential": True} for name in required}
    options["iss"] = {"essential": "iss" in options, "value": issuer}
    if audience is not None:
        options["aud"] = {"essential": "aud" in options, "value": audience}
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        # A NumericDate is a finite number: true is not one (bool is an int in Python), nor
        # an integer too large for a double (10**400 read as "never expires"), nor the
        # infinities Python's JSON reads 1e400 and -1e400 as (JS reads all three as Infinity).
        if isinstance(value, bool) or (isinstance(value, int | float) and not _finite(value)):
            raise RuleViolation("invalid_claim", f"{name} is not a time")
    registry = jwt.JWTClaimsRegistry(now=int(now), leeway=int(leeway), **options)
    try:
        registry.validate(claims)
    except MissingClaimError as exc:
        raise RuleViolation("missing_claim", f"no {exc.claim} claim") from None
    except ExpiredTokenError:
        raise RuleViolation("expired") from None
    except InvalidClaimError as exc:
        value = claims.get(exc.claim)
        wrong_type = value in (None, "", [], {}) or (
            exc.claim in ("exp", "nbf", "iat") and not isinstance(value, int | float)
        )
        reason = "invalid_claim" if wrong_type else _CLAIM_REASONS.get(exc.claim, "invalid_claim")
        raise RuleViolation(reason, f"{exc.claim}: {REASONS[reason]}") from None
    except (JoseError, ValueError, TypeError, OverflowError):
        raise RuleViolation("invalid_claim") from None
    # joserfc's registry types the registered claims (sub, jti, ...); client_id is RFC
    # 9068's own, a string too (RFC 8693 §4.3).
    if "client_id" in claims and not isinstance(claims["client_id"], str):
        raise RuleViolation("invalid_claim", "client_id is not a string")
    for name in STRING_CLAIMS:
        # Handed to the application as they are: a list or an object where a string is
        # expected passes a membership test ("admin" in ["admin"]) it was never meant to.
        if name in claims and not (isinstance(claims[name], str) and claims[name]):
            raise RuleViolation("invalid_claim", f"{name} is not a non-empty string")
    exp = claims.get("exp")
    if strict_exp and isinstance(exp, int | float) and exp <= now:
        raise RuleViolation("expired")
