"""authserver_verifier against the real ``authserver serve`` (SQLite and PostgreSQL).

Timings shrunk from hours to seconds: a key signs for 4 s, is published 2 s ahead, the
JWKS max-age is 1 s and tokens live 10 s. The verifier discovers ``jwks_uri`` from the
metadata, accepts every token across a rotation (old and new keys alike), and after
``authserver keys retire -- KID`` rejects that key's tokens once its 1 s cache refreshes,
while tokens from the key that takes over keep verifying.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from authserver_verifier import InvalidToken
from authserver_verifier import TokenVerifier

from tests.helpers import ServerProcess
from tests.helpers import cli_json
from tests.helpers import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

AUDIENCE = "https://sync.example.com"
TIMINGS = {
    "AUTHSERVER_KEY_PUBLISH_AHEAD": "2s",
    "AUTHSERVER_JWKS_MAX_AGE": "1s",
    "AUTHSERVER_KEY_ROTATION_INTERVAL": "4s",
    "AUTHSERVER_KEY_CACHE_SECONDS": "0s",
    "AUTHSERVER_DEFAULT_TOKEN_TTL": "10s",
    "AUTHSERVER_MAX_TOKEN_TTL": "10s",
    "AUTHSERVER_KEY_RETENTION_LEEWAY": "1s",
}


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def reason_of(verifier: TokenVerifier, token: str) -> str | None:
    try:
        verifier.verify(token)
    except InvalidToken as exc:
        return exc.reason
    return None


def test_verifier_across_rotation_and_retire(
    db_url: str, env_for: Callable[..., dict[str, str]]
) -> None:
    env = env_for(db_url, **TIMINGS)
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess: the issuer is its base URL
    with ServerProcess(env, workers=2) as server:
        client = cli_json(
            env, "clients", "create", "--name", "sync", "--audience", AUDIENCE,
            "--allowed-claim", "libraryId",
        )  # fmt: skip

        def token(sub: str) -> str:
            response = requests.post(
                server.base_url + "/token",
                data={
                    "grant_type": "client_credentials",
                    "sub": sub,
                    "claims": json.dumps({"libraryId": "lib-7"}),
                },
                auth=(client["client_id"], client["client_secret"]),
                timeout=10,
            )
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        verifier = TokenVerifier(server.base_url, AUDIENCE, min_refetch_interval=0.5)

        # 1. Tokens across a rotation: every one verifies at once, old ones keep verifying.
        by_kid: dict[str, str] = {}
        deadline = time.monotonic() + 30
        n = 0
        while len(by_kid) < 2:
            assert time.monotonic() < deadline, f"no rotation seen (kids: {list(by_kid)})"
            n += 1
            issued = token(f"user-{n}")
            claims: dict[str, Any] = verifier.verify(issued)
            assert (claims["sub"], claims["libraryId"], claims["iss"], claims["aud"]) == (
                f"user-{n}", "lib-7", server.base_url, AUDIENCE,
            )  # fmt: skip
            by_kid.setdefault(kid_of(issued), issued)
            for earlier in by_kid.values():
                verifier.verify(earlier)
            time.sleep(0.2)
        old_kid, new_kid = list(by_kid)
        fetches_after_rotation = verifier.fetch_count
        # Published ahead and honoured max-age: far fewer fetches than verifications.
        assert fetches_after_rotation < n

        # 2. Retire the previous key: its token is rejected once the 1 s cache refreshes.
        old_token = by_kid[old_kid]
        verifier.verify(old_token)
        retired = run_cli(env, "keys", "retire", "--", old_kid)
        assert retired.returncode == 0, retired.stderr
        time.sleep(1.6)
        assert reason_of(verifier, old_token) == "unknown_kid"
        verifier.verify(by_kid[new_kid])

        # 3. Retire the current key: its tokens go, the key that takes over verifies (the
        # verifier refetches on its unknown kid, at most once per min_refetch_interval).
        current = token("user-current")
        current_kid = kid_of(current)
        retired = run_cli(env, "keys", "retire", "--", current_kid)
        assert retired.returncode == 0, retired.stderr
        replacement = token("user-after-retire")
        assert kid_of(replacement) != current_kid
        time.sleep(0.6)
        assert verifier.verify(replacement)["sub"] == "user-after-retire"
        time.sleep(1.1)
        assert reason_of(verifier, current) == "unknown_kid"

        jwks = requests.get(server.base_url + "/.well-known/jwks.json", timeout=10).json()
        published = {key["kid"] for key in jwks["keys"]}
        assert old_kid not in published
        assert current_kid not in published
