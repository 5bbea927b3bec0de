"""GET /metrics (Prometheus text format) and the request hooks that feed the collectors."""

from __future__ import annotations

import time

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import g
from flask import request

from authserver import metrics

bp = Blueprint("metrics", __name__)

#: Endpoints whose failures count as token failures.
ISSUE_PATH = "/token"


@bp.get("/metrics")
def metrics_endpoint() -> Response:
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
        client_id = g.get("authserver_token_client")
        if isinstance(client_id, str) and client_id:
            metrics.token_issued(client_id)
    elif status >= 400:
        reason = g.get("authserver_oauth_error")
        metrics.token_failed(reason if isinstance(reason, str) and reason else f"http_{status}")
