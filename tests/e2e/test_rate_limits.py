"""Brute-force protection: limits on failed client authentication (web/limits.py).

Failed client authentications (``invalid_client``) at /token, /introspect and /revoke are
counted per presented ``client_id`` and per source address; over a budget, further
*failures* for that id or from that address get 429 with ``Retry-After`` and an RFC 6749
§5.2-shaped body (``slow_down``). A correct credential is never refused, whoever failed
before with the same id or from the same address. Successes count for nothing.

Every test runs on the in-memory storage and on Redis (``AUTHSERVER_TEST_REDIS_URL``,
default ``redis://127.0.0.1:6379/0``), each with its own key prefix so parallel runs never
share a counter. When Redis is unreachable the Redis leg is skipped with a message, except
under CI (``CI`` set) or ``AUTHSERVER_TEST_REQUIRE_REDIS=1``, where it fails. The database
is not what these tests are about: they use SQLite only.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import REGISTRY

from authserver import limits_storage
from authserver.container import Services
from authserver.errors import ConfigError
from authserver.limits_storage import check_storage
from authserver.oauth.errors import SLOW_DOWN_DESCRIPTION
from authserver.oauth.events import ClientAuthFailed
from authserver.settings import Settings
from authserver.web import limits
from authserver.web.app import create_app
from tests.conftest import make_services
from tests.factories import issue_token
from tests.factories import request_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json
from tests.helpers import free_port
from tests.helpers import missing
from tests.helpers import per_worker

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("AUTHSERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_redis_state: dict[str, str | None] = {}

GRANT = {"grant_type": "client_credentials"}
ATTACKER = "198.51.100.7"
ELSEWHERE = "203.0.113.9"

App = Any
MakeApp = Callable[..., tuple[App, Services]]
Register = Callable[[Services], tuple[str, str]]


def _redis_unavailable() -> str | None:
    """None when reachable, else the reason."""
    if "reason" not in _redis_state:
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            _redis_state["reason"] = None
        except Exception as exc:
            _redis_state["reason"] = f"Redis at {REDIS_URL} unreachable: {type(exc).__name__}"
    return _redis_state["reason"]


def require_redis() -> None:
    """Return when the test Redis is reachable; else :func:`tests.helpers.missing`:
    skipped, or failed under CI and with ``AUTHSERVER_TEST_REQUIRE_REDIS=1``."""
    reason = _redis_unavailable()
    if reason:
        missing(reason, required_by="AUTHSERVER_TEST_REQUIRE_REDIS")


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"*/{prefix}/*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only here (overrides the SQLite + PostgreSQL fixture of conftest)."""
    return f"sqlite:///{tmp_path / 'authserver.db'}"


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"test-{secrets.token_hex(6)}"


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest, prefix: str) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    require_redis()
    yield REDIS_URL
    _delete_keys(prefix)


@pytest.fixture
def make_app(
    env_for: Callable[..., dict[str, str]], db_url: str, storage: str, prefix: str
) -> Iterator[MakeApp]:
    """``make_app(AUTHSERVER_AUTH_FAILURES_PER_CLIENT="3/minute", ...)``: the app and its
    services on this test's storage and key prefix."""
    built: list[Services] = []

    def make(**env: str) -> tuple[App, Services]:
        settings = Settings.from_env(
            env_for(
                db_url,
                AUTHSERVER_RATE_LIMIT_STORAGE=storage,
                AUTHSERVER_RATE_LIMIT_KEY_PREFIX=prefix,
                **env,
            )
        )
        services = make_services(settings)
        built.append(services)
        return create_app(services=services), services

    yield make
    for services in built:
        services.close()


def register(services: Services) -> tuple[str, str]:
    with services.unit_of_work():
        client, secret = services.clients.create(name="rate limited backend")
    assert secret is not None
    return str(client.client_id), secret


def assert_throttled(response: Any) -> int:
    """429, an RFC 6749 §5.2-shaped JSON body, and ``Retry-After`` in whole seconds."""
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "error": "slow_down",
        "error_description": SLOW_DOWN_DESCRIPTION,
    }
    assert response.headers["Cache-Control"] == "no-store"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert int(retry_after) >= 1
    return int(retry_after)


def assert_invalid_client(response: Any) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"


# -- per client_id ---------------------------------------------------------------------------


def test_failures_for_one_id_throttle_its_failures_never_its_owner(make_app: MakeApp) -> None:
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_CLIENT="3/minute")
    http = app.test_client()
    victim, victim_secret = register(services)
    other, other_secret = register(services)

    for _ in range(3):
        assert_invalid_client(request_token(http, (victim, "wrong-secret"), remote_addr=ATTACKER))

    # Further failures for the id are throttled, from any address ...
    retry_after = assert_throttled(
        request_token(http, (victim, "wrong-secret"), remote_addr=ATTACKER)
    )
    assert retry_after <= 60
    assert_throttled(request_token(http, (victim, "wrong-secret"), remote_addr=ELSEWHERE))
    # ... while the right secret is never refused, from the attacker's address or another.
    assert request_token(http, (victim, victim_secret), remote_addr=ATTACKER).status_code == 200
    assert request_token(http, (victim, victim_secret), remote_addr=ELSEWHERE).status_code == 200
    # Another client is not slowed at all.
    assert request_token(http, (other, other_secret), remote_addr=ATTACKER).status_code == 200
    assert_invalid_client(request_token(http, (other, "wrong-secret"), remote_addr=ELSEWHERE))


def test_the_id_is_the_same_whichever_way_it_is_presented(make_app: MakeApp) -> None:
    """Basic, client_secret_post (form and JSON) and a client assertion's ``sub`` all
    spend the same budget: the id is read without trusting the request."""
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_CLIENT="4/minute")
    http = app.test_client()
    client_id, secret = register(services)
    env = {"REMOTE_ADDR": ATTACKER}

    assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    body = {**GRANT, "client_id": client_id, "client_secret": "wrong"}
    assert_invalid_client(http.post("/token", data=body, environ_base=env))
    assert_invalid_client(http.post("/token", json=body, environ_base=env))
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": "http://localhost:8000/token",
        "exp": int(time.time()) + 60,
    }
    forged = ".".join(
        base64.urlsafe_b64encode(part).rstrip(b"=").decode()
        for part in (b'{"alg":"RS256"}', json.dumps(claims).encode(), b"not a signature")
    )
    assertion = {
        **GRANT,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": forged,
    }
    assert_invalid_client(http.post("/token", data=assertion, environ_base=env))

    assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ELSEWHERE))
    assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200


def test_a_secret_sent_as_the_client_id_is_no_counter_key(
    make_app: MakeApp, storage: str, prefix: str
) -> None:
    """A backend that swapped its id and its secret: its failures are counted under a
    withheld id, so the secret becomes no key of the limiter's storage (Redis keeps its
    keys, and anyone who can read them), and the right credentials still work."""
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_CLIENT="2/minute")
    http = app.test_client()
    client_id, secret = register(services)
    for _ in range(3):
        answer = request_token(http, (secret, client_id), remote_addr=ATTACKER)
        assert answer.status_code in (401, 429)
    assert answer.status_code == 429  # counted, under the withheld id
    assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200
    if storage.startswith("redis"):
        import redis

        keys = redis.Redis.from_url(REDIS_URL).keys(f"*/{prefix}/*")
        assert keys, "no failure was counted"
        assert not [k for k in keys if secret.encode() in k], keys


def test_successes_never_count(make_app: MakeApp) -> None:
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_CLIENT="3/minute")
    http = app.test_client()
    client_id, secret = register(services)

    for _ in range(10):
        assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200
    # Errors after a successful authentication are not authentication failures either.
    refused = http.post(
        "/token",
        data={"grant_type": "password"},
        auth=(client_id, secret),
        environ_base={"REMOTE_ADDR": ATTACKER},
    )
    assert refused.status_code == 400
    for _ in range(2):
        assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
        assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200
    # The whole budget (3) is still there for failures: the third fails, then it is spent.
    assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200


def test_the_id_works_again_after_the_window(make_app: MakeApp) -> None:
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_CLIENT="3/2second")
    http = app.test_client()
    client_id, _secret = register(services)

    for _ in range(3):
        assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    retry_after = assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert retry_after <= 2
    time.sleep(retry_after + 0.2)
    # A failure is a plain 401 again: the budget is back.
    assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))


def test_throttled_failures_are_not_counted_again(make_app: MakeApp) -> None:
    """A failure answered 429 is not counted again, in either budget: a stranger who
    keeps failing while an id is throttled spends nothing more of the address's budget
    (another backend behind the same address still gets its 401), and the id's budget
    comes back when the counted failures leave the window."""
    app, services = make_app(
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="3/2second",
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="5/2second",
    )
    http = app.test_client()
    client_id, _secret = register(services)
    neighbour, _ = register(services)

    started = time.monotonic()
    for _ in range(3):
        assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    for _ in range(5):
        assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    # The address has spent 3 of its 5: a neighbour's failure is still a 401.
    assert_invalid_client(request_token(http, (neighbour, "wrong"), remote_addr=ATTACKER))
    time.sleep(max(0.0, started + 2.3 - time.monotonic()))
    assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))


@pytest.mark.parametrize("endpoint", ["/introspect", "/revoke"])
def test_failures_at_introspect_and_revoke_count_too(make_app: MakeApp, endpoint: str) -> None:
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_CLIENT="3/minute")
    http = app.test_client()
    client_id, secret = register(services)
    env = {"REMOTE_ADDR": ATTACKER}
    issued = issue_token(http, (client_id, secret), remote_addr=ATTACKER)

    for _ in range(3):
        response = http.post(
            endpoint, data={"token": issued}, auth=(client_id, "wrong"), environ_base=env
        )
        assert_invalid_client(response)

    assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert_throttled(
        http.post(endpoint, data={"token": issued}, auth=(client_id, "wrong"), environ_base=env)
    )
    ok = http.post(endpoint, data={"token": issued}, auth=(client_id, secret), environ_base=env)
    assert ok.status_code == 200


# -- per source address ----------------------------------------------------------------------


def test_failures_with_many_ids_from_one_address_throttle_the_address(make_app: MakeApp) -> None:
    app, services = make_app(
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="3/minute",
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="5/minute",
    )
    http = app.test_client()
    client_id, secret = register(services)

    for _ in range(5):
        assert_invalid_client(
            request_token(http, (f"guess-{secrets.token_hex(4)}", "wrong"), remote_addr=ATTACKER)
        )
    # A malformed Basic header has no usable id: it counts for the address only.
    assert_throttled(
        http.post(
            "/token",
            data=GRANT,
            headers={"Authorization": "Basic !!!"},
            environ_base={"REMOTE_ADDR": ATTACKER},
        )
    )
    # Every failure from that address is throttled, with a fresh id too ...
    assert_throttled(request_token(http, ("guess-fresh", "wrong"), remote_addr=ATTACKER))
    # ... but a backend behind that address with the right secret is served.
    assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200
    # From another address failures are plain 401s.
    assert_invalid_client(request_token(http, ("guess-elsewhere", "wrong"), remote_addr=ELSEWHERE))


def test_malformed_basic_headers_count_for_the_address(make_app: MakeApp) -> None:
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="2/minute")
    http = app.test_client()
    client_id, secret = register(services)
    for _ in range(2):
        response = http.post(
            "/token",
            data=GRANT,
            headers={"Authorization": "Basic !!!"},
            environ_base={"REMOTE_ADDR": ATTACKER},
        )
        assert_invalid_client(response)
    assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200


def test_ipv6_addresses_are_counted_per_64(make_app: MakeApp) -> None:
    app, services = make_app(AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="2/minute")
    http = app.test_client()
    client_id, _secret = register(services)
    assert_invalid_client(request_token(http, ("guess-1", "wrong"), remote_addr="2001:db8:1:2::1"))
    assert_invalid_client(
        request_token(http, ("guess-2", "wrong"), remote_addr="2001:db8:1:2:ffff::9")
    )
    assert_throttled(request_token(http, (client_id, "wrong"), remote_addr="2001:db8:1:2::abcd"))
    assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr="2001:db8:1:3::1"))


def _behind_a_proxy(make_app: MakeApp) -> tuple[Callable[[str, str], Any], str]:
    """A token request through one trusted proxy (10.0.0.2) with the given secret and
    ``X-Forwarded-For``, on an app allowing 2 failures per address a minute; and the
    client's right secret."""
    app, services = make_app(
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="2/minute", AUTHSERVER_PROXY_HOPS="1"
    )
    http = app.test_client()
    client_id, secret = register(services)

    def via_proxy(secret: str, forwarded_for: str) -> Any:
        return http.post(
            "/token",
            data=GRANT,
            auth=(client_id, secret),
            headers={"X-Forwarded-For": forwarded_for},
            environ_base={"REMOTE_ADDR": "10.0.0.2"},  # the proxy
        )

    return via_proxy, secret


def test_the_address_is_the_one_proxyfix_trusts(make_app: MakeApp) -> None:
    via_proxy, secret = _behind_a_proxy(make_app)
    for _ in range(2):
        assert_invalid_client(via_proxy("wrong", ATTACKER))
    assert_throttled(via_proxy("wrong", ATTACKER))
    # Behind the same proxy, another client address is not slowed ...
    assert_invalid_client(via_proxy("wrong", ELSEWHERE))
    # ... and the right secret from the throttled address is served.
    assert via_proxy(secret, ATTACKER).status_code == 200


def test_a_port_the_proxy_adds_is_not_part_of_the_address(make_app: MakeApp) -> None:
    """Some proxies forward the client's address with its source port, new with every
    connection: counted with it, each connection had a budget of its own."""
    via_proxy, secret = _behind_a_proxy(make_app)
    for address, other in (("203.0.113.7", "203.0.113.8"), ("2001:db8:7::1", "2001:db8:8::1")):
        with_port = f"[{address}]" if ":" in address else address
        assert_invalid_client(via_proxy("wrong", f"{with_port}:50001"))
        assert_invalid_client(via_proxy("wrong", f"{with_port}:50002"))
        # Another connection from the same address: the same budget, spent.
        assert_throttled(via_proxy("wrong", f"{with_port}:50003"))
        assert_throttled(via_proxy("wrong", address))
        assert via_proxy(secret, f"{with_port}:50004").status_code == 200
        assert_invalid_client(via_proxy("wrong", other))


# -- configuration, metrics, failing open ----------------------------------------------------


def test_off_disables_the_limits(make_app: MakeApp) -> None:
    app, services = make_app(
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="off", AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="0"
    )
    http = app.test_client()
    client_id, secret = register(services)
    assert "authserver.limits" not in app.extensions
    for _ in range(15):
        assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200


def test_429s_are_counted_in_the_metrics(make_app: MakeApp) -> None:
    scraper = "metrics-token-for-rate-limit-tests-0a1b2c"
    app, services = make_app(
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="1/minute", AUTHSERVER_METRICS_TOKEN=scraper
    )
    http = app.test_client()
    client_id, _secret = register(services)

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    throttled = {"endpoint": "/token", "scope": "client"}
    before = sample("authserver_client_auth_throttled_total", throttled)
    slow_down = sample("authserver_token_failures_total", {"reason": "slow_down"})

    assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
    assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))

    assert sample("authserver_client_auth_throttled_total", throttled) == before + 2
    assert sample("authserver_token_failures_total", {"reason": "slow_down"}) == slow_down + 2
    text = http.get("/metrics", headers={"Authorization": f"Bearer {scraper}"}).get_data(
        as_text=True
    )
    assert "authserver_client_auth_throttled_total" in text


@pytest.mark.waits
def test_memory_storage_forgets_ids_whose_failures_left_the_window(
    env_for: Callable[..., dict[str, str]], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memory:// counts per presented client_id, and ids are free to invent: a worker must
    not keep every bogus id it was ever sent. Rounds of failures with fresh ids, each round
    leaving the window before the next: the memory they take does not grow round after
    round (it did by about 250 bytes per id: limits' MemoryStorage kept each key, emptied).
    """
    monkeypatch.setattr(limits_storage, "MEMORY_SWEEP_INTERVAL", 0.2)
    settings = Settings.from_env(
        env_for(
            db_url,
            AUTHSERVER_RATE_LIMIT_STORAGE="memory://",
            AUTHSERVER_AUTH_FAILURES_PER_CLIENT="5/second",
            AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="1000/second",
        )
    )
    failures = limits.build(settings)
    assert failures is not None

    def fail(times: int) -> None:
        for _ in range(times):
            bogus = f"as_client_{secrets.token_urlsafe(16)}"
            failures.count(ClientAuthFailed("/token", bogus, ATTACKER, None, "unknown client_id"))

    tracemalloc.start()
    try:
        held = []
        for _ in range(3):
            fail(1000)
            time.sleep(1.1)  # every failure of the round leaves the 1 s window
            fail(1)  # the next failure sweeps
            gc.collect()
            held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # Rounds 2 and 3 reuse what round 1 took; 2,000 kept ids would be about 500 kB.
    assert held[-1] - held[0] < 100_000, held


def test_many_counted_ids_do_not_make_every_later_failure_costly(
    env_for: Callable[..., dict[str, str]], db_url: str
) -> None:
    """A stranger with many addresses (or a botnet) fills memory:// with keys: one per
    made-up client id and per address, each for its window. limits' MemoryStorage started a
    pass over every key 10 ms after each failure it counted, so with 60,000 keys and a
    failure every 10 ms the passes ran back to back: most of a core, holding the GIL the
    worker's requests need (measured against `authserver serve`: a failure cost 14 ms of
    the worker's CPU instead of 2 ms). The expired entries are trimmed by the storage's
    own sweep, every MEMORY_SWEEP_INTERVAL, instead."""
    settings = Settings.from_env(
        env_for(
            db_url,
            AUTHSERVER_RATE_LIMIT_STORAGE="memory://",
            AUTHSERVER_AUTH_FAILURES_PER_CLIENT="20/minute",
            AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="60/minute",
        )
    )
    failures = limits.build(settings)
    assert failures is not None
    for n in range(30_000):
        address = f"10.{n % 250}.{n // 250 % 250}.{n // 62_500}"
        failures.count(ClientAuthFailed("/token", f"made-up-{n}", address, None, "unknown"))

    started = time.process_time()
    for _ in range(100):  # a failure every 10 ms for a second
        failures.count(ClientAuthFailed("/token", "as_client_x", ATTACKER, None, "wrong secret"))
        time.sleep(0.01)
    time.sleep(0.05)  # a pass started by the last failure
    spent = time.process_time() - started
    # The failures themselves take a few ms in all; the passes took 0.7-1.5 s.
    assert spent < 0.25, spent


def test_unreachable_storage_at_start_is_one_line_naming_the_variable() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_RATE_LIMIT_STORAGE": "redis://:hunter2@127.0.0.1:1/0"}
    )
    with pytest.raises(ConfigError) as exc:
        check_storage(settings)
    message = str(exc.value)
    assert message.startswith("AUTHSERVER_RATE_LIMIT_STORAGE: ")
    assert "\n" not in message
    assert "hunter2" not in message
    assert "127.0.0.1:1" in message
    # Nothing to reach when both limits are off.
    check_storage(settings.replace(auth_failures_per_client=None, auth_failures_per_address=None))


def test_a_storage_that_answers_but_fails_says_why() -> None:
    """A reachable Redis refusing the URL's database index was "cannot reach", with
    nothing to go on: the client's own answer is named, the password still masked."""
    require_redis()
    base = REDIS_URL.rsplit("/", 1)[0].replace("redis://", "redis://:hunter2@", 1)
    with pytest.raises(ConfigError) as exc:
        check_storage(Settings.from_env({"AUTHSERVER_RATE_LIMIT_STORAGE": f"{base}/99"}))
    message = str(exc.value)
    assert "DB index is out of range" in message, message
    assert "hunter2" not in message
    assert "\n" not in message


def test_reachable_storage_passes_the_start_check(storage: str) -> None:
    check_storage(Settings.from_env({"AUTHSERVER_RATE_LIMIT_STORAGE": storage}))


def test_storage_down_at_runtime_fails_open_until_it_is_back(
    env_for: Callable[..., dict[str, str]],
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker boots while Redis is down, and nobody is locked out: the limits are not
    enforced (a warning says so) until the storage is back; then they are again, with no
    restart. A real redis-server is started on the port the worker was pointed at."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        missing("redis-server is not installed: the storage recovery test cannot run")
    # The back-off after a storage error, shortened so the test need not wait 5 s.
    monkeypatch.setattr(limits, "STORAGE_BACKOFF", 0.3)
    port = free_port()
    settings = Settings.from_env(
        env_for(
            db_url,
            AUTHSERVER_RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{port}/0",
            AUTHSERVER_AUTH_FAILURES_PER_CLIENT="1/minute",
        )
    )
    services = make_services(settings)
    redis_proc: subprocess.Popen[bytes] | None = None
    try:
        http = create_app(services=services).test_client()
        client_id, secret = register(services)
        with caplog.at_level(logging.WARNING, logger="authserver.web.limits"):
            for _ in range(3):
                assert_invalid_client(
                    request_token(http, (client_id, "wrong"), remote_addr=ATTACKER)
                )
            assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200
        warnings = [r for r in caplog.records if r.name == "authserver.web.limits"]
        assert len(warnings) == 1  # once per back-off period, not once per request
        assert "not enforced" in warnings[0].getMessage()

        redis_proc = subprocess.Popen(
            [
                *(redis_server, "--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _port_open(port):
            assert time.monotonic() < deadline, "redis-server did not start"
            assert redis_proc.poll() is None, "redis-server exited"
            time.sleep(0.02)
        time.sleep(0.35)  # the shortened back-off runs out

        # Enforced again: one failure spends the budget, then failures are throttled (and
        # the right secret is still served).
        assert_invalid_client(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
        assert_throttled(request_token(http, (client_id, "wrong"), remote_addr=ATTACKER))
        assert request_token(http, (client_id, secret), remote_addr=ATTACKER).status_code == 200
    finally:
        services.close()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- a real server: one limit across workers -------------------------------------------------


def throttled_by(metrics_root: Path) -> dict[str, float]:
    """429s at /token per worker."""
    return per_worker(metrics_root, "authserver_token_failures_total", reason="slow_down")


@pytest.mark.slow
def test_redis_limit_is_shared_by_the_workers_of_a_server(
    env_for: Callable[..., dict[str, str]], db_url: str, prefix: str, tmp_path: Path
) -> None:
    require_redis()
    metrics_root = tmp_path / "metrics"
    metrics_root.mkdir()
    env = env_for(
        db_url,
        AUTHSERVER_RATE_LIMIT_STORAGE=REDIS_URL,
        AUTHSERVER_RATE_LIMIT_KEY_PREFIX=prefix,
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="4/minute",
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="off",
        AUTHSERVER_SCHEDULER="false",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_root),
    )
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess sets it to its own URL
    try:
        with ServerProcess(env, workers=2, log_path=tmp_path / "serve.log") as server:
            created = cli_json(env, "clients", "create", "--name", "shared limit")
            client_id, secret = created["client_id"], created["client_secret"]
            url = server.base_url + "/token"

            def post(secret: str) -> int:
                # A new connection each time, so the workers share the requests.
                with requests.Session() as session:
                    response = session.post(url, data=GRANT, auth=(client_id, secret), timeout=10)
                return response.status_code

            # Four failures in all, whichever workers they landed on ...
            assert [post("wrong") for _ in range(4)] == [401] * 4
            # ... and every worker throttles further failures for the id. Concurrent
            # requests until both workers have answered at least one (the per-process
            # metric files say which worker answered).
            statuses: list[int] = []
            lock = threading.Lock()

            def burst() -> None:
                for _ in range(5):
                    status = post("wrong")
                    with lock:
                        statuses.append(status)

            for _ in range(10):
                threads = [threading.Thread(target=burst) for _ in range(6)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                if len(throttled_by(metrics_root)) >= 2:
                    break
            assert set(statuses) == {429}
            throttled = throttled_by(metrics_root)
            assert len(throttled) == 2, throttled
            assert sum(throttled.values()) == len(statuses)
            # The owner of the id is still served.
            assert post(secret) == 200
    finally:
        _delete_keys(prefix)


# -- a stranger who knows a client id cannot lock its owner out ------------------------------


@pytest.mark.slow
def test_attacker_never_locks_out_the_backend_through_a_real_server(
    env_for: Callable[..., dict[str, str]], db_url: str, tmp_path: Path
) -> None:
    """An attacker loop (wrong secrets for the backend's id, from one address and from
    many spoofed ones, ``X-Forwarded-For`` naming the backend's own address too) and the
    real backend run at the same time against one ``authserver serve``: the backend sees
    zero refusals, the attacker is throttled."""
    env = env_for(
        db_url,
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="5/minute",
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="5/minute",
        AUTHSERVER_PROXY_HOPS="1",
        AUTHSERVER_SCHEDULER="false",
    )
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess sets it to its own URL
    with ServerProcess(env, workers=1, log_path=tmp_path / "serve.log") as server:
        created = cli_json(env, "clients", "create", "--name", "backend")
        client_id, secret = created["client_id"], created["client_secret"]
        url = server.base_url + "/token"
        stop = threading.Event()
        attacker: list[int] = []
        backend: list[int] = []

        def attack(spoof: Callable[[int], str]) -> None:
            with requests.Session() as session:
                n = 0
                while not stop.is_set():
                    n += 1
                    response = session.post(
                        url,
                        data=GRANT,
                        auth=(client_id, f"guess-{n}"),
                        headers={"X-Forwarded-For": spoof(n)},
                        timeout=10,
                    )
                    attacker.append(response.status_code)

        def serve_backend() -> None:
            with requests.Session() as session:
                for n in range(60):
                    response = session.post(
                        url,
                        data={**GRANT, "sub": f"user-{n}"},
                        auth=(client_id, secret),
                        timeout=10,
                    )
                    backend.append(response.status_code)

        threads = [
            # One address: the same as the backend's own (loopback, spoofed).
            threading.Thread(target=attack, args=(lambda n: "127.0.0.1",)),
            # Many addresses: a fresh one per request.
            threading.Thread(target=attack, args=(lambda n: f"10.{n % 250}.{n // 250 % 250}.7",)),
        ]
        for thread in threads:
            thread.start()
        try:
            while len(attacker) < 20:  # the attacker is under way before the backend starts
                time.sleep(0.01)
            serve_backend()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert backend == [200] * 60
    assert set(attacker) <= {401, 429}
    assert attacker.count(429) > attacker.count(401), (attacker.count(401), attacker.count(429))
