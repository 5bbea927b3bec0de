"""What the OAuth layer reports, and who listens: the one event interface of the token path.

The authorization server (``oauth/server.py``) and its WSGI integration (``oauth/wsgi.py``)
emit these events; audit records, metrics, failed-authentication limits and the access log
subscribe to them in one place (``_subscribe`` in ``web/app.py``). Nothing travels between
layers any other way: no flags in ``flask.g``, no attributes parked on request objects for
another layer to find.

Events are named tuples: immutable, and the cheapest immutable record to build (two are
built per token request).

Delivery is synchronous, in the request's thread and unit of work, in subscription order.
An exception from a subscriber propagates to the request (an audit record that cannot be
written fails the request rather than being lost); subscribers that must never fail a
request (metrics, logs) catch their own errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from typing import NamedTuple
from typing import TypeVar

log = logging.getLogger(__name__)


class TokenIssued(NamedTuple):
    """An access token was signed for an authenticated client (identifiers only, never
    the token)."""

    client_id: str
    auth_method: str | None
    sub: str
    audience: str | list[str] | None
    jti: str
    kid: str
    #: ``"current"``, or ``"previous"`` while a rotation's grace period lets the old secret
    #: in; ``None`` for methods without a secret.
    secret_used: str | None = None
    #: The token's Token Status List entry and expiry: what revoking every live token of a
    #: user or client reads (tokens/statuslist.py).
    status_list: int | None = None
    status_idx: int | None = None
    exp: float | None = None


class TokenRevoked(NamedTuple):
    """A client revoked one of its own tokens (RFC 7009)."""

    client_id: str
    sub: str | None
    jti: str | None


class ClientAuthenticated(NamedTuple):
    """A client authenticated at *endpoint* (a route path such as ``/introspect``)."""

    endpoint: str
    client_id: str


class ClientAuthFailed(NamedTuple):
    """Client authentication failed at *endpoint* (a route path such as ``/token``).

    ``client_id`` is the id the request *presented* (unverified, ``None`` when it named
    none) and ``address`` the failed-authentication key of its source address.
    ``throttled`` names the exhausted budget (``client`` or ``address``) when the failure
    was answered with 429 instead of 401; such failures are not counted again. ``reason``
    says what failed in an operator's words (never the credential itself); the client
    only ever hears "client authentication failed".
    """

    endpoint: str
    client_id: str | None
    address: str | None
    throttled: str | None = None
    reason: str | None = None


class RequestServed(NamedTuple):
    """The WSGI layer answered a request (one per request it serves, after the response
    is built). ``route`` is the path template (bounded), ``error`` the RFC 6749 error code
    of an error response (``None`` on success) and ``description`` its
    ``error_description``: what the client was told, which the access log repeats."""

    route: str
    method: str
    status: int
    error: str | None
    seconds: float
    remote_addr: str | None
    environ: dict[str, Any]
    description: str | None = None


E = TypeVar("E")


class Events:
    """Subscribers by event type; :meth:`emit` calls each in subscription order."""

    def __init__(self) -> None:
        self._subscribers: dict[type[Any], list[Callable[[Any], None]]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        self._subscribers.setdefault(kind, []).append(handler)

    def emit(self, event: object) -> None:
        for handler in self._subscribers.get(type(event), ()):
            handler(event)

    def wants(self, kind: type[Any]) -> bool:
        """Whether anyone listens (so an emitter can skip building an expensive event)."""
        return bool(self._subscribers.get(kind))
