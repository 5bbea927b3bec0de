"""The authserver benchmark: one command, the production server, a real load generator.

    .venv/bin/python bench/run.py                       # the full benchmark (about 10 min)
    .venv/bin/python bench/run.py --quick               # a smoke run (about 1 min)
    .venv/bin/python bench/run.py --compare-workers     # granian threads/workers vs gunicorn
    .venv/bin/python bench/run.py --soak 300            # RSS per worker over 5 minutes
    .venv/bin/python bench/run.py --profile 15          # py-spy profile of the token path

Each run works in a fresh temporary directory; for PostgreSQL it creates a fresh database
``bench_<random>`` (dropped at the end). It seeds the clients (bench/seed_clients.py),
starts ``authserver serve`` exactly as users run it (default worker count: one per core),
waits for ``/readyz``, drives it with ``wrk`` (Debian package ``wrk``) from a separate
process, and reads the server's CPU time (master and workers) from ``/proc``. The raw
RSA-2048 signing rate is measured in the same run, with one process per core. Results are
printed and written to a marked section of bench/RESULTS.md (``--no-write`` to skip).
See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
AUDIENCE = "https://sync.example"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1

# -- small helpers -------------------------------------------------------------------------


#: The targets the summary lines compare with: tokens/s as a share of the same-run RSA-2048
#: signing limit, p99 at the first connection count, GET rate as a multiple of the token rate.
TARGET_RATIO = 0.68
TARGET_P99_MS = 15
TARGET_GET_RATE = 10


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def authserver_command() -> list[str]:
    exe = Path(sys.executable).parent / "authserver"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("authserver")
    if found:
        return [found]
    raise SystemExit("authserver is not installed in this Python's environment (pip install -e .)")


def wrk_path() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (see bench/README.md)")
    return found


# -- /proc readings --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return out


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- the raw RSA-2048 signing rate ------------------------------------------------------------


def _signing_input() -> bytes:
    """A typical RFC 9068 access token's signing input (header.payload), ~420 bytes."""

    def b64(obj: dict[str, Any]) -> bytes:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    now = int(time.time())
    header = {"alg": "RS256", "typ": "at+jwt", "kid": secrets.token_urlsafe(32)}
    claims = {
        "iss": "http://localhost:8000",
        "sub": "user-1-12345",
        "aud": AUDIENCE,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": "as_client_" + secrets.token_urlsafe(16),
        "email": "user-1-12345@example.com",
        "name": "User 12345",
    }
    return b64(header) + b"." + b64(claims)


def _sign_loop(
    pem: bytes, message: bytes, start_at: float, seconds: float
) -> tuple[int, float, float]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_private_key(pem, password=None)
    pad, algo = padding.PKCS1v15(), hashes.SHA256()
    key.sign(message, pad, algo)  # type: ignore[union-attr]
    while time.time() < start_at:
        time.sleep(0.005)
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    end = t0 + seconds
    while True:
        for _ in range(20):
            key.sign(message, pad, algo)  # type: ignore[union-attr]
        n += 20
        now = time.perf_counter()
        if now >= end:
            return n, now - t0, time.process_time() - c0


def rsa_rate(processes: int = CORES, seconds: float = 3.0) -> dict[str, float]:
    """Signatures/s with *processes* processes signing at once (PKCS#1 v1.5, SHA-256)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    message = _signing_input()
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        start_at = time.time() + 1.5
        futures = [
            pool.submit(_sign_loop, pem, message, start_at, seconds) for _ in range(processes)
        ]
        results = [f.result() for f in futures]
    total = sum(n / dt for n, dt, _ in results)
    cpu_ms = statistics.median(1000 * cpu / n for n, _, cpu in results)
    return {"rate": total, "cpu_ms": cpu_ms, "processes": processes}


# -- databases --------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database; yields its SQLAlchemy URL."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'authserver.db'}"
        return
    import psycopg

    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].split("://", 1)[1]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str, count: int, workdir: Path) -> dict[str, Any]:
    auth_file = workdir / "clients.auth"
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "seed_clients.py"),
            "--database-url",
            url,
            "--count",
            str(count),
            "--audience",
            AUDIENCE,
            "--auth-file",
            str(auth_file),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"seeding failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    result["auth_file"] = str(auth_file)
    return result


# -- the server ---------------------------------------------------------------------------------


@dataclass
class Server:
    label: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    seeded: dict[str, Any]
    workers: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        pids = [self.proc.pid, *children(self.proc.pid)]
        return sum(cpu_seconds(p) for p in pids)

    def worker_cpu(self) -> dict[int, float]:
        return {p: cpu_seconds(p) for p in children(self.proc.pid)}

    def rss(self) -> list[float]:
        return [rss_mib(p) for p in children(self.proc.pid)]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


JWKS_PATH = "/.well-known/jwks.json"

#: In a server spec's environment: run ``authserver.cli.serve:worker_app`` under gunicorn
#: with this worker class instead of ``authserver serve`` (--compare-workers only).
GUNICORN = "BENCH_GUNICORN_WORKER_CLASS"


def gunicorn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gunicorn") is not None


def server_command(env: dict[str, str], port: int, workdir: Path) -> list[str]:
    worker_class = env.pop(GUNICORN, None)
    if worker_class is None:
        return [*authserver_command(), "serve"]
    # What `authserver serve` does before its workers start, done here for gunicorn:
    # schema (already made by the seeding), first signing key, metrics directory.
    subprocess.run([*authserver_command(), "keys", "rotate"], cwd=workdir, env=env,
                   check=True, capture_output=True)
    metrics = workdir / "metrics"
    metrics.mkdir(exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    return [sys.executable, "-m", "gunicorn", "-k", worker_class, "--threads", "4",
            "-w", str(CORES), "-b", f"127.0.0.1:{port}", "--keep-alive", "5",
            "--log-level", "warning", "authserver.cli.serve:worker_app()"]


def start_server(
    label: str, url: str, workdir: Path, seeded: dict[str, Any], env_extra: dict[str, str]
) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.update(
        {
            "AUTHSERVER_DATABASE_URL": url,
            "AUTHSERVER_LOG_LEVEL": "warning",
            "AUTHSERVER_PORT": str(port),
            "AUTHSERVER_HOST": "127.0.0.1",
        }
    )
    env.update(env_extra)
    command = server_command(env, port, workdir)
    logf = open(workdir / f"server-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=logf, stderr=logf)
    server = Server(label, proc, port, workdir, seeded)
    expected = int(env_extra.get("AUTHSERVER_WORKERS") or 0) or CORES
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"authserver serve exited with {proc.returncode}:\n"
                + (workdir / f"server-{port}.log").read_text(errors="replace")[-3000:]
            )
        try:
            status, _ = _get(server.base + "/readyz")
        except OSError:
            status = 0
        if status == 200 and len(children(proc.pid)) >= expected:
            break
        time.sleep(0.2)
    else:
        stop_server(server)
        raise SystemExit(f"{label}: the server did not become ready in 90 s")
    server.workers = children(proc.pid)
    # One real request first: the benchmark must measure successes.
    first = seeded["auth_file"] and Path(seeded["auth_file"]).read_text().split("\n", 1)[0]
    req = urllib.request.Request(
        server.base + "/token",
        data=f"grant_type=client_credentials&sub=check&audience={AUDIENCE}".encode(),
        headers={"Authorization": first, "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback only
            body = json.loads(r.read())
            assert body.get("token_type") == "Bearer", body
    except urllib.error.HTTPError as e:
        stop_server(server)
        raise SystemExit(f"{label}: POST /token failed: {e.code} {e.read()!r}") from None
    return server


def stop_server(server: Server) -> None:
    """SIGTERM to the server's main process (it stops its workers gracefully), SIGKILL if it
    hangs."""
    pids = [server.proc.pid, *children(server.proc.pid)]
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
    for pid in pids[1:]:  # workers that outlived their master (should not happen)
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def servers(specs: list[tuple[str, str, int, dict[str, str]]]) -> Iterator[list[Server]]:
    """Start one server per (label, db kind, clients, env) and stop them all at the end."""
    with contextlib.ExitStack() as stack:
        started: list[Server] = []
        for label, kind, count, env_extra in specs:
            workdir = Path(tempfile.mkdtemp(prefix="authserver-bench-"))
            stack.callback(shutil.rmtree, workdir, True)
            url = stack.enter_context(database(kind, workdir))
            log(f"{label}: seeding {count} clients")
            seeded = seed(url, count, workdir)
            log(f"{label}: seeded {seeded['count']} clients in {seeded['seconds']} s; starting")
            server = start_server(label, url, workdir, seeded, env_extra)
            stack.callback(stop_server, server)
            log(f"{label}: ready on port {server.port}, workers {server.workers}")
            started.append(server)
        yield started


# -- the load generator -------------------------------------------------------------------------


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_per_req_ms: float
    server_cpu_s: float
    wrk_cpu_s: float
    other_cpu_s: float
    busiest_worker_share: float
    seconds: float
    load: str


def wrk(
    server: Server, target: str, connections: int, duration: float
) -> tuple[dict[str, Any], float]:
    """Run wrk once; returns its JSON line and the CPU seconds wrk itself used."""
    if target == "token":
        script, path = BENCH / "token_clients.lua", "/token"
    else:
        script, path = BENCH / "get.lua", target
    env = dict(os.environ, AUTH_FILE=server.seeded["auth_file"], AUDIENCE=AUDIENCE)
    cmd = [
        wrk_path(),
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        server.base + path,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit("wrk did not finish in time") from None
    usage = resource_of(proc)
    for line in out.decode().splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:]), usage
    raise SystemExit(f"wrk printed no result (exit {proc.returncode}): {err.decode()[-2000:]}")


_rusage_seen = [0.0]


def resource_of(_proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds used by the child just reaped (RUSAGE_CHILDREN grows by exactly that)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    used = total - _rusage_seen[0]
    _rusage_seen[0] = total
    return used


def measure(server: Server, target: str, connections: int, duration: float) -> Run:
    load = loadavg()
    resource_of(None)  # type: ignore[arg-type]  # reset the children baseline
    busy0 = machine_busy()
    cpu0 = server.cpu()
    w0 = server.worker_cpu()
    result, wrk_cpu = wrk(server, target, connections, duration)
    w1 = server.worker_cpu()
    cpu1 = server.cpu()
    busy1 = machine_busy()
    per_worker = [w1[p] - w0.get(p, 0.0) for p in w1]
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    errors = result["non2xx"] + result["socket_errors"]
    return Run(
        rate=requests / seconds if seconds else 0.0,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=errors,
        requests=requests,
        cpu_per_req_ms=(cpu1 - cpu0) / max(requests, 1) * 1000,
        server_cpu_s=cpu1 - cpu0,
        wrk_cpu_s=wrk_cpu,
        other_cpu_s=max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - wrk_cpu),
        busiest_worker_share=max(per_worker, default=0.0) / max(sum(per_worker), 1e-9),
        seconds=seconds,
        load=load,
    )


@dataclass
class Series:
    runs: list[Run] = field(default_factory=list)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    def row(self) -> dict[str, Any]:
        return {
            "rate": self.med("rate"),
            "rates": [round(r.rate) for r in self.runs],
            "p50_ms": self.med("p50_ms"),
            "p99_ms": self.med("p99_ms"),
            "errors": self.errors,
            "cpu_ms": self.med("cpu_per_req_ms"),
            "wrk_cpu_share": statistics.median(
                r.wrk_cpu_s / max(r.seconds * CORES, 1e-9) for r in self.runs
            ),
            "server_cpu_share": statistics.median(
                r.server_cpu_s / max(r.seconds * CORES, 1e-9) for r in self.runs
            ),
            "other_cpu_share": statistics.median(
                r.other_cpu_s / max(r.seconds * CORES, 1e-9) for r in self.runs
            ),
            "loads": [r.load.split()[0] for r in self.runs],
            "busiest": [round(r.busiest_worker_share * 100) for r in self.runs],
        }


# -- machine details ----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    from importlib import metadata

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = []
    for pkg in (
        "authserver",
        "granian",
        "Flask",
        "Werkzeug",
        "Authlib",
        "joserfc",
        "cryptography",
        "SQLAlchemy",
        "psycopg",
        "prometheus-client",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{pkg} {metadata.version(pkg)}")
    wrk_version = subprocess.run(
        [wrk_path(), "-v"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    pg = ""
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            pg = f"PostgreSQL {row[0] if row else '?'} (127.0.0.1, same machine)"
    import sqlite3

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "cores": str(CORES),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(versions),
        "wrk": wrk_version.strip(),
        "databases": f"SQLite {sqlite3.sqlite_version} (file in a temp dir); {pg or 'PostgreSQL ?'}",
    }


def machine_md(m: dict[str, str]) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in m.items())


# -- RESULTS.md -------------------------------------------------------------------------------


def write_section(name: str, body: str) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# authserver benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    log(f"wrote section '{name}' of {RESULTS}")


def fmt_row(label: str, conns: int, s: dict[str, Any], extra: str = "") -> str:
    return (
        f"| {label} | {conns} | **{s['rate']:.0f}** ({', '.join(map(str, s['rates']))}) "
        f"| {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['errors']} | {s['cpu_ms']:.2f} "
        f"| {s['server_cpu_share'] * 100:.0f}% / {s['wrk_cpu_share'] * 100:.0f}% "
        f"/ {s['other_cpu_share'] * 100:.0f}% "
        f"| {' '.join(f'{b}%' for b in s['busiest'])} | {' '.join(s['loads'])} |{extra}"
    )


TABLE_HEAD = (
    "| server | conns | req/s median (each run) | p50 ms | p99 ms | errors | server CPU ms/req "
    "| CPU used: server / wrk / other processes (of all cores) "
    "| busiest worker's share of the workers' CPU, each run | load avg (1 min) at each run |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


# -- modes --------------------------------------------------------------------------------------


def mode_main(args: argparse.Namespace) -> None:
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    conns = args.connections
    client_counts = args.clients
    lines: list[str] = []
    summary: list[str] = []
    m = machine()
    started_load = loadavg()
    for kind in dbs:
        specs = [(f"{kind}, {n} clients", kind, n, {}) for n in client_counts]
        with servers(specs) as running:
            rsa: list[float] = []
            rsa_cpu: list[float] = []
            token: dict[tuple[str, int], Series] = {}
            gets: dict[tuple[str, str], Series] = {}
            for s in running:
                log(f"{s.label}: warm-up {args.warmup:g} s at {max(conns)} connections")
                wrk(s, "token", max(conns), args.warmup)
            rss_before = {s.label: s.rss() for s in running}
            for rep in range(args.repeat):
                log(f"{kind}: RSA-2048 signing rate, {CORES} processes")
                measured = rsa_rate(CORES, args.rsa_seconds)
                rsa.append(measured["rate"])
                rsa_cpu.append(measured["cpu_ms"])
                log(
                    f"{kind}: rep {rep + 1}/{args.repeat}: RSA {rsa[-1]:.0f}/s, "
                    f"{rsa_cpu[-1]:.3f} ms CPU each, load {loadavg()}"
                )
                for c in conns:
                    for s in running:  # interleaved, so drift in machine load hits all alike
                        r = measure(s, "token", c, args.duration)
                        token.setdefault((s.label, c), Series()).runs.append(r)
                        log(
                            f"  {s.label} token c={c}: {r.rate:.0f}/s p50 {r.p50_ms:.1f} "
                            f"p99 {r.p99_ms:.1f} ms err {r.errors} cpu {r.cpu_per_req_ms:.2f} ms"
                        )
                base = running[0]
                for path in ("/.well-known/jwks.json", "/.well-known/oauth-authorization-server"):
                    if rep == 0:
                        wrk(base, path, conns[0], 2)
                    r = measure(base, path, conns[0], args.get_duration)
                    gets.setdefault((path, conns[0]), Series()).runs.append(r)
                    log(f"  {base.label} GET {path} c={conns[0]}: {r.rate:.0f}/s err {r.errors}")
            rss_after = {s.label: s.rss() for s in running}
        rsa_med = statistics.median(rsa)
        sign_ms = statistics.median(rsa_cpu)
        lines.append(f"\n### {kind}\n")
        lines.append(
            f"RSA-2048 signing limit, same run, {CORES} processes (one per core): "
            f"**{rsa_med:.0f} signatures/s** wall-clock (each rep: "
            f"{', '.join(f'{x:.0f}' for x in rsa)}); each signature costs "
            f"**{sign_ms:.3f} ms CPU** (process CPU time, independent of machine load), so "
            f"on {CORES} idle cores the limit is {1000 * CORES / sign_ms:.0f} signatures/s.\n"
        )
        lines.append(TABLE_HEAD)
        for (label, c), series in token.items():
            row = series.row()
            lines.append(fmt_row(f"POST /token, {label}", c, row))
        for (path, c), series in gets.items():
            lines.append(fmt_row(f"GET {path}", c, series.row()))
        lines.append("")
        first = running[0].label
        t16 = token[(first, conns[0])].row()
        for c in conns:
            tc = token[(first, c)].row()
            lines.append(
                f"- tokens/s at {c} connections / RSA-2048 limit: "
                f"**{tc['rate']:.0f} / {rsa_med:.0f} = {tc['rate'] / rsa_med * 100:.1f}%** "
                f"(target at least {TARGET_RATIO:.0%})"
            )
        lines.append(
            f"- load-independent form of the same ratio: CPU per raw signature "
            f"{sign_ms:.3f} ms / server CPU per token {t16['cpu_ms']:.2f} ms = "
            f"**{sign_ms / t16['cpu_ms'] * 100:.1f}%** (what the server would reach, CPU-bound, "
            f"on idle cores: {1000 * CORES / t16['cpu_ms']:.0f} tokens/s vs "
            f"{1000 * CORES / sign_ms:.0f} signatures/s)"
        )
        lines.append(
            f"- p99 at {conns[0]} connections: **{t16['p99_ms']:.1f} ms** (target at most {TARGET_P99_MS} ms); "
            f"errors: **{sum(s.errors for s in token.values())}** over all token runs (target 0)"
        )
        for path in ("/.well-known/jwks.json", "/.well-known/oauth-authorization-server"):
            g = gets[(path, conns[0])].row()
            lines.append(
                f"- GET {path}: {g['rate']:.0f}/s = **{g['rate'] / t16['rate']:.1f}x** the token "
                f"rate (target at least {TARGET_GET_RATE}x)"
            )
        if len(client_counts) > 1:
            for c in conns:
                a = token[(running[0].label, c)].row()
                for other in running[1:]:
                    b = token[(other.label, c)].row()
                    lines.append(
                        f"- {c} connections: {other.label} {b['rate']:.0f}/s vs "
                        f"{running[0].label} {a['rate']:.0f}/s: "
                        f"**{(b['rate'] / a['rate'] - 1) * 100:+.1f}%** (target within 10%)"
                    )
        for s in running:
            before = ", ".join(f"{x:.0f}" for x in rss_before[s.label])
            after = ", ".join(f"{x:.0f}" for x in rss_after[s.label])
            lines.append(f"- RSS per worker, {s.label}: {before} MiB after warm-up, {after} MiB at the end")
        summary.append(
            f"{kind}: {t16['rate']:.0f} tokens/s at {conns[0]} conns "
            f"({t16['rate'] / rsa_med * 100:.1f}% of RSA {rsa_med:.0f}/s), p99 {t16['p99_ms']:.1f} ms, "
            f"{t16['cpu_ms']:.2f} ms CPU/token vs {sign_ms:.3f} ms CPU/signature "
            f"({sign_ms / t16['cpu_ms'] * 100:.1f}%)"
        )
    body = "\n".join(
        [
            f"## Token issuance ({'quick' if args.quick else 'full'} run)\n",
            f"Command: `{' '.join(['.venv/bin/python', 'bench/run.py', *sys.argv[1:]])}`  ",
            f"Load average (1, 5, 15 min) at start: {started_load}; at end: {loadavg()}.  ",
            f"Each server: `authserver serve` defaults (granian, {CORES} worker processes x "
            f"4 threads), log level warning. wrk: {args.duration:g} s per run, "
            f"{args.repeat} runs per cell, interleaved across servers; warm-up "
            f"{args.warmup:g} s. Medians.\n",
            machine_md(m),
            *lines,
        ]
    )
    print(body)
    print("\n".join(summary), file=sys.stderr)
    if not args.no_write:
        write_section("quick" if args.quick else "main", body)


WORKER_CONFIGS: list[tuple[str, dict[str, str]]] = [
    (f"granian {CORES} workers x 1 thread", {"AUTHSERVER_THREADS": "1"}),
    (f"granian {CORES} workers x 2 threads", {"AUTHSERVER_THREADS": "2"}),
    (f"granian {CORES} workers x 4 threads (default)", {"AUTHSERVER_THREADS": "4"}),
    (f"granian {CORES} workers x 8 threads", {"AUTHSERVER_THREADS": "8"}),
    (f"granian {2 * CORES} workers x 4 threads", {"AUTHSERVER_WORKERS": str(2 * CORES)}),
    # The previous default, for the record: the same worker_app under gunicorn's gthread
    # workers. Runs only where gunicorn is installed (.venv/bin/pip install gunicorn).
    (f"gunicorn gthread {CORES} workers x 4 threads", {GUNICORN: "gthread"}),
    (f"gunicorn sync {CORES} workers", {GUNICORN: "sync"}),
]


def mode_compare_workers(args: argparse.Namespace) -> None:
    kind = "sqlite" if args.db == "both" else args.db
    conns = args.connections
    configs = WORKER_CONFIGS
    if not gunicorn_available():
        log("gunicorn is not installed: its rows are skipped (.venv/bin/pip install gunicorn)")
        configs = [(label, env) for label, env in configs if GUNICORN not in env]
    specs = [(label, kind, args.clients[0], dict(env)) for label, env in configs]
    results: dict[tuple[str, int], Series] = {}
    start_load = loadavg()
    with servers(specs) as running:
        for s in running:
            wrk(s, "token", max(conns), args.warmup)
        for rep in range(args.repeat):
            for c in conns:
                for s in running:
                    r = measure(s, "token", c, args.duration)
                    results.setdefault((s.label, c), Series()).runs.append(r)
                    log(
                        f"rep {rep + 1} {s.label} c={c}: {r.rate:.0f}/s p50 {r.p50_ms:.1f} "
                        f"p99 {r.p99_ms:.1f} err {r.errors} cpu {r.cpu_per_req_ms:.2f} ms "
                        f"busiest worker {r.busiest_worker_share * 100:.0f}%"
                    )
            # The server's own share shows best on a request with no crypto or database.
            for s in running:
                r = measure(s, JWKS_PATH, conns[0], args.duration)
                results.setdefault((f"{s.label}: GET jwks", conns[0]), Series()).runs.append(r)
                log(f"rep {rep + 1} {s.label} GET jwks: {r.rate:.0f}/s cpu {r.cpu_per_req_ms:.2f} ms")
    lines = [
        "## Server and worker model comparison (POST /token; GET /.well-known/jwks.json)\n",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/run.py', *sys.argv[1:]])}`  ",
        f"Database {kind}, {args.clients[0]} clients; {CORES} cores; {args.duration:g} s per run, "
        f"{args.repeat} runs per cell interleaved across configurations; medians. "
        f"Load average at start {start_load}, at end {loadavg()}; date {time.strftime('%Y-%m-%d %H:%M')}.\n",
        TABLE_HEAD,
    ]
    for (label, c), series in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(fmt_row(label, c, series.row()))
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("workers", body)


def mode_soak(args: argparse.Namespace) -> None:
    kind = "sqlite" if args.db == "both" else args.db
    c = args.connections[0]
    chunk = max(5.0, min(30.0, args.soak / 10))
    rows = []
    start_load = loadavg()
    # Long enough that every worker has served every code path (lazy imports, caches,
    # the audit batcher's first flushes): growth after that is what the target is about.
    warm = max(args.warmup, 30.0)
    with servers([(f"{kind}, {args.clients[0]} clients", kind, args.clients[0], {})]) as (s,):
        wrk(s, "token", c, warm)
        t0 = time.monotonic()
        base = s.rss()
        rows.append((0.0, None, base))
        while time.monotonic() - t0 < args.soak:
            r = measure(s, "token", c, chunk)
            rows.append((time.monotonic() - t0, r, s.rss()))
            log(f"soak t={rows[-1][0]:.0f}s {r.rate:.0f}/s err {r.errors} RSS {rows[-1][2]}")
    lines = [
        f"## Memory over time (soak, {args.soak:g} s of POST /token at {c} connections)\n",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/run.py', *sys.argv[1:]])}`  ",
        f"{kind}, {args.clients[0]} clients, default workers; RSS (VmRSS) of each worker, "
        f"sampled every {chunk:g} s after a {warm:g} s warm-up. "
        f"Load average at start {start_load}, at end {loadavg()}; date {time.strftime('%Y-%m-%d %H:%M')}.\n",
        "| t (s) | tokens/s | errors | RSS per worker (MiB) |",
        "|---|---|---|---|",
    ]
    total_tokens = 0
    for t, r, rss in rows:
        total_tokens += r.requests if r else 0
        lines.append(
            f"| {t:.0f} | {f'{r.rate:.0f}' if r else '(after warm-up)'} | {r.errors if r else ''} "
            f"| {', '.join(f'{x:.1f}' for x in rss)} |"
        )
    growth = [
        (last - first) / first * 100 for first, last in zip(rows[0][2], rows[-1][2], strict=False)
    ]
    lines.append(
        f"\nGrowth per worker from after warm-up to the end: "
        f"**{', '.join(f'{g:+.1f}%' for g in growth)}** over {total_tokens} tokens "
        f"(target within 10%)."
    )
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("soak" if args.clients[0] == 10 else f"soak-{args.clients[0]}clients", body)


CATEGORIES = [
    ("RSA-2048 signature (cryptography, native)", lambda f: "sign (joserfc/_rfc7518/jws_algs.py" in f),
    ("database driver calls (sqlite3 / psycopg)", lambda f: any(x in f for x in ("do_execute", "do_commit", "do_rollback", "psycopg/", "sqlite3/"))),
    ("SQLAlchemy (ORM session, engine, pool)", lambda f: "sqlalchemy/" in f or "<sqlalchemy" in f),
    ("joserfc (JWT encode: JSON, base64, key checks)", lambda f: "joserfc/" in f),
    ("cryptography (other)", lambda f: "cryptography/" in f),
    ("Authlib", lambda f: "authlib/" in f),
    ("Flask / Werkzeug", lambda f: "flask/" in f or "werkzeug/" in f),
    ("granian (Python side of the WSGI call; HTTP itself is native and not sampled)", lambda f: "granian/" in f),
    ("prometheus_client (metrics)", lambda f: "prometheus_client/" in f),
    ("authserver", lambda f: "authserver/" in f),
]

#: Leaf frames that are waits, not work (py-spy's idle detection misses some in containers).
IDLE = re.compile(
    r"^(_worker \(concurrent/futures/thread\.py|Condition\.wait|Event\.wait|\S*select \(selectors\.py"
    r"|\S*_wait_for_tstate_lock|Thread\._wait|sleep)"
)


def _step(func: str, path: str) -> str:
    return r"(^|\.)" + re.escape(func) + r" \(" + re.escape(path)


INCLUSIVE = [
    ("whole request in the worker (granian's WSGI runner)", _step("_runner", "granian/wsgi.py")),
    ("  access log middleware (AccessLog)", _step("__call__", "authserver/web/accesslog.py")),
    ("  lean OAuth WSGI layer (OAuthWSGI.__call__)", _step("__call__", "authserver/oauth/wsgi.py")),
    ("    Flask app (Flask.wsgi_app; not on the token path)", _step("wsgi_app", "flask/app.py")),
    ("    request body parsing (parse_body)", _step("parse_body", "authserver/oauth/requests.py")),
    ("    Authlib token flow (AuthorizationServer.create_token_response)", _step("create_token_response", "authlib/oauth2/rfc6749/authorization_server.py")),
    ("      client authentication (Authlib authenticate_client)", _step("authenticate_client", "authlib/")),
    ("        ClientService.find (cache; version read when no change feed)", _step("find", "authserver/clients/service.py")),
    ("      TokenService.issue (claims, JWT encode, sign)", _step("issue", "authserver/tokens/service.py")),
    ("        KeyRing.current (cached key)", _step("current", "authserver/keys/ring.py")),
    ("        joserfc jwt.encode", _step("encode", "joserfc/jwt.py")),
    ("          RSA sign", _step("sign", "joserfc/_rfc7518/jws_algs.py")),
    ("      save_token (TokenIssued event: audit, metrics, access log)", _step("save_token", "authserver/oauth/server.py")),
    ("    RequestServed event (metrics)", _step("emit", "authserver/oauth/events.py")),
    ("audit batch flush thread", _step("flush", "authserver/audit/service.py")),
    ("change feed thread (LISTEN/NOTIFY)", _step("_run", "authserver/storage/sql/notify.py")),
    ("key scheduler thread", r"authserver/scheduler\.py"),
]


def mode_profile(args: argparse.Namespace) -> None:
    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    kind = "sqlite" if args.db == "both" else args.db
    c = args.connections[0]
    tag = kind if args.clients[0] == 10 else f"{kind}-{args.clients[0]}clients"
    tag += "-gil" if args.gil else ""
    gil = ["--gil"] if args.gil else []
    out_dir = BENCH / "profile"
    out_dir.mkdir(exist_ok=True)
    with servers([(f"{kind}, {args.clients[0]} clients", kind, args.clients[0], {})]) as (s,):
        wrk(s, "token", c, args.warmup)
        env = dict(os.environ, AUTH_FILE=s.seeded["auth_file"], AUDIENCE=AUDIENCE)
        load = subprocess.Popen(
            [wrk_path(), "-t", "2", "-c", str(c), "-d", f"{args.profile + 6:g}s", "--timeout", "10s",
             "-s", str(BENCH / "token_clients.lua"), s.base + "/token"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            time.sleep(2)
            spies = []
            for i, pid in enumerate(s.workers):
                raw = out_dir / f"token-{tag}-worker{i}.folded"
                spies.append(
                    (raw, subprocess.Popen(
                        [str(pyspy), "record", "--pid", str(pid), "-d", f"{args.profile:g}", "-r", "200",
                         *gil, "-f", "raw", "-o", str(raw)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    ))
                )
            for raw, p in spies:
                _, err = p.communicate(timeout=args.profile + 60)
                if p.returncode != 0:
                    raise SystemExit(f"py-spy failed: {err.decode()[-1000:]}")
            svg = out_dir / f"token-{tag}.svg"
            subprocess.run(
                [str(pyspy), "record", "--pid", str(s.workers[0]), "-d", "5", "-r", "250",
                 *gil, "-o", str(svg)], capture_output=True, timeout=70, check=False,
            )
        finally:
            load.communicate(timeout=args.profile + 70)
    stacks: list[tuple[list[str], int]] = []
    merged: dict[str, int] = {}
    for raw, _ in spies:
        for line in raw.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            stacks.append((frames.split(";"), int(count)))
            # The committed form: both workers, line numbers dropped, identical stacks merged.
            key = ";".join(re.sub(r":\d+\)$", ")", f) for f in frames.split(";"))
            merged[key] = merged.get(key, 0) + int(count)
        raw.unlink()
    folded = out_dir / f"token-{tag}.folded"
    folded.write_text("".join(f"{k} {v}\n" for k, v in sorted(merged.items())))
    body = profile_summary(stacks, tag, c, args.clients[0])
    print(body)
    if not args.no_write:
        write_section(f"profile-{tag}", body)


def _frame(f: str) -> str:
    # "func (path/to/file.py:123)" -> "func (path/to/file.py" with site-packages stripped
    f = re.sub(r"\S*/site-packages/", "", f)
    f = re.sub(r"\S*/work/main/", "", f)
    f = re.sub(r"/usr/lib/python3\.\d+/|\S*/lib/python3\.\d+/", "stdlib/", f)
    return f


def profile_summary(
    stacks: list[tuple[list[str], int]], kind: str, conns: int, clients: int
) -> str:
    gil = kind.endswith("-gil")
    # Only the request threads: stacks that contain granian's WSGI runner.
    req = [([_frame(f) for f in fs], n) for fs, n in stacks]
    idle = sum(n for fs, n in req if fs and IDLE.search(fs[-1]))
    req = [(fs, n) for fs, n in req if fs and not IDLE.search(fs[-1])]
    total_all = sum(n for _, n in req) or 1
    handle = re.compile(_step("_runner", "granian/wsgi.py"))
    total = sum(n for fs, n in req if any(handle.search(f) for f in fs))
    self_time: dict[str, int] = {}
    for fs, n in req:
        leaf = fs[-1] if fs else "?"
        cat = next((name for name, test in CATEGORIES if test(leaf)), None)
        if cat is None:
            cat = "Python stdlib and other (json, threading, selectors, random, dataclasses, ...)"
        self_time[cat] = self_time.get(cat, 0) + n
    incl: list[tuple[str, int]] = []
    for name, pattern in INCLUSIVE:
        rx = re.compile(pattern)
        incl.append((name, sum(n for fs, n in req if any(rx.search(f) for f in fs))))
    top_leaf: dict[str, int] = {}
    for fs, n in req:
        leaf = re.sub(r":\d+\)$", ")", fs[-1]) if fs else "?"
        top_leaf[leaf] = top_leaf.get(leaf, 0) + n
    lines = [
        f"## Profile of the token path ({kind.split('-')[0]}, {clients} clients, "
        f"POST /token at {conns} connections{', GIL holder only' if gil else ''})\n",
        f"py-spy {args_profile_seconds[0]:g} s at 200 Hz on every worker of `authserver serve` "
        f"(defaults) under wrk load, "
        + (
            "only the thread holding the GIL (`--gil`): Python-level CPU; native code that "
            "releases the GIL (the RSA signature, socket writes, SQLite/psycopg calls) is "
            "not counted; "
            if gil
            else "every thread py-spy considers running (this includes threads waiting to "
            "re-acquire the GIL after an I/O call or the RSA signature, and psycopg waiting "
            "for PostgreSQL, so shares are closer to busy wall time than to CPU); "
        )
        + f"{total_all} samples ({idle} more whose leaf frame is a "
        f"wait dropped), "
        f"{total} of them inside a request. Stacks of both workers (folded format, line "
        f"numbers dropped; open with speedscope or flamegraph.pl): `bench/profile/token-{kind}.folded`; "
        f"flame graph: `bench/profile/token-{kind}.svg`. Date {time.strftime('%Y-%m-%d %H:%M')}, "
        f"load average {loadavg()}.\n",
        "**Self time by component** (where the CPU actually is; leaf frame's package):\n",
        "| component | share of samples |",
        "|---|---|",
    ]
    for name, n in sorted(self_time.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {n / total_all * 100:.1f}% |")
    lines += ["", "**Inclusive time of the main steps** (share of all samples):\n", "| step | share |", "|---|---|"]
    for name, n in incl:
        lines.append(f"| {name} | {n / total_all * 100:.1f}% |")
    lines += ["", "**Top 15 leaf functions:**\n", "| function | share |", "|---|---|"]
    for leaf, n in sorted(top_leaf.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"| `{leaf}` | {n / total_all * 100:.1f}% |")
    return "\n".join(lines)


args_profile_seconds = [0.0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Benchmark authserver's POST /token and well-known endpoints with wrk."
    )
    p.add_argument("--quick", action="store_true", help="short runs, one repetition, 10 clients")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--connections", default="16,64", help="comma list (default 16,64)")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    p.add_argument("--get-duration", type=float, help="seconds per GET run (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds (default 5)")
    p.add_argument("--repeat", type=int, help="runs per cell; medians are quoted (default 3)")
    p.add_argument("--rsa-seconds", type=float, default=3.0, help="signing time per RSA rep")
    p.add_argument(
        "--clients",
        help="registered clients, comma list; the first is the baseline (default 10,100000)",
    )
    p.add_argument("--compare-workers", action="store_true", help="granian threads and workers (and gunicorn, if installed)")
    p.add_argument("--soak", type=float, metavar="SECONDS", help="RSS per worker over time")
    p.add_argument("--profile", type=float, metavar="SECONDS", help="py-spy the token path")
    p.add_argument(
        "--gil", action="store_true", help="with --profile: sample only the GIL holder"
    )
    p.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = p.parse_args(argv)
    args.connections = [int(x) for x in args.connections.split(",") if x.strip()]
    quick = args.quick
    args.duration = args.duration or (4.0 if quick else 10.0)
    args.get_duration = args.get_duration or (3.0 if quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 5.0)
    args.repeat = args.repeat or (1 if quick else 3)
    if quick:
        args.rsa_seconds = min(args.rsa_seconds, 2.0)
    default_clients = "10" if (quick or args.compare_workers or args.soak or args.profile) else "10,100000"
    args.clients = [int(x) for x in (args.clients or default_clients).split(",") if x.strip()]
    wrk_path()
    authserver_command()
    if args.compare_workers:
        mode_compare_workers(args)
    elif args.soak:
        mode_soak(args)
    elif args.profile:
        args_profile_seconds[0] = args.profile
        mode_profile(args)
    else:
        mode_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
