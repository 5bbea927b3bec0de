"""A new SQLite connection never costs the process the locks its other connections hold.

POSIX advisory locks belong to a process and a file, not to a descriptor: closing *any*
descriptor of the database file (or of its -shm file, where WAL keeps its locks) releases
every lock the process holds on it, those of SQLite's open connections included. The
engine's hook that keeps the file owner-only runs as each new connection opens, so it
must never open a descriptor of its own (it once did: a worker's new connection dropped
another connection's write lock, and under load token requests failed with 503 "the
database is unavailable")."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from authserver.storage.sql.engine import make_engine

pytestmark = pytest.mark.integration

#: Another process asks for the write lock at once (no busy wait) and says what it got.
_TRY_WRITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=0)
try:
    conn.execute("BEGIN IMMEDIATE")
except sqlite3.OperationalError as exc:
    print("locked" if "locked" in str(exc) else f"error: {exc}")
else:
    print("acquired")
"""


def _other_process_write(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _TRY_WRITE, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def test_opening_a_connection_keeps_the_write_lock_of_another(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    # A file made before, world-readable: the hook's narrowing runs at every connect.
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    os.chmod(path, 0o644)
    engine = make_engine(f"sqlite:///{path}", pool_size=5)
    try:
        holder = engine.connect()
        holder.exec_driver_sql("BEGIN IMMEDIATE")
        holder.execute(text("INSERT INTO t VALUES (1)"))
        assert _other_process_write(path) == "locked"
        with engine.connect() as another:  # a new DBAPI connection: the hook runs
            another.execute(text("SELECT 1"))
        assert _other_process_write(path) == "locked"
        holder.rollback()
        holder.close()
        assert _other_process_write(path) == "acquired"
        assert (os.stat(path).st_mode & 0o077) == 0
    finally:
        engine.dispose()
