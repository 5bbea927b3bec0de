"""Every signing key is on the audit trail, even when its writer died before recording it.

A key is written to the key store under the store's lock, and its ``key.created`` or
``key.rotated`` record is written after that, in the database. With the file key store the
two are separate writes: a ``kill -9`` between them (here: the process kills itself at the
moment it would record the key) left a key that signs with no trace in the audit trail,
and nothing ever recorded it. With the SQL key store they are one transaction: the same
kill takes the key with it. ``KeyService.recover_records`` (the key schedule, ``serve``'s
start, ``keys rotate`` and ``keys retire``) records such a key once it has been stored
longer than a writer alive takes to record it, exactly once however many instances do it;
a retirement (``key.retired``) the same way.
"""

from __future__ import annotations

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
import requests
from sqlalchemy import text

from authserver import container
from authserver.cli.serve import prepare
from authserver.clock import FixedClock
from authserver.container import Services
from authserver.keys.service import RECORD_WAIT
from authserver.scheduler import run_once
from authserver.settings import Settings
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here

pytestmark = [pytest.mark.integration]

#: ``authserver ARGS`` in a process that SIGKILLs itself when it would record a key event:
#: the key is written, its record never is.
KILLED_BEFORE_THE_RECORD = textwrap.dedent(
    """
    import os
    import signal
    import sys

    from authserver.audit.service import AuditService
    from authserver.cli import cli

    record = AuditService.record


    def record_or_die(self, actor, action, **fields):
        if action.startswith("key."):
            os.kill(os.getpid(), signal.SIGKILL)
        return record(self, actor, action, **fields)


    AuditService.record = record_or_die
    cli.main(args=sys.argv[1:], prog_name="authserver")
    """
)

#: Each key store on each database: the file store with its records in either database.
stores = pytest.mark.parametrize(
    ("db_url", "key_store"),
    [("sqlite", "file"), ("postgresql", "file"), ("sqlite", "sql"), ("postgresql", "sql")],
    indirect=["db_url"],
)


def _kill_before_the_record(env: dict[str, str], *args: str) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_THE_RECORD, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _key_records(env: dict[str, str], *actions: str) -> list[dict[str, Any]]:
    """The key creation records (or those of *actions*), through the CLI."""
    events = []
    for action in actions or ("key.created", "key.rotated"):
        events += cli_json_here(env, "audit", "--action", action)["events"]
    return events


def _kids(env: dict[str, str]) -> set[str]:
    return {k["kid"] for k in cli_json_here(env, "keys", "list")["keys"]}


def _orphan(env: dict[str, str], db_url: str, key_store: str) -> str:
    """A stored key with no record, left the way each key store can leave one; its kid."""
    _kill_before_the_record(env, "keys", "rotate")
    if key_store == "file":
        # The key files were written; the process died before the database heard of it.
        (kid,) = _kids(env)
        assert _key_records(env) == []
        return kid
    # One transaction: the kill rolled the key back with its record.
    assert cli_json_here(env, "keys", "list")["keys"] == []
    # A record lost all the same (a restore of the audit table from an older backup): the
    # key store's own path to a key without a record.
    cli_json_here(env, "keys", "rotate")
    svc = container.build(Settings.from_env(env))
    try:
        with svc.unit_of_work():
            svc.db.connection().execute(text("DELETE FROM audit_events"))
    finally:
        svc.close()
    assert _key_records(env) == []
    return sorted(_kids(env))[0]


def _instance(env: dict[str, str], at: float) -> Services:
    """An instance whose clock reads *at*."""
    return container.build(Settings.from_env(env), clock=FixedClock(at))


def _two_schedules_twice(env: dict[str, str], after: float) -> None:
    """Two instances' key schedules, each run twice, with clocks just past *after*: what
    several instances reconciling at once would do."""
    instances = [_instance(env, after + 1), _instance(env, after + 2)]
    try:
        for svc in [*instances, *instances]:
            run_once(svc)
    finally:
        for svc in instances:
            svc.close()


@stores
def test_a_key_without_a_record_is_recorded_once_by_the_schedule(
    db_url: str, key_store: str, env_for: Callable[..., dict[str, str]]
) -> None:
    env = env_for(db_url, AUTHSERVER_KEY_STORE=key_store)
    orphan = _orphan(env, db_url, key_store)
    settings = Settings.from_env(env)
    wait = RECORD_WAIT + settings.key_retention_leeway
    now = time.time()
    key = next(k for k in cli_json_here(env, "keys", "list")["keys"] if k["kid"] == orphan)

    # A writer alive may still be about to record it: not recorded yet.
    svc = _instance(env, now)
    try:
        run_once(svc)
    finally:
        svc.close()
    assert [e for e in _key_records(env) if e["detail"]["kid"] == orphan] == []
    # Nor once it is older than the audit retention: its record may have been purged
    # rightly. (Not by a tick that far ahead: that one would rotate and drop keys.)
    svc = _instance(env, now + settings.audit_retention + 1)
    try:
        with svc.unit_of_work():
            assert svc.keys.recover_records() == []
    finally:
        svc.close()
    assert [e for e in _key_records(env) if e["detail"]["kid"] == orphan] == []

    # Two instances' schedules, then each again: one record.
    _two_schedules_twice(env, now + wait)
    records = [e for e in _key_records(env) if e["detail"]["kid"] == orphan]
    assert len(records) == 1, records
    (record,) = records
    assert record["action"] == "key.created"
    assert record["actor"] == "scheduler"
    assert record["detail"]["recovered"] is True
    assert set(record["detail"]) == {"kid", "signs_from", "recovered"}
    signs_from = record["detail"]["signs_from"]
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(signs_from)) == key["signs_from"]
    # Every stored key is on record once.
    named = [e["detail"]["kid"] for e in _key_records(env)]
    assert sorted(named) == sorted(_kids(env))


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_retirement_without_a_record_is_recorded_once(
    db_url: str, env_for: Callable[..., dict[str, str]]
) -> None:
    """The emergency retire, killed when it would record it: the key is retired (and its
    successor made) in the key directory, and neither is on record until the schedule
    records both."""
    env = env_for(db_url, AUTHSERVER_KEY_STORE="file")
    cli_json_here(env, "keys", "rotate")
    current = cli_json_here(env, "keys", "list")["keys"]
    (victim,) = [k["kid"] for k in current if k["state"] == "current"]
    _kill_before_the_record(env, "keys", "retire", victim)
    listed = {k["kid"]: k for k in cli_json_here(env, "keys", "list")["keys"]}
    assert listed[victim]["retired_at"] is not None
    assert _key_records(env, "key.retired") == []
    wait = RECORD_WAIT + Settings.from_env(env).key_retention_leeway
    now = time.time()
    _two_schedules_twice(env, now + wait)
    retired = _key_records(env, "key.retired")
    assert [(e["detail"]["kid"], e["detail"]["recovered"]) for e in retired] == [(victim, True)]
    named = [e["detail"]["kid"] for e in _key_records(env)]
    assert sorted(named) == sorted(_kids(env))


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("by", ["keys retire", "serve"])
def test_a_command_or_a_start_records_a_key_whose_writer_was_killed(
    db_url: str, by: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """After the crash of another process: the operator's next key command (before its own
    change, saying so on stderr), or serve's preparation before its workers start, records
    the key once it is older than the wait."""
    env = env_for(db_url, AUTHSERVER_KEY_STORE="file", AUTHSERVER_KEY_RETENTION_LEEWAY="0")
    orphan = _orphan(env, db_url, "file")
    first = run_cli_here(env, "keys", "rotate")
    assert first.returncode == 0, first.stderr
    assert "had no such record" not in first.stderr  # too recent: its writer may be alive
    assert [e for e in _key_records(env) if e["detail"]["kid"] == orphan] == []
    # As if RECORD_WAIT had passed: the key written that much earlier.
    meta_path = tmp_path / "keys" / f"{orphan}.json"
    meta = json.loads(meta_path.read_text())
    meta["created_at"] -= RECORD_WAIT + 1
    meta_path.write_text(json.dumps(meta))
    for _ in range(2):
        if by == "serve":
            prepare(Settings.from_env(env))
            continue
        run = run_cli_here(env, "keys", "retire", orphan)
        if run.returncode == 0:
            assert f"recorded key.created for signing key {orphan}, which had no such" in run.stderr
        else:  # retired by the first run: the record is not written again
            assert "already retired" in run.stderr
            assert "had no such record" not in run.stderr
    records = [e for e in _key_records(env) if e["detail"]["kid"] == orphan]
    assert len(records) == 1, records
    assert records[0]["actor"] == ("cli" if by == "keys retire" else "system")
    assert records[0]["detail"]["recovered"] is True


ADMIN_TOKEN = "key-records-admin-token-5d0c8a7e39b14f26"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("route", ["rotate", "retire"])
def test_the_admin_api_records_a_key_whose_writer_was_killed_as_the_cli_does(
    db_url: str, route: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """POST /admin/keys/rotate and /admin/keys/{kid}/retire record, before their own change,
    a key older than the wait whose writer died before recording it, as keys rotate and
    keys retire do (the same service method): once, however often they are called. The key
    schedule is off, and the key is aged after serve's start, so only the route can have
    recorded it."""
    env = env_for(
        db_url,
        AUTHSERVER_KEY_STORE="file",
        AUTHSERVER_KEY_RETENTION_LEEWAY="0",
        AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN,
        AUTHSERVER_SCHEDULER="false",
    )
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess's own base URL
    orphan = _orphan(env, db_url, "file")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with ServerProcess(env) as server:
        assert [e for e in _key_records(env) if e["detail"]["kid"] == orphan] == []
        # As if RECORD_WAIT had passed: the key written that much earlier.
        meta_path = tmp_path / "keys" / f"{orphan}.json"
        meta = json.loads(meta_path.read_text())
        meta["created_at"] -= RECORD_WAIT + 1
        meta_path.write_text(json.dumps(meta))
        path = "/admin/keys/rotate" if route == "rotate" else f"/admin/keys/{orphan}/retire"
        answers = [
            requests.post(server.base_url + path, headers=auth, timeout=30).status_code
            for _ in range(2)
        ]
    # The second retire is refused (already retired); the second rotate finds one scheduled.
    assert answers == ([201, 200] if route == "rotate" else [200, 409]), answers
    records = [e for e in _key_records(env) if e["detail"]["kid"] == orphan]
    assert len(records) == 1, records
    assert records[0]["actor"] == "admin-api"
    assert records[0]["detail"]["recovered"] is True
    named = [e["detail"]["kid"] for e in _key_records(env)]
    assert sorted(named) == sorted(_kids(env))
