"""Shared fixtures.

Databases: every test that asks for ``services``/``app``/``db_url`` runs twice, on a real
SQLite file and on a real PostgreSQL (a fresh schema per test, so tests and pytest-xdist
workers never share one). PostgreSQL comes from ``AUTHSERVER_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it is unreachable the PostgreSQL leg
is skipped with a message, except under CI (``CI`` set) or
``AUTHSERVER_TEST_REQUIRE_POSTGRES=1``, where it fails (:func:`require_postgres`).

A test whose own body never reaches the database (request shapes, headers, documents)
takes ``@db_independent`` and runs on SQLite only; storage behaviour is covered on both
databases by ``tests/integration/contracts`` and by every test left on both.

Tests that start a process (``ServerProcess``, ``run_cli``, ``cli_json``, ``subprocess``,
directly or through a helper or fixture of their module) are marked ``slow`` at
collection: ``pytest -m "not slow"`` is the fast subset (docs/development.md).

Speed without losing the real thing: schemas are migrated by :func:`migrate` (Alembic
once per dialect and process, then a copy of that SQLite file or a replay of its
statements on PostgreSQL), and in-process
2048-bit RSA keys come from a per-run pool of real keys (:class:`KeyPool`).
"""

from __future__ import annotations

import ast
import atexit
import fcntl
import itertools
import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from sqlalchemy import event

from authserver import container
from authserver.clock import FixedClock
from authserver.container import Services
from authserver.keys import crypto
from authserver.keys.model import Kid
from authserver.settings import Settings
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import sqlite_file
from authserver.storage.sql.migrate import current_revision
from authserver.storage.sql.migrate import upgrade_to_head
from tests.helpers import missing

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("AUTHSERVER_TEST_POSTGRES_URL", DEFAULT_PG)
_pg_state: dict[str, Any] = {}


def _pg_available() -> str | None:
    """None when reachable, else the reason."""
    if "reason" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(
                PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
            ):
                pass
            _pg_state["reason"] = None
        except Exception as exc:
            _pg_state["reason"] = f"PostgreSQL at {PG_URL} unreachable: {type(exc).__name__}"
    return _pg_state["reason"]  # type: ignore[no-any-return]


def require_postgres() -> None:
    """Return when the test PostgreSQL is reachable; else :func:`tests.helpers.missing`:
    skipped, or failed under CI and with ``AUTHSERVER_TEST_REQUIRE_POSTGRES=1``."""
    reason = _pg_available()
    if reason:
        missing(reason, required_by="AUTHSERVER_TEST_REQUIRE_POSTGRES")


def pg_schema_url(schema: str) -> str:
    base = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated-nothing, empty database URL: a SQLite file, or a fresh PostgreSQL schema."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@contextmanager
def empty_database(kind: str, directory: Path, name: str = "authserver.db") -> Iterator[str]:
    """The URL of an empty database of *kind* (``sqlite``: the file *name* in *directory*,
    not made yet; ``postgresql``: a fresh schema, dropped afterwards), for a fixture of any
    scope."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / name}"
        return
    require_postgres()
    with fresh_pg_schema() as url:
        yield url


@contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """A URL for a new, empty PostgreSQL schema, dropped afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(schema)
    finally:
        _pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


#: The connection each process creates and drops its schemas on, by the pid that opened
#: it: a connection per statement made PostgreSQL start a backend twice per test (some
#: 12 ms each time on a loaded machine). A forked child opens its own and leaves its
#: parent's alone (closing it would end the parent's session on the shared socket).
_pg_admin_conns: dict[int, Any] = {}


def _pg_admin(statement: str) -> None:
    """Run *statement* on this process's admin connection, opened again when it is gone
    (a test that ends backends, a restarted server): then tried once more."""
    import psycopg

    pid = os.getpid()
    for attempt in (1, 2):
        conn = _pg_admin_conns.get(pid)
        if conn is None or conn.closed:
            plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
            conn = _pg_admin_conns[pid] = psycopg.connect(plain, autocommit=True)
            atexit.register(_close_pg_admin, pid)
        try:
            conn.execute(statement)
        except psycopg.OperationalError:
            conn.close()
            if attempt == 2:
                raise
        else:
            return


def _close_pg_admin(pid: int) -> None:
    if pid == os.getpid() and pid in _pg_admin_conns:
        _pg_admin_conns.pop(pid).close()


@pytest.fixture
def env_for(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Environment variables for a subprocess or Settings.from_env, in a temp dir."""

    def make(db_url: str, **extra: str) -> dict[str, str]:
        env = {
            "AUTHSERVER_DATABASE_URL": db_url,
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
        }
        env.update({k.upper() if k.startswith("AUTHSERVER_") else k: v for k, v in extra.items()})
        return env

    return make


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": db_url,
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
        }
    )


@pytest.fixture
def clock() -> FixedClock:
    import time

    return FixedClock(time.time())


# -- migrate once per run -----------------------------------------------------------------
#: Per dialect: the statements Alembic ran to bring the first empty database of the run to
#: head, as (SQL, parameters, executemany). Later empty databases replay them.
_MIGRATION_SQL: dict[str, list[tuple[str, Any, bool]]] = {}
#: A copy of this process's first SQLite file migrated by Alembic (``VACUUM INTO``); later
#: new SQLite files start as copies of it.
_SQLITE_TEMPLATE: list[Path] = []


def migrate(db: Database) -> None:
    """Bring *db* to head: the real ``upgrade_to_head`` for the first empty database of
    each dialect in this process; for every later one a copy of that first SQLite file
    (about 1 ms of CPU) or a replay of the statements Alembic ran (PostgreSQL; some ms
    instead of Alembic's ~50-100 ms per test; on SQLite the replay of its table rebuilds
    costs about 16 ms). A database that is not empty (a second ``make_services`` on it, or an
    older revision) gets the real upgrade. ``tests/integration/test_migrations.py`` checks
    that a copied or replayed schema is the migrated one."""
    dialect = db.engine.dialect.name
    path = _plain_sqlite_file(db)
    if path is not None and _SQLITE_TEMPLATE and not path.exists():
        # Owner-only, as authserver creates its SQLite files (storage/sql/engine.py).
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(_SQLITE_TEMPLATE[0].read_bytes())
        return
    recorded = _MIGRATION_SQL.get(dialect)
    if recorded is None:
        statements: list[tuple[str, Any, bool]] = []

        def record(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
            # Reads (Alembic's version checks, the advisory lock) and transaction control
            # change nothing; everything else builds the schema and its rows.
            if not sql.lstrip().upper().startswith(("SELECT", "BEGIN", "PRAGMA")):
                statements.append((sql, params, many))

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            before, _ = upgrade_to_head(db)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        if before is None:
            _MIGRATION_SQL[dialect] = statements
            if path is not None:
                _SQLITE_TEMPLATE.append(_sqlite_template(path))
        return
    if not _surely_empty(db) and current_revision(db) is not None:
        upgrade_to_head(db)
        return
    with db.engine.begin() as conn:
        for sql, params, _many in recorded:
            conn.exec_driver_sql(sql, params)


def _plain_sqlite_file(db: Database) -> Path | None:
    """The file of a SQLite database named by a plain path (no URI, no query)."""
    path = sqlite_file(db.url)
    return Path(path) if path and not db.engine.url.query else None


def _sqlite_template(migrated: Path) -> Path:
    """A compact, self-contained copy of *migrated* (no -wal file needed) in a directory
    of this process, removed at its exit."""
    folder = Path(tempfile.mkdtemp(prefix="authserver-test-schema-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    template = folder / "head.db"
    conn = sqlite3.connect(migrated)
    try:
        conn.execute("VACUUM INTO ?", (str(template),))
    finally:
        conn.close()
    return template


def _surely_empty(db: Database) -> bool:
    """A SQLite file that does not exist yet is empty, without opening it."""
    database = db.engine.url.database
    return db.engine.dialect.name == "sqlite" and bool(database) and not Path(database).exists()


def make_services(settings: Settings, clock: Any = None) -> Services:
    """Services on a migrated database with a current signing key."""
    svc = container.build(settings, clock=clock)
    migrate(svc.db)
    with svc.unit_of_work():
        svc.keys.ensure_current()
    return svc


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = make_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def app(services: Services) -> Any:
    from authserver.web.app import create_app

    return create_app(services=services)


@pytest.fixture
def http(app: Any) -> Any:
    """Flask's test client (real WSGI, no network)."""
    return app.test_client()


@pytest.fixture
def register(services: Services) -> Callable[..., tuple[str, str]]:
    """Register a client through the service; returns (client_id, client_secret)."""

    def make(**kwargs: Any) -> tuple[str, str]:
        kwargs.setdefault("name", "test backend")
        with services.unit_of_work():
            client, secret = services.clients.create(**kwargs)
        assert secret is not None
        return str(client.client_id), secret

    return make


class KeyPool:
    """Real RSA keys from the real ``crypto.generate``, made once per run and handed out in
    order within each test (so keys are unique within a test, as they must be).

    Under pytest-xdist the workers share them (:func:`_shared_key_pools`): the first worker
    to need the n-th key generates it and writes its PEM to the run's temporary directory,
    and the others read it back (0.2 ms without cryptography's check of the RSA key,
    which the key it made itself passed; generating is 50-100 ms, and each worker made
    the same forty-odd keys)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._real = crypto.generate
        self._keys: list[tuple[RSAKey, Kid]] = []
        self.shared: Path | None = None

    def get(self, index: int) -> tuple[RSAKey, Kid]:
        while len(self._keys) <= index:
            self._keys.append(self._make(len(self._keys)))
        return self._keys[index]

    def _make(self, index: int) -> tuple[RSAKey, Kid]:
        if self.shared is None:
            return self._real(2048)
        path = self.shared / f"{self._name}-{index}.pem"
        with open(self.shared / f"{self._name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one worker generates it, the others wait
            if not path.exists():
                key, _ = self._real(2048)
                staging = path.with_suffix(f".{os.getpid()}")
                staging.write_bytes(key.as_pem(private=True))
                staging.rename(path)
        native = serialization.load_pem_private_key(
            path.read_bytes(), None, unsafe_skip_rsa_key_validation=True
        )
        # As crypto.generate builds it: the same parameters, kid and thumbprint.
        key = RSAKey.import_key(native, parameters={"use": "sig", "alg": crypto.ALG})
        kid = Kid(key.thumbprint())
        key.ensure_kid()
        return key, kid


KEY_POOL = KeyPool("generated")
#: The keys a test puts in a store itself (``tests.factories.signing_key_sets``): a pool of
#: their own, so a key the code under test generates (from :data:`KEY_POOL`) is never one
#: already in the store. Sharing one pool made the key schedule's "rotate" write a key
#: whose kid the store held, which a property test took for a schedule that never
#: converges.
PRESET_KEY_POOL = KeyPool("preset")


@pytest.fixture(scope="session", autouse=True)
def _shared_key_pools(request: pytest.FixtureRequest, tmp_path_factory: Any) -> None:
    """Under pytest-xdist, the key pools of the workers share their keys through the run's
    temporary directory (each worker's base directory is a folder of it)."""
    if _worker_count(request.config) < 2:
        return
    folder = tmp_path_factory.getbasetemp().parent / "key-pool"
    folder.mkdir(exist_ok=True)
    KEY_POOL.shared = PRESET_KEY_POOL.shared = folder


@pytest.fixture(autouse=True)
def pooled_keygen(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """2048-bit key generation costs 40-200 ms and nearly every test with ``services``
    makes a key: in-process, 2048-bit keys come from :class:`KeyPool`, and a stored key
    is parsed once per process (:func:`_load_private_once`). Other sizes, tests marked
    ``real_keygen`` and ``authserver`` subprocesses generate their own."""
    if request.node.get_closest_marker("real_keygen"):
        return
    counter = itertools.count()
    real = KEY_POOL._real

    def generate(key_size: int) -> tuple[RSAKey, Kid]:
        if key_size != 2048:
            return real(key_size)
        return KEY_POOL.get(next(counter))

    monkeypatch.setattr(crypto, "generate", generate)
    monkeypatch.setattr(crypto, "load_private", _load_private_once)


#: Keys parsed by the real ``crypto.load_private``, by (PEM, passphrase, kid).
_PARSED: dict[tuple[bytes, str | None, str], RSAKey] = {}
_real_load_private = crypto.load_private


def _load_private_once(pem: bytes, passphrase: str | None, kid: str) -> RSAKey:
    """``crypto.load_private``, for real the first time a process sees these arguments
    and from memory after that: loading a PEM checks the RSA key (20-60 ms), and the
    pool's keys are stored and loaded again by test after test (``crypto.load_private``
    remembers the last 8 keys a process parsed, fewer than the pool holds). A result depends on its
    arguments only; failures (a wrong passphrase, a corrupt or mismatched key) are never
    remembered, so they are raised each time."""
    args = (pem, passphrase, kid)
    if args not in _PARSED:
        _PARSED[args] = _real_load_private(pem, passphrase, kid)
    return _PARSED[args]


# -- the fast subset: ``pytest -m "not slow and not postgres"`` ---------------------------
#: Names that start a process: a test that reaches one of them, directly or through a
#: function or fixture of its own module, is marked ``slow`` at collection.
_PROCESS_NAMES = frozenset(
    {"ServerProcess", "run_cli", "cli_json", "subprocess", "Popen", "run_demo"}
)
#: Names that reach PostgreSQL whatever the test's parameters: a test that reaches one of
#: them the same way is marked ``postgres`` (the PostgreSQL-only tests, which the database
#: parameter does not tell apart).
_POSTGRES_NAMES = frozenset({"require_postgres", "fresh_pg_schema"})
_reaching: dict[tuple[str, frozenset[str]], frozenset[str]] = {}
_uses: dict[str, dict[str, set[str]]] = {}


def _functions_reaching(path: Path, names: frozenset[str]) -> frozenset[str]:
    """The functions of the module at *path* that use one of *names*, transitively within
    the module (its helpers, its fixtures by parameter name)."""
    key = (str(path), names)
    if key not in _reaching:
        uses = _module_uses(path)
        reaching = {name for name, used in uses.items() if used & names}
        while True:  # callers of those reach them too
            more = {name for name, used in uses.items() if used & reaching} - reaching
            if not more:
                break
            reaching |= more
        _reaching[key] = frozenset(reaching)
    return _reaching[key]


def _module_uses(path: Path) -> dict[str, set[str]]:
    """For each function of the module at *path* (nested ones and methods too; functions
    of the same name pooled), the names, attribute names and parameter names it uses,
    those of the functions nested in it included. One walk of the module, once per
    process: walking each function again for every function around it, and each module
    for both name sets, cost some 4 s per xdist worker on a slow machine."""
    key = str(path)
    if key not in _uses:
        uses: dict[str, set[str]] = {}

        def names_in(node: ast.AST) -> set[str]:
            found: set[str] = set()
            stack = list(ast.iter_child_nodes(node))
            while stack:
                child = stack.pop()
                if isinstance(child, ast.FunctionDef):
                    inner = names_in(child)
                    uses.setdefault(child.name, set()).update(
                        inner, (a.arg for a in child.args.args)
                    )
                    found |= inner
                    continue
                if isinstance(child, ast.Name):
                    found.add(child.id)
                elif isinstance(child, ast.Attribute):
                    found.add(child.attr)
                stack.extend(ast.iter_child_nodes(child))
            return found

        names_in(ast.parse(path.read_text()))
        _uses[key] = uses
    return _uses[key]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, plus two. Tests of a few seconds to a minute wait
    on a real server's timers or on a process they started (rotations, outages, Node's
    test runner): the extra workers run them beside the CPU-bound tests
    (:func:`_queued_for_workers`)."""
    return (os.cpu_count() or 1) + 2


def _needs_postgres(item: pytest.Function) -> bool:
    """The PostgreSQL leg of a test parametrized over databases, or a test that needs
    PostgreSQL whatever its parameters (by its name, or by what it calls): marked
    ``postgres``, so ``-m "not postgres"`` leaves them out."""
    params = getattr(item, "callspec", None) and item.callspec.params.values()
    if params and "postgresql" in params:
        return True
    if "postgres" in item.originalname:
        return True
    if params and "sqlite" in params:
        return False  # a SQLite leg; a helper it shares with the PostgreSQL leg may reach it
    return item.originalname in _functions_reaching(item.path, _POSTGRES_NAMES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if _needs_postgres(item):
            item.add_marker(pytest.mark.postgres)
        if item.get_closest_marker("slow"):
            continue
        if item.originalname in _functions_reaching(item.path, _PROCESS_NAMES):
            item.add_marker(pytest.mark.slow)
    items[:] = _queued_for_workers(items, _worker_count(config))


def _worker_count(config: pytest.Config) -> int:
    workerinput = getattr(config, "workerinput", None)  # set in a pytest-xdist worker
    return int(workerinput["workercount"]) if workerinput else 1


def _queued_for_workers(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The order the workers should run *items* in.

    pytest-xdist's ``worksteal`` hands each of its *workers* one contiguous share of the
    list (``len(pending) // workers left`` items each, in turn), and idle workers later
    take the ends of the others' queues. So the list is built as one queue per worker:

    * the tests that mostly wait on real time (``waits``) go to half of the queues, first
      in each: they overlap the CPU-bound tests of the other half instead of each other,
      and none of them starts late;
    * the tests that start processes (``slow``) come next, to the queues without
      ``waits`` tests first, so the cores are busy from the start;
    * the rest fills every queue to its share, short tests last, where stealing evens
      out the finish.

    The first two groups are dealt a file at a time (to the queue with the fewest tests),
    so a module-scoped fixture (a server, a virtualenv) is set up once, not once per
    worker; the rest is cut into contiguous runs. Within each group, each file keeps its
    order.
    """
    if workers < 2:
        return sorted(items, key=lambda item: item.get_closest_marker("slow") is None)
    shares, left = [], len(items)
    for remaining in range(workers, 0, -1):
        shares.append(left // remaining)
        left -= shares[-1]
    waiting_queues = (workers + 1) // 2
    queues: list[list[pytest.Item]] = [[] for _ in range(workers)]

    def deal(group: list[pytest.Item], candidates: list[int]) -> None:
        files: dict[Any, list[pytest.Item]] = {}
        for item in group:
            files.setdefault(item.path, []).append(item)
        for tests in files.values():
            room = [q for q in candidates if len(queues[q]) + len(tests) <= shares[q]]
            if not room:  # a file larger than any share's room: its tests one by one
                deal_each(tests)
                continue
            # The fewest tests; on a tie, the earlier candidate (no waiting tests first).
            queues[min(room, key=lambda q: (len(queues[q]), candidates.index(q)))].extend(tests)

    def deal_each(group: list[pytest.Item]) -> None:
        for item in group:
            queues[next(q for q in range(workers) if len(queues[q]) < shares[q])].append(item)

    waits: list[pytest.Item] = []
    slow: list[pytest.Item] = []
    rest: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("waits"):
            waits.append(item)
        else:
            (slow if item.get_closest_marker("slow") else rest).append(item)
    deal(waits, list(range(waiting_queues)))
    deal(slow, list(range(waiting_queues, workers)) + list(range(waiting_queues)))
    deal_each(rest)  # the shares add up to len(items): there is always room
    return [item for queue in queues for item in queue]


#: Run a test on SQLite only: for tests whose ``services``/``app`` never reach the
#: database in the test itself (request shapes, headers, documents), so a PostgreSQL leg
#: would test nothing SQLite does not. Storage behaviour is covered per database by the
#: contract suites and by the tests left on both.
db_independent = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def rsa_private_key() -> rsa.RSAPrivateKey:
    """A session-cached RSA key (key generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
