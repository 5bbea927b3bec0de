"""Exactly-once key rotation across real processes sharing one key store.

docs/reference.md, "Signing keys and rotation": "many server instances sharing one database and
key store rotate exactly once". Each race runs several separate processes, forked from one
parent that has imported everything, as a server's master forks its workers (each builds
its own services with ``container.build(Settings.from_env())`` after the fork, as every
server worker and every instance does), lines them up on a common start instant, and lets
them all drive the schedule at once, against:

* the file key store (one shared ``AUTHSERVER_KEYS_DIR``, ``flock``), and
* the SQL key store (row lock) on PostgreSQL and on a SQLite file.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
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

#: One race: a parent that imports everything once, then forks the competitors, as a
#: server's master forks its workers (each child builds its own services after the fork;
#: the parent builds nothing: no engine, no connection, no thread); each child writes its
#: report to its own file and leaves with ``os._exit``; the parent reaps them all (within a
#: bound) and prints their exit statuses and reports as one JSON line. One interpreter
#: start-up per race instead of one per competitor: that start-up was nearly all of this
#: module's CPU.
RACE = textwrap.dedent(
    r"""
    import json
    import os
    import random
    import signal
    import sys
    import threading
    import time
    import traceback
    from pathlib import Path

    import alembic.command
    import alembic.config
    import alembic.runtime.migration
    import alembic.script
    import psycopg
    import sqlalchemy.dialects.postgresql.psycopg
    import sqlalchemy.dialects.sqlite

    from authserver import container
    from authserver import scheduler
    from authserver.keys import crypto
    from authserver.settings import Settings
    from authserver.storage.sql.migrate import upgrade_to_head

    mode, workdir, processes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    duration = float(sys.argv[4])
    MIN_TICKS = 5
    go_file = workdir / "go"

    # Loads the RSA code path (modules, OpenSSL's providers) once for every child: the first
    # key a competitor makes in the race is not slowed by it. Nothing here is shared state
    # a child could misuse: OpenSSL reseeds its generator in a forked child.
    crypto.generate(2048)
    assert threading.active_count() == 1, threading.enumerate()


    def compete(index):
        svc = container.build(Settings.from_env())
        svc.db.ping()  # connect now, not at the start line
        (workdir / f"ready-{index}").touch()

        deadline = time.monotonic() + 60
        while not go_file.exists():
            if time.monotonic() > deadline:
                raise SystemExit("never got the start signal")
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
            # The duration, and at least MIN_TICKS ticks however slow the machine: a
            # competitor that ticked once has not raced.
            while time.time() < end or report["ticks"] < MIN_TICKS:
                try:
                    report["done"].extend(scheduler.run_once(svc))
                except Exception:
                    report["errors"].append(traceback.format_exc())
                report["ticks"] += 1
                time.sleep(random.uniform(0, 0.02))  # (random reseeds in a forked child)
            report["finished"] = time.time()
        svc.close()
        return report


    def child(index):
        code = 1
        try:
            report = compete(index)
            path = workdir / f"report-{index}.json"
            path.with_suffix(".tmp").write_text(json.dumps(report))
            path.with_suffix(".tmp").replace(path)
            code = 0
        except SystemExit as exc:
            print(f"competitor {index}: {exc}", file=sys.stderr)
        except BaseException:
            print(f"competitor {index}:", file=sys.stderr)
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)


    children = {}
    for index in range(processes):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(index)
        children[pid] = index

    statuses = {}
    deadline = time.monotonic() + 150
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if time.monotonic() > deadline:
                print("competitors did not finish in time", file=sys.stderr)
                break
            time.sleep(0.01)
            continue
        index = children.pop(pid)
        statuses[index] = os.waitstatus_to_exitcode(status)
        if statuses[index] != 0:
            break  # one failed: the race is void, stop the others now
    for pid, index in children.items():  # our own children, not yet reaped
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        statuses[index] = -signal.SIGKILL
    reports = {}
    for index in range(processes):
        path = workdir / f"report-{index}.json"
        if path.exists():
            reports[index] = json.loads(path.read_text())
    print(json.dumps({"statuses": statuses, "reports": reports}), flush=True)
    # Nothing left to clean up: skip the interpreter's teardown of every imported module (a
    # fifth of a second of CPU).
    os._exit(0)
    """
)


def _race(
    tmp_path: Path,
    env: dict[str, str],
    mode: str,
    duration: float = 0.0,
    processes: int = PROCESSES,
) -> list[dict[str, Any]]:
    """Run *processes* competitors, forked from one prepared parent, that start together;
    return their reports."""
    workdir = tmp_path / "race"
    workdir.mkdir()
    go_file = workdir / "go"
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    full.update(env)
    full["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    # Its own process group, so that whatever happens the test can stop the parent and
    # every competitor it forked at once, by the parent's pid.
    proc = subprocess.Popen(
        [sys.executable, "-c", RACE, mode, str(workdir), str(processes), str(duration)],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        readies = [workdir / f"ready-{index}" for index in range(processes)]
        deadline = time.monotonic() + 60
        while not all(ready.exists() for ready in readies):
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"competitors exited early ({proc.returncode}): {err[-3000:]}")
            assert time.monotonic() < deadline, "competitors did not get ready in time"
            time.sleep(0.02)
        # The common start line: a moment in the future that every process waits for.
        go_tmp = workdir / "go.tmp"
        go_tmp.write_text(repr(time.time() + 0.3))
        go_tmp.replace(go_file)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    assert proc.returncode == 0, f"the race's parent failed ({proc.returncode}):\n{err[-5000:]}"
    relayed = json.loads(out.strip().splitlines()[-1])
    statuses = {int(index): code for index, code in relayed["statuses"].items()}
    assert statuses == dict.fromkeys(range(processes), 0), (
        f"competitor failed {statuses}:\n{err[-5000:]}"
    )
    reports: list[dict[str, Any]] = [relayed["reports"][str(i)] for i in range(processes)]
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
    # They ticked at the same time: every competitor was still ticking when the last one
    # started (each ticks at least the race script's MIN_TICKS times, whatever the load).
    assert min(r["finished"] for r in reports) > max(r["started"] for r in reports), reports
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
