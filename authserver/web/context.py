"""Access to the application's services from request handlers."""

from __future__ import annotations

from flask import current_app

from authserver.container import Services


def services() -> Services:
    return current_app.extensions["authserver.services"]  # type: ignore[no-any-return]
