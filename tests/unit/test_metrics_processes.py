"""Multiprocess metrics without a system call per increment: every process, a forked
worker included, writes its own value files, and the exposition adds them up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import os, sys
from authserver import metrics
metrics.token_issued()
child = os.fork()
if child == 0:
    metrics.token_issued()
    metrics.token_issued()
    print("child", os.getpid(), flush=True)
    os._exit(0)
os.waitpid(child, 0)
body, _ = metrics.exposition()
line = next(x for x in body.decode().splitlines() if x.startswith("authserver_tokens_issued_total"))
print("parent", os.getpid(), line, flush=True)
"""


def test_a_forked_worker_counts_in_its_own_files(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    child_pid = lines["child"].strip()
    parent_pid, total = lines["parent"].split(" ", 1)
    files = {p.name for p in tmp_path.iterdir()}
    assert f"counter_{parent_pid}.db" in files
    assert f"counter_{child_pid}.db" in files
    assert total.split()[-1] == "3.0"
