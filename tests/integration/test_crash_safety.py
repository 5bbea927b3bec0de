"""Crash safety: ``kill -9`` at any point of a key rotation or a client creation (issue 6).

"``kill -9`` at any point of a key rotation or a client creation leaves a consistent state
on restart (exactly one signing key; no half-written client)."

No hook in the product tells the test where a process is: each round starts a real
process, waits until it is ready (services built), lets it work for a random time and
SIGKILLs it, so over the rounds the kill lands all over the operation. The processes are
forked from a :class:`Zygote`, one per test, that has imported everything once (an
interpreter start-up and the imports cost most of a second of CPU; the fork, a few ms); a
forked process builds its own services and dies by SIGKILL like any other, no cleanup of
its own running. After every kill the CLI's code (run in the test's process, on a fresh
container) and a restart must find a consistent store:

* keys: ``keys list --json`` works; after a restart (``serve``'s preparation) exactly one key
  signs now *and at every future instant* (the signing windows still chain: a crash between
  writing a new key and shortening the current key's window must not leave two keys that
  will both be current once the new one activates); every key that is or will be signing
  has readable private key material; on the file store every ``<kid>.json`` is a key and no
  temporary file is taken for one.
* clients: ``clients list --json`` works, every stored row is complete, every client whose
  creation reported success authenticates with the secret it printed, and a new creation
  works.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from authserver import container
from authserver.cli.serve import prepare
from authserver.clients import secrets as client_secrets
from authserver.keys.model import KeyState
from authserver.keys.model import SigningKey
from authserver.settings import Settings
from tests.helpers import cli_json
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: Kills per test (each costs a fork and the worker's own set-up).
ROUNDS = int(os.environ.get("AUTHSERVER_TEST_CRASH_ROUNDS", "10"))

#: The zygote: imports everything a worker needs, prints "zygote ready", then for each
#: request (a JSON line on stdin: the worker, its arguments, the files that take its stdout
#: and stderr) forks a child that runs the worker and prints "pid <pid>"; once the child
#: has ended (killed or not) it prints "exit <pid> <status>" (a negative status: killed by
#: that signal). It reaps a child only when the next request (or the end of stdin) comes,
#: so the pid the test kills is always its still unreaped child, never a reused one. The
#: zygote builds nothing before forking (no engine, no connection, no thread): each child
#: builds its own services, as a server's forked workers do.
#:
#: The workers:
#:
#: * ``key`` drives the key lifecycle as fast as it can: rotate, then retire the scheduled
#:   key or the current one (emergency path, which creates a key that signs at once), then
#:   tick.
#: * ``cli`` runs one ``authserver`` command between a "ready" and a "done" line: a kill
#:   timed from "ready" lands in the command's own work (settings, connection, schema, the
#:   operation, its output), and the output tells afterwards whether it landed before the
#:   command ended.
ZYGOTE = textwrap.dedent(
    r"""
    import json
    import os
    import random
    import sys
    import threading
    import time
    import traceback

    import alembic.command
    import alembic.config
    import alembic.runtime.migration
    import alembic.script
    import psycopg
    import sqlalchemy.dialects.postgresql.psycopg
    import sqlalchemy.dialects.sqlite

    import authserver.oauth.metadata
    from authserver import container
    from authserver.cli import cli
    from authserver.cli.serve import prepare
    from authserver.settings import Settings


    def key_worker():
        settings = Settings.from_env()
        prepare(settings)
        svc = container.build(settings)
        with svc.unit_of_work():
            svc.keys.views()  # connected
        print("ready", flush=True)
        rnd = random.Random()
        while True:
            with svc.unit_of_work():
                result = svc.keys.rotate()
            with svc.unit_of_work():
                views = svc.keys.views()
            current = next(v.key.kid for v in views if v.state.value == "current")
            victim = result.key.kid if rnd.random() < 0.5 else current
            with svc.unit_of_work():
                svc.keys.retire(victim)
            with svc.unit_of_work():
                svc.keys.tick()


    def cli_worker(args):
        print("ready", flush=True)
        started = time.monotonic()
        cli.main(args=args, prog_name="authserver", standalone_mode=False)
        print(f"done {time.monotonic() - started:.6f}", flush=True)


    def child(request):
        # The child's own stdout and stderr, and no stdin (the zygote's is the test's).
        for fd, path in ((1, request["out"]), (2, request["err"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        code = 1
        try:
            if request["worker"] == "key":
                key_worker()
            else:
                cli_worker(request["args"])
            code = 0
        except SystemExit as exc:  # as the interpreter would exit
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)


    assert threading.active_count() == 1, threading.enumerate()
    print("zygote ready", flush=True)
    unreaped = None
    for line in sys.stdin:
        if unreaped is not None:
            os.waitpid(unreaped, 0)
            unreaped = None
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(request)
        unreaped = pid
        print(f"pid {pid}", flush=True)
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        status = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        print(f"exit {pid} {status}", flush=True)
    if unreaped is not None:
        os.waitpid(unreaped, 0)
    # Nothing left to clean up: skip the interpreter's teardown of every imported module (a
    # fifth of a second of CPU).
    sys.stdout.flush()
    os._exit(0)
    """
)


class Zygote:
    """A :data:`ZYGOTE` process with *env* (its own process group) and its workers' output
    files in *workdir*; :meth:`close` stops it, by its pid."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        workdir.mkdir()
        self.workdir = workdir
        self._errors = workdir / "zygote.err"
        self._buffer = b""
        self._spawned = 0
        self.worker: Worker | None = None
        with self._errors.open("wb") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE],
                env=_clean_env(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                bufsize=0,
                start_new_session=True,
            )
        try:
            line = self.line(timeout=60)
            assert line == "zygote ready", f"zygote did not start: {line!r} {self.errors()}"
        except BaseException:
            self.close()
            raise

    def errors(self) -> str:
        return self._errors.read_text()[-3000:]

    def line(self, timeout: float) -> str | None:
        """The zygote's next line, or None if none comes within *timeout* seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                return None
            chunk = os.read(fd, 4096)
            assert chunk, f"the zygote exited ({self.proc.wait(10)}): {self.errors()}"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def spawn(self, worker: str, *args: str) -> Worker:
        """Fork a child running *worker* (``key`` or ``cli`` ARGS)."""
        assert self.worker is None or self.worker.returncode is not None, "one at a time"
        assert self.proc.stdin is not None
        self._spawned += 1
        out = self.workdir / f"{self._spawned}.out"
        err = self.workdir / f"{self._spawned}.err"
        out.touch()  # there to be read before the child has opened them
        err.touch()
        request = {"worker": worker, "args": list(args), "out": str(out), "err": str(err)}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        line = self.line(timeout=30)
        if line is None or not line.startswith("pid "):
            pytest.fail(f"the zygote did not fork: {line!r} {self.errors()}")
        self.worker = Worker(self, int(line.split()[1]), out, err)
        return self.worker

    def close(self) -> None:
        try:
            if self.worker is not None:
                self.worker.stop()
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.close()  # it reaps its last child and exits
                self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, AssertionError, OSError):
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # it and any child of its own
                self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@dataclass
class Worker:
    """A child of the zygote: the test may SIGKILL it (its pid is the zygote's unreaped
    child until the zygote reports its end and is sent its next request)."""

    zygote: Zygote
    pid: int
    out_path: Path
    err_path: Path
    returncode: int | None = None

    def poll(self, timeout: float = 0.0) -> int | None:
        """Its exit status (negative: killed by that signal), waiting up to *timeout*
        seconds for it; None while it runs."""
        if self.returncode is None:
            line = self.zygote.line(timeout)
            if line is not None:
                word, pid, status = line.split()
                assert (word, int(pid)) == ("exit", self.pid), line
                self.returncode = int(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        code = self.poll(timeout)
        assert code is not None, f"worker {self.pid} still running after {timeout}s"
        return code

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.wait(timeout=10)

    def stop(self) -> None:
        """Kill it if it still runs."""
        if self.poll() is None:
            self.kill()

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()[-3000:]


@pytest.fixture
def start_zygote(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Zygote]]:
    """Start a :class:`Zygote` for an environment; every one started is stopped when the
    test ends, failed or not."""
    started: list[Zygote] = []

    def start(env: dict[str, str]) -> Zygote:
        zygote = Zygote(env, tmp_path / f"zygote-{len(started)}")
        started.append(zygote)
        return zygote

    yield start
    for zygote in started:
        zygote.close()


@dataclass
class CliRun:
    out: str  # what the command printed (without the worker's own lines)
    killed: bool
    inside: bool  # killed after "ready" and before "done": mid-command
    seconds: float | None  # the command's own time, from "ready" to "done"


def _run_cli_killed(zygote: Zygote, args: list[str], delay: float) -> CliRun:
    """Run ``authserver ARGS`` in a ``cli`` worker of *zygote*; SIGKILL it *delay* seconds
    after it is ready unless it has finished by then."""
    worker = zygote.spawn("cli", *args)
    try:
        _wait_ready(worker)
        killed = _kill_after(worker, delay)
        worker.wait(timeout=30)
    finally:
        worker.stop()
    lines = worker.stdout().splitlines()
    done = bool(lines) and lines[-1].startswith("done ")
    if not killed:
        assert worker.returncode == 0, f"{args} failed: {worker.stderr()}"
        assert done, lines
    seconds = float(lines[-1].split()[1]) if done else None
    assert lines[0] == "ready", lines
    printed = "\n".join(lines[1:-1] if done else lines[1:])
    return CliRun(printed, killed, killed and not done, seconds)


def _command_seconds(zygote: Zygote, args: list[str]) -> float:
    """How long the command's work takes, undisturbed (kills are spread over it)."""
    seconds = _run_cli_killed(zygote, args, delay=120).seconds
    assert seconds is not None
    return seconds


def _env(db_url: str, tmp_path: Path, key_store: str) -> dict[str, str]:
    return {
        "AUTHSERVER_DATABASE_URL": db_url,
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
        "AUTHSERVER_ISSUER": "http://localhost:8000",
        "AUTHSERVER_KEY_STORE": key_store,
        "AUTHSERVER_LOG_LEVEL": "error",
    }


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    full.update(env)
    return full


def _kill_after(worker: Worker, delay: float) -> bool:
    """SIGKILL *worker* after *delay*; False if it had already exited."""
    if worker.poll(timeout=delay) is not None:
        return False
    worker.kill()
    return True


def _wait_ready(worker: Worker, timeout: float = 60) -> None:
    """Until the worker has printed its "ready" line."""
    deadline = time.monotonic() + timeout
    while not worker.out_path.read_bytes().startswith(b"ready\n"):
        # Read again once it has exited: it may have printed "ready", done its work and
        # exited between the read above and this poll (a loaded machine descheduled this
        # process for that long), which is a worker that started.
        if worker.poll(timeout=0.001) is not None and not worker.out_path.read_bytes().startswith(
            b"ready\n"
        ):
            pytest.fail(
                f"worker did not start ({worker.returncode}): {worker.stdout()!r}\n"
                f"{worker.stderr()}"
            )
        assert time.monotonic() < deadline, "worker not ready in time"


# -- key store consistency -----------------------------------------------------------------


def _chain_problems(keys: list[SigningKey], now: float, retention: float) -> list[str]:
    """Instants from *now* on at which not exactly one key would be current."""
    instants = {now, now + 1e-3}
    for key in keys:
        for ts in (key.activate_at, key.deactivate_at, key.retired_at):
            if ts is not None and ts >= now:
                instants.update({ts - 1e-3, ts, ts + 1e-3})
    latest = max((k.activate_at for k in keys), default=now)
    instants.add(max(latest, now) + 86400 * 365)
    problems = []
    for at in sorted(instants):
        current = [k.kid for k in keys if k.state(at, retention) is KeyState.CURRENT]
        if len(current) != 1:
            problems.append(f"at now{at - now:+.3f}s: {len(current)} current keys {current}")
    return problems


def _describe(keys: list[SigningKey], now: float) -> str:
    rows = []
    for k in sorted(keys, key=lambda k: (k.activate_at, k.created_at)):
        end = "-" if k.deactivate_at is None else f"{k.deactivate_at - now:+.1f}"
        retired = "" if k.retired_at is None else f" retired{k.retired_at - now:+.1f}"
        pem = "pem" if k.private_pem is not None else "no-pem"
        rows.append(f"{k.kid[:8]} [{k.activate_at - now:+.1f}, {end}){retired} {pem}")
    return "; ".join(rows)


def _check_key_store(env: dict[str, str], tmp_path: Path, key_store: str, label: str) -> None:
    # The CLI reads the store as the crash left it (a fresh container: nothing cached).
    listed = run_cli_here(env, "keys", "list", "--json")
    assert listed.returncode == 0, f"{label}: keys list failed after the crash: {listed.stderr}"
    json.loads(listed.stdout)

    if key_store == "file":
        keys_dir = tmp_path / "keys"
        names = {p.name for p in keys_dir.iterdir()}
        json_kids = {n[: -len(".json")] for n in names if n.endswith(".json") and n[0] != "."}
        listed_kids = {k["kid"] for k in json.loads(listed.stdout)["keys"]}
        assert listed_kids == json_kids, f"{label}: listed {listed_kids} vs files {json_kids}"
        # Nothing else is there but the store's own files and the temporary files of an
        # interrupted write (".<name>.<hex>.tmp"), which must never count as a key
        # (checked above).
        unexpected = {
            n
            for n in names
            if n not in (".lock", ".version")
            and not re.fullmatch(r"[A-Za-z0-9_-]+\.(json|pem)", n)
            # (the .version file's own temporary is "..version.<hex>.tmp")
            and not re.fullmatch(r"\.([A-Za-z0-9_-]+\.(json|pem)|\.version)\.[0-9a-f]+\.tmp", n)
        }
        assert not unexpected, f"{label}: unexpected files in the key directory: {unexpected}"
        for name in names:
            if name.endswith(".json") and name[0] != ".":
                json.loads((keys_dir / name).read_text())  # never half a file

    # Restart: what `serve` does before its workers start.
    settings = Settings.from_env(env)
    prepare(settings)

    svc = container.build(settings)
    try:
        with svc.unit_of_work():
            keys = svc.keys._store.list()
            now = svc.clock.now()
            retention = svc.keys.policy.retention
            kid, _ = svc.key_ring.current()  # signs now, private key readable
            svc.key_ring.check_readable()
        problems = _chain_problems(keys, now, retention)
        assert not problems, f"{label}: signing windows broken: {problems}\n{_describe(keys, now)}"
        for key in keys:
            state = key.state(now, retention)
            if state in (KeyState.NEXT, KeyState.CURRENT):
                assert key.private_pem is not None, f"{label}: {key.kid} ({state}) has no pem"
        assert kid in {k.kid for k in keys}
    finally:
        svc.close()

    svc = container.build(settings)
    try:
        with svc.unit_of_work():
            views = svc.keys.views()
    finally:
        svc.close()
    current = [v.key.kid for v in views if v.state is KeyState.CURRENT]
    assert len(current) == 1, f"{label}: {len(current)} current keys after restart"


#: Each key store on the databases it depends on: the file store keeps its keys outside
#: the database, so it runs once (beside a SQLite file), not again on PostgreSQL.
key_stores = pytest.mark.parametrize(
    ("db_url", "key_store"),
    [("sqlite", "file"), ("sqlite", "sql"), ("postgresql", "sql")],
    indirect=["db_url"],
)


@key_stores
def test_kill_during_key_lifecycle(
    db_url: str, key_store: str, tmp_path: Path, start_zygote: Callable[..., Zygote]
) -> None:
    env = _env(db_url, tmp_path, key_store)
    zygote = start_zygote(env)
    rnd = random.Random()
    kills = 0
    for round_ in range(ROUNDS):
        worker = zygote.spawn("key")
        try:
            _wait_ready(worker)
            delay = rnd.uniform(0, 0.5)
            killed = _kill_after(worker, delay)
            assert killed, f"worker exited by itself ({worker.returncode}): {worker.stderr()}"
            assert worker.returncode == -signal.SIGKILL
            kills += 1
        finally:
            worker.stop()
        _check_key_store(env, tmp_path, key_store, f"round {round_} (killed after {delay:.3f}s)")
    assert kills == ROUNDS


@key_stores
def test_kill_during_cli_key_rotate(
    db_url: str, key_store: str, tmp_path: Path, start_zygote: Callable[..., Zygote]
) -> None:
    """The operator's command, killed at random points of its work (it is idempotent once
    a key is scheduled, so every round first retires the scheduled key, then rotates
    again). Most kills must land inside the command, or the test proves nothing."""
    env = _env(db_url, tmp_path, key_store)
    zygote = start_zygote(env)
    settings = Settings.from_env(env)
    prepare(settings)
    rotate = ["keys", "rotate", "--json"]

    def retire_scheduled() -> None:
        # Setting up the round, not what is tested: in-process (a CLI process per round
        # cost seconds), through the same service the CLI calls.
        svc = container.build(settings)
        try:
            with svc.unit_of_work():
                for view in svc.keys.views():
                    if view.state is KeyState.NEXT:
                        svc.keys.retire(view.key.kid)
        finally:
            svc.close()

    span = _command_seconds(zygote, rotate)
    rnd = random.Random()
    rounds = max(5, ROUNDS // 2)
    inside = 0
    for round_ in range(rounds):
        retire_scheduled()
        delay = rnd.uniform(0, span)
        run = _run_cli_killed(zygote, rotate, delay)
        inside += run.inside
        if run.seconds is not None:
            span = min(span, run.seconds)
        _check_key_store(env, tmp_path, key_store, f"rotate round {round_} ({delay:.3f}s)")
    assert inside >= rounds // 2, f"only {inside} of {rounds} kills landed inside the command"


# -- clients -------------------------------------------------------------------------------


_JSON_COLUMNS = {"audiences", "scopes", "allowed_claims", "jwks"}


def _client_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    svc = container.build(Settings.from_env(env))
    try:
        with svc.db.engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM clients")).mappings().all()
        # Raw rows: on SQLite the JSON columns come back as their text.
        return [
            {
                k: json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v
                for k, v in r.items()
            }
            for r in rows
        ]
    finally:
        svc.close()


def _check_clients(env: dict[str, str], created: dict[str, str], label: str) -> None:
    listed = cli_json_here(env, "clients", "list")["clients"]
    by_id = {c["client_id"]: c for c in listed}
    rows = _client_rows(env)
    assert len(rows) == len(listed), f"{label}: list {len(listed)} vs rows {len(rows)}"
    for row in rows:
        where = f"{label}: client {row['client_id']}"
        assert row["client_id"] in by_id, where
        assert row["name"], f"{where} has no name"
        assert row["secret_hash"], f"{where} has no secret hash"
        assert row["audiences"] is not None, f"{where} has no audiences"
        assert list(row["scopes"]) == ["read"], f"{where} lost its scopes: {row['scopes']}"
        assert row["created_at"], where
        assert row["updated_at"], where
        assert row["enabled"] in (True, 1), where
    # Every creation that reported success is stored, and its printed secret works.
    for client_id, secret in created.items():
        assert client_id in by_id, f"{label}: client {client_id} reported created is missing"
        row = next(r for r in rows if r["client_id"] == client_id)
        assert client_secrets.verify_secret(secret, row["secret_hash"]), label


def _reset_database(db_url: str, tmp_path: Path) -> None:
    """Back to an empty database (no schema at all)."""
    if db_url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(db_url.removeprefix("sqlite:///") + suffix)
            path.unlink(missing_ok=True)
        return
    from urllib.parse import parse_qs
    from urllib.parse import urlsplit

    options = parse_qs(urlsplit(db_url).query)["options"][0]
    schema = options.split("search_path=", 1)[1]
    svc = container.build(Settings.from_env(_env(db_url, tmp_path, "file")))
    try:
        with svc.db.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        svc.close()


def _create_and_kill(
    zygote: Zygote, delay: float, name: str
) -> tuple[tuple[str, str] | None, CliRun]:
    """``clients create`` killed *delay* s into its work: the (client id, secret) it
    printed, if it got that far, and the run."""
    run = _run_cli_killed(
        zygote, ["clients", "create", "--name", name, "--scope", "read", "--json"], delay
    )
    try:
        printed = json.loads(run.out)
    except json.JSONDecodeError:
        assert run.killed, run.out
        return None, run
    return (printed["client_id"], printed["client_secret"]), run


def test_kill_during_client_create(
    db_url: str, tmp_path: Path, start_zygote: Callable[..., Zygote]
) -> None:
    env = _env(db_url, tmp_path, "file")
    zygote = start_zygote(env)
    # Schema in place first (read-only commands create nothing; its own crash case is below).
    cli_json(env, "db", "upgrade")
    create = ["clients", "create", "--name", "timing", "--scope", "read", "--json"]
    span = _command_seconds(zygote, create)
    rnd = random.Random()
    created: dict[str, str] = {}
    inside = 0
    rounds = ROUNDS + 5
    for round_ in range(rounds):
        delay = rnd.uniform(0, span)
        reported, run = _create_and_kill(zygote, delay, f"crash {round_}")
        inside += run.inside
        if run.seconds is not None:
            span = min(span, run.seconds)
        if reported is not None:
            created[reported[0]] = reported[1]
        _check_clients(env, created, f"round {round_} ({delay:.3f}s)")
    assert inside >= rounds // 2, f"only {inside} of {rounds} kills landed inside the command"
    printed = cli_json(env, "clients", "create", "--name", "after the crashes", "--scope", "read")
    created[printed["client_id"]] = printed["client_secret"]
    _check_clients(env, created, "after a normal create")


def test_kill_during_first_client_create_on_empty_database(
    db_url: str, tmp_path: Path, start_zygote: Callable[..., Zygote]
) -> None:
    """The first command on a new machine also creates the schema: a kill there must leave
    no half schema that blocks the next command."""
    env = _env(db_url, tmp_path, "file")
    zygote = start_zygote(env)
    _reset_database(db_url, tmp_path)
    create = ["clients", "create", "--name", "first", "--scope", "read", "--json"]
    span = _command_seconds(zygote, create)  # includes creating the schema
    rnd = random.Random()
    rounds = max(6, ROUNDS // 2)
    inside = 0
    for round_ in range(rounds):
        _reset_database(db_url, tmp_path)
        delay = rnd.uniform(0, span)
        reported, run = _create_and_kill(zygote, delay, f"first {round_}")
        inside += run.inside
        if run.seconds is not None:
            span = min(span, run.seconds)
        created = dict([reported]) if reported else {}
        label = f"round {round_} ({delay:.3f}s)"
        listed = run_cli_here(env, "clients", "list", "--json")
        if listed.returncode != 0:
            # Killed before the file or the schema was committed: read-only commands create
            # nothing and say so; nothing may have been reported as created.
            nothing = ("no database at", " is empty (no authserver schema)")
            assert any(m in listed.stderr for m in nothing), f"{label}: {listed.stderr}"
            assert not created, f"{label}: a client was reported but there is no schema"
        else:
            _check_clients(env, created, label)
        after = cli_json_here(env, "clients", "create", "--name", "next", "--scope", "read")
        created[after["client_id"]] = after["client_secret"]
        _check_clients(env, created, label + " then a normal create")
    assert inside >= rounds // 2, f"only {inside} of {rounds} kills landed inside the command"


# -- every crash point, enumerated (file key store) -------------------------------------------


class _Crash(BaseException):
    """Stands for SIGKILL: raised before the N-th file write; nothing below catches it."""


def _file_settings(tmp_path: Path, keys_dir: Path) -> Settings:
    return Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'enum.db'}",
            "AUTHSERVER_KEYS_DIR": str(keys_dir),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
            "AUTHSERVER_KEY_STORE": "file",
        }
    )


def _operations() -> dict[str, Callable[[Any], None]]:
    def rotate(svc: Any) -> None:
        svc.keys.rotate()

    def retire_current(svc: Any) -> None:
        svc.keys.rotate()
        svc.keys.retire(svc.key_ring.current()[0])

    def retire_next(svc: Any) -> None:
        result = svc.keys.rotate()
        svc.keys.retire(result.key.kid)

    return {"rotate": rotate, "retire_current": retire_current, "retire_next": retire_next}


@pytest.mark.parametrize("operation", sorted(_operations()))
def test_file_key_store_crash_at_every_write(tmp_path: Path, operation: str) -> None:
    """The same crash, not by timing but at each file write in turn: the key directory is
    left exactly as a SIGKILL before that write would leave it (the file store has no
    transaction to roll back), then a restarted server must be consistent."""
    import shutil

    from authserver.storage.files import keys as file_keys

    op = _operations()[operation]
    baseline = tmp_path / "baseline"
    settings = _file_settings(tmp_path, baseline)
    prepare(settings)  # schema and a first current key

    real_write = file_keys._write_atomic
    crash_at = 0
    while True:
        crash_at += 1
        keys_dir = tmp_path / f"keys-{crash_at}"
        shutil.copytree(baseline, keys_dir)
        writes = 0

        def counting_write(path: Path, data: bytes, mode: int, limit: int = crash_at) -> None:
            nonlocal writes
            writes += 1
            if writes == limit:
                raise _Crash
            real_write(path, data, mode)

        svc = container.build(_file_settings(tmp_path, keys_dir))
        mp = pytest.MonkeyPatch()
        mp.setattr(file_keys, "_write_atomic", counting_write)
        crashed = False
        try:
            with svc.unit_of_work():
                op(svc)
        except _Crash:
            crashed = True
        finally:
            mp.undo()
            svc.close()
        if not crashed:
            break  # every write point has been tried
        label = f"{operation}: crash before file write #{crash_at}"
        restarted = _file_settings(tmp_path, keys_dir)
        prepare(restarted)
        svc = container.build(restarted)
        try:
            with svc.unit_of_work():
                keys = svc.keys._store.list()
                now = svc.clock.now()
                problems = _chain_problems(keys, now, svc.keys.policy.retention)
                assert not problems, f"{label}: {problems}\n{_describe(keys, now)}"
                svc.key_ring.current()
                # The server keeps working from here: the next rotation is sound too.
                svc.keys.rotate()
                keys = svc.keys._store.list()
                problems = _chain_problems(keys, now, svc.keys.policy.retention)
                assert not problems, f"{label}, then rotate: {problems}\n{_describe(keys, now)}"
        finally:
            svc.close()
    assert crash_at > 2
