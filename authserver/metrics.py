"""Prometheus collectors (prometheus-client).

Four families, all with bounded label sets:

- ``authserver_tokens_issued_total{client_id}``: access tokens issued, per *authenticated*
  client (the label comes from the client record the token was issued to, never from the
  request). Bounded per process: the first :data:`MAX_CLIENT_LABELS` distinct clients a
  process issues for get their own label value; tokens for any further client are counted
  under ``client_id="_other"`` (:data:`OTHER_CLIENTS`, never a client id: ours start with
  ``as_client_``). Without the cap each client a worker ever served would cost a prometheus
  child (and an entry in its multiprocess file) for the worker's lifetime: with 100,000
  clients RSS per worker grew from 82 to 103 MiB and kept growing (``bench/RESULTS.md``),
  and ``/metrics`` grew without bound. Labels go first come, first served in each process,
  so across workers (whose values ``/metrics`` adds up) one client may be counted under its
  own label in one worker and under ``_other`` in another, and there are at most
  ``MAX_CLIENT_LABELS`` series per worker that ever ran; the sum over all label values is
  always the exact total;
- ``authserver_token_failures_total{reason}``: refused token requests, by RFC 6749 error
  code (or ``http_<status>`` for errors outside the OAuth layer);
- ``authserver_request_duration_seconds{endpoint}``: request latency by route template
  (e.g. ``/admin/clients/<client_id>``; ``unmatched`` for requests no route matched);
- ``authserver_client_auth_throttled_total{endpoint,scope}``: requests refused with 429 by
  the failed-authentication limits (``web/limits.py``), by route template and exhausted
  budget (``client`` or ``address``).

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
import threading

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: At most this many distinct ``client_id`` label values per process (see above); read at
#: each call, so a test may lower it.
MAX_CLIENT_LABELS = 1000
#: The ``client_id`` label value of tokens issued to clients beyond the cap.
OTHER_CLIENTS = "_other"

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
#: Requests refused by the failed-authentication limits. At /token they also count in
#: ``authserver_token_failures_total{reason="slow_down"}``.
CLIENT_AUTH_THROTTLED = Counter(
    "authserver_client_auth_throttled",
    "Requests refused with 429 after too many failed client authentications, by endpoint "
    "and by exhausted budget (client or address).",
    ["endpoint", "scope"],
)

#: The client ids that have their own label in this process (at most MAX_CLIENT_LABELS).
#: Read without the lock (a set membership test, atomic under the GIL and internally locked
#: on free-threaded builds); the lock only serialises additions, so the cap holds exactly.
_labelled_clients: set[str] = set()
_labelled_clients_lock = threading.Lock()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def client_label(client_id: str) -> str:
    """The ``client_id`` label value for tokens issued to *client_id* in this process: the
    id itself while fewer than :data:`MAX_CLIENT_LABELS` clients have a label (and for
    ever after for those that got one), else :data:`OTHER_CLIENTS`."""
    labelled = _labelled_clients
    if client_id in labelled:
        return client_id
    if len(labelled) >= MAX_CLIENT_LABELS:
        return OTHER_CLIENTS
    with _labelled_clients_lock:
        if client_id not in labelled:
            if len(labelled) >= MAX_CLIENT_LABELS:
                return OTHER_CLIENTS
            labelled.add(client_id)
    return client_id


def token_issued(client_id: str) -> None:
    TOKENS_ISSUED.labels(client_id=client_label(client_id)).inc()


def token_failed(reason: str) -> None:
    TOKEN_FAILURES.labels(reason=reason if _REASON.match(reason) else "other").inc()


def client_auth_throttled(endpoint: str, scope: str) -> None:
    CLIENT_AUTH_THROTTLED.labels(endpoint=endpoint, scope=scope).inc()


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
