"""Access to the application's services from request handlers."""

from __future__ import annotations

from flask import current_app
from flask import g

from authserver.container import Services


def services() -> Services:
    return current_app.extensions["authserver.services"]  # type: ignore[no-any-return]


def begin_unit_of_work() -> None:
    """Start the request's unit of work (one transaction per request, committed once at
    its end)."""
    g.uow_token = services().db.begin()


def end_unit_of_work(*, commit: bool) -> None:
    """End the request's unit of work, if it is still open: commit or roll back, then
    close. Raises :class:`~authserver.errors.StorageError` when the database fails it."""
    token = g.pop("uow_token", None)
    if token is not None:
        services().db.end(token, commit=commit)
