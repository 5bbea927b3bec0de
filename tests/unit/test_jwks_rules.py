"""Which public keys a private_key_jwt client may register (``clients/jwks.py``): keys that
can verify an assertion in an algorithm the server accepts (RS256, PS256, ES256)."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric import x25519
from joserfc.jwk import ECKey
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey

from authserver.clients.jwks import MAX_RSA_BITS
from authserver.clients.jwks import MAX_RSA_EXPONENT_BITS
from authserver.clients.jwks import check_distinct_kids
from authserver.clients.jwks import validate_public_jwks
from authserver.errors import InvalidInput


def public(key: Any, **members: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = key.as_dict(private=False)
    jwk.update(members)
    return jwk


@pytest.fixture(scope="module")
def rsa_2048(rsa_private_key: rsa.RSAPrivateKey) -> RSAKey:
    return RSAKey.import_key(rsa_private_key.public_key())


@pytest.fixture(scope="module")
def ec_p256() -> ECKey:
    return ECKey.import_key(ec.generate_private_key(ec.SECP256R1()).public_key())


def test_usable_signing_keys_are_accepted(rsa_2048: RSAKey, ec_p256: ECKey) -> None:
    keys = [
        public(rsa_2048),
        public(rsa_2048, alg="RS256", use="sig", kid="a"),
        public(rsa_2048, alg="PS256", key_ops=["verify"], kid="b"),
        public(ec_p256, alg="ES256", use="sig", kid="c"),
    ]
    assert validate_public_jwks({"keys": keys}) == {"keys": keys}


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("rsa 1024", "at least 2048 bits"),
        ("use enc", '"use", when given, must be "sig"'),
        ("alg HS256", "must be one of RS256, PS256"),
        ("alg none", "must be one of RS256, PS256"),
        ("alg ES256 on RSA", "must be one of RS256, PS256"),
        ("key_ops encrypt", '"key_ops", when given, must include "verify"'),
        ("ed25519", "must be RSA or EC P-256"),
        ("x25519", "must be RSA or EC P-256"),
        ("ec p-384", "P-256 curve"),
        ("rsa without n", 'an RSA key needs "n"'),
        ("ec without y", 'an EC key needs "y"'),
    ],
)
def test_keys_that_cannot_verify_an_accepted_assertion_are_refused(
    rsa_2048: RSAKey, ec_p256: ECKey, case: str, words: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns while building a 1024-bit key
        key = {
            "rsa 1024": lambda: public(
                RSAKey.import_key(
                    rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
                )
            ),
            "use enc": lambda: public(rsa_2048, use="enc"),
            "alg HS256": lambda: public(rsa_2048, alg="HS256"),
            "alg none": lambda: public(rsa_2048, alg="none"),
            "alg ES256 on RSA": lambda: public(rsa_2048, alg="ES256"),
            "key_ops encrypt": lambda: public(rsa_2048, key_ops=["encrypt"]),
            "ed25519": lambda: public(
                OKPKey.import_key(ed25519.Ed25519PrivateKey.generate().public_key())
            ),
            "x25519": lambda: public(
                OKPKey.import_key(x25519.X25519PrivateKey.generate().public_key())
            ),
            "ec p-384": lambda: public(
                ECKey.import_key(ec.generate_private_key(ec.SECP384R1()).public_key())
            ),
            "rsa without n": lambda: {k: v for k, v in public(rsa_2048).items() if k != "n"},
            "ec without y": lambda: {k: v for k, v in public(ec_p256).items() if k != "y"},
        }[case]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no library warning reaches the operator
        with pytest.raises(InvalidInput) as refused:
            validate_public_jwks({"keys": [public(rsa_2048, kid="good"), key]})
    assert words in str(refused.value)


def _synthetic_rsa(bits: int) -> dict[str, Any]:
    """An RSA JWK whose modulus has exactly *bits* bits (not a real key: the size rule is
    checked before any use, and generating an 8192-bit key takes up to a minute)."""
    modulus = (1 << (bits - 1)) | 1
    n = base64.urlsafe_b64encode(modulus.to_bytes((bits + 7) // 8, "big")).rstrip(b"=")
    return {"kty": "RSA", "n": n.decode(), "e": "AQAB"}


def test_rsa_keys_larger_than_8192_bits_are_refused() -> None:
    """Larger keys could not authenticate (joserfc reads signatures up to the size of an
    8192-bit key's, client_auth.ASSERTION_REGISTRY), and each check costs time in
    proportion to the size (OpenSSL would verify up to 16384 bits)."""
    assert MAX_RSA_BITS == 8192
    assert validate_public_jwks({"keys": [_synthetic_rsa(MAX_RSA_BITS)]})
    for bits in (MAX_RSA_BITS + 1, 16384, 100_000):
        with pytest.raises(InvalidInput, match=f"at most {MAX_RSA_BITS} bits"):
            validate_public_jwks({"keys": [_synthetic_rsa(bits)]})


def _b64_int(value: int) -> str:
    return (
        base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))
        .rstrip(b"=")
        .decode()
    )


@pytest.mark.parametrize(
    ("exponent", "accepted"),
    [
        pytest.param(65537, True, id="65537"),
        pytest.param(3, True, id="3"),
        pytest.param((1 << MAX_RSA_EXPONENT_BITS) - 1, True, id="32 bits"),
        pytest.param((1 << MAX_RSA_EXPONENT_BITS) + 1, False, id="33 bits"),
        pytest.param((1 << 2046) + 1, False, id="as long as the modulus"),
    ],
)
def test_rsa_keys_with_a_costly_exponent_are_refused(
    rsa_2048: RSAKey, exponent: int, accepted: bool
) -> None:
    """Checking a signature is an exponentiation by e: a 2047-bit e costs a hundred times
    65537's, and a set of such keys let a stranger's assertions starve the server (each
    one naming the client was checked against every key). OpenSSL and joserfc take any
    odd e below the modulus, so the rule is ours."""
    key = public(rsa_2048, e=_b64_int(exponent))
    if accepted:
        assert validate_public_jwks({"keys": [key]}) == {"keys": [key]}
    else:
        with pytest.raises(InvalidInput, match=f'"e" must be at most {MAX_RSA_EXPONENT_BITS} bits'):
            validate_public_jwks({"keys": [public(rsa_2048, kid="good"), key]})


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda n: n + "=" * (-len(n) % 4 or 4), id="padded"),
        pytest.param(lambda n: n.replace("-", "+").replace("_", "/"), id="the + / alphabet"),
        pytest.param(lambda n: n[:100] + "\n" + n[100:], id="a line break"),
    ],
)
def test_an_rsa_modulus_not_in_base64url_is_refused_as_such(
    rsa_2048: RSAKey, change: Callable[[str], str]
) -> None:
    """The size rule reads n with the one base64url decoder (RFC 7515 §2): Python's own
    skipped what it could not read, so such a key passed the size rule and was then refused
    by joserfc as "not valid: Error"; it is refused as before, saying why."""
    key = public(rsa_2048)
    key["n"] = change(key["n"])
    if key == public(rsa_2048):
        pytest.skip("no - or _ to swap in this modulus")
    with pytest.raises(InvalidInput, match='"n" must be base64url'):
        validate_public_jwks({"keys": [key]})


def test_two_keys_with_one_kid_are_refused(rsa_2048: RSAKey, ec_p256: ECKey) -> None:
    checked = validate_public_jwks({"keys": [public(rsa_2048, kid="a"), public(ec_p256, kid="a")]})
    with pytest.raises(InvalidInput, match="same kid"):
        check_distinct_kids(checked)
    # Keys without a kid are each tried in turn: several are not ambiguous.
    check_distinct_kids({"keys": [public(rsa_2048), public(ec_p256), public(rsa_2048, kid="a")]})
