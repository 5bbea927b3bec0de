"""The production topology with real processes: two `authserver serve` instances (two
workers each) on two ports, one PostgreSQL database, the SQL key store, one issuer (as
behind a shared reverse proxy); docker-compose.yml runs the same topology. On SQLite, the
single-host variant: one database file and one key directory shared by both."""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
import requests
from psycopg import sql
from sqlalchemy.engine import make_url
from token_status_list import BitArray

from authserver.storage.sql.notify import APPLICATION_NAME
from tests.conftest import PG_URL
from tests.conftest import require_postgres
from tests.factories import issue_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import on_every_worker

ISSUER = "https://auth.example.com"
ADMIN = "admin-token-for-multi-instance-test"
AUD = "https://sync.example"


@pytest.fixture
def instances(
    db_url: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> Iterator[tuple[dict[str, str], ServerProcess, ServerProcess]]:
    if db_url.startswith("postgresql"):
        # Production: instances share only the database; keys live in it too.
        store = {"AUTHSERVER_KEY_STORE": "sql", "AUTHSERVER_KEYS_DIR": str(tmp_path / "unused")}
    else:
        # One host: a shared SQLite file and a shared key directory.
        store = {"AUTHSERVER_KEY_STORE": "file", "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys")}
    env = env_for(db_url, AUTHSERVER_ISSUER=ISSUER, AUTHSERVER_ADMIN_TOKEN=ADMIN, **store)
    # Each instance's per-worker metric files apart, to show which worker answered.
    for name in ("a", "b"):
        (tmp_path / f"metrics-{name}").mkdir()
    a = ServerProcess(
        {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics-a")},
        workers=2,
        log_path=tmp_path / "a.log",
    )
    b = ServerProcess(
        {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics-b")},
        workers=2,
        log_path=tmp_path / "b.log",
    )
    # Both start at once on an empty database: one schema, one first key.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(a.start), pool.submit(b.start)]:
            future.result()
    try:
        yield env, a, b
    finally:
        a.stop()
        b.stop()


def _verify(token: str, server: ServerProcess) -> dict[str, object]:
    jwks = jwt.PyJWKSet.from_dict(
        requests.get(server.base_url + "/.well-known/jwks.json", timeout=10).json()
    )
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, object] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=AUD, issuer=ISSUER
    )
    return claims


@pytest.mark.slow
def test_two_instances_share_one_database(
    instances: tuple[dict[str, str], ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    env, a, b = instances
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = cli_json_here(env, "clients", "create", "--name", "backend", "--audience", AUD)
    cid, secret = created["client_id"], created["client_secret"]

    # One first key, created once although both instances started on an empty store.
    keys = requests.get(a.base_url + "/admin/keys", headers=admin, timeout=10).json()["keys"]
    assert [k["state"] for k in keys] == ["current"]

    # Tokens from either instance verify with the other's JWKS.
    assert _verify(issue_token(a, (cid, secret), sub="u-a"), b)["sub"] == "u-a"
    assert _verify(issue_token(b, (cid, secret), sub="u-b"), a)["sub"] == "u-b"

    # Rotation requested on both instances at the same moment happens once.
    def rotate(server: ServerProcess) -> requests.Response:
        return requests.post(server.base_url + "/admin/keys/rotate", headers=admin, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(rotate, [a, b]))
    assert all(r.status_code in (200, 201) for r in results), [r.text for r in results]
    assert sorted(r.json()["created"] for r in results) == [False, True]
    assert results[0].json()["kid"] == results[1].json()["kid"]
    next_kid = results[0].json()["kid"]
    time.sleep(1.5)  # AUTHSERVER_KEY_CACHE_SECONDS
    for server, name in ((a, "a"), (b, "b")):
        # Every worker of both instances publishes it.
        answers = on_every_worker(
            lambda server=server: requests.get(
                server.base_url + "/.well-known/jwks.json", timeout=10
            ),
            tmp_path / f"metrics-{name}",
            workers=2,
            endpoint="/.well-known/jwks.json",
        )
        for published in answers:
            assert next_kid in [k["kid"] for k in published.json()["keys"]]
    states = [
        k["state"]
        for k in requests.get(b.base_url + "/admin/keys", headers=admin, timeout=10).json()["keys"]
    ]
    assert sorted(states) == ["current", "next"]

    # A revocation through one instance is seen by the other at once.
    token = issue_token(a, (cid, secret), sub="u-revoked")
    assert (
        requests.post(
            b.base_url + "/revoke", auth=(cid, secret), data={"token": token}, timeout=10
        ).status_code
        == 200
    )
    for server in (a, b):
        body = requests.post(
            server.base_url + "/introspect", auth=(cid, secret), data={"token": token}, timeout=10
        ).json()
        assert body == {"active": False}

    # Disabling the client through one instance is refused by every worker of the other.
    assert (
        requests.post(
            a.base_url + f"/admin/clients/{cid}/disable", headers=admin, timeout=10
        ).status_code
        == 200
    )
    refused = on_every_worker(
        lambda: requests.post(
            b.base_url + "/token",
            auth=(cid, secret),
            timeout=10,
            data={"grant_type": "client_credentials"},
        ),
        tmp_path / "metrics-b",
        workers=2,
    )
    assert {r.status_code for r in refused} == {401}


@pytest.mark.slow
def test_every_worker_of_every_instance_refuses_a_change_within_a_second(
    instances: tuple[dict[str, str], ServerProcess, ServerProcess], db_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: cached clients are dropped by LISTEN/NOTIFY, not re-read per request.
    A client disabled and a secret rotated by another process (the CLI, from the test's
    process) are refused by
    every worker of both instances one second later."""
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite checks the version per request")
    env, a, b = instances
    disabled = cli_json_here(env, "clients", "create", "--name", "to disable")
    rotated = cli_json_here(env, "clients", "create", "--name", "to rotate")
    grant = {"grant_type": "client_credentials"}

    def post(server: ServerProcess, cid: str, secret: str) -> int:
        with requests.Session() as session:  # a new connection: any worker may answer
            response = session.post(
                server.base_url + "/token", data=grant, auth=(cid, secret), timeout=10
            )
        return response.status_code

    # Every worker caches both clients.
    for server, name in ((a, "a"), (b, "b")):
        for client in (disabled, rotated):
            answers = on_every_worker(
                lambda server=server, c=client: post(server, c["client_id"], c["client_secret"]),
                tmp_path / f"metrics-{name}",
                workers=2,
            )
            assert set(answers) == {200}
    # Each worker listens (one connection per worker).
    for server, name in ((a, "a"), (b, "b")):
        assert server.log_path is not None
        assert server.log_path.read_text().count("change feed listening") >= 2, name

    cli_json_here(env, "clients", "disable", disabled["client_id"])
    new_secret = cli_json_here(env, "clients", "rotate-secret", rotated["client_id"])[
        "client_secret"
    ]
    changed = time.monotonic()
    time.sleep(max(0.0, 1.0 - (time.monotonic() - changed)))

    for server, name in ((a, "a"), (b, "b")):
        metrics = tmp_path / f"metrics-{name}"
        refused = on_every_worker(
            lambda server=server: post(server, disabled["client_id"], disabled["client_secret"]),
            metrics,
            workers=2,
        )
        assert set(refused) == {401}, name
        old = on_every_worker(
            lambda server=server: post(server, rotated["client_id"], rotated["client_secret"]),
            metrics,
            workers=2,
        )
        assert set(old) == {401}, name
        new = on_every_worker(
            lambda server=server: post(server, rotated["client_id"], new_secret),
            metrics,
            workers=2,
        )
        assert set(new) == {200}, name


@pytest.mark.slow
def test_status_list_entries_are_never_shared_and_revocations_are_exact(
    instances: tuple[dict[str, str], ServerProcess, ServerProcess],
) -> None:
    """Every worker of every instance leases its own blocks of indices: tokens issued at
    once through both instances name distinct (list, index) entries. Revoked through
    either instance (RFC 7009, and every live token of a user), exactly those bits are
    set, and no other, in the lists as each instance serves them (verified with PyJWT
    against its JWKS, read with the independent token-status-list package)."""
    env, a, b = instances
    created = cli_json_here(env, "clients", "create", "--name", "backend", "--audience", AUD)
    credentials = (created["client_id"], created["client_secret"])

    def issue(n: int) -> list[str]:
        server = (a, b)[n % 2]
        return [issue_token(server, credentials, sub=f"user-{n % 5}") for _ in range(20)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        tokens = [t for batch in pool.map(issue, range(16)) for t in batch]
    claims: list[dict[str, Any]] = [_verify(token, b) for token in tokens]
    entries = [
        (c["status"]["status_list"]["uri"], c["status"]["status_list"]["idx"]) for c in claims
    ]
    assert len(set(entries)) == len(entries) == 320

    revoked = set(range(0, 320, 23))
    for n in sorted(revoked):
        response = requests.post(
            (a, b)[n % 2].base_url + "/revoke",
            auth=credentials,
            data={"token": tokens[n]},
            timeout=10,
        )
        assert response.status_code == 200
    # Every token of user-3, once their issuance is on record (batched per worker).
    users = [c["sub"] for c in claims]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        on_record = cli_json_here(
            env, "audit", "--action", "token.issued", "--sub", "user-3", "--json"
        )
        if len(on_record["events"]) == users.count("user-3"):
            break
        time.sleep(0.1)
    revoke_user = requests.post(
        b.base_url + "/admin/tokens/revoke",
        headers={"Authorization": f"Bearer {ADMIN}"},
        json={"sub": "user-3"},
        timeout=30,
    )
    assert revoke_user.status_code == 200, revoke_user.text
    revoked |= {n for n, user in enumerate(users) if user == "user-3"}

    for server in (a, b):
        jwks = jwt.PyJWKSet.from_dict(
            requests.get(server.base_url + "/.well-known/jwks.json", timeout=10).json()
        )
        lists = {}
        for uri in {uri for uri, _ in entries}:
            served = requests.get(server.base_url + uri[len(ISSUER) :], timeout=10)
            assert served.status_code == 200
            kid = jwt.get_unverified_header(served.text)["kid"]
            key = next(k for k in jwks.keys if k.key_id == kid)
            body = jwt.decode(
                served.text, key.key, algorithms=["RS256"], options={"verify_aud": False}
            )
            lists[uri] = BitArray.load(body["status_list"])
        shown = {n for n, (uri, idx) in enumerate(entries) if lists[uri].get(idx)}
        assert shown == revoked, server.base_url


@pytest.fixture
def own_database() -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL database of its own, not a schema of the shared one: its
    sessions (the instances' listening connections) are told from every other test's by
    ``datname``. (SQLAlchemy URL, database name); dropped afterwards."""
    require_postgres()
    name = f"multi_{secrets.token_hex(6)}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False), name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.mark.slow
def test_postgres_listening_connections_cut_never_leave_a_worker_serving_a_disabled_client(
    own_database: tuple[str, str], env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """The listening connection of every worker of both instances is cut
    (``pg_terminate_backend``, as a PostgreSQL restart or a network cut would) and a client
    disabled at once, while the feeds reconnect: every worker refuses it a second later
    (per-request reads until its feed is back), three times over. Each cut is logged and
    each feed is back, listening again, after it."""
    url, database = own_database
    env = env_for(
        url,
        AUTHSERVER_ISSUER=ISSUER,
        AUTHSERVER_KEY_STORE="sql",
        # Refusals are what this test sends: none of them may turn into a 429.
        AUTHSERVER_AUTH_FAILURES_PER_CLIENT="off",
        AUTHSERVER_AUTH_FAILURES_PER_ADDRESS="off",
    )
    servers = {}
    for name in ("a", "b"):
        (tmp_path / f"metrics-{name}").mkdir()
        servers[name] = ServerProcess(
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{name}")},
            workers=2,
            log_path=tmp_path / f"{name}.log",
        )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(server.start) for server in servers.values()]:
            future.result()
    grant = {"grant_type": "client_credentials"}

    def post(server: ServerProcess, client: dict[str, str]) -> int:
        with requests.Session() as session:  # a new connection: any worker may answer
            response = session.post(
                server.base_url + "/token",
                data=grant,
                auth=(client["client_id"], client["client_secret"]),
                timeout=10,
            )
        return response.status_code

    def on_every_worker_of_both(client: dict[str, str]) -> set[int]:
        answers: set[int] = set()
        for name, server in servers.items():
            answers |= set(
                on_every_worker(
                    lambda server=server: post(server, client),
                    tmp_path / f"metrics-{name}",
                    workers=2,
                )
            )
        return answers

    cuts = 3
    try:
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as admin:
            for _ in range(cuts):
                client = cli_json_here(env, "clients", "create", "--name", "backend")
                assert on_every_worker_of_both(client) == {200}  # cached by every worker
                cut = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = %s",
                    (database, APPLICATION_NAME),
                ).fetchall()
                assert cut == [(True,)] * 4  # one per worker
                cli_json_here(env, "clients", "disable", client["client_id"])
                time.sleep(1.0)
                assert on_every_worker_of_both(client) == {401}
    finally:
        for server in servers.values():
            server.stop()
    for name, server in servers.items():
        assert server.log_path is not None
        log = server.log_path.read_text()
        assert log.count("change feed disconnected") == 2 * cuts, name
        assert log.count("change feed listening") == 2 * (1 + cuts), name
