"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask import Response
from flask import request
from flask.globals import request_ctx
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix

from authserver import container
from authserver.container import Services
from authserver.errors import StorageError
from authserver.oauth.errors import SlowDownError
from authserver.oauth.events import ClientAuthenticated
from authserver.oauth.events import ClientAuthFailed
from authserver.oauth.events import Events
from authserver.oauth.events import RequestServed
from authserver.oauth.events import TokenIssued
from authserver.oauth.events import TokenRevoked
from authserver.oauth.server import AuthServerAuthorizationServer
from authserver.oauth.wsgi import OAuthWSGI
from authserver.oauth.wsgi import allow_header
from authserver.settings import Settings
from authserver.web import accesslog
from authserver.web import admin
from authserver.web import errors
from authserver.web import health
from authserver.web import limits
from authserver.web import metrics
from authserver.web import openapi
from authserver.web import statuslists
from authserver.web import wellknown
from authserver.web.accesslog import AccessLog
from authserver.web.bodies import BodyDeadline
from authserver.web.context import begin_unit_of_work
from authserver.web.context import end_unit_of_work
from authserver.web.host import RequireHost
from authserver.web.issuer_path import IssuerPath
from authserver.web.issuer_path import issuer_path

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the application. *services* defaults to ``container.build(settings)``;
    *settings* defaults to ``Settings.from_env()``. Creates no schema and no key: ``serve``
    (and the test fixtures) do that once, before any worker starts.

    The Flask app's WSGI callable is the lean OAuth layer (``oauth/wsgi.py``) for
    ``/token``, ``/introspect``, ``/revoke`` and the public documents (well-known, status
    lists, OpenAPI), in front of Flask for everything else, all behind ProxyFix when a
    proxy is configured.
    """
    if services is None:
        services = container.build(settings or Settings.from_env())
    settings = services.settings
    app = _Flask("authserver", static_folder=None)
    # No static files: Flask's /static/<path> route is not added. A path is matched as
    # sent, as the lean layer matches it: Werkzeug's default answered /admin//clients with
    # a 308 redirect in HTML, which no error handler sees (Flask hands routing redirects
    # back as they are).
    app.url_map.merge_slashes = False
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_body_bytes,
    )
    events = Events()
    failures = limits.build(settings)
    server = AuthServerAuthorizationServer(
        services.clients,
        services.tokens,
        inspector=services.inspector,
        revocations=services.revocations,
        events=events,
        issuer=settings.issuer,
        max_body_bytes=settings.max_body_bytes,
        failure_budget=failures,
        jwks_fetcher=services.jwks_fetcher,
        profiles=services.profiles,
    )
    _subscribe(events, services, failures)
    app.extensions["authserver.services"] = services
    app.extensions["authserver.events"] = events
    app.extensions["authserver.oauth"] = server
    if failures is not None:
        app.extensions["authserver.limits"] = failures

    # First, so the latency covers the other hooks.
    metrics.instrument(app, events)
    _unit_of_work_per_request(app)
    _method_as_sent(app)
    errors.register(app)
    app.register_blueprint(health.bp)
    if settings.metrics_token:
        app.register_blueprint(metrics.bp)  # GET /metrics
    if settings.admin_token:
        app.register_blueprint(admin.bp)

    @app.errorhandler(limits.TooManyFailedAuthentications)
    def _too_many(exc: limits.TooManyFailedAuthentications) -> Response:
        # A wrong operator token from an address over its budget (web/bearer.py): the
        # same 429 as a throttled client authentication at /token.
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        failed = ClientAuthFailed(
            endpoint=rule,
            client_id=None,
            address=None,
            throttled=exc.scope,
            reason="wrong operator bearer token",
        )
        events.emit(failed)
        status, payload, headers = SlowDownError(exc.retry_after)()
        response = errors.error_response(status, payload["error"], payload["error_description"])
        for name, value in headers:
            if name != "Content-Type":
                response.headers[name] = value
        return response

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    lean = OAuthWSGI(
        server,
        app.wsgi_app,
        events=events,
        unit_of_work=services.db.lazy_unit_of_work,
        on_error=errors.render_exception,
    )
    wellknown.register(lean, services)
    statuslists.register(lean, services)  # GET /statuslists[/<id>]
    openapi.register(lean, services)  # GET /openapi.json
    for path in sorted(services.profiles.paths()):
        lean.add_token_path(path)
    app.extensions["authserver.wsgi"] = lean
    wsgi: Any = lean
    prefix = issuer_path(settings.issuer)
    if prefix:
        # An issuer with a path: its URLs (and RFC 8414's metadata location) answer too.
        wsgi = IssuerPath(wsgi, prefix, routes=services.profiles.paths())
    if settings.proxy_hops:
        # Trust X-Forwarded-* only from as many proxies as configured (docs/design.md,
        # Authlib item 4).
        hops = settings.proxy_hops
        wsgi = ProxyFix(wsgi, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
    app.wsgi_app = wsgi  # type: ignore[method-assign]

    # Before any layer reads it, the body arrives in full within AUTHSERVER_BODY_TIMEOUT
    # or the request is answered 408: a stalled body must not hold a request thread.
    app.wsgi_app = BodyDeadline(  # type: ignore[method-assign]
        app.wsgi_app, timeout=settings.body_timeout, limit=settings.max_body_bytes
    )
    # Before anything reads Host (the transport rule, Werkzeug, ProxyFix) or the body: one
    # Host naming one host (RFC 9112 §3.2), which granian does not check.
    app.wsgi_app = RequireHost(  # type: ignore[method-assign]
        app.wsgi_app, proxy_hops=settings.proxy_hops
    )
    # Outermost, around every layer: one access line and the request id for each request.
    app.wsgi_app = AccessLog(app.wsgi_app)  # type: ignore[method-assign]
    return app


class _Flask(Flask):
    def make_default_options_response(self) -> Response:
        """``OPTIONS`` answered as the lean layer answers it (``oauth/wsgi.py``): 200, the
        methods in ``Allow`` in order, and an empty body without a ``Content-Type``
        (Flask's own said ``text/html`` of nothing)."""
        adapter = request_ctx.url_adapter
        allowed = adapter.allowed_methods() if adapter is not None else []
        response = self.response_class(status=200)
        del response.headers["Content-Type"]
        response.headers["Allow"] = allow_header(allowed)
        return response


def _subscribe(
    events: Events, services: Services, failures: limits.FailedAuthenticationLimits | None
) -> None:
    """Every subscriber of the OAuth layer's events, in one place: the audit trail, the
    metrics, the failed-authentication limits, and the access log's client id (the access
    line itself is written by the ``AccessLog`` middleware around both layers). A revoked
    token's status-list bit is no subscriber's: ``TokenInspector.revoke`` sets it with the
    jti record, in one unit of work."""
    audit = services.audit

    def issued(event: TokenIssued) -> None:
        audit.record_issued(
            f"client:{event.client_id}",
            client_id=event.client_id,
            sub=event.sub,
            aud=event.audience,
            jti=event.jti,
            kid=event.kid,
            auth_method=event.auth_method,
            # "previous" while a rotation's grace period lets the old secret in: the
            # operator sees which backends still have to switch.
            secret_used=event.secret_used,
            # What revoking every live token of a user or client reads (tokens/statuslist.py).
            status_list=event.status_list,
            status_idx=event.status_idx,
            exp=event.exp,
        )

    def revoked(event: TokenRevoked) -> None:
        audit.record(
            f"client:{event.client_id}",
            "token.revoked",
            client_id=event.client_id,
            sub=event.sub,
            jti=event.jti,
        )

    events.subscribe(TokenIssued, issued)
    events.subscribe(TokenRevoked, revoked)
    # The access line names the client a request authenticated as, at every endpoint, or
    # the id a failed authentication presented.
    events.subscribe(ClientAuthenticated, lambda event: accesslog.note_client(event.client_id))
    events.subscribe(ClientAuthFailed, lambda event: accesslog.note_client(event.client_id))
    events.subscribe(ClientAuthFailed, accesslog.log_auth_failure)
    events.subscribe(RequestServed, accesslog.note_refusal)
    metrics.subscribe(events, token_paths=services.profiles.paths())
    if failures is not None:
        events.subscribe(ClientAuthFailed, failures.count)


def routes(app: Flask) -> dict[str, set[str]]:
    """Every path the application serves and its methods (both layers), Flask's rule
    syntax for path parameters."""
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            served.setdefault(rule.rule, set()).update(rule.methods or ())
    lean: OAuthWSGI = app.extensions["authserver.wsgi"]
    for path, methods in lean.routes().items():
        served.setdefault(path, set()).update(methods)
    return served


def _method_as_sent(app: Flask) -> None:
    """A method is matched as sent: RFC 9110 §9.1 makes it case-sensitive, and Werkzeug
    upper-cases it, so ``post /admin/clients`` created a client and ``delete
    /admin/clients/ID`` disabled one (a proxy rule written for ``DELETE`` does not see
    ``delete``), while the lean layer answers ``post /token`` 405. Any route answers a
    method it does not serve as sent 405 with ``Allow``; an unknown path stays 404."""

    @app.before_request
    def _exact_method() -> None:
        if request.environ.get("REQUEST_METHOD") == request.method:
            return
        if request.url_rule is None:
            return  # no such path: its 404 (the routing error) is answered
        adapter = request_ctx.url_adapter
        allowed = adapter.allowed_methods() if adapter is not None else []
        raise MethodNotAllowed(valid_methods=sorted(allowed))


def _unit_of_work_per_request(app: Flask) -> None:
    """One transaction per request, committed once at the end (Indico ``RH.process``)."""

    @app.before_request
    def _begin() -> None:
        begin_unit_of_work()

    @app.after_request
    def _commit(response: Response) -> Response:
        commit = response.status_code < 500
        try:
            end_unit_of_work(commit=commit)
        except StorageError as exc:
            if commit:
                # The commit failed (the database went away after the handler ran): what
                # the handler answered did not happen, so answer as for any database
                # error.
                return errors.database_unavailable(exc)
            # A failed rollback of an error answer changes nothing it says (nothing was
            # committed).
        return response

    @app.teardown_request
    def _rollback(exc: BaseException | None) -> Any:
        end_unit_of_work(commit=False)
