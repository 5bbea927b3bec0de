"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask import Response
from flask import g
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.middleware.proxy_fix import ProxyFix

from authserver import container
from authserver.container import Services
from authserver.oauth.server import AuthServerAuthorizationServer
from authserver.settings import Settings
from authserver.web import admin
from authserver.web import errors
from authserver.web import health
from authserver.web import limits
from authserver.web import metrics
from authserver.web import oauth
from authserver.web import openapi
from authserver.web import statuslists
from authserver.web import wellknown
from authserver.web.accesslog import AccessLog

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the application. *services* defaults to ``container.build(settings)``;
    *settings* defaults to ``Settings.from_env()``. Creates no schema and no key: ``serve``
    (and the test fixtures) do that once, before any worker starts."""
    if services is None:
        services = container.build(settings or Settings.from_env())
    settings = services.settings
    app = Flask("authserver")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    app.extensions["authserver.services"] = services
    app.extensions["authserver.oauth"] = AuthServerAuthorizationServer(
        services.clients,
        services.tokens,
        inspector=services.inspector,
        revocations=services.revocations,
        audit=services.audit,
        issuer=settings.issuer,
        jwks_fetcher=services.jwks_fetcher,
        profiles=services.profiles,
    )
    if settings.proxy_hops:
        # Trust X-Forwarded-* only from as many proxies as configured (docs/design.md,
        # Authlib item 4).
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )

    # First, so the latency covers the other hooks (metrics before/after_request).
    metrics.instrument(app)
    _unit_of_work_per_request(app, services)
    errors.register(app)
    # Failed client authentication limits (brute force): after the metrics hooks, so a 429
    # is timed and counted like any other response.
    limits.init_app(app, settings, app.extensions["authserver.oauth"])
    app.register_blueprint(oauth.bp)
    oauth.register_profile_paths(app, services.profiles)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(statuslists.bp)  # GET /statuslists[/<id>]
    app.register_blueprint(health.bp)
    if settings.metrics_token:
        app.register_blueprint(metrics.bp)  # GET /metrics
    app.register_blueprint(openapi.bp)  # GET /openapi.json
    if settings.admin_token:
        app.register_blueprint(admin.bp)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # Outermost, around every layer: one access line and the request id for each request.
    app.wsgi_app = AccessLog(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _unit_of_work_per_request(app: Flask, services: Services) -> None:
    """One transaction per request, committed once at the end (Indico ``RH.process``)."""
    db = services.db

    @app.before_request
    def _begin() -> None:
        g.uow_token = db.begin()

    @app.after_request
    def _commit(response: Response) -> Response:
        token = g.pop("uow_token", None)
        if token is not None:
            try:
                db.end(token, commit=response.status_code < 500)
            except SQLAlchemyError as exc:
                # The commit failed (the database went away after the handler ran): what
                # the handler answered did not happen, so answer as for any database error.
                return errors.database_unavailable(exc)
        return response

    @app.teardown_request
    def _rollback(exc: BaseException | None) -> Any:
        token = g.pop("uow_token", None)
        if token is not None:
            db.end(token, commit=False)
