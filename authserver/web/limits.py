"""Limits on failed client authentication (brute-force protection), on the ``limits`` library.

What is limited: *failed* client authentications (``invalid_client``) at ``/token``,
``/introspect`` and ``/revoke``, counted twice, per presented ``client_id``
(``AUTHSERVER_AUTH_FAILURES_PER_CLIENT``) and per source address
(``AUTHSERVER_AUTH_FAILURES_PER_ADDRESS``). Once a client id or an address has no failures
left, further *failures* for it are answered 429 (``slow_down``, ``Retry-After``, an
RFC 6749 §5.2-shaped body) instead of 401.

What it never does: refuse a correct credential. Client ids are not secret (every token
carries one, tokens go to browsers), and a source address can be anybody's (a shared NAT, a
proxy, a spoofed ``X-Forwarded-For`` when ``AUTHSERVER_PROXY_HOPS`` trusts more hops than
there are), so a limit that refused requests *before* checking the credential would let any
stranger lock a backend out. The credential is always checked first
(``AuthServerAuthorizationServer.authenticate_client``); only when it is wrong does the
server ask :meth:`FailedAuthenticationLimits.exhausted`, and the failure is counted through
the ``ClientAuthFailed`` event (:meth:`FailedAuthenticationLimits.count`). Successes and
other errors consume nothing.

What the attacker still pays: every guess beyond the budget is a 429 with ``Retry-After``,
never an answer; with 256-bit server-generated secrets guessing is hopeless anyway, so the
limits are about cost and noise (metrics, logs), not the last line of defence.

How: a ``limits`` storage (``limits_storage.open_storage(AUTHSERVER_RATE_LIMIT_STORAGE)``) and a
moving-window strategy over it (``MovingWindowRateLimiter``), driven directly. Nothing runs
for a request that authenticates.

Why not Flask-Limiter (built on the same ``limits`` library, same maintainers): its
decorators cannot express "count and refuse only failed authentications", and its own
hooks would run on every request of the Flask app for limits we never declare through it.

What it does not promise:

- With ``memory://`` (the default) each worker process counts on its own, so with N
  workers an attacker gets up to N times the budget. Use Redis
  (``AUTHSERVER_RATE_LIMIT_STORAGE=redis://…``) for one limit across workers and instances.
- Test-then-hit is not atomic: failures in flight at the same moment all pass the test
  before they are counted, so a budget can be overshot by at most the number of
  concurrent requests (workers times threads per instance).
- When the storage fails at runtime the limits fail open (a warning is logged and the
  storage is left alone for a few seconds). At start, ``limits_storage.check_storage`` is the
  one-line refusal for an unreachable storage; it belongs in ``serve``'s master process
  (``cli/serve.py`` ``prepare``), not in :func:`build`: a worker that the server respawns
  while Redis is down must boot (fail open).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time

import limits
from limits.strategies import MovingWindowRateLimiter
from limits.strategies import RateLimiter

from authserver.limits_storage import open_storage
from authserver.oauth.events import ClientAuthFailed
from authserver.settings import Settings
from authserver.settings import is_port_number

log = logging.getLogger(__name__)

#: Seconds the limits are skipped (failing open) after a storage error, so a dead Redis
#: costs one failed round trip per worker every few seconds instead of one per request.
STORAGE_BACKOFF = 5.0


class TooManyFailedAuthentications(Exception):
    """A failed operator-token authentication (admin API, ``/metrics``) from an address over
    its budget: rendered as the same 429 as at ``/token`` (``web/app.py``)."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"{scope} over its failed-authentication limit")
        self.scope = scope
        self.retry_after = retry_after


def address_key(remote_addr: str | None) -> str | None:
    """The per-address counter for *remote_addr* (already ProxyFix-corrected when
    ``AUTHSERVER_PROXY_HOPS`` is set). An IPv6 client is counted per /64, the smallest
    network a single subscriber is usually given: per address, a host would have 2**64
    fresh budgets.

    A port after the address (``203.0.113.7:51234``, ``[2001:db8::1]:51234``: what some
    proxies put in ``X-Forwarded-For``) is dropped: it is the client's source port, new
    with every connection, so counting it gave each connection a fresh budget."""
    if not remote_addr:
        return None
    try:
        ip = ipaddress.ip_address(_without_port(remote_addr))
    except ValueError:
        return remote_addr[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _without_port(address: str) -> str:
    """*address* without the ``:port`` a proxy may have added (IPv6 in brackets)."""
    if address.startswith("["):
        host, bracket, port = address[1:].partition("]")
        if bracket and (not port or (port[0] == ":" and is_port_number(port[1:]))):
            return host
        return address
    host, colon, port = address.rpartition(":")
    # One colon only: an IPv6 address without brackets has several, and no port.
    if colon and ":" not in host and is_port_number(port):
        return host
    return address


class FailedAuthenticationLimits:
    """The two budgets over one ``limits`` strategy."""

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        per_client: list[limits.RateLimitItem],
        per_address: list[limits.RateLimitItem],
        prefix: str,
    ) -> None:
        self._limiter = limiter
        self._scopes = {"client": per_client, "address": per_address}
        self._prefix = prefix
        self._skip_until = 0.0
        self._lock = threading.Lock()

    # -- the two halves: asked after a failure, counted through the event ------------------

    def exhausted(self, client_id: str | None, address: str | None) -> tuple[str, int] | None:
        """``(scope, retry_after)`` when *client_id* or *address* has no failed
        authentications left, else ``None`` (the server's ``FailureBudget``)."""
        if not self._storage_usable():
            return None
        keys = (("client", client_id), ("address", address_key(address)))
        try:
            retry_after, scope_hit = 0, ""
            for scope, value in keys:
                wait = self._wait(scope, value)
                if wait > retry_after:
                    retry_after, scope_hit = wait, scope
        except Exception as exc:
            self._storage_failed(exc)
            return None
        return (scope_hit, retry_after) if retry_after else None

    def count(self, event: ClientAuthFailed) -> None:
        """Count a failed authentication against both budgets (subscribed to
        ``ClientAuthFailed``); a failure already answered 429 is not counted again."""
        if event.throttled is None:
            self._hit(event.client_id, event.address)

    def check_address(self, remote_addr: str | None) -> None:
        """For a failed credential that names no client (the admin and metrics bearer
        tokens): refuse when *remote_addr* is over its budget.

        :raises TooManyFailedAuthentications: when the address is over its budget.
        """
        throttle = self.exhausted(None, remote_addr)
        if throttle is not None:
            raise TooManyFailedAuthentications(*throttle)

    def record_address_failure(self, remote_addr: str | None) -> None:
        """Count a wrong admin or metrics bearer token against *remote_addr*."""
        self._hit(None, remote_addr)

    def _hit(self, client_id: str | None, address: str | None) -> None:
        if not self._storage_usable():
            return
        try:
            keys = (("client", client_id), ("address", address_key(address)))
            for scope, value in keys:
                if value is None:
                    continue
                for item in self._scopes[scope]:
                    self._limiter.hit(item, self._prefix, scope, value)
        except Exception as exc:
            self._storage_failed(exc)

    def _wait(self, scope: str, value: str | None) -> int:
        """Whole seconds until *value* may try again in *scope* (0: it may now)."""
        if value is None:
            return 0
        wait = 0
        for item in self._scopes[scope]:
            if self._limiter.test(item, self._prefix, scope, value):
                continue
            reset_at = self._limiter.get_window_stats(item, self._prefix, scope, value).reset_time
            # RFC 9110 §10.2.3: delay-seconds, a non-negative integer; never 0 while refused.
            wait = max(wait, math.ceil(reset_at - time.time()), 1)
        return wait

    # -- failing open --------------------------------------------------------------------

    def _storage_usable(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _storage_failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._skip_until == 0.0 or time.monotonic() >= self._skip_until
            self._skip_until = time.monotonic() + STORAGE_BACKOFF
        if first:
            # Fail open: refusing every client because Redis is down would turn a storage
            # outage into a full outage; brute force is bounded by the secret's entropy.
            log.warning(
                "rate limit storage unavailable (%s); failed-authentication limits are not "
                "enforced for %.0fs",
                type(exc).__name__,
                STORAGE_BACKOFF,
            )


def build(settings: Settings) -> FailedAuthenticationLimits | None:
    """The limits for *settings*, or ``None`` when both are off.

    Does not contact the storage (a worker must boot while Redis is down: the limits then
    fail open); ``limits_storage.check_storage`` is the start-up check.
    """
    per_client = (
        limits.parse_many(settings.auth_failures_per_client)
        if settings.auth_failures_per_client
        else []
    )
    per_address = (
        limits.parse_many(settings.auth_failures_per_address)
        if settings.auth_failures_per_address
        else []
    )
    if not per_client and not per_address:
        return None
    uri = settings.rate_limit_storage
    # Builds the client only (a Redis connection pool is lazy): nothing is contacted here.
    storage = open_storage(uri)
    # The moving window counts the failures of the last period exactly: a fixed window
    # would let an attacker spend two budgets across a window boundary.
    strategy = MovingWindowRateLimiter(storage)
    return FailedAuthenticationLimits(
        strategy,
        per_client=per_client,
        per_address=per_address,
        prefix=settings.rate_limit_key_prefix,
    )
