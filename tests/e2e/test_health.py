"""Liveness, readiness and the JSON shape of plain HTTP errors."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from authserver.container import Services
from authserver.settings import Settings
from tests.conftest import PG_URL
from tests.conftest import db_independent
from tests.conftest import make_services

pytestmark = pytest.mark.e2e


@db_independent
def test_healthz(http: Any) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.mimetype == "application/json"


def test_readyz_checks_database_and_signing_key(http: Any) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    checks = response.get_json()["checks"]
    assert checks, "readiness must name what it checked"
    assert all(value == "ok" for value in checks.values()), checks
    assert {"database", "signing_key"} <= set(checks)


def test_readyz_reports_a_missing_signing_key(http: Any, services: Services) -> None:
    """No key that signs now (the key store was emptied, or holds only a key scheduled
    for later): not ready, naming the signing key, while the database is fine."""
    store = services.keys._store
    with services.unit_of_work(), store.lock():
        for key in store.list():
            store.delete(key.kid)
    services.key_ring.invalidate()
    response = http.get("/readyz")
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "signing_key": "unavailable"}

    # Only a key that signs later (the current one lost): still not ready.
    with services.unit_of_work():
        current = services.keys.ensure_current()
        scheduled = services.keys.rotate().key
    assert current is not None
    assert scheduled.activate_at > time.time()
    with services.unit_of_work(), store.lock():
        store.delete(current.kid)
    services.key_ring.invalidate()
    response = http.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "signing_key": "unavailable"}

    # A current key again: ready.
    with services.unit_of_work():
        services.keys.ensure_current()
    services.key_ring.invalidate()
    assert http.get("/readyz").status_code == 200


def assert_json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["error_description"], str)
    return body  # type: ignore[no-any-return]


@db_independent
@pytest.mark.parametrize("path", ["/no-such-path", "/token/extra", "/.well-known/nothing"])
def test_unknown_path_is_404_json(http: Any, path: str) -> None:
    assert_json_error(http.get(path), 404)


@db_independent
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_wrong_method_on_token_is_405_json(http: Any, method: str) -> None:
    response = getattr(http, method)("/token")
    assert_json_error(response, 405)
    assert "POST" in response.headers.get("Allow", "")


@db_independent
def test_every_4xx_werkzeug_raises_has_a_client_error_code(app: Any) -> None:
    """Any 4xx Werkzeug can raise on a Flask route (406, 411, 414, 416, 428, 431, ...)
    answers its own JSON error code: a status missing from the handler's table was
    labelled ``server_error``, which RFC 6749 gives to the server's own failures. 406 and
    412 say what the lean layer's documents say for them."""
    from werkzeug.exceptions import abort
    from werkzeug.exceptions import default_exceptions

    def fail(code: int) -> None:
        abort(code)

    app.add_url_rule("/test-abort/<int:code>", view_func=fail)
    http = app.test_client()
    client_errors = sorted(code for code in default_exceptions if 400 <= code < 500)
    assert {406, 411, 414, 416, 428, 431} <= set(client_errors)
    codes = {}
    for status in client_errors:
        response = http.get(f"/test-abort/{status}")
        body = assert_json_error(response, status)
        assert response.headers["Cache-Control"] == "no-store"
        assert body["error"] != "server_error", status
        assert re.fullmatch("[a-z]+(_[a-z]+)*", body["error"]), body
        codes[status] = body["error"]
    assert codes[406] == "not_acceptable"
    assert codes[412] == "precondition_failed"
    assert codes[431] == "request_header_fields_too_large"


@db_independent
def test_every_5xx_werkzeug_raises_answers_as_the_rest_of_the_product(app: Any) -> None:
    """A 5xx Werkzeug raises on a Flask route (admin API, health, metrics) says what the
    product's other answers say for that status: 503 is ``temporarily_unavailable`` with
    the ``Retry-After`` of a database or key outage's 503, 501 is ``not_implemented`` as
    the lean layer answers it; any other 5xx is ``server_error``."""
    from werkzeug.exceptions import abort
    from werkzeug.exceptions import default_exceptions

    from authserver.web.errors import RETRY_AFTER

    def fail(code: int) -> None:
        abort(code)

    app.add_url_rule("/test-abort/<int:code>", view_func=fail)
    http = app.test_client()
    server_errors = sorted(code for code in default_exceptions if code >= 500)
    assert {500, 501, 502, 503, 504, 505} <= set(server_errors)
    for status in server_errors:
        response = http.get(f"/test-abort/{status}")
        body = assert_json_error(response, status)
        assert response.headers["Cache-Control"] == "no-store"
        if status == 503:
            assert body["error"] == "temporarily_unavailable"
            assert response.headers.get("Retry-After") == dict(RETRY_AFTER)["Retry-After"]
        elif status == 501:
            assert body["error"] == "not_implemented"
        else:
            assert body["error"] == "server_error", status
            assert "Retry-After" not in response.headers


@contextmanager
def _app_with_sql_keys(db_url: str, tmp_path: Path) -> Iterator[tuple[Services, Any]]:
    """Services with the SQL key store on *db_url*, and a test client of their app."""
    from authserver.web.app import create_app

    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": db_url,
            "AUTHSERVER_KEY_STORE": "sql",
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
        }
    )
    services = make_services(settings)
    try:
        yield services, create_app(services=services).test_client()
    finally:
        services.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_readyz_is_503_when_the_database_goes_away_between_its_checks(
    db_url: str, tmp_path: Path
) -> None:
    """The database answers the ping, then drops the connection while the key records
    are listed (a PostgreSQL stop between the two checks): not ready, 503 with the
    database check failing. Before, the listing's failure was only reported, the answer
    was 200, and committing the request's transaction, left unusable by the dropped
    connection, turned it into a 500 (seen in the outage test under load).

    The drop is PostgreSQL's own: reading ``signing_keys`` terminates the backend that
    reads it (the table replaced by a view whose filter calls ``pg_terminate_backend``)."""
    import psycopg

    with _app_with_sql_keys(db_url, tmp_path) as (_services, http):
        assert http.get("/readyz").status_code == 200  # the current key is cached now
        schema = db_url.rsplit("search_path%3D", 1)[1].split("&")[0]
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(
                "CREATE FUNCTION drop_reader() RETURNS boolean LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN true; END $$"
            )
            conn.execute("ALTER TABLE signing_keys RENAME TO signing_keys_kept")
            conn.execute(
                "CREATE VIEW signing_keys AS SELECT * FROM signing_keys_kept WHERE drop_reader()"
            )
        response = http.get("/readyz")
        assert response.status_code == 503, response.get_data(as_text=True)
        body = response.get_json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "unavailable", body


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_readyz_is_503_when_the_database_goes_away_after_its_checks(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check passed, then PostgreSQL dropped the request's connection before the
    answer was sent (an immediate stop, seen in the outage test under load): not ready,
    503 with the database check failing. Before, the checks said ready and committing the
    request's transaction failed, which turned the answer into the generic 503 of a
    database error, without the checks.

    The drop is PostgreSQL's own (``pg_terminate_backend`` of the request's backend, from
    another connection), made once the key records have been listed."""
    import psycopg

    with _app_with_sql_keys(db_url, tmp_path) as (services, http):
        assert http.get("/readyz").status_code == 200
        listed = services.key_ring.unreadable
        dropped: list[int] = []

        def list_then_drop() -> Any:
            found = listed()
            row = services.db.read_one("SELECT pg_backend_pid()")  # the request's own
            assert row is not None
            with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            dropped.append(row[0])
            return found

        monkeypatch.setattr(services.key_ring, "unreadable", list_then_drop)
        response = http.get("/readyz")
        assert dropped, "the request's connection was not dropped"
        assert response.status_code == 503, response.get_data(as_text=True)
        body = response.get_json()
        assert body["status"] == "unavailable", body
        assert body["checks"]["database"] == "unavailable", body
        assert body["checks"]["signing_key"] == "ok", body


@pytest.mark.waits
def test_readyz_against_a_hung_database_makes_at_most_two_connection_attempts(
    tmp_path: Path,
) -> None:
    """PostgreSQL's port accepts connections and never answers: each attempt waits out the
    connect timeout (2 s), so the probe must not make a third after the database check
    failed (it listed the key records too: over 6 s, past the outage test's bound)."""
    from authserver import container
    from authserver.web.app import create_app

    accepted: list[socket.socket] = []
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)

    def hold() -> None:
        while True:
            try:
                accepted.append(hole.accept()[0])  # and never a byte back
            except OSError:
                return

    threading.Thread(target=hold, daemon=True).start()
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": (
                f"postgresql+psycopg://postgres@127.0.0.1:{hole.getsockname()[1]}/hung"
            ),
            "AUTHSERVER_KEY_STORE": "sql",
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost:8000",
        }
    )
    services = container.build(settings)
    try:
        http = create_app(services=services).test_client()
        started = time.monotonic()
        response = http.get("/readyz")
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["checks"]["database"] == "unavailable"
        assert len(accepted) <= 2, (len(accepted), elapsed)
    finally:
        services.close()
        hole.close()
        for conn in accepted:
            conn.close()
