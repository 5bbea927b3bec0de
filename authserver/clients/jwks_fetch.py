"""Fetch the public JWK set of a ``private_key_jwt`` client from its ``jwks_uri``.

The server fetches a URL an operator registered, when a request that anyone can send
names that client: the fetch must not become a tool for reaching what the server can
reach (server-side request forgery) or for holding its threads. So:

- ``https`` only; plain ``http`` only for a loopback host outside production mode;
- no redirects (a 3xx is a failure, never followed);
- the host is resolved once and the connection goes to that address (no second lookup
  an attacker's DNS could answer differently); in production mode an address that is
  not globally routable (private, loopback, link-local such as cloud metadata at
  169.254.169.254, CGNAT, multicast, reserved) is refused unless the operator allows it
  (``AUTHSERVER_JWKS_URI_ALLOW_PRIVATE``);
- one deadline for the whole fetch (DNS, connect, TLS, headers, body), enforced on every
  socket read, so a host that drips one byte a second is cut off like a silent one; a
  host's name lookup runs on a thread of its own, one at a time per host, so a domain
  whose name servers never answer holds back no other host (:class:`_Lookups`);
- a size cap, strict JSON, and the same public-key-only validation as ``--jwks-file``;
- results are cached per URI (successes for ``ttl``, failures for ``failure_ttl``), the
  cache is bounded, and at most one fetch per URI is in flight: a flood of assertions
  naming the client costs at most one fetch per ``failure_ttl``.

What a stranger decides is *when* a set is fetched again (an assertion naming the client
and a made-up ``kid``, at most once per ``refresh_after``), so that fetch may cost the
client nothing: a refetch that fails keeps the set in hand until its ``ttl`` (a key
server's blip at the moment a stranger chose is no 30 s lockout), and while a fetch is in
flight only callers with nothing cached wait for it: the others are answered at once from
what is cached (a set, or the failure). The refetch itself runs on a thread of its own,
and the caller that started it waits for it only while it is young (``join_within``),
then is answered from what is cached too: a flood of made-up kids naming in turn clients
whose key servers hang holds a request thread for at most that second per client and
refresh period, not for the whole deadline.

With nothing cached (the first fetch of a URI in this process), the other callers wait for
the fetch in flight, but only while it is young (``join_within``): a key server that has
not answered by then is taken for failing, and they are refused at once until the fetch
ends. A stranger's flood naming a client whose key server hangs then holds every thread
of a worker for at most that second, once, instead of for the whole deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import urlsplit

from authserver.cache import BoundedCache
from authserver.clients.jwks import MAX_JWKS_BYTES
from authserver.clients.jwks import check_jwks_uri
from authserver.clients.jwks import validate_public_jwks
from authserver.clients.service import CACHE_SIZE
from authserver.clock import Clock
from authserver.clock import SystemClock
from authserver.errors import AuthServerError
from authserver.errors import InvalidInput
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import loads_strict

if TYPE_CHECKING:
    import http.client

    from authserver.clients.jwks_http import Deadline

log = logging.getLogger(__name__)

_JWKS_DEPTH = 4


class _Lookups:
    """DNS lookups off the request thread, so that they too are bounded by the fetch's
    deadline (``getaddrinfo`` has no timeout of its own), at most one in flight per host.

    A host whose name servers never answer (a hostile client controls its own domain)
    holds its lookup's thread for as long as the system resolver keeps trying, which can
    outlast the deadline several times over. A shared pool of lookup threads would let a
    few such hosts, asked again at each refetch, hold every thread, and every other
    client's lookup would wait behind them until its own deadline, its key set never
    fetched. So each host has its own thread while its lookup runs, and a host asked
    again while its lookup still hangs waits for that one instead of starting another:
    one silent host holds one thread, whatever the rate of fetches, and holds back no
    other host."""

    def __init__(self, resolve: Callable[..., list[Any]]) -> None:
        self._resolve = resolve
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, int], Future[list[Any]]] = {}

    def lookup(self, host: str, port: int, timeout: float) -> list[Any]:
        """``getaddrinfo(host, port)``'s answer.

        :raises TimeoutError: no answer within *timeout* seconds."""
        key = (host, port)
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Future()
                threading.Thread(
                    target=self._run, args=(key, flight), name="authserver-jwks-dns", daemon=True
                ).start()
        try:
            return flight.result(timeout=timeout)
        except FutureTimeout:
            raise TimeoutError from None

    def _run(self, key: tuple[str, int], flight: Future[list[Any]]) -> None:
        try:
            infos = self._resolve(key[0], key[1], 0, socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the waiting fetch, never lost in a thread
            with self._lock:
                del self._flights[key]
            flight.set_exception(exc)
        else:
            with self._lock:
                del self._flights[key]
            flight.set_result(infos)


class JwksUnavailable(AuthServerError):
    """The client's JWK set could not be fetched or is not acceptable. The message says
    why for the log; the client is told only that authentication failed."""


@dataclass(frozen=True)
class FetchPolicy:
    #: Production mode: https only, and no private targets unless allowed below.
    production: bool = False
    #: ``AUTHSERVER_JWKS_URI_ALLOW_PRIVATE``: accept private and link-local addresses in
    #: production mode (a client's key server on the same private network).
    allow_private: bool = False
    #: One deadline for the whole fetch, in seconds.
    timeout: float = 5.0
    #: Largest accepted response body, in bytes.
    max_bytes: int = MAX_JWKS_BYTES
    #: How long a fetched set is used before it is fetched again.
    ttl: float = 300.0
    #: How long a failure is remembered (no fetch for that URI meanwhile).
    failure_ttl: float = 30.0
    #: How old a fetch in flight may be for a caller with nothing cached to wait for its
    #: answer; past this the fetch counts as failing and such callers are refused at once
    #: (its own caller still waits for it, up to ``timeout``). It is also how long the
    #: caller that starts a refetch waits for it before being answered from what is
    #: cached. A healthy key server answers well within a second; waiting for a hanging
    #: one held every thread of the worker for the whole deadline, at the time a stranger
    #: chose.
    join_within: float = 1.0
    #: A set that lacks the ``kid`` of an assertion is fetched again when it is at least
    #: this old (the client rotated its keys); never more often. Anyone can send an
    #: assertion naming a client and an unknown kid, so this is both the fastest a
    #: stranger can make the server fetch a client's set and the longest the client's
    #: newly published key can wait after someone else's fetch: 10 s, as the verifiers'
    #: own refetch interval.
    refresh_after: float = 10.0
    #: Most URIs remembered (least recently used forgotten first): as many as a process
    #: caches clients. The URIs are those of registered clients, and anyone can name any
    #: client: with fewer entries than clients, assertions naming the clients in turn
    #: found each set forgotten and fetched it again, a fetch per request whatever
    #: ``refresh_after`` says.
    max_entries: int = CACHE_SIZE


@dataclass
class _Entry:
    #: When this set was fetched, or this failure happened (``ttl``, ``failure_ttl``).
    at: float
    jwks: dict[str, Any] | None
    error: str | None
    #: When the URI was last asked (``refresh_after``): later than ``at`` when a refetch
    #: failed and the set in hand was kept.
    asked: float = 0.0

    def __post_init__(self) -> None:
        self.asked = max(self.asked, self.at)


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: _Entry | None = None
        #: ``time.monotonic()`` when the fetch began: the waits are real time, whatever
        #: clock the cache keeps.
        self.started = time.monotonic()


def address_allowed(ip: str, policy: FetchPolicy) -> bool:
    """Outside production mode any address; in production only globally routable ones,
    unless the operator allowed private targets."""
    if not policy.production or policy.allow_private:
        return True
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


class JwksFetcher:
    """Fetch and cache JWK sets by URI. Thread-safe; one instance per process."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        *,
        clock: Clock | None = None,
        tls: ssl.SSLContext | None = None,
        resolve: Callable[..., list[Any]] = socket.getaddrinfo,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._clock = clock or SystemClock()
        if tls is not None:
            from authserver.clients.jwks_http import DeadlineSSLSocket  # see jwks_http

            tls.sslsocket_class = DeadlineSSLSocket
        self._tls = tls  # None: the process's default context, at the first https fetch
        self._lookups = _Lookups(resolve)
        self._lock = threading.Lock()
        self._cache: BoundedCache[str, _Entry] = BoundedCache(self.policy.max_entries)
        self._flights: dict[str, _Flight] = {}
        #: Fetches actually made (not cache hits); for tests and diagnostics.
        self.fetches = 0

    def get(self, uri: str, *, kid: str | None = None) -> dict[str, Any]:
        """The JWK set at *uri*, from the cache when fresh.

        :param kid: the key the caller needs; a cached set without it is fetched again
            once it is ``refresh_after`` old.
        :raises JwksUnavailable: the set cannot be had now (also while a failure is
            remembered).
        """
        now = self._clock.now()
        with self._lock:
            _, entry = self._cache.get(uri)
            if entry is not None and self._fresh(entry, now, kid):
                return self._result(entry)
            flight = self._flights.get(uri)
            leader = flight is None
            if flight is None:
                flight = self._flights[uri] = _Flight()
        if not leader:
            if entry is not None:
                # Someone else is fetching this URI, which anyone can cause (a made-up
                # kid): answer from what is cached instead of holding this thread.
                return self._result(entry)
            # Nothing cached: wait for their answer while the fetch is young; an older one
            # is failing (see join_within).
            wait = flight.started + self.policy.join_within - time.monotonic()
            if wait <= 0 or not flight.done.wait(wait) or flight.entry is None:
                within = self.policy.join_within
                raise JwksUnavailable(
                    f"the jwks_uri fetch in flight had no answer within {within:g} s"
                )
            return self._result(flight.entry)
        if entry is None:
            # The first fetch of this URI here: its caller has nothing else to go on.
            return self._result(self._lead(uri, flight, None))
        # A refetch, whose moment anyone can choose (a made-up kid; the first assertion
        # after a failure's failure_ttl), on a thread of its own: this caller waits for it
        # while it is young, then answers from what is cached. Made on the request's
        # thread, a refetch held that thread up to the deadline, once per refresh period
        # per URI: naming in turn a few clients whose key servers hang (an outage of a
        # host serving several clients' sets) held every thread of the worker.
        try:
            threading.Thread(
                target=self._lead,
                args=(uri, flight, entry),
                name="authserver-jwks-fetch",
                daemon=True,
            ).start()
        except RuntimeError:  # no thread to be had (a thread limit): fetch here
            return self._result(self._lead(uri, flight, entry))
        if flight.done.wait(self.policy.join_within) and flight.entry is not None:
            return self._result(flight.entry)
        return self._result(entry)

    def _lead(self, uri: str, flight: _Flight, previous: _Entry | None) -> _Entry:
        """Make the fetch of *flight* (what was cached before it: *previous*), cache what
        it brings, and end the flight; returns the entry cached."""
        entry: _Entry | None = None
        try:
            entry = self._fetch_entry(uri)
            if (
                entry.jwks is None
                and previous is not None
                and previous.jwks is not None
                and entry.at - previous.at < self.policy.ttl
            ):
                # A failed refetch keeps the set in hand until its ttl: who made this
                # fetch happen, and when, may be a stranger's choice.
                entry = _Entry(previous.at, previous.jwks, None, asked=entry.at)
            return entry
        finally:
            with self._lock:
                if entry is not None:
                    self._cache.put(uri, entry)
                flight.entry = entry
                del self._flights[uri]
            flight.done.set()

    def _fresh(self, entry: _Entry, now: float, kid: str | None) -> bool:
        age = now - entry.at
        if entry.jwks is None:
            return age < self.policy.failure_ttl
        if age >= self.policy.ttl:
            return False
        if kid is not None and now - entry.asked >= self.policy.refresh_after:
            return any(k.get("kid") == kid for k in entry.jwks["keys"])
        return True

    @staticmethod
    def _result(entry: _Entry) -> dict[str, Any]:
        if entry.jwks is None:
            raise JwksUnavailable(entry.error or "the jwks_uri fetch failed")
        return entry.jwks

    def _fetch_entry(self, uri: str) -> _Entry:
        self.fetches += 1
        try:
            jwks = self.fetch(uri)
        except JwksUnavailable as exc:
            reason = str(exc)
        except Exception as exc:  # anything else is a failed fetch too, never a 500
            reason = f"the fetch failed: {type(exc).__name__}"
        else:
            return _Entry(self._clock.now(), jwks, None)
        # Logged once per failure period (the failure is cached), with the host only: a
        # URI's path or query may carry something the operator would not log.
        log.warning("jwks_uri of host %s refused: %s", urlsplit(uri).hostname, reason)
        return _Entry(self._clock.now(), None, reason)

    def fetch(self, uri: str) -> dict[str, Any]:
        """One uncached fetch of *uri*. Raises :class:`JwksUnavailable`."""
        # Start-up: http.client only in a process that fetches (jwks_http's docstring).
        import http.client

        from authserver.clients import jwks_http

        policy = self.policy
        try:
            check_jwks_uri(uri, allow_http_loopback=not policy.production)
        except InvalidInput as exc:
            raise JwksUnavailable(str(exc)) from None
        parts = urlsplit(uri)
        host = parts.hostname or ""
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        deadline = jwks_http.Deadline(policy.timeout)
        try:
            family, address = self._address(host, port, deadline)
            connection = jwks_http.PinnedConnection(
                host,
                port,
                address,
                family,
                deadline,
                (self._tls or jwks_http.default_tls()) if tls else None,
            )
            try:
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                connection.request(
                    "GET",
                    path,
                    headers={
                        "Accept": "application/jwk-set+json, application/json",
                        "User-Agent": "authserver-jwks-fetch",
                    },
                )
                response = connection.getresponse()
                body = self._read(response)
            finally:
                connection.close()
        except JwksUnavailable:
            raise
        except TimeoutError:
            raise JwksUnavailable(f"no complete answer within {policy.timeout:g} s") from None
        except ssl.SSLError as exc:
            raise JwksUnavailable(f"TLS failed: {exc.reason or type(exc).__name__}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise JwksUnavailable(f"the fetch failed: {type(exc).__name__}") from None
        try:
            data = loads_strict(body, "the fetched JWK set", max_depth=_JWKS_DEPTH)
        except InvalidValue as exc:
            raise JwksUnavailable(str(exc)) from None
        except ValueError:
            raise JwksUnavailable("the answer is not JSON") from None
        try:
            return validate_public_jwks(data)
        except InvalidInput as exc:
            raise JwksUnavailable(str(exc)) from None

    def _address(self, host: str, port: int, deadline: Deadline) -> tuple[int, tuple[Any, ...]]:
        try:
            infos = self._lookups.lookup(host, port, deadline.remaining())
        except TimeoutError:
            raise  # the deadline, not an answer (TimeoutError is an OSError)
        except (OSError, UnicodeError):
            raise JwksUnavailable("the host name does not resolve") from None
        for family, _type, _proto, _name, address in infos:
            if address_allowed(str(address[0]), self.policy):
                return family, address
        raise JwksUnavailable(
            "the host resolves only to private or link-local addresses, refused in "
            "production mode (AUTHSERVER_JWKS_URI_ALLOW_PRIVATE allows them)"
        )

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        if 300 <= response.status < 400:
            raise JwksUnavailable(f"answered {response.status}: redirects are not followed")
        if response.status != 200:
            raise JwksUnavailable(f"answered {response.status}, not 200")
        limit = self.policy.max_bytes
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise JwksUnavailable(f"the answer is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = response.read(min(16384, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise JwksUnavailable(f"the answer is larger than {limit} bytes")
        return b"".join(chunks)
