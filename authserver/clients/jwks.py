"""The keys of a ``private_key_jwt`` client (RFC 7523 §2.2): a public JWK set registered
inline, or the ``jwks_uri`` it is fetched from. The same rules hold for a set given at
registration and for a set fetched later (``clients/jwks_fetch.py``)."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from authserver_verifier.rules import b64url_decode
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from authserver.errors import InvalidInput
from authserver.vocabulary import BIDI_CONTROLS
from authserver.vocabulary import MAX_URI_LENGTH
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import check_json_value
from authserver.vocabulary import has_control
from authserver.vocabulary import is_utf8

#: Most keys a client's set may hold (key rotation needs two or three).
MAX_KEYS = 20
#: The largest JWK set read, from a jwks_uri or a --jwks-file: a few keys are a few KiB.
MAX_JWKS_BYTES = 64 * 1024
#: Deepest nesting in a JWK set: ``{"keys": [{"x5c": ["…"]}]}`` is 4.
MAX_JWKS_DEPTH = 4
#: JWK members that only private or symmetric keys have (RFC 7518 §6.2.2, §6.3.2, §6.4).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``::1``)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_jwks_uri(uri: Any, *, allow_http_loopback: bool) -> str:
    """An ``https://`` URL; ``http://`` only on a loopback host and only when
    *allow_http_loopback* (outside production mode). No credentials, no fragment."""
    if not isinstance(uri, str) or not is_utf8(uri) or len(uri) > MAX_URI_LENGTH:
        raise InvalidInput(
            f"jwks_uri must be an https:// URL of at most {MAX_URI_LENGTH} characters"
        )
    # Every control character (DEL and C1 too, not only C0) and the bidirectional ones,
    # which an IRI must not hold (RFC 3987 §4.1): `clients show` would print them to the
    # operator's terminal, reordered or as escape sequences.
    if any(c.isspace() for c in uri) or has_control(uri) or BIDI_CONTROLS.search(uri):
        raise InvalidInput(
            "jwks_uri must be an https:// URL without spaces, control characters or "
            "bidirectional override, embedding or isolate characters"
        )
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        port = parts.port  # raises ValueError for a port above 65535
    except ValueError:
        raise InvalidInput("jwks_uri must be an https:// URL") from None
    if port == 0:
        # Nothing listens there: every authentication of the client would fail.
        raise InvalidInput("jwks_uri must be an https:// URL with a port from 1 to 65535")
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidInput("jwks_uri must be an https:// URL with a host, no user and no fragment")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and is_loopback_host(host):
        if allow_http_loopback:
            return uri
        raise InvalidInput("jwks_uri must be https:// in production mode")
    raise InvalidInput("jwks_uri must be an https:// URL (http:// only for loopback hosts)")


def validate_public_jwks(jwks: Any) -> dict[str, Any]:
    """Check that *jwks* is a JWK set (RFC 7517 §5) of public signing keys only.

    :raises InvalidInput: with a message that names the rule, never the key material.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise InvalidInput('a JWK set must be a JSON object with a non-empty "keys" array')
    try:
        check_json_value(jwks, "the JWK set", max_depth=MAX_JWKS_DEPTH)
    except InvalidValue as exc:
        raise InvalidInput(str(exc)) from None
    if len(jwks["keys"]) > MAX_KEYS:
        raise InvalidInput(f"a JWK set may hold at most {MAX_KEYS} keys")
    for key in jwks["keys"]:
        if not isinstance(key, dict):
            raise InvalidInput("each key in the JWK set must be a JSON object")
        if not PRIVATE_MEMBERS.isdisjoint(key) or key.get("kty") == "oct":
            raise InvalidInput("the JWK set must hold public keys only (found private members)")
        _check_signing_key(key)
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(f"the JWK set is not valid: {type(exc).__name__}") from None
    return {"keys": list(jwks["keys"])}


def check_distinct_kids(jwks: dict[str, Any]) -> None:
    """Refuse a set (one :func:`validate_public_jwks` accepted) in which two keys share a
    ``kid``: an assertion naming that kid would be checked against whichever key a lookup
    finds first. Keys without a ``kid`` are each tried in turn, and may be several."""
    kids = [key["kid"] for key in jwks["keys"] if "kid" in key]
    if len(set(kids)) < len(kids):
        raise InvalidInput("two keys of the JWK set have the same kid: each kid must name one key")


#: The key types and sizes that can verify an assertion in one of the algorithms the server
#: accepts (``auth_methods.ASSERTION_ALGS``): RSA for RS256 and PS256, EC P-256 for ES256.
ALGS_BY_KTY = {"RSA": ("RS256", "PS256"), "EC": ("ES256",)}
MEMBERS_BY_KTY = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}
MIN_RSA_BITS = 2048
#: The largest RSA modulus, in bits. Assertions are checked with a joserfc registry sized
#: for its signatures (``oauth.client_auth.ASSERTION_REGISTRY``): joserfc's default takes
#: signatures of at most 1024 base64url characters, 6144 bits, so a client registered
#: with an 8192-bit key could never authenticate. Larger keys (OpenSSL verifies up to
#: 16384 bits) are refused: each check of one costs time in proportion to its size, and
#: anyone can make the server check an assertion against each key of a client's set.
MAX_RSA_BITS = 8192
#: The largest RSA public exponent, in bits. Checking a signature costs one modular
#: exponentiation by ``e``: with the usual 65537 (17 bits) that is cheap, but nothing else
#: bounded ``e`` (OpenSSL lets it be as long as a modulus of up to 3072 bits), and a set of
#: such keys made every assertion naming its client cost the server up to a third of a
#: second of CPU (measured: 20 keys of 3072 bits with a 3071-bit ``e``, an assertion
#: without ``kid``), so a stranger sending a few a second starved every other client.
#: Real keys use 65537 (or 3); Go's crypto/rsa refuses an ``e`` over 31 bits and
#: BoringSSL one over 33.
MAX_RSA_EXPONENT_BITS = 32


def _check_signing_key(key: dict[str, Any]) -> None:
    """*key* can verify client assertions: its type, curve, size, ``use``, ``alg`` and
    ``key_ops`` say so (a 1024-bit RSA key, an encryption key or an Ed25519 key was
    registered, and could never authenticate, or authenticate weakly)."""
    kty = key.get("kty")
    if kty not in ALGS_BY_KTY:
        raise InvalidInput(
            "each key must be RSA or EC P-256 (assertions are accepted in "
            f"{', '.join(alg for algs in ALGS_BY_KTY.values() for alg in algs)})"
        )
    for member in MEMBERS_BY_KTY[kty]:
        if not isinstance(key.get(member), str) or not key[member]:
            raise InvalidInput(f'an {kty} key needs "{member}" (a string)')
    if kty == "EC" and key["crv"] != "P-256":
        raise InvalidInput("an EC key must be on the P-256 curve (ES256)")
    bits = _bits(key["n"]) if kty == "RSA" else None
    if bits is not None and bits < MIN_RSA_BITS:
        raise InvalidInput(f"an RSA key must have at least {MIN_RSA_BITS} bits")
    if bits is not None and bits > MAX_RSA_BITS:
        raise InvalidInput(f"an RSA key must have at most {MAX_RSA_BITS} bits")
    if kty == "RSA" and _exponent_bits(key["e"]) > MAX_RSA_EXPONENT_BITS:
        raise InvalidInput(
            f'an RSA key\'s "e" must be at most {MAX_RSA_EXPONENT_BITS} bits (65537 in practice)'
        )
    if "use" in key and key["use"] != "sig":
        raise InvalidInput('a key\'s "use", when given, must be "sig"')
    if "alg" in key and key["alg"] not in ALGS_BY_KTY[kty]:
        raise InvalidInput(
            f'an {kty} key\'s "alg", when given, must be one of {", ".join(ALGS_BY_KTY[kty])}'
        )
    ops = key.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise InvalidInput('a key\'s "key_ops", when given, must include "verify"')


def _exponent_bits(e: str) -> int:
    try:
        return int.from_bytes(b64url_decode(e), "big").bit_length()
    except ValueError:
        raise InvalidInput('an RSA key\'s "e" must be base64url without padding') from None


def _bits(n: str) -> int:
    """The size in bits of the RSA modulus *n*.

    :raises InvalidInput: when *n* is not base64url (RFC 7518 §6.3.1.1, RFC 7515 §2):
        joserfc would refuse the set for it anyway, less clearly.
    """
    try:
        modulus = b64url_decode(n)
    except ValueError:
        raise InvalidInput('an RSA key\'s "n" must be base64url without padding') from None
    return int.from_bytes(modulus, "big").bit_length()
