"""``authserver audit`` and ``GET /admin/audit`` over one trail written by a real
``serve`` (batched ``token.issued`` records) and the real CLI, on SQLite and PostgreSQL:
every filter answers the same events in the same order, and paging by the last event's
id (``--before`` / ``before``) walks the whole listing, neither skipping nor repeating."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from authserver.settings import SINCE_FORMS
from tests.factories import issue_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN_TOKEN = "audit-queries-admin-token-7c21e9d04b5a3f68"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_the_cli_and_the_admin_api_answer_every_filter_and_page_alike(
    env_for: Callable[..., dict[str, str]], db_url: str
) -> None:
    env = env_for(db_url, AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN)
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess's own base URL
    a = cli_json_here(env, "clients", "create", "--name", "a")
    b = cli_json_here(env, "clients", "create", "--name", "b")
    with ServerProcess(env, workers=2) as server:
        for n in range(7):
            issue_token(server, (a["client_id"], a["client_secret"]), sub=f"user-{n % 2}")
        for _ in range(3):
            issue_token(server, (b["client_id"], b["client_secret"]), sub="user-0")
        time.sleep(1)  # the workers' batches (0.25 s) are on record

        def api(**params: Any) -> list[dict[str, Any]]:
            response = requests.get(
                f"{server.base_url}/admin/audit", params=params, headers=AUTH, timeout=10
            )
            assert response.status_code == 200, response.text
            return response.json()["events"]  # type: ignore[no-any-return]

        def cli(*args: str) -> list[dict[str, Any]]:
            return cli_json_here(env, "audit", *args)["events"]  # type: ignore[no-any-return]

        whole = api(limit=1000)
        assert len(whole) == 2 + 1 + 10  # two clients, the first key, ten tokens
        assert whole == cli("--limit", "1000")
        # Newest first (by the instant; the id breaks ties, and two workers' batches are
        # not written in the order their tokens were issued).
        shown = [e["at"] for e in whole]
        assert shown == sorted(shown, reverse=True)
        cases: list[tuple[dict[str, str], list[str], int]] = [
            ({"client_id": a["client_id"]}, ["--client", a["client_id"]], 8),
            ({"sub": "user-0"}, ["--sub", "user-0"], 7),
            ({"action": "token.issued"}, ["--action", "token.issued"], 10),
            ({"since": "1h"}, ["--since", "1h"], 13),
            ({"since": "2999-01-01"}, ["--since", "2999-01-01"], 0),
            ({"until": "2999-01-01"}, ["--until", "2999-01-01"], 13),
            ({"until": "1h"}, ["--until", "1h"], 0),
            (
                {"client_id": a["client_id"], "sub": "user-1", "limit": "2"},
                ["--client", a["client_id"], "--sub", "user-1", "--limit", "2"],
                2,
            ),
        ]
        for params, args, count in cases:
            answered = api(**params)
            assert len(answered) == count, params
            assert answered == cli(*args), params
        for size in (1, 4, 5):
            by_api: list[dict[str, Any]] = []
            by_cli: list[dict[str, Any]] = []
            page = api(limit=size)
            while page:
                by_api += page
                page = api(limit=size, before=page[-1]["id"])
            page = cli("--limit", str(size))
            while page:
                by_cli += page
                page = cli("--limit", str(size), "--before", str(page[-1]["id"]))
            assert by_api == whole, size
            assert by_cli == whole, size
        # Refused alike: an until that is no moment, a before that is no id.
        refused = requests.get(
            f"{server.base_url}/admin/audit?until=tomorrow", headers=AUTH, timeout=10
        )
        assert refused.status_code == 400
        assert refused.json()["error_description"].startswith("until must be POSIX seconds")
        refused = requests.get(f"{server.base_url}/admin/audit?before=x", headers=AUTH, timeout=10)
        assert refused.status_code == 400
        assert refused.json()["error_description"] == "before must be the id of an audit event"


def test_the_cli_and_the_admin_api_refuse_the_same_since_and_until(
    env_for: Callable[..., dict[str, str]], db_url: str
) -> None:
    """One parser (settings.parse_since) decides for both: the CLI read " 1h", "1h ",
    "1 h" and "2026-1-5" (a date's fields short) while the API refused them. A value with
    spaces around it is refused as ``audit --limit " 5"`` is, not trimmed."""
    env = env_for(db_url, AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN)
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess's own base URL
    cli_json_here(env, "clients", "create", "--name", "a")
    refused = [" 1h", "1h ", "1 h", "\t1h", "1h\n", " 2026-11-23", "2026-1-5", "2026-11-23T1:2:3"]
    with ServerProcess(env) as server:
        for value in refused:
            for name in ("since", "until"):
                response = requests.get(
                    f"{server.base_url}/admin/audit",
                    params={name: value},
                    headers=AUTH,
                    timeout=10,
                )
                assert response.status_code == 400, (name, value, response.text)
                assert response.json()["error_description"] == (
                    f"{name} must be POSIX seconds, {SINCE_FORMS}"
                )
                result = run_cli_here(env, "audit", f"--{name}", value)
                assert result.returncode == 1, (name, value, result.stdout)
                assert result.stdout == ""
                assert result.stderr.splitlines() == [
                    f"authserver: error: --{name}: expected {SINCE_FORMS}"
                ], (name, value)
        # What both take, they read alike.
        for value in ("1h", "2000-01-01", "2000-01-01T00:00:00Z"):
            answered = requests.get(
                f"{server.base_url}/admin/audit", params={"since": value}, headers=AUTH, timeout=10
            )
            assert answered.status_code == 200, (value, answered.text)
            assert len(answered.json()["events"]) == 2, value  # the key and the client
            assert (
                answered.json()["events"] == cli_json_here(env, "audit", "--since", value)["events"]
            ), value
