"""Limits on failed client authentication (brute-force protection), on the ``limits`` library.

What is limited: *failed* client authentications (``invalid_client``) at ``/token``,
``/introspect`` and ``/revoke``, counted twice, per presented ``client_id``
(``AUTHSERVER_AUTH_FAILURES_PER_CLIENT``) and per source address
(``AUTHSERVER_AUTH_FAILURES_PER_ADDRESS``). A request whose client id or address is over
its budget is refused before the client is authenticated, even with the right secret, with
429, ``Retry-After`` and an RFC 6749 §5.2-shaped body. Successful requests and other errors
consume nothing, so a client that authenticates correctly is only slowed down by failures
against its own id or from its own address.

How: a ``limits`` storage (``storage_from_string(AUTHSERVER_RATE_LIMIT_STORAGE)``) and a
moving-window strategy over it (``MovingWindowRateLimiter``), driven directly: ``test`` in
the Authlib server's :attr:`before_client_authentication` hook (after the body is parsed,
before any secret is checked) and ``hit`` after the response when the request ended in
``invalid_client``. Nothing else runs per request: requests that never reach client
authentication (JWKS, metadata, health, metrics) pay for one ``g`` lookup in an
``after_request`` hook.

Why not Flask-Limiter (built on the same ``limits`` library, same maintainers): its
decorators cannot express "count only when authentication failed, yet refuse before
authenticating" (``deduct_when`` still checks the limit in ``before_request``, keyed by a
function that can only see the raw request, before the body is parsed), so it would only
have been a way to build the storage and strategy; and once installed on the app its own
``before_request``/``after_request``/teardown hooks run on *every* request, resolving
limits, exemptions and blueprints for limits we never declare through it (about 15% of the
CPU of a JWKS GET).

What it does not promise:

- With ``memory://`` (the default) each worker process counts on its own, so with N
  workers an attacker gets up to N times the budget. Use Redis
  (``AUTHSERVER_RATE_LIMIT_STORAGE=redis://…``) for one limit across workers and instances.
- Keying by the *presented* client id means anyone who knows a client id can keep it
  locked out while they keep failing (the classic account-lockout trade-off). Client ids
  are not published; an operator who prefers the other side sets the per-client limit to
  ``off`` and relies on the per-address one.
- Test-then-hit is not atomic: requests in flight at the same moment all pass the test
  before their failures are counted, so a budget can be overshot by at most the number of
  concurrent requests (workers times threads per instance). Against 256-bit secrets that is
  immaterial; counting before authenticating would be atomic but would charge successes.
- When the storage fails at runtime the limits fail open (a warning is logged and the
  storage is left alone for a few seconds): an unreachable Redis must not lock every
  legitimate client out. At start, :func:`check_storage` is the one-line refusal for an
  unreachable storage; it belongs in ``serve``'s master process (``cli/serve.py``
  ``prepare``), not in :func:`init_app`: a worker that the server respawns while Redis is
  down must boot (fail open), or the server would keep failing to respawn it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import limits
from flask import Flask
from flask import Response
from flask import g
from flask import request
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from limits.strategies import RateLimiter

from authserver import metrics
from authserver.errors import ConfigError
from authserver.oauth import client_auth
from authserver.oauth.server import AuthServerAuthorizationServer
from authserver.settings import Settings
from authserver.settings import redact_url
from authserver.web.errors import error_response

log = logging.getLogger(__name__)

#: The error code of the 429 body. RFC 6749 §5.2 defines no code for "too many attempts";
#: ``slow_down`` is the one the IANA OAuth Extensions Error registry lists for the token
#: endpoint response (RFC 8628 §3.5) and says what we mean: back off, then retry (the
#: ``Retry-After`` header says how long). ``temporarily_unavailable`` is registered for the
#: authorization endpoint only, and here it already means "the server is down" (503,
#: web/errors.py); a client must be able to tell "you are throttled" from that.
ERROR = "slow_down"
DESCRIPTION = "too many failed client authentications; retry after the Retry-After delay"

#: Seconds the limits are skipped (failing open) after a storage error, so a dead Redis
#: costs one failed round trip per worker every few seconds instead of one per request.
STORAGE_BACKOFF = 5.0

#: Timeouts for the Redis client: a blackholed Redis must not stall the token endpoint.
REDIS_OPTIONS: dict[str, str | int] = {"socket_connect_timeout": 1, "socket_timeout": 1}

#: A presented client id longer than any registered id can have is cut here: it can never
#: authenticate, and the storage key stays bounded (all such ids share one key per prefix).
MAX_KEY_ID = client_auth.MAX_ID + 1


class TooManyFailedAuthentications(Exception):
    """Raised before client authentication when a budget is exhausted; rendered as 429."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"{scope} over its failed-authentication limit")
        self.scope = scope
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Keys:
    """The identifiers this request is counted under (``None``: not counted there)."""

    client_id: str | None
    address: str | None


def presented_client_id(oauth_request: Any) -> str | None:
    """The client id the request *claims*, unverified: from ``Authorization: Basic``, else
    ``client_id`` in the body, else the ``sub`` (or ``iss``) of a ``client_assertion``
    (RFC 7523 §3: both are the client id; Authlib looks the client up by ``sub``).

    Never trusted for anything but choosing a counter; cut to :data:`MAX_KEY_ID`.
    """
    client_id: Any = None
    try:
        credentials = client_auth.basic_credentials(oauth_request.headers)
    except Exception:  # a malformed header: counted per address only
        credentials = None
    if credentials is not None:
        client_id = credentials[0]
    else:
        form = oauth_request.form
        client_id = form.get("client_id")
        if not client_id and form.get("client_assertion"):
            claims = _unverified_claims(form["client_assertion"])
            client_id = claims.get("sub") or claims.get("iss")
    if not isinstance(client_id, str) or not client_id:
        return None
    return client_id[:MAX_KEY_ID]


def _unverified_claims(assertion: str) -> dict[str, Any]:
    """The payload of a compact JWS, without verifying anything (see above)."""
    parts = assertion.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


def address_key(remote_addr: str | None) -> str | None:
    """The per-address counter for *remote_addr* (already ProxyFix-corrected when
    ``AUTHSERVER_PROXY_HOPS`` is set). An IPv6 client is counted per /64, the smallest
    network a single subscriber is usually given: per address, a host would have 2**64
    fresh budgets."""
    if not remote_addr:
        return None
    try:
        ip = ipaddress.ip_address(remote_addr)
    except ValueError:
        return remote_addr[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _storage_options(uri: str) -> dict[str, str | int]:
    return dict(REDIS_OPTIONS) if uri.startswith(("redis", "rediss")) else {}


def check_storage(settings: Settings) -> None:
    """Refuse to start when the configured storage is unreachable (for ``serve``, in the
    master process, before any worker starts).

    :raises ConfigError: one line naming ``AUTHSERVER_RATE_LIMIT_STORAGE``.
    """
    if settings.auth_failures_per_client is None and settings.auth_failures_per_address is None:
        return
    uri = settings.rate_limit_storage
    try:
        storage = storage_from_string(uri, **_storage_options(uri))
        reachable = storage.check()
    except Exception as exc:
        # The type only: the message of a client library may repeat the URL and its password.
        raise ConfigError(
            f"AUTHSERVER_RATE_LIMIT_STORAGE: cannot use {redact_url(uri)}: {type(exc).__name__}"
        ) from None
    if not reachable:
        raise ConfigError(f"AUTHSERVER_RATE_LIMIT_STORAGE: cannot reach {redact_url(uri)}")


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

    # -- the two halves: refuse before authenticating, count after a failure --------------

    def check(self, oauth_request: Any) -> None:
        """The Authlib server's ``before_client_authentication`` hook.

        :raises TooManyFailedAuthentications: when the client id or the address is over
            a budget.
        """
        keys = _Keys(presented_client_id(oauth_request), address_key(request.remote_addr))
        g.authserver_auth_limit_keys = keys
        self._refuse_if_over(keys)

    def check_address(self, remote_addr: str | None) -> None:
        """Refuse a credential that names no client (the admin and metrics bearer tokens)
        when *remote_addr* is over its budget.

        :raises TooManyFailedAuthentications: when the address is over its budget.
        """
        self._refuse_if_over(_Keys(None, address_key(remote_addr)))

    def record_address_failure(self, remote_addr: str | None) -> None:
        """Count a wrong admin or metrics bearer token against *remote_addr*."""
        self._record(_Keys(None, address_key(remote_addr)))

    def _refuse_if_over(self, keys: _Keys) -> None:
        if not self._storage_usable():
            return
        try:
            retry_after = 0
            scope_hit = ""
            for scope, value in (("client", keys.client_id), ("address", keys.address)):
                wait = self._wait(scope, value)
                if wait > retry_after:
                    retry_after, scope_hit = wait, scope
        except Exception as exc:
            self._storage_failed(exc)
            return
        if retry_after:
            raise TooManyFailedAuthentications(scope_hit, retry_after)

    def record_failure(self) -> None:
        """Count this request's failed authentication against both budgets."""
        keys: _Keys | None = g.get("authserver_auth_limit_keys")
        if keys is not None:
            self._record(keys)

    def _record(self, keys: _Keys) -> None:
        if not self._storage_usable():
            return
        try:
            for scope, value in (("client", keys.client_id), ("address", keys.address)):
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


_warned_memory = False


def init_app(app: Flask, settings: Settings, server: AuthServerAuthorizationServer) -> None:
    """Build the storage and strategy and plug the limits into *app* and *server*.

    Does not contact the storage (a worker must boot while Redis is down: the limits then
    fail open); :func:`check_storage` is the start-up check.
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
        return
    uri = settings.rate_limit_storage
    # Builds the client only (a Redis connection pool is lazy): nothing is contacted here.
    storage = storage_from_string(uri, **_storage_options(uri))
    # The moving window counts the failures of the last period exactly: a fixed window
    # would let an attacker spend two budgets across a window boundary.
    strategy = MovingWindowRateLimiter(storage)
    if uri == "memory://" and settings.workers != 1:
        global _warned_memory
        if not _warned_memory:
            _warned_memory = True
            log.warning(
                "AUTHSERVER_RATE_LIMIT_STORAGE is memory://: each worker process counts "
                "failed authentications on its own; use Redis for one limit across workers"
            )
    failures = FailedAuthenticationLimits(
        strategy,
        per_client=per_client,
        per_address=per_address,
        prefix=settings.rate_limit_key_prefix,
    )
    app.extensions["authserver.limits"] = failures
    server.before_client_authentication = failures.check

    @app.after_request
    def _count_failure(response: Response) -> Response:
        # Runs on every request: one lookup in g, nothing more unless the request ended in
        # invalid_client (set by the Authlib server's handle_error_response for every
        # OAuth error).
        if g.get("authserver_oauth_error") == "invalid_client":
            failures.record_failure()
        return response

    @app.errorhandler(TooManyFailedAuthentications)
    def _too_many(exc: TooManyFailedAuthentications) -> Response:
        # For the metrics hook (authserver_token_failures_total{reason="slow_down"}).
        g.authserver_oauth_error = ERROR
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.client_auth_throttled(rule, exc.scope)
        response = error_response(429, ERROR, DESCRIPTION)
        response.headers["Retry-After"] = str(exc.retry_after)
        response.headers["Pragma"] = "no-cache"
        return response
