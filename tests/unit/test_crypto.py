"""RSA signing keys: generation, RFC 7638 kid, public JWK, PEM at rest (authserver.keys.crypto)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import RSAKey

from authserver.errors import KeyStoreError
from authserver.keys import crypto
from authserver.keys.model import Kid

#: These tests are about key generation itself: no session key pool.
pytestmark = pytest.mark.real_keygen

#: RFC 7638 §3.1: the example RSA key and its SHA-256 JWK thumbprint.
RFC7638_JWK: dict[str, Any] = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhD"
        "R1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6C"
        "f0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1"
        "n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1"
        "jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

PUBLIC_MEMBERS = {"kty", "kid", "use", "alg", "n", "e"}
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def generated() -> tuple[RSAKey, Kid]:
    """One 2048-bit key for the whole module (key generation is slow)."""
    return crypto.generate(2048)


def _modulus_bits(jwk: dict[str, Any]) -> int:
    n = jwk["n"]
    raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    return int.from_bytes(raw, "big").bit_length()


def test_rfc7638_example_thumbprint() -> None:
    # The way crypto.generate/load_private compute a kid: joserfc's RSAKey.thumbprint().
    key = RSAKey.import_key(RFC7638_JWK)
    assert key.thumbprint() == RFC7638_THUMBPRINT


def test_rfc7638_thumbprint_ignores_non_required_members() -> None:
    # §3.2: only the required members (e, kty, n) enter the hash, so kid/alg/use don't.
    bare = {"kty": "RSA", "n": RFC7638_JWK["n"], "e": RFC7638_JWK["e"]}
    assert RSAKey.import_key(bare).thumbprint() == RFC7638_THUMBPRINT
    dressed = {**bare, "kid": "other", "use": "sig", "alg": "PS512"}
    assert RSAKey.import_key(dressed).thumbprint() == RFC7638_THUMBPRINT


def test_public_jwk_of_the_rfc_key_keeps_its_thumbprint() -> None:
    key = RSAKey.import_key(RFC7638_JWK)
    jwk = crypto.public_jwk(key, Kid(RFC7638_THUMBPRINT))
    assert jwk["n"] == RFC7638_JWK["n"]
    assert jwk["e"] == "AQAB"
    assert RSAKey.import_key(jwk).thumbprint() == jwk["kid"] == RFC7638_THUMBPRINT


def test_generated_kid_is_the_thumbprint(generated: tuple[RSAKey, Kid]) -> None:
    key, kid = generated
    assert kid == key.thumbprint()
    assert key.kid == kid
    # Recomputed from the public half alone, as any verifier would.
    public = RSAKey.import_key(key.as_dict(private=False))
    assert public.thumbprint() == kid


def test_generated_keys_differ() -> None:
    a, kid_a = crypto.generate(2048)
    b, kid_b = crypto.generate(2048)
    assert kid_a != kid_b
    assert a.as_dict(private=False)["n"] != b.as_dict(private=False)["n"]


def test_public_jwk_has_exactly_the_published_members(generated: tuple[RSAKey, Kid]) -> None:
    key, kid = generated
    jwk = crypto.public_jwk(key, kid)
    assert set(jwk) == PUBLIC_MEMBERS
    assert jwk["kty"] == "RSA"
    assert jwk["kid"] == kid
    assert jwk["use"] == "sig"
    assert jwk["alg"] == "RS256"
    assert jwk["e"] == "AQAB"
    assert _modulus_bits(jwk) == 2048
    for private_member in ("d", "p", "q", "dp", "dq", "qi"):
        assert private_member not in jwk
    # The published form imports as a public key with the same thumbprint.
    imported = RSAKey.import_key(jwk)
    assert imported.is_private is False
    assert imported.thumbprint() == kid


@pytest.mark.parametrize("size", [2048, 3072, pytest.param(4096, marks=pytest.mark.slow)])
def test_key_sizes(size: int) -> None:
    key, kid = crypto.generate(size)
    jwk = crypto.public_jwk(key, kid)
    assert _modulus_bits(jwk) == size
    assert kid == key.thumbprint()


def test_unencrypted_pem_is_pkcs8_and_loads(generated: tuple[RSAKey, Kid]) -> None:
    key, kid = generated
    pem = crypto.to_pem(key, None)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not crypto.is_encrypted(pem)
    loaded = crypto.load_private(pem, None, kid)
    assert loaded.thumbprint() == kid
    assert loaded.kid == kid
    assert loaded.is_private
    # A passphrase configured later does not stop an unencrypted key from loading.
    assert crypto.load_private(pem, PASSPHRASE, kid).thumbprint() == kid


def test_pem_with_passphrase_is_encrypted(generated: tuple[RSAKey, Kid]) -> None:
    key, kid = generated
    pem = crypto.to_pem(key, PASSPHRASE)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert crypto.is_encrypted(pem)
    # Really encrypted: cryptography refuses it without the password.
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    serialization.load_pem_private_key(pem, password=PASSPHRASE.encode())
    loaded = crypto.load_private(pem, PASSPHRASE, kid)
    assert loaded.thumbprint() == kid
    assert loaded.as_dict(private=True)["d"] == key.as_dict(private=True)["d"]


@pytest.mark.parametrize("passphrase", ["Xq9-not-it-zz", "correct horse battery stapl"])
def test_wrong_passphrase_names_the_variable(
    generated: tuple[RSAKey, Kid], passphrase: str
) -> None:
    key, kid = generated
    pem = crypto.to_pem(key, PASSPHRASE)
    with pytest.raises(KeyStoreError) as exc:
        crypto.load_private(pem, passphrase, kid)
    message = str(exc.value)
    assert message.startswith("AUTHSERVER_KEY_PASSPHRASE")
    assert "\n" not in message
    assert PASSPHRASE not in message
    assert passphrase not in message


@pytest.mark.parametrize("passphrase", [None, ""])
def test_missing_passphrase_names_the_variable(
    generated: tuple[RSAKey, Kid], passphrase: str | None
) -> None:
    key, kid = generated
    pem = crypto.to_pem(key, PASSPHRASE)
    with pytest.raises(KeyStoreError) as exc:
        crypto.load_private(pem, passphrase, kid)
    assert str(exc.value).startswith("AUTHSERVER_KEY_PASSPHRASE")
    assert kid in str(exc.value)


def test_pem_for_another_kid_is_refused(generated: tuple[RSAKey, Kid]) -> None:
    key, _kid = generated
    pem = crypto.to_pem(key, None)
    with pytest.raises(KeyStoreError, match="does not match"):
        crypto.load_private(pem, None, "not-the-thumbprint")


def test_garbage_pem_is_a_key_store_error() -> None:
    with pytest.raises(KeyStoreError):
        crypto.load_private(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None, "kid"
        )


def test_loaded_key_signs_what_the_public_jwk_verifies(generated: tuple[RSAKey, Kid]) -> None:
    key, kid = generated
    loaded = crypto.load_private(crypto.to_pem(key, PASSPHRASE), PASSPHRASE, kid)
    token = jws.serialize_compact({"alg": "RS256", "kid": kid}, b"payload", loaded)
    public = RSAKey.import_key(crypto.public_jwk(key, kid))
    assert jws.deserialize_compact(token, public).payload == b"payload"


def test_a_stored_key_is_parsed_once_per_process(
    generated: tuple[RSAKey, Kid], monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve parses the signing keys before it forks its workers; they must find them
    parsed (about 60 ms of CPU each), and a parse must never answer for other bytes, another
    passphrase or another kid."""
    key, kid = generated
    pem = crypto.to_pem(key, PASSPHRASE)
    parses: list[bytes] = []
    real_import = RSAKey.import_key

    def counting_import(value: Any, *args: Any, **kwargs: Any) -> RSAKey:
        parses.append(value)
        return real_import(value, *args, **kwargs)

    monkeypatch.setattr(RSAKey, "import_key", counting_import)
    first = crypto.load_private(pem, PASSPHRASE, kid)
    assert crypto.load_private(pem, PASSPHRASE, kid) is first
    assert len(parses) == 1

    # In a forked child (a serve worker), the parent's parse is there.
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        ok = crypto.load_private(pem, PASSPHRASE, kid) is first and len(parses) == 1
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(child, 0)

    # Another passphrase is checked again, not answered from the memo.
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        crypto.load_private(pem, "not the passphrase", kid)
    # Other bytes or another kid are parsed (and checked) again.
    with pytest.raises(KeyStoreError, match="does not match its kid"):
        crypto.load_private(pem, PASSPHRASE, "another-kid")
    other = crypto.to_pem(key, None)
    assert crypto.load_private(other, None, kid) is not first
