"""The HTTP exchange of a ``jwks_uri`` fetch (``clients/jwks_fetch.py``): a connection
to an address already resolved and checked, under one deadline for every socket read and
write. Its own module so that only a process that fetches imports ``http.client`` (about
50 ms of start-up that every command and server would otherwise pay)."""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import time
from typing import Any


class Deadline:
    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the jwks_uri fetch took longer than its deadline")
        return left


class DeadlineSocket(socket.socket):
    """A TCP socket whose every read and write may take only what is left of the fetch's
    deadline (``settimeout`` alone bounds each call, not their sum)."""

    deadline: Deadline

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(self.deadline.remaining())
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.settimeout(self.deadline.remaining())
        return super().recv(bufsize, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(self.deadline.remaining())
        super().sendall(data, flags)


class DeadlineSSLSocket(ssl.SSLSocket):
    """The same for TLS (installed through ``SSLContext.sslsocket_class``)."""

    deadline: Deadline

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(self.deadline.remaining())
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self.settimeout(self.deadline.remaining())
        return super().recv(buflen, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(self.deadline.remaining())
        super().sendall(data, flags)


class PinnedConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection to an address already resolved and checked, with the
    original host name in ``Host`` and, for https, in SNI and certificate verification."""

    def __init__(
        self,
        host: str,
        port: int,
        address: tuple[Any, ...],
        family: int,
        deadline: Deadline,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=deadline.remaining())
        self._address = address
        self._family = family
        self._deadline = deadline
        self._tls = tls

    def connect(self) -> None:
        if self._tls is None:
            sock = DeadlineSocket(self._family, socket.SOCK_STREAM)
            sock.deadline = self._deadline
        else:
            sock = socket.socket(self._family, socket.SOCK_STREAM)  # type: ignore[assignment]
        current: socket.socket = sock
        try:
            sock.settimeout(self._deadline.remaining())
            sock.connect(self._address)
            if self._tls is not None:
                wrapped = self._tls.wrap_socket(
                    sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                current = wrapped
                assert isinstance(wrapped, DeadlineSSLSocket)
                wrapped.deadline = self._deadline
                # CPython bounds the whole handshake by the socket timeout.
                wrapped.settimeout(self._deadline.remaining())
                wrapped.do_handshake()
            self.sock = current
        except BaseException:
            current.close()
            raise


@functools.cache
def default_tls() -> ssl.SSLContext:
    """One context per process, made at the first https fetch: loading the system trust
    store costs tens of ms, and every ``container.build`` (each CLI command, each server
    start) makes a fetcher that most deployments never use. Contexts are safe to share
    between threads."""
    tls = ssl.create_default_context()
    tls.sslsocket_class = DeadlineSSLSocket
    return tls
