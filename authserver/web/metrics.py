"""GET /metrics (Prometheus text format, bearer ``AUTHSERVER_METRICS_TOKEN``) and the
subscriptions and request hooks that feed the collectors."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterable

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import request
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from authserver import metrics
from authserver.keys.model import KeyState
from authserver.keys.plan import rotation_due
from authserver.oauth.events import ClientAuthFailed
from authserver.oauth.events import Events
from authserver.oauth.events import RequestServed
from authserver.oauth.events import TokenIssued
from authserver.web import bearer
from authserver.web.context import services

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

#: The token endpoint; with the profiles' own token paths (``POST /auth/v1/access-tokens``
#: of the ``stream`` profile), the routes whose failures count as token failures.
ISSUE_PATH = "/token"


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    # Registered only when AUTHSERVER_METRICS_TOKEN is set (web/app.py); otherwise 404.
    # No transport rule here, unlike /admin: Prometheus usually scrapes each instance over
    # the internal network in plain http, and this token reads counters, it changes nothing.
    expected = services().settings.metrics_token
    if not expected or not bearer.presented_matches(expected):
        bearer.count_failure()
        return bearer.unauthorized("authserver-metrics", "metrics")
    body, content_type = metrics.exposition(_key_schedule)
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


#: The key states counted in ``authserver_signing_keys`` (a gone key is not published).
_COUNTED_STATES = (KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS)


def _key_schedule() -> list[Metric]:
    """The signing keys by state and when the current one stops signing, read from the key
    store by the worker answering the scrape (so one value, whichever worker answers).
    Left out when the store cannot be read: ``/readyz`` says why, and an absent series is
    what an alert on the schedule should watch for too."""
    svc = services()
    try:
        views = svc.keys.views()
    except Exception as exc:
        log.warning(
            "metrics: signing key families left out, the key store cannot be read (%s)",
            type(exc).__name__,
        )
        return []
    counts = {state: 0 for state in _COUNTED_STATES}
    current = None
    pending: list[float] = []
    for view in views:
        if view.state in counts:
            counts[view.state] += 1
        if view.state is KeyState.CURRENT:
            current = view.key
        elif view.state is KeyState.NEXT:
            pending.append(view.key.activate_at)
    keys = GaugeMetricFamily(
        "authserver_signing_keys",
        "Signing keys in the key store, by state: next (published, not signing yet), "
        "current (signing), previous (published until its tokens expire).",
        labels=["state"],
    )
    for state, count in counts.items():
        keys.add_metric([state.value], count)
    families: list[Metric] = [keys]
    if current is not None:
        rotation = GaugeMetricFamily(
            "authserver_signing_key_rotation_timestamp_seconds",
            "When the current signing key stops signing, as Unix time: the start of the "
            "scheduled next key, else the end of the current key's rotation interval "
            "(AUTHSERVER_KEY_ROTATION_INTERVAL). In the past: the schedule is not rotating.",
        )
        rotation.add_metric([], min(pending) if pending else rotation_due(current, svc.keys.policy))
        families.append(rotation)
    return families


#: When the current Flask request started (a context variable: each request runs in its
#: own thread or context, and nothing is parked on the request or in ``flask.g``).
_started: contextvars.ContextVar[float] = contextvars.ContextVar("authserver_request_started")


def subscribe(events: Events, token_paths: Iterable[str] = ()) -> None:
    """The collectors' subscriptions (one place: see ``web/app.py``). *token_paths*: the
    profiles' own token paths, which issue tokens as ``/token`` does, so their refusals
    count as token failures too."""
    issuing = frozenset({ISSUE_PATH, *token_paths})

    def served(event: RequestServed) -> None:
        _served(event, issuing)

    events.subscribe(RequestServed, served)
    events.subscribe(TokenIssued, lambda event: metrics.token_issued())
    events.subscribe(ClientAuthFailed, _auth_failed)


def _served(event: RequestServed, issuing: frozenset[str]) -> None:
    try:
        metrics.observe_request(event.route, event.seconds)
        if event.status >= 400 and event.route in issuing:
            metrics.token_failed(event.error or f"http_{event.status}")
    except Exception:
        log.exception("metrics: recording the request failed")


def _auth_failed(event: ClientAuthFailed) -> None:
    if event.throttled is not None:
        metrics.client_auth_throttled(event.endpoint, event.throttled)


def instrument(app: Flask, events: Events) -> None:
    """Report the Flask app's requests as :class:`RequestServed` too (latency by route
    template). Call before any other ``before_request`` is registered, so the latency
    covers the whole request (after-request hooks run in reverse order)."""

    @app.before_request
    def _start_timer() -> None:
        _started.set(time.perf_counter())

    @app.after_request
    def _record(response: Response) -> Response:
        # The route template (bounded), never the path the client sent (unbounded).
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = _started.get(None)
        error = description = None
        if response.status_code >= 400 and response.is_json:
            # Every error body has the RFC 6749 shape (web/errors.py).
            body = response.get_json(silent=True)
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                error = body["error"]
                description = str(body.get("error_description") or "") or None
        events.emit(
            RequestServed(
                route=rule,
                method=request.method,
                status=response.status_code,
                error=error,
                seconds=time.perf_counter() - started if started is not None else 0.0,
                remote_addr=request.remote_addr,
                environ=request.environ,
                description=description,
            )
        )
        return response
