"""Fixtures shared by the storage contract suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authserver.storage.sql.engine import Database
from tests.conftest import migrate


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """A migrated SQL database (SQLite file or PostgreSQL schema, from ``db_url``)."""
    db = Database(db_url)
    migrate(db)
    yield db
    db.dispose()
