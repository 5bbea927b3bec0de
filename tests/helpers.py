"""Helpers for tests that run the real ``authserver`` command in subprocesses."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from typing import NoReturn
from typing import TypeVar

import pytest
from click.testing import CliRunner

from authserver.cli import run

T = TypeVar("T")

AUTHSERVER = shutil.which("authserver", path=str(Path(sys.executable).parent)) or "authserver"


def under_ci() -> bool:
    """True when ``CI`` is set (``.ci/run`` sets ``CI=true``; hosted CI services set it
    too), unless it says no (empty, ``0``, ``false``, ``no``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str, *, required_by: str | None = None) -> NoReturn:
    """Something a test needs (a tool, a service) is not on this machine: skip with
    *reason* on a developer's machine, fail under CI, where ``.ci/run`` installs and starts
    everything and a skip would hide a lost test. *required_by* names an
    ``AUTHSERVER_TEST_REQUIRE_*`` variable that, set to ``1``, makes it required outside
    CI too."""
    if under_ci() or (required_by is not None and os.environ.get(required_by) == "1"):
        also = f" or {required_by}=1" if required_by else ""
        pytest.fail(f"{reason} (required under CI{also}: .ci/run installs and starts it)")
    pytest.skip(reason)


def node_and_npm(what: str) -> tuple[str, str]:
    """The ``node`` (20 or later) and ``npm`` binaries; :func:`missing` when absent."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing(f"node and npm are not on PATH: {what} cannot run")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 20:
        missing(f"node {version.stdout.strip()} is older than 20: {what} cannot run")
    return node, npm


def _installed_versions(lockfile: Path) -> dict[str, object]:
    packages = json.loads(lockfile.read_text())["packages"]
    installed = {k: v for k, v in packages.items() if k.startswith("node_modules/")}
    return {k: v.get("version") for k, v in installed.items()}


def _holds_lockfile(node_modules: Path, lockfile: Path) -> bool:
    """True when *node_modules* holds exactly the packages *lockfile* names (npm's own
    record of what it installed, ``node_modules/.package-lock.json``)."""
    hidden = node_modules / ".package-lock.json"
    return hidden.exists() and _installed_versions(hidden) == _installed_versions(lockfile)


def npm_ci(npm: str, package: Path) -> None:
    """``npm ci`` in *package*: exactly its committed package-lock.json.

    A native dependency built from source (``better-sqlite3`` under the Verdant server,
    when no prebuilt binary can be downloaded) makes ``npm ci`` cost minutes, so nothing is
    done when ``node_modules`` already holds that tree, and a finished install is kept in
    ``~/.cache/authserver-tests/npm/<hash of package.json and the lockfile>`` and copied
    from there into a clean clone.
    """
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # One install at a time per package: two pytest-xdist workers whose tests need the same
    # package (its own tests split by work stealing, or two files sharing a package) would
    # otherwise run npm ci over each other, one deleting the tree the other is installing.
    locks = cache_root / "authserver-tests" / "npm"
    locks.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(package.resolve()).encode()).hexdigest()[:24]
    with open(locks / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _npm_ci(npm, package, cache_root)


def _npm_ci(npm: str, package: Path, cache_root: Path) -> None:
    lockfile = package / "package-lock.json"
    target = package / "node_modules"
    if _holds_lockfile(target, lockfile):
        return
    digest = hashlib.sha256((package / "package.json").read_bytes() + lockfile.read_bytes())
    cached = cache_root / "authserver-tests" / "npm" / digest.hexdigest()[:24] / "node_modules"
    if _holds_lockfile(cached, lockfile):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(cached, target, symlinks=True)
        return
    install = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    # Written beside, then renamed: a half-copied tree is never taken for the cache.
    staging = cached.parent / f"tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(target, staging / "node_modules", symlinks=True)
    shutil.rmtree(cached.parent / "node_modules", ignore_errors=True)
    (staging / "node_modules").rename(cached)
    shutil.rmtree(staging, ignore_errors=True)


#: A line of the summary Node's spec reporter ends its output with: U+2139 INFORMATION
#: SOURCE, a count's name, the count (``pass 6``).
_SPEC_SUMMARY = re.compile(
    r"^\N{INFORMATION SOURCE} (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$", re.M
)


def node_test(
    node: str,
    package: Path,
    *args: str,
    env: dict[str, str] | None = None,
    passed: int | None = None,
    timeout: float = 300,
) -> dict[str, int]:
    """``node --test --test-reporter=spec ARGS`` in *package*, with *env* added to a copy
    of the environment without ``AUTHSERVER_*``. It must exit 0 and its spec reporter's
    summary must count tests, none of them failed or cancelled, and (with *passed*)
    exactly that many passed. Returns the summary's counts by name."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    full.update(env or {})
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", *args],
        cwd=package,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    summary = {name: int(count) for name, count in _SPEC_SUMMARY.findall(output)}
    assert summary.get("tests", 0) > 0, output[-5000:]
    assert summary.get("fail") == 0, output[-5000:]
    assert summary.get("cancelled") == 0, output[-5000:]
    if passed is not None:
        assert summary.get("pass") == passed, output[-5000:]
    return summary


#: Where :func:`free_port` looks: below the kernel's ephemeral range (32768-60999 by
#: default), from which every connection's own source port and every bind to port 0 are
#: taken, and above the well-known services' ports.
PORT_RANGE = (20000, 32767)


def _port_slice() -> range:
    """This process's share of :data:`PORT_RANGE`: each pytest-xdist worker has its own, so
    two workers never hand out the same port (a port is free when chosen, not when its
    server binds it a second later: with one shared range, another worker's server took it
    in between and this one's readiness check found that server answering)."""
    low, high = PORT_RANGE
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    size = (high - low + 1) // max(count, 1)
    start = low + (index % max(count, 1)) * size
    return range(start, start + size)


_PORTS = _port_slice()
_next_port = itertools.count(random.randrange(len(_PORTS)))


def free_port() -> int:
    """A loopback port nothing listens on now, for a server about to start.

    Taken in turn from this process's own slice of :data:`PORT_RANGE` (:func:`_port_slice`),
    so neither another worker nor this process's own last few choices can be handed the
    same port before its server binds it.

    Not from the ephemeral range: a port chosen there (bind to 0) is free only until the
    kernel hands it out again, as the source port of some connection or to the next bind to
    0, and a server that takes a minute to start (the README quickstart installs its
    package first) found another test's server on "its" port.
    """
    for _ in range(200):
        port = _PORTS[next(_next_port) % len(_PORTS)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}-{_PORTS.stop - 1}")


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60, stdout: Any = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """Run ``authserver ARGS`` with *env* added to a clean copy of the environment; its
    stdout captured, or sent to *stdout* (a file, a pipe's end)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    full.update(env)
    return subprocess.run(
        [AUTHSERVER, *args],
        env=full,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_json(env: dict[str, str], *args: str) -> Any:
    return _json_output(run_cli(env, *args, "--json"))


def _json_output(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_cli_here(
    env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``authserver ARGS`` in this process: the entry point's own code
    (:func:`authserver.cli.run`, the same error rendering and exit statuses), with *env* as
    its only ``AUTHSERVER_*`` variables and *input* on stdin. It spares the interpreter
    start-up and imports a subprocess costs (most of a second of CPU each); the server a
    command acts on is still another process. What only a process shows (the binary itself,
    signals, a crash's traceback, start-up) needs :func:`run_cli`."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AUTHSERVER_")}
    package_logger = logging.getLogger("authserver")
    level = package_logger.level
    try:
        with CliRunner().isolation(input=input, env={**cleared, **env}) as (out, err, _):
            code = run(list(args))
            stdout = out.getvalue().decode()
            stderr = err.getvalue().decode()
    finally:
        package_logger.setLevel(level)  # commands quieten it for their own run
    return subprocess.CompletedProcess([AUTHSERVER, *args], code, stdout, stderr)


def cli_json_here(env: dict[str, str], *args: str) -> Any:
    """:func:`cli_json` through :func:`run_cli_here`."""
    return _json_output(run_cli_here(env, *args, "--json"))


class ServerProcess:
    """``authserver serve`` on a free loopback port; stopped by PID (its process group)."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int = 1,
        log_path: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port or free_port()
        self.host = host
        self.base_url = f"http://{host}:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
        full.update(env)
        full.setdefault("AUTHSERVER_ISSUER", self.base_url)
        self.env = full
        self.workers = workers
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 30) -> ServerProcess:
        if self.log_path:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            out: Any = self._log
        else:
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                AUTHSERVER,
                "serve",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if self.log_path else out,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # closes the log
                raise RuntimeError(f"authserver serve exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("authserver serve did not become ready in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        try:
            self._stop(sig)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _stop(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- which worker answered ------------------------------------------------------------------


def per_worker(metrics_parent: Path, name: str, **labels: str) -> dict[str, float]:
    """The sample *name*{*labels*} of each serving process, from prometheus-client's
    per-process files: ``serve`` makes its private metrics directory under
    ``PROMETHEUS_MULTIPROC_DIR`` (or the temp directory), and each worker writes its own
    ``<type>_<pid>.db`` there. Keyed by file stem; processes with no such sample omitted.
    This is how a test *shows* which workers answered, instead of hoping."""
    from prometheus_client.multiprocess import MultiProcessCollector

    values: dict[str, float] = {}
    for path in metrics_parent.glob("*/*.db"):
        # One file is one process; accumulate=True only makes histograms cumulative and
        # adds their _count.
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                wanted = sample.name == name and labels.items() <= sample.labels.items()
                if wanted and sample.value:
                    worker = path.stem.split("_", 1)[-1]  # the pid
                    values[worker] = values.get(worker, 0.0) + sample.value
    return values


def answered(metrics_parent: Path, endpoint: str) -> dict[str, float]:
    """Requests each worker has answered at *endpoint* (its route template)."""
    return per_worker(
        metrics_parent, "authserver_request_duration_seconds_count", endpoint=endpoint
    )


def on_every_worker(
    send: Callable[[], T],
    metrics_parent: Path,
    *,
    workers: int,
    endpoint: str = "/token",
    rounds: int = 20,
) -> list[T]:
    """Call *send* (a request on a new connection) in concurrent bursts until each of
    *workers* processes has answered at least one of them at *endpoint*; return every
    result, for the caller to check them all. Fails when some worker never answered."""
    before = answered(metrics_parent, endpoint)
    results: list[T] = []
    after = before
    for _ in range(rounds):
        with ThreadPoolExecutor(max_workers=2 * workers) as pool:
            results.extend(pool.map(lambda _: send(), range(2 * workers)))
        after = answered(metrics_parent, endpoint)
        grown = [w for w, n in after.items() if n > before.get(w, 0.0)]
        if len(grown) >= workers:
            return results
    raise AssertionError(f"not every worker answered at {endpoint}: {before} -> {after}")
