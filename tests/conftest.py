"""Shared fixtures.

Databases: every test that asks for ``services``/``app``/``db_url`` runs twice, on a real
SQLite file and on a real PostgreSQL (a fresh schema per test). PostgreSQL comes from
``AUTHSERVER_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
When it is unreachable the PostgreSQL leg is skipped with a message, except under CI
(``CI=true``) or ``AUTHSERVER_TEST_REQUIRE_POSTGRES=1``, where it fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authserver import container
from authserver.clock import FixedClock
from authserver.container import Services
from authserver.settings import Settings
from authserver.storage.sql.migrate import upgrade_to_head

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("AUTHSERVER_TEST_POSTGRES_URL", DEFAULT_PG)
REQUIRE_PG = (
    os.environ.get("AUTHSERVER_TEST_REQUIRE_POSTGRES") == "1"
    or os.environ.get("CI", "").lower() == "true"
)
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


def pg_schema_url(schema: str) -> str:
    base = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated-nothing, empty database URL: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'authserver.db'}"
        return
    reason = _pg_available()
    if reason:
        if REQUIRE_PG:
            pytest.fail(f"{reason} (required: CI or AUTHSERVER_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(schema)
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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


def make_services(settings: Settings, clock: Any = None) -> Services:
    """Services on a migrated database with a current signing key."""
    svc = container.build(settings, clock=clock)
    upgrade_to_head(svc.db)
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


@pytest.fixture(scope="session")
def rsa_private_key() -> rsa.RSAPrivateKey:
    """A session-cached RSA key (key generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
