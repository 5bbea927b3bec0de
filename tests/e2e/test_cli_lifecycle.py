"""The client lifecycle, a key's retire and the audit trail through the CLI, against a
running server.

A change made by one process (the CLI's entry point, run in the test's process by
``tests.helpers.run_cli_here``) must be seen by every worker of a running server: at once
on SQLite, whose per-worker client cache is validated against the database on each
request; within a second on PostgreSQL, whose workers drop cached clients when the change
feed (LISTEN/NOTIFY) tells them (docs/reference.md: "within 1 second"; asked at once, a
worker that had not yet heard of a change answered the old way, a CI failure). Each check
is repeated until the per-worker metric files show that both workers answered.
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

from authserver import container
from authserver.settings import Settings
from tests.factories import request_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import on_every_worker
from tests.helpers import run_cli_here

AUD = "https://sync.example"


def _one_line_error(result: Any) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


@pytest.mark.slow
def test_cli_changes_take_effect_at_once_on_a_running_server(
    db_url: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    # This test sends refused requests on purpose; brute-force limits are tested apart.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = env_for(
        db_url,
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="off",
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="off",
        PROMETHEUS_MULTIPROC_DIR=str(metrics),  # which worker answered (tests.helpers)
    )
    env.pop("AUTHSERVER_ISSUER")
    created = cli_json_here(env, "clients", "create", "--name", "backend", "--audience", AUD)
    cid, secret = created["client_id"], created["client_secret"]
    with ServerProcess(env, workers=2, log_path=tmp_path / "serve.log") as server:

        def everywhere(**request: Any) -> list[requests.Response]:
            """The same request until both workers have answered it."""
            secret_ = request.pop("secret")
            return on_every_worker(
                lambda: request_token(server, (cid, secret_), sub="user-1", **request),
                metrics,
                workers=2,
            )

        def settled(secret: str, done: Callable[[list[requests.Response]], bool]) -> Any:
            """Both workers' answers once *done* holds of them: at once on SQLite, within
            the change feed's second on PostgreSQL (from the change's commit)."""
            deadline = time.monotonic() + (1.0 if db_url.startswith("postgresql") else 0.0)
            while True:
                answers = everywhere(secret=secret)
                if done(answers) or time.monotonic() >= deadline:
                    return answers
                time.sleep(0.02)

        def statuses(*codes: int) -> Callable[[list[requests.Response]], bool]:
            return lambda answers: {r.status_code for r in answers} == set(codes)

        # Warm both workers' caches with this client.
        assert {r.status_code for r in everywhere(secret=secret)} == {200}

        disabled = cli_json_here(env, "clients", "disable", cid)
        assert disabled["enabled"] is False
        refused = settled(secret, statuses(401))
        assert {r.status_code for r in refused} == {401}
        assert {r.json()["error"] for r in refused} == {"invalid_client"}

        assert cli_json_here(env, "clients", "enable", cid)["enabled"] is True
        assert {r.status_code for r in settled(secret, statuses(200))} == {200}

        rotated = cli_json_here(env, "clients", "rotate-secret", cid)
        new_secret = rotated["client_secret"]
        assert new_secret != secret
        assert {r.status_code for r in settled(secret, statuses(401))} == {401}
        assert {r.status_code for r in settled(new_secret, statuses(200))} == {200}

        updated = cli_json_here(
            env, "clients", "update", cid, "--scope", "read", "--token-ttl", "120"
        )
        assert updated["scopes"] == ["read"]
        assert updated["token_ttl"] == 120
        answers = settled(
            new_secret,
            lambda answers: all(r.json().get("scope") == "read" for r in answers),
        )
        for body in (r.json() for r in answers):
            assert body["scope"] == "read"
            assert body["expires_in"] == 120
        assert (
            request_token(server, (cid, new_secret), sub="user-1", scope="write").json()["error"]
            == "invalid_scope"
        )

        # The emergency path: a retired key signs nothing more and leaves the JWKS on the
        # next request of every worker (each checks the key directory with one stat per
        # request; before, a worker kept its snapshot for AUTHSERVER_KEY_CACHE_SECONDS).
        keys = cli_json_here(env, "keys", "list")["keys"]
        (retired_kid,) = [k["kid"] for k in keys if k["state"] == "current"]
        successor = cli_json_here(env, "keys", "retire", retired_kid)["current_kid"]
        assert successor not in (None, retired_kid)
        signed_by = {
            jwt.get_unverified_header(r.json()["access_token"])["kid"]
            for r in everywhere(secret=new_secret)
        }
        assert signed_by == {successor}
        published = on_every_worker(
            lambda: requests.get(server.base_url + "/.well-known/jwks.json", timeout=10),
            metrics,
            workers=2,
            endpoint="/.well-known/jwks.json",
        )
        for answer in published:
            kids = {k["kid"] for k in answer.json()["keys"]}
            assert successor in kids
            assert retired_kid not in kids

        deleted = cli_json_here(env, "clients", "delete", cid, "--yes")
        assert deleted == {"client_id": cid, "deleted": True}
        assert {r.status_code for r in settled(new_secret, statuses(401))} == {401}

    # The audit trail names who did what; it never holds a secret.
    events = cli_json_here(env, "audit", "--client", cid, "--limit", "100")["events"]
    actions = [e["action"] for e in events]
    for action in (
        "client.created",
        "client.disabled",
        "client.enabled",
        "client.secret_rotated",
        "client.updated",
        "client.deleted",
        "token.issued",
    ):
        assert action in actions, actions
    assert {e["actor"] for e in events if e["action"].startswith("client.")} == {"cli"}
    issued = [e for e in events if e["action"] == "token.issued"]
    assert all(e["sub"] == "user-1" and e["aud"] == AUD and e["jti"] for e in issued)
    dump = json.dumps(events)
    assert secret not in dump
    assert new_secret not in dump

    by_sub = cli_json_here(env, "audit", "--sub", "user-1", "--action", "token.issued")["events"]
    assert by_sub
    assert all(e["sub"] == "user-1" for e in by_sub)
    human = run_cli_here(env, "audit", "--limit", "5")
    assert human.returncode == 0
    assert "ACTION" in human.stdout


def test_lifecycle_errors_are_one_line(db_url: str, env_for: Callable[..., dict[str, str]]) -> None:
    env = env_for(db_url)
    cid = cli_json_here(env, "clients", "create", "--name", "x")["client_id"]
    for args in (
        ("clients", "disable", "nope"),
        ("clients", "enable", "nope"),
        ("clients", "delete", "nope"),
        ("clients", "rotate-secret", "nope"),
        ("clients", "update", "nope", "--name", "y"),
        ("clients", "update", cid),  # nothing to change
        ("clients", "update", cid, "--token-ttl", "0"),
        ("clients", "update", cid, "--scope", "a", "--clear-scopes"),
        ("clients", "update", cid, "--token-ttl", "5", "--default-token-ttl"),
        ("clients", "update", cid, "--allowed-claim", "exp"),
        ("audit", "--since", "not-a-date"),
    ):
        _one_line_error(run_cli_here(env, *args))
    # Nothing above changed the client.
    shown = cli_json_here(env, "clients", "show", cid)
    assert shown["name"] == "x"
    assert shown["enabled"] is True


def test_audit_retention_purges_old_events(settings: Settings) -> None:
    from authserver.scheduler import housekeeping
    from authserver.storage.sql.migrate import upgrade_to_head

    short = settings.replace(default_token_ttl=60, max_token_ttl=60, audit_retention=60)
    svc = container.build(short)
    try:
        upgrade_to_head(svc.db)
        with svc.unit_of_work():
            svc.clients.create(name="old")
        # Age every event past the retention period, then run the scheduler's housekeeping.
        from sqlalchemy import update

        from authserver.storage.sql.tables import AUDIT_EVENTS

        with svc.unit_of_work():
            conn = svc.db.connection()
            conn.execute(update(AUDIT_EVENTS).values(at=AUDIT_EVENTS.c.at - 3600))
        with svc.unit_of_work():
            svc.clients.create(name="new")
        assert housekeeping(svc) >= 1
        from authserver.audit.model import AuditQuery

        with svc.unit_of_work():
            names = [e.detail.get("name") for e in svc.audit.query(AuditQuery())]
        assert names == ["new"]
    finally:
        svc.close()
