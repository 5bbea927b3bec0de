"""Client identifiers and secrets (authserver.clients.secrets)."""

from __future__ import annotations

import base64
import dataclasses
import re

import pytest

from authserver.clients import secrets as client_secrets
from authserver.clients.service import ClientService
from authserver.clock import FixedClock
from authserver.errors import InvalidInput
from authserver.storage.memory import InMemoryClientStore

URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def _body(secret: str) -> str:
    assert secret.startswith(client_secrets.SECRET_PREFIX)
    return secret[len(client_secrets.SECRET_PREFIX) :]


def test_secret_has_the_scanner_prefix() -> None:
    secret = client_secrets.new_secret()
    assert client_secrets.SECRET_PREFIX
    assert secret.startswith(client_secrets.SECRET_PREFIX)


def test_secret_carries_at_least_256_random_bits() -> None:
    assert client_secrets.SECRET_BYTES * 8 >= 256
    for _ in range(50):
        body = _body(client_secrets.new_secret())
        # base64url: 6 bits per character, no padding, nothing but the url-safe alphabet.
        assert URLSAFE.match(body), body
        assert len(body) * 6 >= 256
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert len(raw) * 8 >= 256


def test_secrets_are_unique() -> None:
    made = {client_secrets.new_secret() for _ in range(2000)}
    assert len(made) == 2000
    bodies = {_body(s)[:16] for s in made}
    assert len(bodies) == 2000  # not just a shared prefix with a counter


def test_secret_characters_are_not_constant() -> None:
    # A crude randomness check: across many secrets every position varies.
    bodies = [_body(client_secrets.new_secret()) for _ in range(200)]
    width = min(len(b) for b in bodies)
    for i in range(width - 1):  # the last char of unpadded base64 carries fewer bits
        assert len({b[i] for b in bodies}) > 10


def test_client_ids_are_prefixed_unique_and_urlsafe() -> None:
    ids = {client_secrets.new_client_id() for _ in range(1000)}
    assert len(ids) == 1000
    for client_id in ids:
        assert client_id.startswith(client_secrets.CLIENT_ID_PREFIX)
        assert URLSAFE.match(client_id[len(client_secrets.CLIENT_ID_PREFIX) :])
        assert len(client_id) <= 64  # fits the clients.client_id column
        assert not client_id.startswith(client_secrets.SECRET_PREFIX)


def test_hash_is_not_the_secret_and_does_not_contain_it() -> None:
    secret = client_secrets.new_secret()
    stored = client_secrets.hash_secret(secret)
    assert stored != secret
    assert secret not in stored
    assert _body(secret) not in stored
    assert _body(secret)[:12] not in stored
    assert re.fullmatch(r"sha256\$[0-9a-f]{64}", stored)


def test_hash_is_deterministic_and_distinct_per_secret() -> None:
    a, b = client_secrets.new_secret(), client_secrets.new_secret()
    assert client_secrets.hash_secret(a) == client_secrets.hash_secret(a)
    assert client_secrets.hash_secret(a) != client_secrets.hash_secret(b)


def test_verify_secret_accepts_the_secret() -> None:
    secret = client_secrets.new_secret()
    assert client_secrets.verify_secret(secret, client_secrets.hash_secret(secret)) is True


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),
        lambda s: s[:-1],
        lambda s: s + "x",
        lambda s: s.upper(),
        lambda s: _body(s),
        lambda s: "",
        lambda s: client_secrets.hash_secret(s),
    ],
    ids=["last-char", "truncated", "extended", "case", "no-prefix", "empty", "the-hash"],
)
def test_verify_secret_rejects_anything_else(mutate: object) -> None:
    secret = client_secrets.new_secret()
    stored = client_secrets.hash_secret(secret)
    other = mutate(secret)  # type: ignore[operator]
    assert other != secret
    assert client_secrets.verify_secret(other, stored) is False


@pytest.mark.parametrize("stored", [None, ""])
def test_verify_secret_without_a_stored_hash_is_false(stored: str | None) -> None:
    assert client_secrets.verify_secret(client_secrets.new_secret(), stored) is False
    assert client_secrets.verify_secret("", stored) is False


def test_verify_secret_does_not_accept_the_stored_form_as_a_secret() -> None:
    secret = client_secrets.new_secret()
    stored = client_secrets.hash_secret(secret)
    assert client_secrets.verify_secret(stored, stored) is False


@pytest.mark.parametrize("changed", [7, 20, 40, 70], ids=["first", "early", "middle", "last"])
def test_verify_secret_compares_the_whole_digest(changed: int) -> None:
    # A stored digest that differs from the secret's in one hex digit, anywhere: a
    # comparison of a prefix (or of a fixed-width slice) would let such a record in.
    secret = client_secrets.new_secret()
    stored = client_secrets.hash_secret(secret)
    assert len(stored) == 71  # "sha256$" and 64 hex digits
    digit = "0" if stored[changed] != "0" else "1"
    assert (
        client_secrets.verify_secret(secret, stored[:changed] + digit + stored[changed + 1 :])
        is False
    )
    assert client_secrets.verify_secret(secret, stored[:-1]) is False
    assert client_secrets.verify_secret(secret, stored + "0") is False


def test_stored_client_never_contains_the_secret() -> None:
    store = InMemoryClientStore()
    service = ClientService(store, FixedClock(), max_token_ttl=86400)
    client, secret = service.create(name="backend", audiences=["https://api.example"])
    assert secret is not None
    stored = store.get(client.client_id)
    assert stored is not None
    everything = repr(stored) + repr(dataclasses.asdict(stored))
    assert secret not in everything
    assert _body(secret) not in everything
    assert stored.secret_hash == client_secrets.hash_secret(secret)
    assert service.which_secret(stored, secret)
    assert not service.which_secret(stored, client_secrets.new_secret())


def test_rotated_secret_replaces_the_old_one() -> None:
    store = InMemoryClientStore()
    service = ClientService(store, FixedClock(), max_token_ttl=86400)
    client, old = service.create(name="backend")
    assert old is not None
    updated, new = service.rotate_secret(client.client_id)
    assert new != old
    stored = store.get(client.client_id)
    assert stored is not None
    assert service.which_secret(stored, new)
    assert not service.which_secret(stored, old)
    assert new not in repr(dataclasses.asdict(stored))
    assert updated == stored


def test_rotation_with_grace_accepts_the_old_secret_until_it_expires() -> None:
    store = InMemoryClientStore()
    clock = FixedClock(1_000_000.0)
    service = ClientService(store, clock, max_token_ttl=86400)
    client, old = service.create(name="backend")
    assert old is not None
    _, new = service.rotate_secret(client.client_id, grace=3600)
    stored = store.get(client.client_id)
    assert stored is not None
    assert stored.previous_secret_expires_at == 1_000_000.0 + 3600
    assert ClientService.check_secret(stored, new, now=1_000_000.0) == "current"
    assert ClientService.check_secret(stored, old, now=1_000_000.0) == "previous"
    assert ClientService.check_secret(stored, old, now=1_000_000.0 + 3599) == "previous"
    assert ClientService.check_secret(stored, old, now=1_000_000.0 + 3600) is None
    assert ClientService.check_secret(stored, client_secrets.new_secret(), now=0) is None
    # A later rotation without grace ends the grace period at once.
    _, newest = service.rotate_secret(client.client_id)
    stored = store.get(client.client_id)
    assert stored is not None
    assert ClientService.check_secret(stored, new, now=1_000_000.0) is None
    assert ClientService.check_secret(stored, old, now=1_000_000.0) is None
    assert ClientService.check_secret(stored, newest, now=1_000_000.0) == "current"


@pytest.mark.parametrize("grace", [-1, 30 * 86400 + 1])
def test_grace_is_bounded(grace: int) -> None:
    service = ClientService(InMemoryClientStore(), FixedClock(), max_token_ttl=86400)
    client, _ = service.create(name="backend")
    with pytest.raises(InvalidInput, match="grace"):
        service.rotate_secret(client.client_id, grace=grace)
