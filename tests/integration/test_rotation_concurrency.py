"""Exactly-once key rotation across real processes sharing one key store.

docs/reference.md, "Signing keys and rotation": "many server instances sharing one database and
key store rotate exactly once". Each test starts several separate Python processes (each
builds its own services with ``container.build(Settings.from_env())``, as every server
worker and every instance does), lines them up on a common start instant, and lets them all
drive the schedule at once, against:

* the file key store (one shared ``AUTHSERVER_KEYS_DIR``, ``flock``), and
* the SQL key store (row lock) on PostgreSQL and on a SQLite file.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authserver import container
from authserver.clock import FixedClock
from authserver.keys.model import KeyState
from authserver.settings import Settings
from authserver.storage.sql.migrate import upgrade_to_head
from tests.helpers import cli_json

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PROCESSES = 6

WORKER = textwrap.dedent(
    r'''
    """One competitor: build services, wait for the common start, then drive the schedule."""
    import json
    import random
    import sys
    import time
    import traceback
    from pathlib import Path

    mode, ready_file, go_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    duration = float(sys.argv[4])

    from authserver import container
    from authserver import scheduler
    from authserver.keys import crypto
    from authserver.settings import Settings
    from authserver.storage.sql.migrate import upgrade_to_head

    svc = container.build(Settings.from_env())
    svc.db.ping()  # connect now, not at the start line
    crypto.generate(2048)  # warm up the RSA code path too
    ready_file.touch()

    deadline = time.monotonic() + 60
    while not go_file.exists():
        if time.monotonic() > deadline:
            sys.exit("never got the start signal")
        time.sleep(0.001)
    start_at = float(go_file.read_text())
    while time.time() < start_at:
        time.sleep(0.0005)
    started = time.time()

    report = {"started": started, "done": [], "errors": [], "created": None, "ticks": 0}
    if mode == "ensure":
        # N instances starting at once on an empty database and an empty key store: each
        # migrates and makes sure a key is current, as `serve` does before forking.
        upgrade_to_head(svc.db)
        with svc.unit_of_work():
            created = svc.keys.ensure_current()
        report["created"] = created.kid if created is not None else None
    else:
        end = started + duration
        while time.time() < end:
            try:
                report["done"].extend(scheduler.run_once(svc))
            except Exception:
                report["errors"].append(traceback.format_exc())
            report["ticks"] += 1
            time.sleep(random.uniform(0, 0.02))
    svc.close()
    print(json.dumps(report))
    '''
)


def _race(
    tmp_path: Path,
    env: dict[str, str],
    mode: str,
    duration: float = 0.0,
    processes: int = PROCESSES,
) -> list[dict[str, Any]]:
    """Run *processes* workers that start together; return their reports."""
    script = tmp_path / "competitor.py"
    script.write_text(WORKER)
    go_file = tmp_path / "go"
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    full.update(env)
    full["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    procs: list[tuple[subprocess.Popen[str], Path]] = []
    try:
        for index in range(processes):
            ready = tmp_path / f"ready-{index}"
            proc = subprocess.Popen(
                [sys.executable, str(script), mode, str(ready), str(go_file), str(duration)],
                env=full,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append((proc, ready))
        deadline = time.monotonic() + 60
        while not all(ready.exists() for _, ready in procs):
            for proc, _ in procs:
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    pytest.fail(f"competitor exited early ({proc.returncode}): {err[-3000:]}")
            assert time.monotonic() < deadline, "competitors did not get ready in time"
            time.sleep(0.02)
        # The common start line: a moment in the future that every process waits for.
        go_tmp = tmp_path / "go.tmp"
        go_tmp.write_text(repr(time.time() + 0.3))
        go_tmp.replace(go_file)
        reports = []
        for proc, _ in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"competitor failed ({proc.returncode}):\n{err[-5000:]}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    starts = [r["started"] for r in reports]
    # They really raced: all started within a small window of each other.
    assert max(starts) - min(starts) < 0.5, starts
    return reports


@pytest.fixture(params=["file", "sql"])
def key_store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _views(env: dict[str, str]) -> list[Any]:
    svc = container.build(Settings.from_env(env))
    try:
        with svc.unit_of_work():
            return svc.keys.views()
    finally:
        svc.close()


def test_forced_rotation_happens_once_across_processes(
    db_url: str, key_store: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = env_for(
        db_url,
        AUTHSERVER_KEY_STORE=key_store,
        AUTHSERVER_KEY_ROTATION_INTERVAL="60s",
        AUTHSERVER_KEY_PUBLISH_AHEAD="10s",
        AUTHSERVER_JWKS_MAX_AGE="5s",
        AUTHSERVER_KEY_CACHE_SECONDS="0",
    )
    # The first key has been signing for two minutes, longer than the rotation interval:
    # the schedule is overdue the moment the competitors start.
    settings = Settings.from_env(env)
    svc = container.build(settings, clock=FixedClock(time.time() - 120))
    try:
        upgrade_to_head(svc.db)
        with svc.unit_of_work():
            first = svc.keys.ensure_current()
        assert first is not None
    finally:
        svc.close()

    reports = _race(tmp_path, env, "tick", duration=2.0)

    assert [e for r in reports for e in r["errors"]] == []
    assert all(r["ticks"] >= 5 for r in reports), [r["ticks"] for r in reports]
    scheduled = [line for r in reports for line in r["done"] if line.startswith("scheduled key")]
    assert len(scheduled) == 1, scheduled
    assert not [line for r in reports for line in r["done"] if line.startswith("created key")]

    listed = cli_json(env, "keys", "list")["keys"]
    states = sorted((k["state"], k["kid"]) for k in listed)
    assert len(listed) == 2, listed
    assert [s for s, _ in states] == ["current", "next"], listed
    assert dict((s, kid) for s, kid in states)["current"] == first.kid
    new_kid = dict((s, kid) for s, kid in states)["next"]
    assert scheduled == [f"scheduled key {new_kid}"]

    views = {v.key.kid: v for v in _views(env)}
    new = views[new_kid].key
    # Published now, signing after publish-ahead; the old key's window ends exactly there.
    assert new.activate_at - new.created_at == pytest.approx(10, abs=0.01)
    assert views[first.kid].key.deactivate_at == new.activate_at


def test_rotation_once_per_interval_across_processes(
    db_url: str, key_store: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """Real time, several intervals: every competitor ticks every few ms; each interval
    yields exactly one new key, never two."""
    interval, ahead = 3.0, 2.0
    env = env_for(
        db_url,
        AUTHSERVER_KEY_STORE=key_store,
        AUTHSERVER_KEY_ROTATION_INTERVAL="3s",
        AUTHSERVER_KEY_PUBLISH_AHEAD="2s",
        AUTHSERVER_JWKS_MAX_AGE="1s",
        AUTHSERVER_DEFAULT_TOKEN_TTL="5s",
        AUTHSERVER_MAX_TOKEN_TTL="5s",
        AUTHSERVER_KEY_RETENTION_LEEWAY="1s",
        AUTHSERVER_KEY_CACHE_SECONDS="0",
    )
    settings = Settings.from_env(env)
    svc = container.build(settings)
    try:
        upgrade_to_head(svc.db)
        with svc.unit_of_work():
            first = svc.keys.ensure_current()
        assert first is not None
    finally:
        svc.close()

    reports = _race(tmp_path, env, "tick", duration=7.5)
    end = time.time()
    started = min(r["started"] for r in reports)

    assert [e for r in reports for e in r["errors"]] == []
    scheduled = [line for r in reports for line in r["done"] if line.startswith("scheduled key")]
    created = [line for r in reports for line in r["done"] if line.startswith("created key")]
    assert created == []
    assert len(scheduled) == len(set(scheduled))

    keys = sorted((v.key for v in _views(env)), key=lambda k: (k.activate_at, k.created_at))
    assert keys[0].kid == first.kid
    assert len(keys) == len(scheduled) + 1, (scheduled, [k.kid for k in keys])
    # ~7.5 s of ticking at a 3 s interval: at least two scheduled rotations happened.
    assert len(scheduled) >= 2, scheduled
    for before, after in itertools.pairwise(keys):
        # Each new key was created only once the previous one was due for a successor...
        assert after.created_at >= before.activate_at + interval - ahead - 0.01, (before, after)
        # ...promptly (the competitors tick every few ms; the first successor may have
        # been due before they started)...
        due = max(before.activate_at + interval - ahead, started)
        assert after.created_at <= due + 1.5, (before, after)
        # ...and the signing windows are contiguous: one signing key per interval.
        assert before.deactivate_at == after.activate_at
        assert after.activate_at - before.activate_at >= interval - 0.01
    views = _views(env)
    now = time.time()
    assert now - end < 5
    assert [v.state for v in views].count(KeyState.CURRENT) == 1
    assert [v.state for v in views].count(KeyState.NEXT) <= 1


def test_first_key_created_once_by_concurrent_starts(
    db_url: str, key_store: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """An empty database and an empty key store, several instances starting at once:
    one schema, exactly one key."""
    env = env_for(db_url, AUTHSERVER_KEY_STORE=key_store)

    reports = _race(tmp_path, env, "ensure")

    created = [r["created"] for r in reports if r["created"] is not None]
    assert len(created) == 1, created
    listed = cli_json(env, "keys", "list")["keys"]
    assert [(k["kid"], k["state"]) for k in listed] == [(created[0], "current")]
    if key_store == "file":
        keys_dir = Path(env["AUTHSERVER_KEYS_DIR"])
        assert sorted(p.name for p in keys_dir.glob("*.pem")) == [f"{created[0]}.pem"]
        assert sorted(p.name for p in keys_dir.glob("*.json")) == [f"{created[0]}.json"]
