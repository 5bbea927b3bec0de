"""Request bodies are read in full, within a deadline, before any layer sees the request.

Why: granian runs each request on one of a worker's few Python threads
(``AUTHSERVER_THREADS``), and its ``wsgi.input.read`` blocks until the whole body has
arrived, with no timeout of its own (granian bounds the wait for the request head only,
30 s; a body timeout is not offered). A stranger who sends ``Content-Length: 100`` and then
29 bytes would hold that thread for as long as the connection stays open, and a few such
connections would hold them all.

The blocked read cannot be interrupted from Python, and granian's request body cannot be
read from a thread of our own either (with more than one such reader blocked, the worker
stops running Python at all), so the read stays on the request's thread and
:class:`_Watchdog`, one thread per worker process, ends it from the outside: once a read
has waited ``AUTHSERVER_BODY_TIMEOUT`` seconds, it shuts down the receiving half of the
connections it can be waiting on (``shutdown(SHUT_RD)``): the read returns what had
arrived, the request is answered 408 and the connection is closed. It finds them from
what the kernel knows of each of the worker's connections (``TCP_INFO``; Linux): from the
request's address, to this port, a request in progress that has had no answer since the
overdue read began, and either nothing received since then (stalled) or more bytes at
each look, half a second apart (a trickle). A request that arrived after the read began
is complete and waits its turn, so it is never touched, nor is an idle keep-alive
connection (its last event is our answer, unless that went out within the millisecond of
its request: closing an idle connection is allowed anyway). A request from the same
address whose bytes all arrived before the overdue read began and that is still
unanswered a whole timeout later is closed too.

The layers behind (``oauth/requests.py`` for ``/token``, Flask for the admin API) then
read the body from memory and apply their own rules (413 over
``AUTHSERVER_MAX_BODY_BYTES``, 400 for a malformed one), as they would on the socket.
Requests without a body (``GET /healthz``, the JWKS) pass straight through.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from authserver import process

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: ``struct tcp_info`` (linux/tcp.h, Linux 4.1 and later): 8 one-byte fields, then 32-bit
#: ones, milliseconds since the last data was sent the 10th and since the last data was
#: received the 12th; ``tcpi_bytes_received`` is the 64-bit field at byte 128.
_TCP_INFO_SIZE = 136
_LAST_DATA = struct.Struct("=I4xI")
_LAST_DATA_OFFSET = 8 + 4 * 9
_BYTES_RECEIVED = struct.Struct("=Q")
_BYTES_RECEIVED_OFFSET = 128
_FD_DIR = "/proc/self/fd"
#: Seconds between two looks at the connections while a read is overdue: a trickle is
#: told from a complete request waiting its turn by its growing byte count between two.
_SWEEP = 0.5


class _Read:
    """A body read in progress on one request thread."""

    __slots__ = ("address", "cut", "deadline", "port", "started")

    def __init__(self, address: str, port: str, started: float, timeout: float) -> None:
        self.address = address
        self.port = port
        self.started = started
        self.deadline = started + timeout
        self.cut = False


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _Watchdog:
    """One thread per process: ends the body reads that outlive their deadline."""

    def __init__(self) -> None:
        self._reads: dict[int, _Read] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        #: Bytes received so far by each connection the last sweep looked at.
        self._received: dict[tuple[int, str, int], int] = {}

    def begin(self, read: _Read) -> None:
        self._reads[threading.get_ident()] = read
        if self._pid != process.pid():
            # Started in the worker process that serves (threads do not survive a fork).
            with self._lock:
                if self._pid != process.pid():
                    self._pid = process.pid()
                    self._thread = threading.Thread(
                        target=self._run, name="body-deadline", daemon=True
                    )
                    self._thread.start()

    def end(self) -> None:
        self._reads.pop(threading.get_ident(), None)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            reads = list(self._reads.values())
            overdue = [r for r in reads if r.deadline <= now]
            if overdue:
                try:
                    self._cut(overdue, now)
                except Exception:  # never let the watchdog die: log and go on
                    log.exception("could not end the overdue request bodies")
            else:
                self._received = {}
            waits = [r.deadline - now for r in reads if r.deadline > now]
            time.sleep(min([_SWEEP, *waits]) + 0.01)

    def _cut(self, overdue: list[_Read], now: float) -> None:
        """Shut down the receiving half of every connection the overdue reads may be
        waiting on."""
        # Per (address, port): the most recent start among its overdue reads. Each
        # overdue connection has had no answer since then, and has either received
        # nothing since (stalled) or keeps receiving (a trickle).
        since: dict[tuple[Any, int], float] = {}
        fresh = 0
        for read in overdue:
            fresh += not read.cut
            read.cut = True
            address = _ip(read.address)
            if address is None or not read.port.isdigit():
                continue
            key = (address, int(read.port))
            since[key] = max(since.get(key, 0.0), read.started)
        try:
            names = os.listdir(_FD_DIR) if since else []
        except OSError:
            names = []  # not Linux: a read ends when its client sends or goes away
        received: dict[tuple[int, str, int], int] = {}
        cut = 0
        for name in names:
            try:
                fd = int(name)
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                conn = socket.socket(fileno=os.dup(fd))
            except (OSError, ValueError):
                continue
            try:
                if conn.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if conn.type != socket.SOCK_STREAM:
                    continue
                try:
                    host, peer_port = conn.getpeername()[:2]
                    port = conn.getsockname()[1]
                    info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
                except OSError:
                    continue  # a listening socket, or gone meanwhile
                started = since.get((_ip(host), port))
                if started is None or len(info) < _TCP_INFO_SIZE:
                    continue
                sent_ms, received_ms = _LAST_DATA.unpack_from(info, _LAST_DATA_OFFSET)
                (total,) = _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_OFFSET)
                seen = (fd, host, peer_port)
                received[seen] = total
                waited = now - started
                # Milliseconds: an answer sent within the millisecond of its request
                # looks in progress too; such an idle connection may be closed anyway.
                in_progress = received_ms <= sent_ms
                unanswered = sent_ms / 1000 >= waited
                quiet = received_ms / 1000 >= waited
                trickling = total > self._received.get(seen, total)
                if in_progress and unanswered and (quiet or trickling):
                    conn.shutdown(socket.SHUT_RD)
                    cut += 1
            except OSError:
                continue
            finally:
                conn.close()
        self._received = received
        if fresh or cut:
            log.info("%d request bodies overdue: %d connections closed", fresh, cut)


_watchdog = _Watchdog()


def _has_body(environ: dict[str, Any]) -> bool:
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bool(length != "0")
    return "HTTP_TRANSFER_ENCODING" in environ


_FORM = "application/x-www-form-urlencoded"
#: The answer to a chunked body past the limit, whichever layer it was meant for (the
#: admin API read the first limit + 1 bytes as its whole body: "not a JSON object", 400).
_TOO_LARGE = json.dumps(
    {"error": "invalid_request", "error_description": "the request body is too large"},
    separators=(",", ":"),
).encode()
_LENGTH_REQUIRED = json.dumps(
    {
        "error": "invalid_request",
        "error_description": (
            "a form body needs a Content-Length header: a chunked one cannot be told "
            "complete from cut short"
        ),
    },
    separators=(",", ":"),
).encode()


def _is_form(environ: dict[str, Any]) -> bool:
    mimetype = str(environ.get("CONTENT_TYPE", "")).partition(";")[0].strip().lower()
    return mimetype == _FORM


class BodyDeadline:
    """WSGI middleware: the body of every request that has one is read in full, within
    *timeout* seconds, before *app* is called, which then reads it from memory.

    At most *limit* + 1 bytes are read: a body over the limit is refused by the layer
    behind (413), which reads the one byte more to tell. A ``Content-Length`` that is not a
    number or is over the limit is left to that layer too: it answers without reading.
    """

    def __init__(self, app: WSGIApp, *, timeout: float, limit: int) -> None:
        self.app = app
        self.timeout = timeout
        self.limit = limit
        self._answer = json.dumps(
            {
                "error": "invalid_request",
                "error_description": (
                    "the request body did not arrive in full "
                    f"(the server waits {timeout:g} seconds for it)"
                ),
            },
            separators=(",", ":"),
        ).encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not _has_body(environ):
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                size = int(length)
            except ValueError:
                return self.app(environ, _closing(start_response))
            if not 0 < size <= self.limit:
                # Answered (413) without its body being read: the body is still on the
                # connection, and granian closes it after the answer. Said so, or a client
                # sends its next request on that connection and it fails (requests raised
                # ConnectionError on the call after every 413).
                return self.app(environ, _closing(start_response))
        else:
            size = self.limit + 1  # chunked: one byte past the limit tells "too large"
        read = _Read(
            str(environ.get("REMOTE_ADDR", "")),
            str(environ.get("SERVER_PORT", "")),
            time.monotonic(),
            self.timeout,
        )
        _watchdog.begin(read)
        try:
            body = bytes(environ["wsgi.input"].read(size))
        finally:
            _watchdog.end()
        if (length and len(body) < size) or (read.cut and not length):
            # Cut at its deadline (here, or before its read began: the watchdog closes
            # every stalled connection it finds), or the client closed its half early:
            # either way never parse a truncated body as whole.
            return self._refuse(start_response)
        if not length and len(body) > self.limit:
            # The rest of it is still on the connection: no keep-alive.
            return json_answer(
                start_response, "413 Content Too Large", _TOO_LARGE, [("Connection", "close")]
            )
        if not length and _is_form(environ):
            # granian ends a chunked body where its framing ends, complete or not (a
            # connection half-closed before the last chunk, a malformed chunk size), and
            # says nothing: a form cut between two parameters parses as a shorter request
            # (no sub: the client's own token). JSON is self-delimiting (a cut one does not
            # parse); a form needs its length. Over the limit it is still 413.
            return self._length_required(start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    def _length_required(self, start_response: Callable[..., Any]) -> list[bytes]:
        return json_answer(start_response, "411 Length Required", _LENGTH_REQUIRED, [])

    def _refuse(self, start_response: Callable[..., Any]) -> list[bytes]:
        # Whatever else the client sends is not a request: no keep-alive.
        return json_answer(
            start_response, "408 Request Timeout", self._answer, [("Connection", "close")]
        )


def _closing(start_response: Callable[..., Any]) -> Callable[..., Any]:
    """*start_response* with ``Connection: close`` added to the answer's headers."""

    def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        if not any(name.lower() == "connection" for name, _ in headers):
            headers = [*headers, ("Connection", "close")]
        return start_response(status, headers, *exc_info)

    return start


def json_answer(
    start_response: Callable[..., Any], status: str, body: bytes, extra: list[tuple[str, str]]
) -> list[bytes]:
    """A refusal answered here, before the app: JSON, not cached, not sniffed."""
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *extra,
        ],
    )
    return [body]
