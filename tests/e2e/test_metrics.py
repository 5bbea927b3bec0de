"""GET /metrics: only for the bearer ``AUTHSERVER_METRICS_TOKEN`` (404 while unset);
Prometheus counters of issued tokens and failures (per reason), a latency histogram per
endpoint, no client id, secret or token in the output, and under ``authserver serve`` with
several workers, one aggregated view of all of them."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services
from tests.factories import request_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import on_every_worker
from tests.helpers import per_worker

pytestmark = pytest.mark.e2e

METRICS_TOKEN = "metrics-token-for-tests-7c2d9e4f1a0b3c5d"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's settings with a metrics token (so ``services``, ``app`` and ``http``)."""
    return settings.replace(metrics_token=METRICS_TOKEN)


def test_metrics_is_off_without_its_token(settings: Settings) -> None:
    services = make_services(settings.replace(metrics_token=None))
    try:
        http = create_app(services=services).test_client()
        response = http.get("/metrics", headers=SCRAPER)
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"
    finally:
        services.close()


@db_independent
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": METRICS_TOKEN},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "longer", "shorter", "basic", "no-scheme", "empty"],
)
def test_metrics_needs_its_bearer_token(http: Any, headers: dict[str, str]) -> None:
    response = http.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    # RFC 6750 §3.1: an error code only for a Bearer token that was sent and refused.
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    sent = scheme.lower() == "bearer" and bool(token.strip())
    expected = 'Bearer realm="authserver-metrics"' + (', error="invalid_token"' if sent else "")
    assert response.headers["WWW-Authenticate"] == expected
    assert "authserver_" not in response.get_data(as_text=True)


ISSUED = "authserver_tokens_issued_total"
FAILURES = "authserver_token_failures_total"
DURATION_COUNT = "authserver_request_duration_seconds_count"
DURATION_BUCKET = "authserver_request_duration_seconds_bucket"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(http: Any) -> tuple[str, dict[Any, float]]:
    response = http.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    return text, parse(text)


@db_independent
def test_metrics_is_prometheus_text(http: Any) -> None:
    response = http.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "version=" in response.headers["Content-Type"]
    families = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    # Counters are exposed without their _total suffix as family names.
    assert {
        "authserver_tokens_issued",
        "authserver_token_failures",
        "authserver_request_duration_seconds",
    } <= families


def test_counts_tokens_and_failures_by_reason(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    good_id, good_secret = register(name="good")
    bad_id, bad_secret = register(name="never succeeds")
    _, before = scrape(http)

    issued = [request_token(http, (good_id, good_secret), sub=f"user-{i}") for i in range(3)]
    assert all(r.status_code == 200 for r in issued), issued[0].get_data(as_text=True)
    access_tokens = [r.get_json()["access_token"] for r in issued]

    assert request_token(http, (bad_id, "wrong-secret")).status_code == 401
    attacker_id = "attacker-" + secrets.token_hex(8)
    attacker_secret = "s3cr3t-" + secrets.token_hex(8)
    assert request_token(http, (attacker_id, attacker_secret)).status_code == 401
    assert (
        http.post(
            "/token",
            data={"grant_type": "password", "client_id": good_id, "client_secret": good_secret},
        ).status_code
        == 400
    )
    assert (
        http.post("/token", data={"client_id": good_id, "client_secret": good_secret}).status_code
        == 400
    )

    text, after = scrape(http)
    assert value(after, ISSUED) - value(before, ISSUED) == 3
    assert (
        value(after, FAILURES, reason="invalid_client")
        - value(before, FAILURES, reason="invalid_client")
        == 2
    )
    assert (
        value(after, FAILURES, reason="unsupported_grant_type")
        - value(before, FAILURES, reason="unsupported_grant_type")
        == 1
    )
    assert (
        value(after, FAILURES, reason="invalid_request")
        - value(before, FAILURES, reason="invalid_request")
        == 1
    )
    assert (
        value(after, DURATION_COUNT, endpoint="/token")
        - value(before, DURATION_COUNT, endpoint="/token")
        == 7
    )

    # No client id (not even of a client that got tokens), nothing the client sent, and
    # nothing secret ever becomes label text.
    for forbidden in [
        good_id,
        bad_id,
        good_secret,
        bad_secret,
        attacker_id,
        attacker_secret,
        *access_tokens,
    ]:
        assert forbidden not in text
    for tok in access_tokens:
        for part in tok.split("."):
            assert part not in text


def test_a_profile_token_path_counts_as_token_requests(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    """The stream profile's ``POST /auth/v1/access-tokens`` issues tokens as ``/token``
    does: its refusals are token failures too (they were left out of the count)."""
    _, secret = register(audiences=["https://sync.example"], profile="stream")
    path = "/auth/v1/access-tokens"
    _, before = scrape(http)

    def post(body: dict[str, Any], bearer: str) -> int:
        return int(
            http.post(path, json=body, headers={"Authorization": f"Bearer {bearer}"}).status_code
        )

    assert post({"userId": "viewer-1"}, secret) == 200
    assert post({"userId": "viewer-1"}, secret + "x") == 401
    assert post({"userId": "viewer-1", "bogus": 1}, secret) == 400
    _, after = scrape(http)
    assert value(after, ISSUED) - value(before, ISSUED) == 1
    for reason in ("invalid_client", "invalid_request"):
        assert value(after, FAILURES, reason=reason) - value(before, FAILURES, reason=reason) == 1
    assert (
        value(after, DURATION_COUNT, endpoint=path) - value(before, DURATION_COUNT, endpoint=path)
        == 3
    )


@db_independent
def test_failure_reason_for_errors_outside_oauth(http: Any, app: Any) -> None:
    _, before = scrape(http)
    limit = app.config["MAX_CONTENT_LENGTH"]
    too_large = b"grant_type=client_credentials&pad=" + b"a" * (limit + 10)
    response = http.post("/token", data=too_large, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    _, after = scrape(http)
    delta = {
        dict(key[1])["reason"]: after[key] - before.get(key, 0.0)
        for key in after
        if key[0] == FAILURES and after[key] != before.get(key, 0.0)
    }
    assert sum(delta.values()) == 1, delta
    (reason,) = delta
    assert reason in ("invalid_request", "http_413"), reason


@db_independent
def test_latency_is_labelled_by_route_template_not_path(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    probe = "/no-such-path-" + secrets.token_hex(8)
    assert http.get(probe).status_code == 404
    assert http.get("/healthz").status_code == 200
    text, samples = scrape(http)
    assert probe not in text
    assert value(samples, DURATION_COUNT, endpoint="unmatched") >= 1
    assert value(samples, DURATION_COUNT, endpoint="/healthz") >= 1
    assert value(samples, DURATION_BUCKET, endpoint="/healthz", le="+Inf") >= 1
    endpoints = {dict(k[1]).get("endpoint") for k in samples if k[0] == DURATION_COUNT}
    assert probe not in endpoints


@db_independent
def test_status_lists_are_labelled_by_their_template(
    http: Any, register: Callable[..., tuple[str, str]]
) -> None:
    client_id, secret = register()
    issued = http.post(
        "/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert issued.status_code == 200
    template = "/statuslists/<int:list_id>"
    before = value(scrape(http)[1], DURATION_COUNT, endpoint=template)  # the registry is global
    assert http.get("/statuslists/1").status_code == 200
    assert http.get("/statuslists/7").status_code == 404
    _, samples = scrape(http)
    endpoints = {dict(k[1]).get("endpoint") for k in samples if k[0] == DURATION_COUNT}
    assert value(samples, DURATION_COUNT, endpoint=template) - before == 2
    assert not {"/statuslists/1", "/statuslists/7"} & endpoints


KEYS = "authserver_signing_keys"
STATES = ("next", "current", "previous")
ROTATION = "authserver_signing_key_rotation_timestamp_seconds"


def test_key_schedule_gauges_say_when_the_key_rotates(http: Any, services: Any) -> None:
    """Keys by state, and when the current key stops signing: the end of its rotation
    interval until a next key is scheduled, then that key's start."""
    text, samples = scrape(http)
    assert "# TYPE authserver_signing_keys gauge" in text
    assert "# TYPE authserver_signing_key_rotation_timestamp_seconds gauge" in text
    assert [value(samples, KEYS, state=s) for s in ("next", "current", "previous")] == [0, 1, 0]
    (current,) = services.keys.views()
    interval = services.settings.key_rotation_interval
    assert value(samples, ROTATION) == current.key.activate_at + interval

    with services.unit_of_work():
        scheduled = services.keys.rotate().key
    _, samples = scrape(http)
    assert [value(samples, KEYS, state=s) for s in ("next", "current", "previous")] == [1, 1, 0]
    assert value(samples, ROTATION) == scheduled.activate_at
    assert value(samples, ROTATION) < current.key.activate_at + interval


# -- several worker processes --------------------------------------------------------------


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def _wait_for_workers(master: int, count: int, exclude: set[int], timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _children(master) - exclude
        if len(workers) >= count:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"the server did not run {count} new workers in time")


def _scrape_url(base_url: str) -> dict[Any, float]:
    response = requests.get(base_url + "/metrics", headers=SCRAPER, timeout=10)
    assert response.status_code == 200
    return parse(response.text)


@pytest.mark.slow
def test_counters_aggregate_across_workers(
    env_for: Callable[..., dict[str, str]], db_url: str, tmp_path: Path
) -> None:
    env = env_for(db_url, AUTHSERVER_METRICS_TOKEN=METRICS_TOKEN)
    env.pop("AUTHSERVER_ISSUER", None)
    # serve makes its private metrics directory under the temp directory.
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env["TMPDIR"] = str(tmpdir)
    created = cli_json_here(env, "clients", "create", "--name", "metrics")
    client_id, secret = created["client_id"], created["client_secret"]
    with ServerProcess(env, workers=2) as server:
        assert server.proc is not None
        master = server.proc.pid
        workers = _wait_for_workers(master, 2, set())

        assert len(workers) == 2

        def issue(i: int) -> int:
            return requests.post(  # a new connection each time, so both workers answer
                server.base_url + "/token",
                data={"grant_type": "client_credentials", "sub": f"u{i}"},
                auth=(client_id, secret),
                timeout=10,
            ).status_code

        # Bursts of new connections until both workers' own files show tokens issued (the
        # kernel hands connections to either; on a busy machine one may take a whole burst).
        n = 0
        deadline = time.monotonic() + 60
        while len(per_worker(tmpdir, ISSUED)) < 2:
            assert time.monotonic() < deadline, per_worker(tmpdir, ISSUED)
            with ThreadPoolExecutor(max_workers=8) as pool:
                assert set(pool.map(issue, range(n, n + 40))) == {200}
            n += 40
        failed = requests.post(
            server.base_url + "/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, "wrong"),
            timeout=10,
        )
        assert failed.status_code == 401

        # One fresh, private directory holds the workers' values.
        metrics_dirs = [d for d in tmpdir.iterdir() if d.is_dir() and any(d.glob("*.db"))]
        assert len(metrics_dirs) == 1, list(tmpdir.iterdir())
        metrics_dir = metrics_dirs[0]
        assert stat.S_IMODE(metrics_dir.stat().st_mode) == 0o700

        # Both workers issued some of the tokens (their own files say so), so a total of n
        # is a sum across processes, not one worker's count.
        issued_by = per_worker(tmpdir, ISSUED)
        assert len(issued_by) == 2, issued_by
        assert sum(issued_by.values()) == n
        # Whichever worker answers the scrape, it reports every worker's counts: scrapes
        # until both workers have answered one.
        for samples in on_every_worker(
            lambda: _scrape_url(server.base_url),
            tmpdir,
            workers=2,
            endpoint="/metrics",
        ):
            assert value(samples, ISSUED) == n
            assert value(samples, FAILURES, reason="invalid_client") == 1

        # Read from the key store at the scrape: one series, not one per worker or a sum.
        keys = {k: v for k, v in samples.items() if k[0] == KEYS}
        assert keys == {(KEYS, (("state", s),)): float(s == "current") for s in STATES}, keys
        assert [k for k in samples if k[0] == ROTATION] == [(ROTATION, ())]

        # Replace every worker that served those requests: their counts survive in the
        # shared directory (the server respawns the killed workers).
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        _wait_for_workers(master, 2, exclude=workers)
        deadline = time.monotonic() + 20
        while True:
            try:
                samples = _scrape_url(server.base_url)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert value(samples, ISSUED) == n
        assert value(samples, FAILURES, reason="invalid_client") == 1
        text = requests.get(server.base_url + "/metrics", headers=SCRAPER, timeout=10).text
        assert secret not in text
        assert client_id not in text
    # Removed when the server stops.
    assert not metrics_dir.exists()


@pytest.mark.slow
def test_unusable_metrics_parent_directory_stops_serve_with_one_line(
    env_for: Callable[..., dict[str, str]], db_url: str, tmp_path: Path
) -> None:
    from tests.helpers import free_port
    from tests.helpers import run_cli

    env = env_for(db_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "does-not-exist"))
    result = run_cli(
        env,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--workers",
        "1",
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, result.stderr
    assert "PROMETHEUS_MULTIPROC_DIR" in lines[0]
    assert "Traceback" not in result.stderr
