"""RSA key generation and (de)serialisation, with joserfc and cryptography."""

from __future__ import annotations

from typing import Any

from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from authserver.cache import BoundedCache
from authserver.errors import KeyStoreError
from authserver.keys.model import Kid

ALG = "RS256"
#: What every JWT authserver signs is signed through: joserfc's registry for :data:`ALG`
#: alone, built once (given ``algorithms=``, joserfc builds one per call).
SIGNING = JWSRegistry(algorithms=[ALG])


def generate(key_size: int) -> tuple[RSAKey, Kid]:
    """Generate an RSA signing key whose ``kid`` is its RFC 7638 thumbprint."""
    key = RSAKey.generate_key(key_size, parameters={"use": "sig", "alg": ALG}, private=True)
    kid = Kid(key.thumbprint())
    key.ensure_kid()
    return key, kid


def public_jwk(key: RSAKey, kid: Kid) -> dict[str, Any]:
    """The published form: public members only, with kid, use and alg (docs/reference.md)."""
    jwk = key.as_dict(private=False)
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": ALG, "n": jwk["n"], "e": jwk["e"]}


def to_pem(key: RSAKey, passphrase: str | None) -> bytes:
    """PKCS#8 PEM of the private key, encrypted (best available scheme) with *passphrase*."""
    return key.as_pem(private=True, password=passphrase)


def is_encrypted(pem: bytes) -> bool:
    return b"ENCRYPTED" in pem.split(b"\n", 1)[0]


#: The keys this process parsed, by the exact stored bytes, the passphrase that opened them
#: and the kid they were checked against. Parsing validates the RSA key (about 60 ms of CPU
#: for 2048 bits); ``serve`` parses the keys that sign in the main process before it forks
#: its workers, so each worker (and each respawned one) starts with them parsed instead of
#: parsing them again. A few entries: the keys that sign or may sign soon.
_PARSED: BoundedCache[tuple[bytes, str | None, str], RSAKey] = BoundedCache(8)


def load_private(pem: bytes, passphrase: str | None, kid: str) -> RSAKey:
    """Parse a stored private key; a wrong or missing passphrase is a clear error. The same
    bytes, passphrase and kid give the same key object, parsed once per process (and
    inherited by forked children)."""
    encrypted = is_encrypted(pem)
    if encrypted and not passphrase:
        raise KeyStoreError(
            f"AUTHSERVER_KEY_PASSPHRASE: signing key {kid} is encrypted and no passphrase is set"
        )
    opener = passphrase if encrypted else None
    return _PARSED.get_or_build((pem, opener, kid), lambda: _parse(pem, opener, kid))


def _parse(pem: bytes, passphrase: str | None, kid: str) -> RSAKey:
    encrypted = passphrase is not None
    try:
        key = RSAKey.import_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise KeyStoreError(
                f"AUTHSERVER_KEY_PASSPHRASE: cannot decrypt signing key {kid} (wrong passphrase?)"
            ) from None
        raise KeyStoreError(f"signing key {kid} is unreadable: {type(exc).__name__}") from None
    if key.thumbprint() != kid:
        raise KeyStoreError(f"signing key {kid} does not match its kid (corrupt key store?)")
    key.ensure_kid()
    return key
