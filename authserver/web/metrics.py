"""GET /metrics (Prometheus text format, bearer ``AUTHSERVER_METRICS_TOKEN``) and the
request hooks that feed the collectors."""

from __future__ import annotations

import time

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import g
from flask import request

from authserver import metrics
from authserver.web import bearer
from authserver.web.context import services
from authserver.web.errors import error_response

bp = Blueprint("metrics", __name__)

#: Endpoints whose failures count as token failures.
ISSUE_PATH = "/token"


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    # Registered only when AUTHSERVER_METRICS_TOKEN is set (web/app.py); otherwise 404.
    # No transport rule here, unlike /admin: Prometheus usually scrapes each instance over
    # the internal network in plain http, and this token reads counters, it changes nothing.
    expected = services().settings.metrics_token
    if not expected or not bearer.presented_matches(expected):
        bearer.count_failure()
        response = error_response(401, "invalid_token", "a valid metrics bearer token is required")
        response.headers["WWW-Authenticate"] = (
            'Bearer realm="authserver-metrics", error="invalid_token"'
        )
        return response
    body, content_type = metrics.exposition()
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def instrument(app: Flask) -> None:
    """Install the hooks. Call before any other ``before_request`` is registered, so the
    latency covers the whole request (after-request hooks run in reverse order)."""

    @app.before_request
    def _start_timer() -> None:
        g.authserver_request_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        try:
            _observe(response)
        except Exception:
            app.logger.exception("metrics: recording the request failed")
        return response


def _observe(response: Response) -> None:
    # The route template (bounded), never the path the client sent (unbounded).
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    started = g.get("authserver_request_started")
    if started is not None:
        metrics.observe_request(rule, time.perf_counter() - started)
    if rule != ISSUE_PATH:
        return
    status = response.status_code
    if status == 200:
        metrics.token_issued()
    elif status >= 400:
        reason = g.get("authserver_oauth_error")
        metrics.token_failed(reason if isinstance(reason, str) and reason else f"http_{status}")
