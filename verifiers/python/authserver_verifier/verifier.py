"""Verify authserver access tokens in a Python sync server (RFC 9068, offline).

Imports only joserfc and the standard library, so a sync server needs neither Flask nor
SQLAlchemy (``pip install authserver-verifier``)::

    from authserver_verifier import InvalidToken, TokenVerifier, require_token

    verifier = TokenVerifier("https://auth.example.com", "https://sync.example.com")
    claims = verifier.verify(token)          # a dict, or raises InvalidToken(.reason)
    claims = await verifier.averify(token)   # the same, in an asyncio server
    app = require_token(verifier)(app)       # WSGI: 401 unless a valid Bearer token

What :meth:`TokenVerifier.verify` does, in order (docs/sync-servers.md has the rationale):

1. Header (:mod:`authserver_verifier.rules`, shared with the server's introspection): the
   segment is size-capped before it is decoded; ``alg`` must be ``RS256`` (pinned, never
   taken from the token), ``typ`` must be ``at+jwt`` or ``application/at+jwt`` (RFC 9068
   §4), ``kid`` must be present, and no ``crit`` extension is accepted (RFC 7515 §4.1.11).
2. Key: from the JWKS at the ``jwks_uri`` of ``<issuer>/.well-known/oauth-authorization-server``
   (RFC 8414). The set is cached for the response's ``Cache-Control: max-age``, capped by
   ``max_cache_seconds``. A token naming an unknown ``kid`` triggers a refetch, but the JWKS
   is never fetched more than once per ``min_refetch_interval`` seconds, whatever the cause,
   so a flood of tokens with forged ``kid`` values costs the authserver one request per
   interval. When a refresh fails the last good set stays in use for ``stale_if_error``
   seconds after it was fetched.
3. Signature: RS256 with that key (joserfc).
4. Claims (RFC 9068 §2.2, §4, on joserfc's claims registry): the required claims are
   present and non-empty; ``iss`` equals the issuer; ``aud`` (a string or a list) contains
   the audience; ``exp``, ``nbf`` and ``iat`` hold within ``leeway`` seconds.
5. Status (draft-ietf-oauth-status-list-17): a token with a ``status.status_list``
   reference is refused when its entry is not VALID (``revoked`` for INVALID,
   ``suspended`` for SUSPENDED, ``invalid_status`` for any other value or an index outside
   the list). A ``status`` claim without a ``status_list`` this verifier can read is
   ``invalid_status``: it cannot tell whether such a token was revoked, so it fails closed
   (authserver never issues one: ``status`` is reserved). Lists are fetched from the
   issuer's origin only, verified with the same JWKS, and cached for their ``ttl``: a use
   in the last fifth of it refreshes the list in the background, and the first use past
   it fetches the list before answering (so a revocation counts within one ttl), sending
   ``If-None-Match`` with the copy's ETag (a 304 makes the copy fresh for another ttl);
   the key set is held the same way. While the issuer is failing now, uses answer from
   the last copies at once and retries run in the background. **When no fresh list can
   be had**, the last copy is used until its
   ``exp`` (and never longer than ``status_max_stale`` seconds, default 900, after it was
   last fetched or confirmed); after that every token naming that list is refused with
   ``status_unavailable`` (fail closed: an unreachable authserver cannot hide a revocation
   for longer than that bound).

Every method is thread-safe: one verifier serves every thread of a process. Fetches are
single-flight (one thread fetches, the others wait for it or keep using fresh keys).
"""

from __future__ import annotations

import contextlib

# Imported now, not by a fetch's first getaddrinfo (the host name's codec): a process
# forked while another thread imports a module (gunicorn --preload forking its workers
# while the master's fetch thread resolves) keeps that module's import lock held for
# good, and every fetch of the child waits on it.
import encodings.idna  # noqa: F401
import functools
import http.client
import ipaddress
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from typing import Final
from typing import TypeGuard

from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from authserver_verifier import rules
from authserver_verifier.rules import ALGORITHM
from authserver_verifier.rules import DEFAULT_LEEWAY
from authserver_verifier.rules import MAX_TOKEN_BYTES
from authserver_verifier.rules import REQUIRED_CLAIMS
from authserver_verifier.rules import RuleViolation

__all__ = [
    "CLAIMS_ENVIRON_KEY",
    "REASONS",
    "InvalidToken",
    "TokenVerifier",
    "bearer_token",
    "require_token",
    "require_token_asgi",
]

#: draft-ietf-oauth-status-list-17 §5.1 and §8.
STATUS_LIST_TYP: Final = "statuslist+jwt"
STATUS_LIST_MEDIA_TYPE: Final = "application/statuslist+jwt"
#: A decompressed status list larger than this is refused (a compression bomb would
#: otherwise cost memory): 32 Mi one-bit entries.
MAX_STATUS_LIST_BYTES: Final = 4 * 1024 * 1024
#: Where :func:`require_token` puts the verified claims in the WSGI environ, and
#: :func:`require_token_asgi` in the ASGI scope.
CLAIMS_ENVIRON_KEY: Final = "authserver.claims"

#: Every value :attr:`InvalidToken.reason` can take.
REASONS: Final = {
    "missing_token": "no bearer token in the request",
    "invalid_request": "the Authorization header is malformed: Bearer with no token or with "
    "spaces in it, or the header sent more than once (RFC 6750 §3.1)",
    **rules.REASONS,
    "unknown_kid": "no published key has this kid",
    "jwks_unavailable": "the authserver's keys could not be fetched",
    "invalid_status": "the status claim is malformed or not the issuer's, its index is "
    "outside the list, or its status value is not one this verifier accepts",
    "revoked": "the token's status list says INVALID (0x01): the token was revoked",
    "suspended": "the token's status list says SUSPENDED (0x02)",
    "status_unavailable": "the token's status list could not be fetched or verified in time",
}

#: The default of ``status_max_stale`` (seconds): authserver's default
#: ``AUTHSERVER_STATUS_LIST_EXPIRY``, so against a default server the list's own ``exp`` and
#: this bound agree, and against one configured with a longer expiry a revocation still
#: reaches this verifier within 15 minutes of the authserver becoming unreachable. The JS
#: verifier's ``statusListMaxStale`` has the same default.
DEFAULT_STATUS_MAX_STALE: Final = 900.0

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


class InvalidToken(Exception):
    """The token was not accepted. :attr:`reason` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        #: What exactly failed, when known (for ``jwks_unavailable``: the URL and the cause).
        self.detail = detail
        super().__init__(f"{reason}: {detail or REASONS.get(reason, reason)}")


def _cause(exc: BaseException) -> str:
    """Why a fetch failed, in an operator's words: refused, timed out, unknown host..."""
    reason: Any = getattr(exc, "reason", exc)  # URLError wraps the socket error
    if not isinstance(reason, BaseException):
        reason = exc  # a UnicodeError's reason is a string ("ordinal not in range")
    if isinstance(reason, _ResolveTimeout):
        return "unknown host (the name server did not answer in time)"
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is authserver running at that address?)"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, http.client.IncompleteRead):
        return f"the connection closed {reason.expected} bytes before the end of the body"
    text = getattr(reason, "strerror", None) or str(reason)
    return f"{type(reason).__name__}: {text}"[:200]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Key material comes from the URL we were given and nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Deadline:
    """One time limit for a whole fetch. ``urlopen``'s timeout bounds each socket
    operation, not their sum: a server sending a byte a second could hold a ``verify()``
    (and the threads waiting for the same keys) for minutes. When the time is up, the
    fetch's sockets are shut down, so whatever read is waiting ends with an error.

    When the process cannot start the timer's thread (a thread limit: RLIMIT_NPROC, a
    container's pids limit), the fetch goes on without it, each socket operation still
    bounded by ``timeout``: a slower fetch, rather than a valid token refused."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False
        self._timer: threading.Timer | None = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        try:
            self._timer.start()
        except RuntimeError:  # "can't start new thread"
            self._timer = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._expired:
                self._sockets.append(sock)
                return
        _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired, sockets, self._sockets = True, self._sockets, []
        for sock in sockets:
            _shut(sock)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._sockets = []

    @property
    def expired(self) -> bool:
        """Whether the time ran out (the fetch then fails as a closed connection)."""
        with self._lock:
            return self._expired


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


#: The deadline of the fetch this thread is making, for the connections it opens.
_fetching = threading.local()


#: Set on the event loop's thread while :meth:`TokenVerifier.averify` answers there: any
#: step that would wait raises :class:`_WouldWait` instead. For an HTTP fetch the
#: verification is done again on a worker thread; for another thread's fetch, the loop
#: is told when it ends (:meth:`_FetchLock.when_released`) and the verification is tried
#: again on the loop.
_in_loop = threading.local()


def _wake(loop: Any, future: Any) -> None:
    """From the thread that ends a fetch: resolve *future* on its event *loop*."""
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(_settle, future)


def _retrieved(task: Any) -> None:
    """Its InvalidToken is its caller's, who may have gone: not "never retrieved"."""
    if not task.cancelled():
        task.exception()


def _settle(future: Any) -> None:
    if not future.done():  # not cancelled meanwhile (the request went away)
        future.set_result(None)


class _WouldWait(BaseException):
    """Only raised while :data:`_in_loop` is set; a BaseException, so that no ``except
    Exception`` on the way turns it into a refusal. :attr:`busy`: the lock of the fetch
    under way that would have been waited for (None: a fetch would have been made, under
    the lock :attr:`fetch`)."""

    def __init__(self, busy: _FetchLock | None = None, fetch: _FetchLock | None = None) -> None:
        super().__init__()
        self.busy = busy
        self.fetch = fetch


def _must_not_wait(fetch: _FetchLock) -> None:
    """Called holding *fetch*, the lock of the fetch about to be made."""
    if getattr(_in_loop, "active", False):
        raise _WouldWait(fetch=fetch)


class _FetchLock:
    """The lock one kind of fetch is made under (single flight), which an event loop can
    wait for without holding a thread: :meth:`when_released`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()  # over _waiters and the release
        self._waiters: list[Callable[[], None]] = []

    def locked(self) -> bool:
        return self._lock.locked()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock; on an event loop's thread, :class:`_WouldWait` rather than
        waiting for another thread's fetch."""
        if getattr(_in_loop, "active", False):
            if not self._lock.acquire(blocking=False):
                raise _WouldWait(self)
        else:
            self._lock.acquire()
        try:
            yield
        finally:
            with self._guard:
                waiters, self._waiters = self._waiters, []
                self._lock.release()
            for wake in waiters:
                wake()

    def when_released(self, wake: Callable[[], None]) -> bool:
        """Call *wake* (from the releasing thread) once the lock is released; False, and
        no call, when it is free now."""
        with self._guard:
            if not self._lock.locked():
                return False
            self._waiters.append(wake)
            return True


def _watch(sock: socket.socket | None) -> None:
    """Put *sock* under the deadline of the fetch this thread is making."""
    deadline: _Deadline | None = getattr(_fetching, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _ResolveTimeout(TimeoutError):
    """The name server did not answer within the fetch's time."""


def _left(timeout: float | None) -> float | None:
    """What is left of the current fetch's time (its :class:`_Deadline`), or *timeout*."""
    deadline: _Deadline | None = getattr(_fetching, "deadline", None)
    if deadline is None:
        return timeout
    return max(0.0, deadline.ends - time.monotonic())


def _resolve(host: str, port: int) -> list[Any]:
    """``getaddrinfo`` within the fetch's time. The resolver takes no timeout (a silent
    name server holds it for its own timeout times its attempts: 10 s with the defaults
    of resolv.conf), so it runs on a daemon thread that is waited for only that long; in
    this thread, with the resolver's own timeout, when no thread can be started."""
    found: list[Any] = []
    failed: list[OSError] = []

    def run() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    resolver = threading.Thread(target=run, name="authserver-verifier-resolve", daemon=True)
    try:
        resolver.start()
    except RuntimeError:  # "can't start new thread": a thread limit
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    resolver.join(_left(None))
    if resolver.is_alive():
        raise _ResolveTimeout(f"resolving {host} timed out")
    if failed:
        raise failed[0]
    return found


def _create_connection(
    address: tuple[str, int], timeout: float | None = None, source: Any = None
) -> socket.socket:
    """``socket.create_connection`` whose name resolution and connection attempts all
    end within the current fetch's time (it bounded each attempt, not their sum). The
    socket is put under the fetch's deadline at once: what connect() does on it next (a
    proxy's CONNECT tunnel, the TLS handshake) ends with the fetch's time too."""
    host, port = address
    if not isinstance(timeout, int | float):
        timeout = None  # socket's "global default" marker: no fetch passes it
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        infos = _resolve(host, port)
    else:  # a literal address: nothing to resolve
        connected = socket.create_connection(address, _left(timeout), source)
        _watch(connected)
        return connected
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(timeout))
            if source:
                sock.bind(source)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sock.settimeout(timeout)
        _watch(sock)
        return sock
    raise error


class _WatchedConnection(http.client.HTTPConnection):
    """A connection whose socket the current fetch's :class:`_Deadline` can shut down
    (:func:`_create_connection` puts it under the deadline)."""

    def connect(self) -> None:
        self._create_connection = _create_connection
        super().connect()


class _WatchedHTTPSConnection(http.client.HTTPSConnection, _WatchedConnection):
    """The same over TLS: the TCP socket while it connects (HTTPSConnection.connect
    reaches _WatchedConnection.connect), then the TLS socket, which takes over the
    descriptor."""

    def connect(self) -> None:
        super().connect()
        _watch(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedHTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


#: The part of a cached document's lifetime (a JWKS's max-age, a status list's ttl) at the
#: end of which a use of it refreshes it in the background.
REFRESH_AHEAD: Final = 0.2


@dataclass
class _StatusList:
    """A verified status list: its bits, and until when it may be used."""

    bits: int
    data: bytes
    fresh_until: float  # monotonic: fetch a new copy after this (its ttl)
    usable_until: float  # monotonic: never use it after this (its exp, status_max_stale)
    lifetime: float = 0.0  # its ttl, bounded by status_ttl_bounds
    exp: float | None = None  # wall clock: its exp
    etag: str | None = None  # sent as If-None-Match when refreshing it
    refreshing: bool = False
    #: Monotonic: from here until ``fresh_until`` a use of this copy starts a refresh in
    #: the background, so under steady use a new copy is there before this one is stale.
    refresh_from: float = float("inf")

    def status(self, idx: int) -> int | None:
        per_byte = 8 // self.bits
        byte = idx // per_byte
        if byte >= len(self.data):
            return None
        return (self.data[byte] >> ((idx % per_byte) * self.bits)) & ((1 << self.bits) - 1)


def _start_or_undo(target: Callable[[], None], name: str, undo: Callable[[], None]) -> None:
    """Start *target* on a daemon thread; when no thread can be started, *undo* the
    "refreshing" mark it was to clear (else refreshes would stop for good)."""
    try:
        threading.Thread(target=target, name=name, daemon=True).start()
    except RuntimeError:
        undo()


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata of *issuer* is looked for, in order: the RFC 8414 §3.1 location
    (the well-known segment between host and path), then the issuer with the well-known
    path appended (the same URL when the issuer has no path; a proxy may route only the
    issuer's path to the server)."""
    parsed = urllib.parse.urlsplit(issuer)
    path = parsed.path.rstrip("/")
    rfc = f"{parsed.scheme}://{parsed.netloc}/.well-known/oauth-authorization-server{path}"
    appended = f"{issuer.rstrip('/')}/.well-known/oauth-authorization-server"
    return list(dict.fromkeys([rfc, appended]))


def _is_issuer(issuer: str) -> bool:
    """Whether *issuer* could be authserver's ``AUTHSERVER_ISSUER``: an http(s) URL, its
    scheme in lower case, naming a host and, if any, a port from 1 to 65535, with no
    query, fragment, user name, white space or control character (RFC 8414 §2; authserver
    refuses any other). Anything else can never match a token's ``iss`` nor the
    metadata's ``issuer``: every token would be refused (``jwks_unavailable``)."""
    try:
        parsed = urllib.parse.urlsplit(issuer)
        port = parsed.port
    except ValueError:  # "https://[::1" (an unclosed IPv6 literal), "https://h:99999"
        return False
    return (
        issuer.startswith(("http://", "https://"))
        and bool(parsed.hostname)
        and port != 0
        and not parsed.netloc.endswith(":")
        and "@" not in parsed.netloc
        and "?" not in issuer
        and "#" not in issuer
        and not any(c.isspace() or not c.isprintable() for c in issuer)
    )


#: Every verifier of this process, for :func:`_after_fork_in_child`.
_LIVE: weakref.WeakSet[TokenVerifier] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for verifier in list(_LIVE):
        verifier._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class TokenVerifier:
    """Verifies authserver access tokens offline against its published keys.

    :param issuer: ``AUTHSERVER_ISSUER`` as it appears in ``iss`` (a trailing ``/`` is
        dropped, as authserver drops it).
    :param audience: this sync server's audience (one of the client's ``--audience``).
    :param jwks_uri: skip discovery and fetch keys from here.
    :param leeway: seconds of clock skew tolerated for ``exp``, ``nbf`` and ``iat``.
    :param max_cache_seconds: the longest the JWKS is cached, whatever its max-age says
        (keep it at or below the authserver's ``AUTHSERVER_KEY_PUBLISH_AHEAD``).
    :param min_refetch_interval: the JWKS is fetched at most once per this many seconds.
    :param stale_if_error: how long after a successful fetch its keys stay usable while
        refreshes fail.
    :param timeout: seconds for each HTTP request, as a whole (connect, headers, body).
    :param max_response_bytes: larger metadata, JWKS or status list responses are refused.
    :param check_status: honour the tokens' status lists (draft-ietf-oauth-status-list).
    :param require_status: refuse tokens without a status list reference (authserver puts
        one in every token; tokens issued before it did have none).
    :param status_ttl_bounds: the ``ttl`` a list claims is clamped to this range
        (draft §12.8: a verifier bounds what an issuer may ask of it).
    :param status_max_stale: a list is never used longer than this after it was fetched
        (or confirmed by a 304), whatever its ``exp`` says; then tokens naming it fail
        closed. Default 900 s (:data:`DEFAULT_STATUS_MAX_STALE`), as in the JS verifier.
    :param clock: seconds since the epoch (for tests).
    :param monotonic: the caches' clock (for tests).
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_uri: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
        max_cache_seconds: float = 300.0,
        min_refetch_interval: float = 10.0,
        stale_if_error: float = 3600.0,
        timeout: float = 5.0,
        max_response_bytes: int = 512 * 1024,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        required_claims: Iterable[str] = REQUIRED_CLAIMS,
        check_status: bool = True,
        require_status: bool = False,
        status_ttl_bounds: tuple[float, float] = (1.0, 3600.0),
        status_max_stale: float = DEFAULT_STATUS_MAX_STALE,
        max_status_lists: int = 64,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        if not isinstance(issuer, str) or not isinstance(audience, str):
            # A list of audiences (the Node package takes one) was compared as a whole with
            # each token's aud: every token refused as wrong_audience.
            raise TypeError("issuer and audience must be strings (one audience per verifier)")
        if not _is_issuer(issuer):
            # A typo in the settings, said now (as the Node package's createVerifier says
            # it), not as a refusal of every token.
            raise ValueError(f"issuer must be the http(s) URL authserver puts in iss: {issuer!r}")
        # authserver normalises AUTHSERVER_ISSUER without a trailing slash (settings.py),
        # so "https://auth.example.com/" here means the same issuer.
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.max_cache_seconds = max_cache_seconds
        self.min_refetch_interval = min_refetch_interval
        self.stale_if_error = stale_if_error
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_token_bytes = max_token_bytes
        self.required_claims = tuple(required_claims)
        self.check_status = check_status
        self.require_status = require_status
        self.status_ttl_bounds = status_ttl_bounds
        self.status_max_stale = status_max_stale
        self.max_status_lists = max_status_lists
        self._clock = clock
        self._monotonic = monotonic
        self._opener = urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler)
        self._jwks_uri = jwks_uri
        if jwks_uri is not None and urllib.parse.urlsplit(jwks_uri).scheme not in ("http", "https"):
            raise ValueError(f"jwks_uri must be an http(s) URL, not {jwks_uri!r}")
        # Guarded by _lock (cheap, never held during I/O).
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[RSAKey, ...]] = {}  # by kid: RFC 7517 allows several
        self._fresh_until = float("-inf")  # monotonic
        self._refresh_from = float("-inf")  # monotonic: refresh ahead from here
        self._usable_until = float("-inf")  # monotonic: stale_if_error bound
        self._refreshing_keys = False  # a background refresh of the keys runs
        self._etag: str | None = None
        self._last_fetch_ok = True
        self._last_fetch_error: str | None = None
        self._last_failure = float("-inf")  # monotonic: when the last failed fetch ended
        # Held by the one thread that fetches (single flight); never taken under _lock.
        self._fetch_lock = _FetchLock()
        self._last_attempt = float("-inf")  # monotonic; written under _fetch_lock
        #: How many HTTP fetches of the JWKS were attempted (for tests and metrics).
        self.fetch_count = 0
        # Status lists by URI, least recently used first; guarded by _lock.
        self._lists: OrderedDict[str, _StatusList] = OrderedDict()
        # One lock per list URI being fetched (single flight); guarded by _lock.
        self._list_locks: dict[str, _FetchLock] = {}
        self._list_attempts: dict[str, float] = {}  # monotonic; last fetch attempt per URI
        self._list_failures: dict[str, float] = {}  # monotonic; last failed attempt per URI
        #: How many HTTP fetches of status lists were attempted (for tests and metrics).
        self.status_fetch_count = 0
        self._generation = 0  # bumped by refresh(); guarded by _lock
        #: averify's hand-offs of a fetch to a worker thread (asyncio tasks), by the lock
        #: of the fetch; guarded by _lock.
        self._handoffs: dict[_FetchLock | None, Any] = {}
        _LIVE.add(self)  # for _after_fork_in_child

    def _after_fork(self) -> None:
        """In a child process: only the thread that forked is there. A lock another
        thread held at the fork (a fetch under way, as in a pre-forking server's master
        warming its cache in a thread) would stay held for good, and every use needing a
        fetch would hang; a background refresh marked as running would never end, so
        none would start again. New locks, no refresh running, and a fetch that was under
        way counts as never attempted (its answer reaches the parent only)."""
        if self._fetch_lock.locked():
            self._last_attempt = float("-inf")
        for uri, lock in self._list_locks.items():
            if lock.locked():
                self._list_attempts.pop(uri, None)
        self._lock = threading.Lock()
        self._fetch_lock = _FetchLock()
        self._list_locks = {}
        self._handoffs = {}
        self._refreshing_keys = False
        for cached in self._lists.values():
            cached.refreshing = False

    # -- public API -------------------------------------------------------------------------

    def verify(self, token: str | bytes) -> dict[str, Any]:
        """Return the verified claims of *token*, or raise :class:`InvalidToken` (and
        nothing else: a sync server must be able to answer 401 whatever it was sent)."""
        if token is None or (isinstance(token, str | bytes) and not token):
            # As the JS verifier says it, and as require_token does for a request without one.
            raise InvalidToken("missing_token")
        try:
            return self._verify(token)
        except InvalidToken:
            raise
        except _WouldWait:
            raise  # averify's, never seen by a caller of verify()
        except RuleViolation as exc:
            raise InvalidToken(exc.reason, exc.detail) from None
        except Exception as exc:  # the promise above; the cause is named
            raise InvalidToken("malformed", f"unexpected {type(exc).__name__}") from None

    async def averify(self, token: str | bytes) -> dict[str, Any]:
        """:meth:`verify` for an asyncio server (Starlette, FastAPI, aiohttp, a WebSocket
        handshake): the same claims or the same :class:`InvalidToken`, without blocking
        the event loop. With the keys and the token's status list cached (nearly every
        call) it answers on the loop's thread at once; when one must be fetched first, the
        verification runs in a worker thread (:func:`asyncio.to_thread`), and calls that
        need a fetch already under way wait for it on the loop (no thread each). A slow or
        unreachable authserver holds back the requests that need it (up to ``timeout``),
        never the whole loop nor its executor."""
        import asyncio  # here: a WSGI server importing this package need not load asyncio

        loop = asyncio.get_running_loop()
        while True:
            _in_loop.active = True
            try:
                return self.verify(token)
            except _WouldWait as would:
                busy, fetch = would.busy, would.fetch
            finally:
                _in_loop.active = False
            if busy is None:
                with self._lock:
                    handoff = self._handoffs.get(fetch)
                if handoff is not None and handoff.get_loop() is loop and not handoff.done():
                    # A call of this loop has just handed this fetch to a worker thread,
                    # which may not hold its lock yet: wait for it, then try again. (Only
                    # this fetch: a call needing another list fetches it meanwhile.)
                    await asyncio.wait({handoff})
                    continue
                # This call fetches, on a worker thread; its task outlives this call
                # (shield) should the request go away, as the other calls wait for it.
                handoff = loop.create_task(asyncio.to_thread(self.verify, token))
                handoff.add_done_callback(_retrieved)
                handoff.add_done_callback(functools.partial(self._handed_back, fetch))
                with self._lock:
                    self._handoffs[fetch] = handoff
                try:
                    return await asyncio.shield(handoff)
                except RuntimeError:
                    # No worker thread could be started (a thread limit; verify() itself
                    # raises nothing but InvalidToken): the fetch runs on the loop's thread,
                    # which holds the loop for it, rather than a valid token refused.
                    return self.verify(token)
            # Another thread is fetching: wait for it on the loop, not on a thread of the
            # loop's executor (a burst of requests would hold every one of them for the
            # whole fetch), then answer from what it brought.
            done = loop.create_future()
            if busy.when_released(functools.partial(_wake, loop, done)):
                await done

    def _handed_back(self, fetch: _FetchLock | None, handoff: Any) -> None:
        with self._lock:
            if self._handoffs.get(fetch) is handoff:
                del self._handoffs[fetch]

    def _verify(self, token: str | bytes) -> dict[str, Any]:
        header = rules.parse_header(token, max_bytes=self.max_token_bytes)
        kid = rules.check_header(header)
        claims = self._verified_claims(token, kid)
        rules.check_claims(
            claims,
            issuer=self.issuer,
            audience=self.audience,
            now=self._clock(),
            leeway=self.leeway,
            required=self.required_claims,
        )
        if self.check_status:
            self._check_status(claims)
        return claims

    def refresh(self) -> None:
        """Fetch the JWKS now, whatever ``min_refetch_interval`` says, and the status lists
        at their next use (e.g. after a retire, or after revoking tokens by hand)."""
        self._refetch(force=True)
        with self._lock:
            self._generation += 1  # a list fetch already under way is stale when it lands
            for cached in self._lists.values():
                cached.fresh_until = float("-inf")

    # -- keys -------------------------------------------------------------------------------

    def _verified_claims(self, token: str | bytes, kid: str) -> dict[str, Any]:
        """The claims of *token* once one of the keys published under *kid* verifies it.
        RFC 7517 §4.5 only says kids SHOULD differ: each key under the kid is tried (jose's
        candidates in the JS verifier), and bad_signature only when none verifies."""
        failures: list[RuleViolation] = []
        for key in self._key_for(kid):
            try:
                return rules.verified_claims(token, key)
            except RuleViolation as exc:
                failures.append(exc)
        # What a key that verified the signature found (claims that are no JSON object)
        # says more than the other keys' bad_signature.
        failures.sort(key=lambda exc: exc.reason == "bad_signature")
        raise failures[0]

    def _key_for(self, kid: str) -> tuple[RSAKey, ...]:
        with self._lock:
            key = self._keys.get(kid)  # every key published under kid
            now = self._monotonic()
            fresh = now < self._fresh_until
            ahead = now >= self._refresh_from
            failing = (
                not self._last_fetch_ok
                and now < self._usable_until
                and self._failing_now(
                    self._last_failure, self._fresh_until, now, retrying=self._refreshing_keys
                )
            )
            retry_due = now - self._last_attempt >= self.min_refetch_interval
        if key is not None and fresh:
            if ahead and retry_due:
                self._refresh_keys_in_background()
            return key
        if key is not None and failing:
            # The issuer is failing now: the last good set answers (within
            # stale_if_error) and the fetch is retried in the background, so an outage
            # holds back the uses during one fetch, never every use at every retry.
            if retry_due:
                self._refresh_keys_in_background()
            return key
        # The cache expired while the issuer answered (a retired key must go at once), or
        # the kid is unknown (a rotation we have not seen yet, or a forged kid): refetch
        # now, at most once per min_refetch_interval.
        self._refetch(force=False)
        with self._lock:
            key = self._keys.get(kid)
            usable = self._monotonic() < self._usable_until
            reachable = self._last_fetch_ok
            error = self._last_fetch_error
        if key is not None and usable:
            return key
        if not reachable or not usable:
            # Not the token's fault: the keys that might verify it could not be fetched.
            raise InvalidToken("jwks_unavailable", error)
        raise InvalidToken("unknown_kid")

    def _failing_now(
        self, failed: float, fresh_until: float, now: float, *, retrying: bool
    ) -> bool:
        """Whether a failure at *failed* (monotonic) says the issuer is failing now, for a
        copy that was fresh until *fresh_until*: it came after the copy went stale (a
        failed refresh ahead says nothing of the issuer later), and recently (within a
        retry interval and a fetch: retries keep it recent while the outage lasts and
        uses come), or a retry is still *retrying*. An older failure is no reason to
        answer from a stale copy: a list fetched since may hold a revocation, a key set
        a retire."""
        recent = 2 * self.min_refetch_interval + self.timeout
        return failed >= fresh_until and (retrying or now - failed < recent)

    def _refresh_keys_in_background(self) -> None:
        with self._lock:
            if self._refreshing_keys:
                return
            self._refreshing_keys = True

        def run() -> None:
            try:
                self._refetch(force=False)
            finally:
                self._keys_refreshed()

        _start_or_undo(run, "authserver-verifier-keys", self._keys_refreshed)

    def _keys_refreshed(self) -> None:
        with self._lock:
            self._refreshing_keys = False

    def _refetch(self, *, force: bool) -> None:
        started = self._monotonic()
        lock = self._fetch_lock
        with lock.held():
            now = self._monotonic()
            if self._last_attempt > started and not force:
                return  # another thread fetched while we waited: use its result
            if now - self._last_attempt < self.min_refetch_interval and not force:
                return
            _must_not_wait(lock)  # averify on the loop: fetch on a worker thread instead
            self._last_attempt = now
            self.fetch_count += 1
            error: str | None = None
            try:
                self._fetch_jwks()
            except InvalidToken as exc:
                # Keep the last good set (bounded by stale_if_error), and why this failed:
                # the error a caller then gets names the URL tried and the cause.
                error = exc.detail
            with self._lock:
                self._last_fetch_ok = error is None
                self._last_fetch_error = error
                if error is not None:
                    self._last_failure = self._monotonic()

    def _fetch_jwks(self) -> None:
        if self._jwks_uri is None:
            self._jwks_uri = self._discover()
        with self._lock:
            etag = self._etag
        headers = {"If-None-Match": etag} if etag else {}
        status, body, response_headers = self._get(self._jwks_uri, headers)
        lifetime = self._cache_lifetime(response_headers.get("cache-control"))
        now = self._monotonic()
        if status == 304:
            with self._lock:
                if not headers:
                    # Nothing was asked conditionally: a 304 renews no copy.
                    raise InvalidToken("jwks_unavailable", f"{self._jwks_uri}: 304 without a copy")
                self._hold_keys(now, lifetime)
            return
        keys = self._parse_jwks(body)
        with self._lock:
            self._keys = keys
            self._etag = response_headers.get("etag")
            self._hold_keys(now, lifetime)

    def _hold_keys(self, now: float, lifetime: float) -> None:
        """The key set fetched or confirmed at *now* is fresh for *lifetime*, refreshed
        ahead in its last fifth, and usable for stale_if_error (call under ``_lock``)."""
        self._fresh_until = now + lifetime
        self._refresh_from = now + (1 - REFRESH_AHEAD) * lifetime
        self._usable_until = now + max(lifetime, self.stale_if_error)

    def _discover(self) -> str:
        """RFC 8414 §3: the metadata's ``issuer`` must be ours; take its ``jwks_uri``."""
        last: InvalidToken | None = None
        for url in metadata_urls(self.issuer):
            try:
                _, body, _ = self._get(self._check_url(url), {})
            except InvalidToken as exc:
                last = exc
                continue
            try:
                metadata = json.loads(body)
            except (ValueError, RecursionError):  # RecursionError: nested beyond reason
                metadata = None
            if not isinstance(metadata, dict):
                last = InvalidToken("jwks_unavailable", f"{url}: not a metadata document")
                continue
            if metadata.get("issuer") != self.issuer:
                served = str(metadata.get("issuer"))[:200]
                last = InvalidToken(
                    "jwks_unavailable",
                    f"{url}: the metadata names issuer {served!r}, not {self.issuer!r}",
                )
                continue
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                last = InvalidToken("jwks_unavailable", f"{url}: no jwks_uri")
                continue
            return self._check_url(jwks_uri)
        assert last is not None
        raise last

    def _check_url(self, url: str) -> str:
        try:
            scheme = urllib.parse.urlsplit(url).scheme
        except ValueError:  # e.g. "http://[::1": an unclosed IPv6 literal
            raise InvalidToken("jwks_unavailable", f"not a URL: {url[:200]!r}") from None
        # An https issuer's keys come over https; only http and https are ever opened.
        allowed = {"https"} if self.issuer.startswith("https:") else {"http", "https"}
        if scheme not in allowed:
            raise InvalidToken("jwks_unavailable", f"refusing to fetch keys from {url!r}")
        return url

    def _get(
        self,
        url: str,
        headers: dict[str, str],
        *,
        accept: str = "application/json",
        failure: str = "jwks_unavailable",
    ) -> tuple[int, bytes, dict[str, str]]:
        """GET *url*: status, body and the response headers, names in lower case (header
        names are case-insensitive, RFC 9110 §5.1; many servers send them lower-cased).
        Every failure is :class:`InvalidToken` with reason *failure*."""
        request = urllib.request.Request(  # noqa: S310 - scheme checked by the callers
            url, headers={"Accept": accept, **headers}
        )
        deadline = _fetching.deadline = _Deadline(self.timeout)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read(self.max_response_bytes + 1)
                # read(n) returns what arrived before the connection ended: a body cut by
                # the deadline (its socket shut down) or by the server is not the whole one.
                if deadline.expired or (response.length and len(body) <= self.max_response_bytes):
                    raise http.client.IncompleteRead(body, response.length)
                status = int(response.status)
                response_headers = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection open until collected otherwise
            if exc.code == 304:
                return 304, b"", {k.lower(): v for k, v in exc.headers.items()}
            raise InvalidToken(failure, f"{url}: HTTP {exc.code}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # URLError, timeouts, resets, bad URLs, and a response cut at its deadline
            # (which then reads as a closed connection: said as the timeout it was). A
            # socket's own timeout (the same seconds, per read) may fire first: said alike.
            cause = _cause(exc)
            if cause.startswith("unknown host"):
                pass  # the name, not the server, is what failed
            elif deadline.expired or cause == "timed out":
                cause = f"timed out after {self.timeout:g} s"
            raise InvalidToken(failure, f"{url}: {cause}") from exc
        finally:
            deadline.cancel()
            _fetching.deadline = None
        if status != 200:
            raise InvalidToken(failure, f"{url}: HTTP {status}")
        if len(body) > self.max_response_bytes:
            raise InvalidToken(failure, f"{url}: response too large")
        return status, body, response_headers

    def _cache_lifetime(self, cache_control: str | None) -> float:
        if cache_control is None:
            return self.max_cache_seconds
        if _NO_CACHE.search(cache_control):
            return 0.0
        match = _MAX_AGE.search(cache_control)
        if match is None:
            return self.max_cache_seconds
        return min(float(match.group(1)), self.max_cache_seconds)

    @staticmethod
    def _parse_jwks(body: bytes) -> dict[str, tuple[RSAKey, ...]]:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested beyond reason
            raise InvalidToken("jwks_unavailable", "JWKS is not JSON") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise InvalidToken("jwks_unavailable", "JWKS has no keys array")
        keys: dict[str, tuple[RSAKey, ...]] = {}
        for entry in entries:
            # RFC 7517 §5: skip keys we cannot use rather than failing the whole set.
            if not isinstance(entry, dict) or entry.get("kty") != "RSA":
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("alg", ALGORITHM) != ALGORITHM or "d" in entry:
                continue  # a private key in a JWKS is a publishing bug; never trust it
            try:
                if _modulus_bits(entry.get("n")) < MIN_RSA_BITS:
                    continue  # RFC 7518 §3.3 (jose refuses such a key too)
                key = RSAKey.import_key(entry)
            except (JoseError, ValueError, TypeError):
                continue
            keys[kid] = (*keys.get(kid, ()), key)  # one kid may name several keys
        return keys

    # -- status lists (draft-ietf-oauth-status-list-17) ------------------------------------

    def _check_status(self, claims: dict[str, Any]) -> None:
        """§11.2: after the token itself checked out, its status in the list it names."""
        if "status" not in claims:
            if self.require_status:
                raise InvalidToken("invalid_status", "the token has no status claim")
            return
        status = claims["status"]
        if not isinstance(status, dict):
            raise InvalidToken("invalid_status", "status is not a JSON object")
        ref = status.get("status_list")
        # §6.1 allows other status mechanisms, but a token whose status this verifier
        # cannot check might be revoked: refused (authserver never issues one).
        if not isinstance(ref, dict):
            raise InvalidToken("invalid_status", "status has no status_list object")
        idx, uri = ref.get("idx"), ref.get("uri")
        if isinstance(idx, float) and idx.is_integer():
            idx = int(idx)  # JSON's 1.0 is the number 1 (the JS verifier reads it so)
        if type(idx) is not int or idx < 0 or not isinstance(uri, str):
            raise InvalidToken("invalid_status", "status.status_list needs idx and uri")
        # Lists come from the issuer's own origin and nowhere else: a token cannot point
        # this verifier at an arbitrary host.
        if not uri.startswith(self.issuer + "/"):
            raise InvalidToken("invalid_status", "the status list is not the issuer's")
        value = self._status_list(uri).status(idx)
        if value is None:  # §8.3 step 6: an index outside the list is refused
            raise InvalidToken("invalid_status", f"{uri}: index {idx} is outside the list")
        if value == 0x01:  # §7.1
            raise InvalidToken("revoked")
        if value == 0x02:
            raise InvalidToken("suspended")
        if value != 0x00:
            raise InvalidToken("invalid_status", f"status value {value}")

    def _status_list(self, uri: str) -> _StatusList:
        now = self._monotonic()
        refresh: _StatusList | None = None
        with self._lock:
            cached = self._lists.get(uri)
            if cached is not None:
                self._lists.move_to_end(uri)
                failed = self._list_failures.get(uri, float("-inf"))
                retry_due = now - failed >= self.min_refetch_interval
                if now < cached.fresh_until:
                    if now >= cached.refresh_from and retry_due:
                        refresh = cached
                elif now < cached.usable_until and self._failing_now(
                    failed, cached.fresh_until, now, retrying=cached.refreshing
                ):
                    # The issuer is failing now: answer from this copy (within its bound)
                    # and retry in the background, so an outage holds back the uses
                    # during one fetch, never every use at every retry.
                    if retry_due:
                        refresh = cached
                else:
                    cached = None
        if cached is not None:
            if refresh is not None:
                self._refresh_list_in_background(uri, refresh)
            return cached
        # No copy, or one past its ttl while the issuer answered last time: fetch now
        # (single flight per list), so a revocation is seen within one ttl however seldom
        # tokens naming the list come; a failed fetch leaves the last copy within its bound.
        error: str | None = None
        try:
            self._fetch_list(uri)
        except InvalidToken as exc:
            error = exc.detail
        with self._lock:
            cached = self._lists.get(uri)
            if cached is not None and self._monotonic() < cached.usable_until:
                return cached
        raise InvalidToken("status_unavailable", error or f"{uri}: no usable copy")

    def _refresh_list_in_background(self, uri: str, cached: _StatusList) -> None:
        """Start a background refresh of *cached* unless one runs."""
        with self._lock:
            if cached.refreshing:
                return
            cached.refreshing = True

        def done() -> None:
            with self._lock:
                cached.refreshing = False  # the copy this refresh was started for

        def run() -> None:
            try:
                self._fetch_list(uri, ahead=True)
            except InvalidToken:
                pass  # keep the copy we have, within its bound
            finally:
                done()

        _start_or_undo(run, "authserver-verifier-status", done)

    def _fetch_list(self, uri: str, *, ahead: bool = False) -> None:
        """Fetch the list at *uri* unless another thread did while this one waited; a
        copy still fresh is fetched again only *ahead* of its end (a background refresh)."""
        with self._lock:
            lock = self._list_locks.setdefault(uri, _FetchLock())
        started = self._monotonic()
        with lock.held():
            now = self._monotonic()
            with self._lock:
                cached = self._lists.get(uri)
                last = self._list_attempts.get(uri, float("-inf"))
                failed = self._list_failures.get(uri, float("-inf"))
            if last > started or (not ahead and cached is not None and now < cached.fresh_until):
                return  # another thread fetched while we waited
            if now - failed < self.min_refetch_interval:
                # A failing list is not hammered: one attempt per interval after a failure.
                raise InvalidToken("status_unavailable", f"{uri}: failed moments ago")
            _must_not_wait(lock)  # averify on the loop: fetch on a worker thread instead
            with self._lock:
                self._list_attempts[uri] = now
                self.status_fetch_count += 1
                generation = self._generation
            try:
                fetched = self._load_list(uri, cached)
            except InvalidToken:
                with self._lock:
                    self._list_failures[uri] = self._monotonic()
                raise
            with self._lock:
                if generation != self._generation:
                    # refresh() was called while this fetch was under way: what it brings
                    # may predate the change that call was for; the next use fetches again.
                    fetched.fresh_until = float("-inf")
                self._list_failures.pop(uri, None)
                self._lists[uri] = fetched
                self._lists.move_to_end(uri)
                while len(self._lists) > self.max_status_lists:
                    old, _ = self._lists.popitem(last=False)
                    self._list_locks.pop(old, None)
                    self._list_attempts.pop(old, None)
                    self._list_failures.pop(old, None)

    def _load_list(self, uri: str, cached: _StatusList | None) -> _StatusList:
        """GET and verify a Status List Token (§5.1, §8, §11.2); a conditional GET when
        *cached* has an ETag, whose 304 answer renews *cached*."""
        condition = {"If-None-Match": cached.etag} if cached is not None and cached.etag else {}
        status, body, headers = self._get(
            uri, condition, accept=STATUS_LIST_MEDIA_TYPE, failure="status_unavailable"
        )
        if status == 304:
            if cached is None or not condition:
                raise InvalidToken("status_unavailable", f"{uri}: 304 without a copy")
            if cached.exp is not None and cached.exp <= self._clock():
                # The issuer (or a cache before it) still serves a copy past its exp: that
                # renews nothing and is a failed fetch, retried after min_refetch_interval
                # (as a success it sent every verification back to the issuer).
                raise InvalidToken("status_unavailable", f"{uri}: 304 for a copy past its exp")
            # The issuer still serves this very copy: fresh for another ttl, still never
            # past its exp.
            return self._renewed(cached)
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != STATUS_LIST_MEDIA_TYPE:
            raise InvalidToken("status_unavailable", f"{uri}: not {STATUS_LIST_MEDIA_TYPE}")
        try:
            # UTF-8 with a byte order mark dropped, as the Node verifier reads the body
            # (response.text()); anything but ASCII left in it is no token (malformed).
            token = body.decode("utf-8-sig").strip()
            header = rules.parse_header(token, max_bytes=self.max_response_bytes)
            # RFC 7515 §4.1.9: "statuslist+jwt" is application/statuslist+jwt (as at+jwt
            # and application/at+jwt are one type for access tokens).
            kid = rules.check_header(header, typ={STATUS_LIST_TYP, STATUS_LIST_MEDIA_TYPE})
            claims = self._verified_claims(token, kid)
        except RuleViolation as exc:
            raise InvalidToken("status_unavailable", f"{uri}: {exc}") from None
        except InvalidToken as exc:
            raise InvalidToken("status_unavailable", f"{uri}: {exc}") from None
        except UnicodeDecodeError:
            raise InvalidToken("status_unavailable", f"{uri}: not a JWT") from None
        parsed = self._parse_list(uri, claims)
        parsed.etag = headers.get("etag")
        return parsed

    def _held(self, lifetime: float, exp: float | None) -> tuple[float, float, float]:
        """(fresh until, usable until, refresh ahead from), monotonic, for a list fetched
        or confirmed now: usable until its exp (by the wall clock, converted), never past
        status_max_stale; fresh for its ttl (*lifetime*), never past that either (a list
        held "fresh" longer was used after the issuer had replaced it: a revoked token
        accepted)."""
        fetched = self._monotonic()
        usable = fetched + self.status_max_stale
        if exp is not None:
            usable = min(usable, fetched + (exp - self._clock()))
        fresh = min(fetched + lifetime, usable)
        return fresh, usable, fetched + (1 - REFRESH_AHEAD) * (fresh - fetched)

    def _renewed(self, cached: _StatusList) -> _StatusList:
        fresh_until, usable_until, refresh_from = self._held(cached.lifetime, cached.exp)
        return _StatusList(
            bits=cached.bits,
            data=cached.data,
            fresh_until=fresh_until,
            usable_until=usable_until,
            refresh_from=refresh_from,
            lifetime=cached.lifetime,
            exp=cached.exp,
            etag=cached.etag,
        )

    def _parse_list(self, uri: str, claims: dict[str, Any]) -> _StatusList:
        def bad(why: str) -> InvalidToken:
            return InvalidToken("status_unavailable", f"{uri}: {why}")

        # §5.1: sub MUST equal the uri the token names; iat REQUIRED.
        if claims.get("sub") != uri:
            raise bad("sub is not this list's URI")
        if claims.get("iss", self.issuer) != self.issuer:
            raise bad("issued by another issuer")
        iat, exp, ttl, nbf = (claims.get(name) for name in ("iat", "exp", "ttl", "nbf"))
        if not _is_time(iat):
            raise bad("no iat")
        now = self._clock()
        # Present means a time: "exp": null is not an absent exp.
        if "exp" in claims and not _is_time(exp):
            raise bad("exp is not a time")
        if exp is not None and exp <= now:
            raise bad("expired")  # §11.2: an expired list is not relied upon
        if iat > now + self.leeway:
            raise bad("issued in the future")
        if "nbf" in claims and (not _is_time(nbf) or nbf > now + self.leeway):
            raise bad("not valid yet")
        # §6.2: ttl, when present, is a positive number of seconds.
        if "ttl" in claims and not (_is_time(ttl) and ttl > 0):
            raise bad("ttl is not a positive number")
        status_list = claims.get("status_list")
        if not isinstance(status_list, dict):
            raise bad("no status_list")
        bits, lst = status_list.get("bits"), status_list.get("lst")
        if isinstance(bits, float) and bits.is_integer():
            bits = int(bits)  # JSON's 1.0 is the number 1 (the JS verifier reads it so)
        if bits not in (1, 2, 4, 8) or type(bits) is not int or not isinstance(lst, str):
            raise bad("status_list needs bits (1, 2, 4 or 8) and lst")
        try:
            compressed = rules.b64url_decode(lst)
            inflater = zlib.decompressobj()
            data = inflater.decompress(compressed, MAX_STATUS_LIST_BYTES)
        except (ValueError, zlib.error):
            raise bad("lst is not base64url DEFLATE/ZLIB") from None
        if inflater.unconsumed_tail:
            raise bad("lst is too large")
        if not inflater.eof or inflater.unused_data:
            # An empty or cut-off stream inflates to nothing: it is not a list (every index
            # "outside" it).
            raise bad("lst is not base64url DEFLATE/ZLIB")
        low, high = self.status_ttl_bounds
        # A list without a ttl says nothing of how long it stays current: held until its
        # exp, at most the upper bound (as the JS verifier holds it).
        lifetime = min(max(float(ttl), low), high) if ttl is not None else high
        expires = float(exp) if exp is not None else None
        fresh_until, usable_until, refresh_from = self._held(lifetime, expires)
        return _StatusList(
            bits=bits,
            data=data,
            fresh_until=fresh_until,
            usable_until=usable_until,
            refresh_from=refresh_from,
            lifetime=lifetime,
            exp=expires,
        )


#: RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used with these algorithms."
MIN_RSA_BITS: Final = 2048


def _modulus_bits(n: Any) -> int:
    """The size of the RSA modulus a JWK's ``n`` encodes (TypeError, ValueError: none)."""
    if not isinstance(n, str):
        raise TypeError("no modulus")
    return int.from_bytes(rules.b64url_decode(n), "big").bit_length()


#: The largest time or duration a list may name (the year 5138): past it a number is not
#: a time, and float() of a JSON integer such as 10**400 overflows.
_LARGEST_TIME = 1e11


def _is_time(value: Any) -> TypeGuard[int | float]:
    """A JSON number that can be a time or a number of seconds (finite, not a bool,
    within :data:`_LARGEST_TIME`)."""
    return _is_number(value) and -_LARGEST_TIME <= value <= _LARGEST_TIME


def _is_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number that is one (not a bool, not NaN)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and value == value


# -- WSGI -------------------------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header (RFC 6750 §2.1).

    No header, or another scheme (``Basic``): ``missing_token``, a request without bearer
    credentials. ``Bearer`` with no value or with white space inside it (a space, a tab, a
    no-break space, as the Node middleware reads it; also what a server that joins repeated
    headers with ``", "`` passes on): ``invalid_request``, a malformed request (§3.1).
    """
    if authorization:
        scheme, _, value = authorization.strip(_WHITESPACE).partition(" ")
        if scheme.lower() == "bearer":
            value = value.strip(_WHITESPACE)
            if value and not any(char in _WHITESPACE for char in value):
                return value
            raise InvalidToken("invalid_request")
    raise InvalidToken("missing_token")


#: White space as JavaScript's trim() and \s have it, so that this middleware and the Node
#: one read a header alike: "Bearer a<TAB>b" or "Bearer a<NBSP>b" (Latin-1 0xA0, which
#: WSGI and Node pass on) is a malformed request (400) in both; only a space counted here.
_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def require_token(
    verifier: TokenVerifier, *, public_paths: Collection[str] = ()
) -> Callable[[WSGIApp], WSGIApp]:
    """WSGI middleware (and decorator) that lets through only valid bearer tokens.

    ``app = require_token(verifier)(app)``; the wrapped app finds the claims in
    ``environ["authserver.claims"]``. A missing or invalid token gets 401 with an RFC 6750
    §3 ``WWW-Authenticate`` challenge and a JSON body ``{"error", "reason"}``; a malformed
    or repeated ``Authorization`` header 400 ``invalid_request`` (§3.1); keys that cannot
    be fetched get 503. Paths in *public_paths* (e.g. a health check) pass unchecked,
    with the claims ``None``.
    """

    def wrap(app: WSGIApp) -> WSGIApp:
        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO", "") in public_paths:
                # No token was asked for: None, never a value an outer layer left there.
                environ[CLAIMS_ENVIRON_KEY] = None
                return app(environ, start_response)
            try:
                token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
                environ[CLAIMS_ENVIRON_KEY] = verifier.verify(token)
            except InvalidToken as exc:
                return _refuse(exc.reason, start_response)
            return app(environ, start_response)

        return middleware

    return wrap


def _refuse(reason: str, start_response: Callable[..., Any]) -> list[bytes]:
    status, headers, body = _refusal(reason)
    start_response(status, headers)
    return [body]


def _refusal(reason: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """The answer to a request refused for *reason*: status line, headers, JSON body (one
    for the WSGI and the ASGI middleware)."""
    if reason in ("jwks_unavailable", "status_unavailable"):
        status, error = "503 Service Unavailable", "temporarily_unavailable"
        extra = [("Retry-After", "5")]
    elif reason == "invalid_request":
        # RFC 6750 §3.1: a malformed request is 400 invalid_request.
        status, error = "400 Bad Request", "invalid_request"
        extra = [("WWW-Authenticate", 'Bearer error="invalid_request"')]
    else:
        status, error = "401 Unauthorized", "invalid_token"
        # RFC 6750 §3.1: no error code when the request carried no token at all.
        challenge = (
            "Bearer"
            if reason == "missing_token"
            else f'Bearer error="invalid_token", error_description="{reason}"'
        )
        extra = [("WWW-Authenticate", challenge)]
    body = json.dumps({"error": error, "reason": reason}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *extra,
    ]
    return status, headers, body


# -- ASGI -------------------------------------------------------------------------------------

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def require_token_asgi(
    verifier: TokenVerifier, *, public_paths: Collection[str] = ()
) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware (and decorator) that lets through only valid bearer tokens, on HTTP
    requests and WebSocket handshakes alike: what :func:`require_token` is for WSGI.

    ``app = require_token_asgi(verifier)(app)`` (Starlette, FastAPI, any ASGI app); the app
    finds the claims in ``scope["authserver.claims"]``, and ``None`` there on a path in
    *public_paths*. Tokens are checked with :meth:`TokenVerifier.averify`, so a fetch of
    the keys or of a status list never holds the event loop. A refused HTTP request gets
    the same answers as from :func:`require_token` (401 with an RFC 6750 challenge, 400
    for a malformed or repeated ``Authorization`` header, 503 while keys or lists cannot
    be fetched). A refused WebSocket handshake gets that answer too where the server
    supports ASGI's WebSocket Denial Response (uvicorn, hypercorn), else the server's own
    403 for a handshake closed before it was accepted. A connection outlives its token:
    close it at ``claims["exp"]`` (or verify a fresh token the client sends) in the app.
    """

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(
            scope: dict[str, Any],
            receive: Callable[[], Awaitable[Any]],
            send: Callable[[Any], Awaitable[None]],
        ) -> None:
            if scope["type"] not in ("http", "websocket"):  # lifespan
                await app(scope, receive, send)
                return
            if scope.get("path", "") in public_paths:
                # No token was asked for: None, never a value an outer layer left there.
                await app({**scope, CLAIMS_ENVIRON_KEY: None}, receive, send)
                return
            try:
                # Repeated headers joined as a WSGI server joins them: a malformed request.
                authorization = ", ".join(
                    value.decode("latin-1")
                    for name, value in scope.get("headers", ())
                    if name.lower() == b"authorization"
                )
                claims = await verifier.averify(bearer_token(authorization or None))
            except InvalidToken as exc:
                await _refuse_asgi(scope, send, exc.reason)
                return
            await app({**scope, CLAIMS_ENVIRON_KEY: claims}, receive, send)

        return middleware

    return wrap


async def _refuse_asgi(
    scope: dict[str, Any], send: Callable[[Any], Awaitable[None]], reason: str
) -> None:
    status, headers, body = _refusal(reason)
    code = int(status.split(" ", 1)[0])
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    prefix = "http"
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            # A handshake closed before it is accepted: the server answers 403 itself.
            await send({"type": "websocket.close", "code": 1008})
            return
        prefix = "websocket.http"
    await send({"type": f"{prefix}.response.start", "status": code, "headers": raw})
    await send({"type": f"{prefix}.response.body", "body": body})
