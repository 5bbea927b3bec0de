"""Prometheus collectors (prometheus-client).

Four families, all with bounded label sets:

- ``authserver_tokens_issued_total``: access tokens issued. No ``client_id`` label: the
  scrape would list every client id to whoever holds the metrics token (a monitoring
  system, its dashboards and their users), one series per client would cost every worker
  memory for its lifetime, and per-client history is already in the audit trail
  (``authserver audit --client ID``), which says who asked for what and when;
- ``authserver_token_failures_total{reason}``: refused token requests (at ``/token`` and
  at a profile's own token path), by RFC 6749 error code (or ``http_<status>`` for errors
  outside the OAuth layer);
- ``authserver_request_duration_seconds{endpoint}``: request latency by route template
  (e.g. ``/admin/clients/<client_id>``; ``unmatched`` for requests no route matched);
- ``authserver_client_auth_throttled_total{endpoint,scope}``: requests refused with 429 by
  the failed-authentication limits (``web/limits.py``), by route template and exhausted
  budget (``client`` or ``address``).

Two more families are not kept in any process: the worker answering the scrape reads
them from the key store, so they are the same whichever worker answers and are never
added up across workers (a gauge kept per worker would be, or would come out once per
process id):

- ``authserver_signing_keys{state}``: stored keys that are ``next``, ``current`` or
  ``previous`` (published);
- ``authserver_signing_key_rotation_timestamp_seconds``: when the current key stops
  signing (Unix time): the scheduled next key's start, or, while none is scheduled, the
  end of the current key's rotation interval. In the past, the schedule is not rotating.

Under ``authserver serve`` each worker is a separate process: when
``PROMETHEUS_MULTIPROC_DIR`` is set
(``authserver serve`` sets it to a fresh private directory before any worker starts),
prometheus-client keeps the values in per-process files there and :func:`exposition`
aggregates every worker's. The variable must be set before ``prometheus_client`` is first
imported; it chooses the storage of the values at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client import multiprocess
from prometheus_client import values
from prometheus_client.metrics_core import Metric

from authserver import process

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

if os.environ.get(MULTIPROC_ENV):
    # Before any metric below is made: each takes its value class when it is built. The
    # values ask for the process identity on every increment (to notice a fork); their
    # default, os.getpid, is a system call, two or three per request.
    values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier=process.pid
    )

#: Label values that are not one of these shapes are folded into "other" (defence in depth:
#: every value already comes from the server's own code, not from the request).
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")

TOKENS_ISSUED = Counter("authserver_tokens_issued", "Access tokens issued.")
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
#: Requests refused by the failed-authentication limits. At /token they also count in
#: ``authserver_token_failures_total{reason="slow_down"}``.
CLIENT_AUTH_THROTTLED = Counter(
    "authserver_client_auth_throttled",
    "Requests refused with 429 after too many failed client authentications, by endpoint "
    "and by exhausted budget (client or address).",
    ["endpoint", "scope"],
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def token_issued() -> None:
    TOKENS_ISSUED.inc()


def token_failed(reason: str) -> None:
    TOKEN_FAILURES.labels(reason=reason if _REASON.fullmatch(reason) else "other").inc()


def client_auth_throttled(endpoint: str, scope: str) -> None:
    CLIENT_AUTH_THROTTLED.labels(endpoint=endpoint, scope=scope).inc()


#: The histogram child of each endpoint: ``labels()`` validates and locks on every call,
#: and this runs on every request. Endpoints are route templates, so few.
_durations: dict[str, Any] = {}


def observe_request(endpoint: str, seconds: float) -> None:
    child = _durations.get(endpoint)
    if child is None:
        child = REQUEST_DURATION.labels(endpoint=endpoint)
        if len(_durations) < 256:
            _durations[endpoint] = child
    child.observe(max(seconds, 0.0))


#: Families computed at scrape time by the caller (the key schedule's, read from the store).
Snapshot = Callable[[], Iterable[Metric]]


class _Families:
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def exposition(snapshot: Snapshot | None = None) -> tuple[bytes, str]:
    """The current metrics in the Prometheus text format, and its content type: this
    process's, or every worker's in multiprocess mode, and the families *snapshot*
    computes now (the same in every worker, so never added up)."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Families(REGISTRY.collect))
    if snapshot is not None:
        registry.register(_Families(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST
