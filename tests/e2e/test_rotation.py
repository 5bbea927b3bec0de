"""Verifiers that cache the JWKS never reject a valid token across rotations and a restart.

docs/reference.md, "Signing keys and rotation": "A verifier that caches the JWKS, or refetches on
an unknown kid, never rejects a valid token across a rotation", and ``keys retire KID`` is
the emergency path: that key leaves the JWKS at once and signs nothing more.

The real ``authserver serve`` (two worker processes, the key schedule ticking inside each)
runs with timings shrunk from hours to seconds. Tokens are requested continuously and each
is checked by two verifiers built on PyJWT's ``PyJWKClient``, the way sync servers verify:

* ``refetching``: caches the JWK set for the JWKS max-age and refetches at once when it
  meets an unknown ``kid`` (``cooldown_duration=0``, like jose's ``createRemoteJWKSet``);
* ``caching``: caches the JWK set for the max-age and only refetches when that expires (the
  default 30 s cooldown means an unknown ``kid`` never triggers a refetch in this test).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.factories import issue_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MAX_AGE = 1
#: Long enough that tokens of the keys which stopped signing are still unexpired when they
#: are re-checked after the retire, which under load can come seconds after the loop.
TTL = 12
AUDIENCE = "https://sync.example.com"
TIMINGS = {
    "AUTHSERVER_KEY_PUBLISH_AHEAD": "2s",
    "AUTHSERVER_JWKS_MAX_AGE": f"{MAX_AGE}s",
    "AUTHSERVER_KEY_ROTATION_INTERVAL": "4s",
    "AUTHSERVER_DEFAULT_TOKEN_TTL": f"{TTL}s",
    "AUTHSERVER_MAX_TOKEN_TTL": f"{TTL}s",
    "AUTHSERVER_KEY_RETENTION_LEEWAY": "1s",
    "AUTHSERVER_KEY_CACHE_SECONDS": "0s",
}
#: Distinct signing kids to see: the first key and at least three rotations.
KIDS_WANTED = 4


class Verifier:
    """A sync server's offline check: signature against the cached JWKS, iss, aud, exp."""

    def __init__(self, name: str, jwks_url: str, issuer: str, *, cooldown: float) -> None:
        self.name = name
        self.issuer = issuer
        self.client = jwt.PyJWKClient(
            jwks_url,
            cache_jwk_set=True,
            lifespan=MAX_AGE,
            cooldown_duration=cooldown,
            timeout=5,
        )

    def verify(self, token: str) -> dict[str, Any]:
        key = self.client.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=AUDIENCE,  # type: ignore[no-any-return]
            issuer=self.issuer,
        )


def _jwks_kids(base_url: str, max_age: int = MAX_AGE) -> list[str]:
    response = requests.get(base_url + "/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    assert f"max-age={max_age}" in response.headers["Cache-Control"]
    return [k["kid"] for k in response.json()["keys"]]


def _scenario(env: dict[str, str], tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = ServerProcess(env, workers=2, log_path=log_path).start()
    try:
        _run(env, server, log_path)
    finally:
        server.stop()


def _run(env: dict[str, str], server: ServerProcess, log_path: Path) -> None:
    issuer = env["AUTHSERVER_ISSUER"]
    client = cli_json_here(
        env, "clients", "create", "--name", "sync backend", "--audience", AUDIENCE
    )
    credentials = (client["client_id"], client["client_secret"])
    jwks_url = server.base_url + "/.well-known/jwks.json"
    verifiers = [
        Verifier("refetching", jwks_url, issuer, cooldown=0),
        Verifier("caching", jwks_url, issuer, cooldown=30),
    ]
    failures: list[str] = []
    issued: list[tuple[str, str, float]] = []  # token, kid, exp
    kids: list[str] = []
    checks = 0
    started = time.monotonic()

    def check(token: str, kid: str, what: str) -> None:
        nonlocal checks
        for verifier in verifiers:
            checks += 1
            try:
                claims = verifier.verify(token)
            except Exception as exc:
                failures.append(
                    f"{time.monotonic() - started:6.2f}s {verifier.name} rejected "
                    f"{what} token kid={kid}: {type(exc).__name__}: {exc}"
                )
            else:
                assert claims["sub"] == "user-1"

    restarted = False
    last_recheck = time.monotonic()
    deadline = time.monotonic() + 40
    while len(kids) < KIDS_WANTED:
        assert time.monotonic() < deadline, (
            f"saw only {len(kids)} signing keys in 40 s: {kids}\n{log_path.read_text()[-3000:]}"
        )
        token = issue_token(server, credentials, sub="user-1", expires_in_at_most=TTL)
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "RS256"
        assert header["typ"] == "at+jwt"
        kid = header["kid"]
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        if kid not in kids:
            kids.append(kid)
        issued.append((token, kid, exp))
        check(token, kid, "new")

        if time.monotonic() - last_recheck > 0.7:
            # Older tokens, signed by keys that have since stopped signing, still verify
            # while unexpired (with a margin so none expires during the check).
            last_recheck = time.monotonic()
            for old, old_kid, old_exp in issued[:-1]:
                if old_exp - time.time() > 1.5:
                    check(old, old_kid, "older")

        if not restarted and len(kids) >= 2:
            # A restart in the middle: same port, same database, same key store.
            server.stop()
            server.start()
            restarted = True
        time.sleep(0.15)

    # -- emergency retire of the current key ---------------------------------------------
    # The loop ended on a key that has just started signing: it stays current for about the
    # rotation interval, time enough to retire it while it is still the signing key.
    victim = issue_token(server, credentials, sub="user-1", expires_in_at_most=TTL)
    retired_kid = jwt.get_unverified_header(victim)["kid"]
    assert retired_kid == kids[-1]
    check(victim, retired_kid, "pre-retire")

    assert restarted
    assert failures == [], "\n".join(failures)
    assert checks > 100
    assert len(set(kids)) == len(kids) >= KIDS_WANTED
    older_kids = {kid for _, kid, exp in issued if exp - time.time() > 1.5} - {retired_kid}
    assert older_kids, "no unexpired token of an earlier key left to re-check after retire"

    # The kid is passed as copied from `keys list`, even when it starts with "-".
    result = run_cli(env, "keys", "retire", retired_kid, "--json")
    assert result.returncode == 0, result.stderr
    retired = json.loads(result.stdout)
    assert retired["kid"] == retired_kid
    assert retired["state"] == "gone"
    assert retired["current_kid"] not in (None, retired_kid)
    assert retired_kid not in _jwks_kids(server.base_url)

    fresh = Verifier("fresh", jwks_url, issuer, cooldown=0)
    with pytest.raises(jwt.PyJWKClientError):
        fresh.verify(victim)

    new_token = issue_token(server, credentials, sub="user-1", expires_in_at_most=TTL)
    new_kid = jwt.get_unverified_header(new_token)["kid"]
    assert new_kid != retired_kid
    assert fresh.verify(new_token)["sub"] == "user-1"
    # The refetching verifier meets the new kid and refetches.
    assert verifiers[0].verify(new_token)["sub"] == "user-1"

    # Once the verifiers' cached copies expire, the retired key's tokens fail everywhere,
    # while tokens from keys that merely stopped signing still verify.
    time.sleep(MAX_AGE + 0.2)
    for verifier in verifiers:
        with pytest.raises(jwt.PyJWKClientError):
            verifier.verify(victim)
        assert verifier.verify(new_token)["sub"] == "user-1"
    rechecked = 0
    for token, kid, exp in issued:
        if kid in older_kids and exp - time.time() > 1.0:
            check(token, kid, "post-retire older")
            rechecked += 1
    assert rechecked > 0
    for _ in range(5):
        token = issue_token(server, credentials, sub="user-1", expires_in_at_most=TTL)
        kid = jwt.get_unverified_header(token)["kid"]
        assert kid != retired_kid
        check(token, kid, "post-retire")
    assert failures == [], "\n".join(failures)


@pytest.mark.waits
@pytest.mark.parametrize("key_store", ["file"])
def test_rotation_restart_and_retire_with_caching_verifiers(
    db_url: str, key_store: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    _scenario(env_for(db_url, AUTHSERVER_KEY_STORE=key_store, **TIMINGS), tmp_path)


@pytest.mark.waits
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_rotation_restart_and_retire_with_sql_key_store(
    db_url: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    _scenario(env_for(db_url, AUTHSERVER_KEY_STORE="sql", **TIMINGS), tmp_path)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_new_key_is_published_at_least_max_age_before_it_signs(
    db_url: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """docs/reference.md: a new key is published "never less than the JWKS Cache-Control max-age"
    before it signs. The configuration allows publish-ahead == max-age, the tightest case:
    the key must then be in the JWKS a full max-age before its first signature, or a
    verifier that fetched the JWKS just before it appeared rejects tokens until its copy
    expires. (4096-bit keys make key generation take long enough to see clearly whether
    the publish-ahead time is counted from before or after the key exists.)"""
    from authserver import container
    from authserver.settings import Settings

    max_age = 2
    env = env_for(
        db_url,
        AUTHSERVER_KEY_SIZE="4096",
        AUTHSERVER_KEY_PUBLISH_AHEAD="2s",
        AUTHSERVER_JWKS_MAX_AGE="2s",
        AUTHSERVER_KEY_ROTATION_INTERVAL="4s",
        AUTHSERVER_DEFAULT_TOKEN_TTL="8s",
        AUTHSERVER_MAX_TOKEN_TTL="8s",
        AUTHSERVER_KEY_RETENTION_LEEWAY="1s",
    )
    # Last moment each kid was verifiably NOT in the JWKS: the send time of the last
    # response without it (the key became visible after that instant).
    last_absent: dict[str, float] = {}
    first_seen: dict[str, float] = {}
    with ServerProcess(env, workers=2, log_path=tmp_path / "server.log") as server:
        initial = set(_jwks_kids(server.base_url, max_age))
        previous_sent = time.time()
        deadline = time.monotonic() + 40
        while not first_seen:
            assert time.monotonic() < deadline, "no rotation within 40 s"
            sent = time.time()
            for kid in _jwks_kids(server.base_url, max_age):
                if kid not in initial and kid not in first_seen:
                    first_seen[kid] = sent
                    last_absent[kid] = previous_sent
            previous_sent = sent
            time.sleep(0.02)
    new_kid = next(iter(first_seen))
    svc = container.build(Settings.from_env(env))
    try:
        with svc.unit_of_work():
            key = next(v.key for v in svc.keys.views() if v.key.kid == new_kid)
    finally:
        svc.close()
    lead = key.activate_at - last_absent[new_kid]
    assert lead >= max_age, (
        f"key {new_kid} appeared in the JWKS at most {lead:.3f}s before it started signing "
        f"(JWKS max-age {max_age}s); created_at={key.created_at:.3f}, "
        f"activate_at={key.activate_at:.3f}, last seen absent {last_absent[new_kid]:.3f}"
    )
