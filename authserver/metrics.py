"""Prometheus collectors (prometheus-client).

Three families, all with bounded label sets:

- ``authserver_tokens_issued_total{client_id}``: access tokens issued, per *authenticated*
  client (the label comes from the client record the token was issued to, never from the
  request, so it grows only with the number of registered clients);
- ``authserver_token_failures_total{reason}``: refused token requests, by RFC 6749 error
  code (or ``http_<status>`` for errors outside the OAuth layer);
- ``authserver_request_duration_seconds{endpoint}``: request latency by route template
  (e.g. ``/admin/clients/<client_id>``; ``unmatched`` for requests no route matched).

Under gunicorn each worker is a separate process: when ``PROMETHEUS_MULTIPROC_DIR`` is set
(``authserver serve`` sets it to a fresh private directory before any worker starts),
prometheus-client keeps the values in per-process files there and :func:`exposition`
aggregates every worker's. The variable must be set before ``prometheus_client`` is first
imported; it chooses the storage of the values at import time.
"""

from __future__ import annotations

import os
import re

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Label values that are not one of these shapes are folded into "other" (defence in depth:
#: every value already comes from the server's own code, not from the request).
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

TOKENS_ISSUED = Counter(
    "authserver_tokens_issued",
    "Access tokens issued, by authenticated client.",
    ["client_id"],
)
TOKEN_FAILURES = Counter(
    "authserver_token_failures",
    "Token requests refused, by reason (RFC 6749 error code or http_<status>).",
    ["reason"],
)
REQUEST_DURATION = Histogram(
    "authserver_request_duration_seconds",
    "HTTP request latency, by endpoint (route template).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def token_issued(client_id: str) -> None:
    TOKENS_ISSUED.labels(client_id=client_id).inc()


def token_failed(reason: str) -> None:
    TOKEN_FAILURES.labels(reason=reason if _REASON.match(reason) else "other").inc()


def observe_request(endpoint: str, seconds: float) -> None:
    REQUEST_DURATION.labels(endpoint=endpoint).observe(max(seconds, 0.0))


def exposition() -> tuple[bytes, str]:
    """The current metrics in the Prometheus text format, and its content type: this
    process's, or every worker's in multiprocess mode."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """gunicorn ``child_exit``: forget a dead worker's live gauges (its counters stay)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
