"""/healthz (the process answers) and /readyz (database reachable, a key signs)."""

from __future__ import annotations

import logging

from flask import Blueprint
from flask import Response
from flask import jsonify

from authserver.errors import StorageError
from authserver.errors import StorageUnavailable
from authserver.records import UnreadableRecord
from authserver.web.context import end_unit_of_work
from authserver.web.context import services

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the database answers and a key signs now. A database failure in any
    check (it can go away between two of them) fails the database check: the request's
    transaction may then be unusable, and only a not-ready answer, which is rolled back,
    never committed, says so truthfully."""
    svc = services()
    checks: dict[str, str] = {"database": "ok"}
    try:
        svc.db.ping()
    except StorageError as exc:
        # Its message is written to be shown: the database (password masked) and the cause.
        log.warning("readiness: database check failed: %s", exc)
        checks["database"] = "unavailable"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    try:
        svc.key_ring.current()
        checks["signing_key"] = "ok"
    except Exception as exc:
        log.warning("readiness: signing key check failed: %s", type(exc).__name__)
        checks["signing_key"] = "unavailable"
        if isinstance(exc, StorageUnavailable):
            checks["database"] = "unavailable"
    unreadable: list[UnreadableRecord] = []
    try:
        # Reported, not failed on: an unreadable record that is not needed leaves the
        # instance able to serve (a missing current key fails signing_key above). Not
        # asked of a database already found unavailable: against a hung one each attempt
        # waits out the connect timeout, and a third made the probe take over 6 s.
        if checks["database"] == "ok":
            unreadable = svc.key_ring.unreadable()
    except StorageUnavailable as exc:
        log.warning("readiness: listing key records failed: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    except Exception as exc:
        log.warning("readiness: listing key records failed: %s", type(exc).__name__)
    try:
        # The probe writes nothing: its transaction ends here, rolled back, so a database
        # that goes away after the checks fails the database check (the rollback fails
        # too) instead of failing the commit, which turned the answer into the generic
        # 503 of a database error, without the checks.
        end_unit_of_work(commit=False)
    except StorageError as exc:
        log.warning("readiness: ending the transaction failed: %s", exc)
        checks["database"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if unreadable:
        body["unreadable_records"] = [f"{r.name}: {r.reason}" for r in unreadable]
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response
