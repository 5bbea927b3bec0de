"""The SQLite version counters every token request reads (``Database.read_counter``): kept
per thread while ``PRAGMA data_version`` is unchanged, and never stale."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import bump_counter
from authserver.storage.sql.migrate import ensure_schema


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'counters.db'}"
    db = Database(url)
    ensure_schema(db, create=True, upgrade=True)
    db.dispose()
    return url


def _bump(db: Database, name: str) -> None:
    with db.unit_of_work():
        conn = db.connection()
        bump_counter(conn, name)


def test_a_commit_by_another_connection_is_seen_on_the_next_read(url: str) -> None:
    reader, writer = Database(url), Database(url)
    try:
        assert reader._counters is not None, "a SQLite file uses the data_version reader"
        _bump(writer, "clients")
        keys = reader.read_counter("keys")
        first = reader.read_counter("clients")
        assert reader.read_counter("clients") == first  # cached, unchanged
        _bump(writer, "clients")
        assert reader.read_counter("clients") == first + 1
        _bump(writer, "keys")
        assert reader.read_counter("clients") == first + 1
        assert reader.read_counter("keys") == keys + 1
    finally:
        reader.dispose()
        writer.dispose()


def test_a_commit_by_another_process_is_seen_on_the_next_read(url: str) -> None:
    reader = Database(url)
    try:
        before = reader.read_counter("clients")
        code = (
            "import sys; from authserver.storage.sql.engine import Database, bump_counter\n"
            "db = Database(sys.argv[1])\n"
            "with db.unit_of_work():\n    bump_counter(db.connection(), 'clients')\n"
        )
        subprocess.run([sys.executable, "-c", code, url], check=True, timeout=60)
        assert reader.read_counter("clients") == before + 1
    finally:
        reader.dispose()


def test_the_unit_of_work_sees_its_own_uncommitted_bump(url: str) -> None:
    db = Database(url)
    try:
        before = db.read_counter("clients")
        with db.unit_of_work():
            conn = db.connection()
            bump_counter(conn, "clients")
            assert db.read_counter("clients") == before + 1
        assert db.read_counter("clients") == before + 1
    finally:
        db.dispose()


def test_each_thread_reads_on_its_own_connection(url: str) -> None:
    reader, writer = Database(url), Database(url)
    seen: list[int] = []
    try:
        base = reader.read_counter("clients")
        _bump(writer, "clients")
        thread = threading.Thread(target=lambda: seen.append(reader.read_counter("clients")))
        thread.start()
        thread.join(30)
        assert seen == [base + 1]
        assert reader.read_counter("clients") == base + 1
    finally:
        reader.dispose()
        writer.dispose()


@pytest.mark.parametrize(
    "memory_url",
    ["sqlite://", "sqlite:///%3Amemory%3A", "sqlite:///file::memory:?uri=true"],
)
def test_an_in_memory_database_is_one_database(memory_url: str) -> None:
    """Settings refuse these URLs; a Database given one directly (a tool, a test) reads
    where it writes: the rule is settings.sqlite_in_memory, the same for both."""
    db = Database(memory_url)
    try:
        ensure_schema(db, create=True, upgrade=True)
        assert db._counters is None
        before = db.read_counter("clients")
        _bump(db, "clients")
        assert db.read_counter("clients") == before + 1
    finally:
        db.dispose()
