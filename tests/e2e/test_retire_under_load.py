"""Retiring the current signing key on a busy server never makes ``POST /token`` fail.

docs/keys.md, "Operator commands": when the current key is retired, a ``next`` key takes
over at once, or a new key is created and signs at once. The change must be atomic for
the workers: no token request may see the key set between its writes (no current key,
or two), which would answer 503 ``temporarily_unavailable`` "no signing key is available".

A real ``authserver serve`` with two workers answers tokens requested continuously by two
threads while the main thread retires the current key several times with
``authserver keys retire`` (the command's own code, in the test's process: another process
than the server's) or ``POST /admin/keys/<kid>/retire`` (inside a worker, whose other
threads read the key set meanwhile), alternately when no next key
exists (a new key is created) and when one has been published long enough to be
promoted. The set-up (the client, the rotations that schedule a next key) and the
look-ups go through the admin API. Every answer must be 200, and every token must verify
(PyJWT, signature and claims) against the JWKS fetched right after it, except a token whose
request was in flight while its key was being retired: that key signed it before the
retire took effect, and leaves the JWKS by design.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import run_cli_here

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

AUDIENCE = "https://sync.example.com"
RETIRES = 4
#: How long after ``keys retire`` returned a worker may still sign with the retired key:
#: the change feed's notification (PostgreSQL) is asynchronous; the version check of the
#: other stores runs on every request (``AUTHSERVER_KEY_CACHE_SECONDS=0``).
PROPAGATION = 0.5


@dataclass
class Issued:
    sent: float
    answered: float
    status: int
    body: str
    kid: str | None = None
    verified: str | None = None  # None when it verified, else why not


@dataclass
class Retire:
    kid: str
    started: float
    ended: float
    promoted: bool


class InFlight:
    """How many token requests have been sent and not yet answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n


def _issue_and_check(
    session: requests.Session,
    base_url: str,
    credentials: tuple[str, str],
    issuer: str,
    in_flight: InFlight,
) -> Issued:
    in_flight.add(1)
    sent = time.monotonic()
    try:
        response = session.post(
            base_url + "/token",
            data={"grant_type": "client_credentials"},
            auth=credentials,
            timeout=10,
        )
    finally:
        answered = time.monotonic()
        in_flight.add(-1)
    issued = Issued(sent, answered, response.status_code, response.text)
    if response.status_code != 200:
        return issued
    token = response.json()["access_token"]
    issued.kid = jwt.get_unverified_header(token)["kid"]
    jwks = session.get(base_url + "/.well-known/jwks.json", timeout=10)
    try:
        key = jwt.PyJWKSet.from_dict(jwks.json())[issued.kid]
        jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=issuer)
    except (jwt.PyJWTError, KeyError) as exc:
        issued.verified = f"{type(exc).__name__}: {exc}"
    return issued


def _when_a_request_is_in_flight(in_flight: InFlight) -> float:
    """A moment at which a token request was in flight (sent, not yet answered): taken
    before the count is read, so that request's answer comes after it."""
    deadline = time.monotonic() + 10
    while True:
        moment = time.monotonic()
        if in_flight.count > 0:
            return moment
        assert moment < deadline, "no token request in flight for 10 s"
        time.sleep(0.0005)


def _admin(method: str, base_url: str, path: str, **kwargs: object) -> requests.Response:
    """The admin API, for the scenario's set-up and look-ups (the retire under test goes
    through the CLI or the admin API, by the test's parameter)."""
    response = requests.request(
        method,
        f"{base_url}/admin{path}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )
    assert response.status_code in (200, 201), response.text
    return response


def _current_kid(base_url: str) -> str:
    keys = _admin("GET", base_url, "/keys").json()["keys"]
    current = [k["kid"] for k in keys if k["state"] == "current"]
    assert len(current) == 1, keys
    return str(current[0])


def _retire(env: dict[str, str], base_url: str, kid: str, via: str) -> str | None:
    """Retire *kid* by the CLI or the admin API; the kid that signs afterwards."""
    if via == "cli":
        result = run_cli_here(env, "keys", "retire", kid, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["current_kid"]  # type: ignore[no-any-return]
    response = _admin("POST", base_url, f"/keys/{kid}/retire")
    assert response.json()["state"] == "gone", response.json()
    return _current_kid(base_url)


def _scenario(env: dict[str, str], tmp_path: Path, via: str) -> None:
    log_path = tmp_path / "server.log"
    with ServerProcess(env, workers=2, log_path=log_path) as server:
        issuer = env["AUTHSERVER_ISSUER"]
        client = _admin(
            "POST", server.base_url, "/clients", json={"name": "busy", "audiences": [AUDIENCE]}
        ).json()
        credentials = (client["client_id"], client["client_secret"])
        results: list[Issued] = []
        stop = threading.Event()

        in_flight = InFlight()

        def hammer() -> None:
            # trust_env off: requests would otherwise read the proxy variables from
            # os.environ on every call, while the in-process CLI (run_cli_here) sets and
            # clears AUTHSERVER_* there (iterating it then raised KeyError).
            with requests.Session() as session:
                session.trust_env = False
                while not stop.is_set():
                    results.append(
                        _issue_and_check(session, server.base_url, credentials, issuer, in_flight)
                    )

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for thread in threads:
            thread.start()
        retires: list[Retire] = []
        try:
            for index in range(RETIRES):
                promote = index % 2 == 1
                if promote:
                    # A next key, published longer than the JWKS max-age + cache seconds:
                    # the retire promotes it instead of creating one.
                    assert _admin("POST", server.base_url, "/keys/rotate").json()["created"] is True
                    time.sleep(1.3)
                else:
                    time.sleep(0.3)
                kid = _current_kid(server.base_url)
                # The retire starts while a token request is in flight, so that every
                # retire meets the load (the check below), whatever the timing.
                started = _when_a_request_is_in_flight(in_flight)
                successor = _retire(env, server.base_url, kid, via)
                ended = time.monotonic()
                assert successor not in (None, kid)
                retires.append(Retire(kid, started, ended, promote))
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    failed = [r for r in results if r.status != 200]
    assert failed == [], (
        f"{len(failed)} of {len(results)} token requests failed during {RETIRES} retires: "
        + "; ".join(f"{r.status} {r.body}" for r in failed[:5])
    )
    retired_until = {r.kid: r.ended + PROPAGATION for r in retires}
    unverified = [
        r
        for r in results
        if r.verified is not None and not (r.kid in retired_until and r.sent < retired_until[r.kid])
    ]
    assert unverified == [], "; ".join(f"kid {r.kid}: {r.verified}" for r in unverified[:5])
    # The load really overlapped every retire (a token request was in flight while it ran),
    # and tokens came from the keys that took over.
    for retire in retires:
        assert any(r.sent <= retire.ended and r.answered >= retire.started for r in results), retire
    signed_by = {r.kid for r in results}
    assert len(signed_by) >= RETIRES, signed_by
    assert len(results) > 100, len(results)


ADMIN_TOKEN = "admin-token-for-retire-tests-7c1e0f9b2a"
TIMINGS = {
    "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
    # A next key may be promoted once published for the JWKS max-age (+ cache seconds).
    "AUTHSERVER_JWKS_MAX_AGE": "1s",
    "AUTHSERVER_KEY_PUBLISH_AHEAD": "60s",
    "AUTHSERVER_KEY_CACHE_SECONDS": "0s",
}


@pytest.mark.parametrize(
    ("db_url", "key_store", "via"),
    [
        ("sqlite", "file", "cli"),
        ("sqlite", "file", "admin"),
        ("sqlite", "sql", "cli"),
        ("postgresql", "sql", "cli"),
        ("postgresql", "sql", "admin"),
    ],
    indirect=["db_url"],
)
def test_retiring_the_current_key_under_load_never_fails_a_token_request(
    db_url: str, key_store: str, via: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    _scenario(env_for(db_url, AUTHSERVER_KEY_STORE=key_store, **TIMINGS), tmp_path, via)
