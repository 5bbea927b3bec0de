"""The access log and the request id: one WSGI middleware around the whole application
(the lean OAuth layer and Flask alike), so every request gets exactly one line.

A request id comes from the ``X-Request-Id`` header when it is a short printable token,
else a new one is made; the response echoes it in ``X-Request-Id``, and the log line
carries it, so an operator can find a client's failed request from the id the client saw.
The client id is logged when some layer learned it (:func:`note_client`): the one a client
authenticated as, or the one a failed authentication presented.
"""

from __future__ import annotations

import contextvars
import logging
import random
import re
import secrets
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from authserver import process
from authserver.clients.secrets import SECRET_PREFIX
from authserver.oauth.events import ClientAuthFailed
from authserver.oauth.events import RequestServed

log = logging.getLogger("authserver.access")
auth_log = logging.getLogger("authserver.auth")

#: An incoming id is used only when it is this harmless: it lands in logs and a header.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class _Access:
    request_id: str
    client_id: str | None = None
    #: The error code and description an error answer gave the client.
    error: str | None = None
    description: str | None = None


_current: contextvars.ContextVar[_Access | None] = contextvars.ContextVar(
    "authserver_access", default=None
)


def _printable(text: str, limit: int) -> str:
    # Request-supplied text (a presented client_id, a path) must not forge log lines.
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def note_client(client_id: str | None) -> None:
    """Record the client the current request is for (logged on its access line)."""
    access = _current.get()
    if access is not None and client_id:
        access.client_id = _printable(client_id, 128)


def note_refusal(event: RequestServed) -> None:
    """Record why the current request was refused (logged on its access line): the error
    code and description its answer gave the client."""
    if event.error is None:
        return
    access = _current.get()
    if access is not None:
        access.error = _printable(event.error, 64)
        access.description = _printable(event.description or "", 300) or None


def log_auth_failure(event: ClientAuthFailed) -> None:
    """A failed client authentication or a throttled one, at info, with the reason; the
    presented credential never appears, only the id it claimed."""
    client_id = _printable(event.client_id, 128) if event.client_id else "-"
    if event.throttled:
        auth_log.info(
            "throttled at %s: client_id=%s, %s failure budget exhausted (429); %s; request_id=%s",
            event.endpoint,
            client_id,
            event.throttled,
            event.reason or "authentication failed",
            request_id() or "-",
            extra={"event": "auth_throttled", "client_id": event.client_id, "reason": event.reason},
        )
    else:
        auth_log.info(
            "client authentication failed at %s: client_id=%s, %s; request_id=%s",
            event.endpoint,
            client_id,
            event.reason or "reason unknown",
            request_id() or "-",
            extra={"event": "auth_failed", "client_id": event.client_id, "reason": event.reason},
        )


def request_id() -> str | None:
    """The id of the request being served, if any (for other log lines)."""
    access = _current.get()
    return access.request_id if access is not None else None


class _RequestIds:
    """Request ids made here: 64 random bits as 16 hex digits, from a generator seeded per
    process from the system's randomness (reseeded in a forked worker), so making one
    costs no system call. Not secret: a request id only names a request in the logs."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._random = random.Random(secrets.token_bytes(32))  # noqa: S311 - not a secret

    def next(self) -> str:
        return f"{self._random.getrandbits(64):016x}"


_request_ids = _RequestIds()
process.after_fork(_request_ids.reset)


class AccessLog:
    """WSGI middleware: request id in and out, one log line per request at info."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        # A client secret sent as the id (a misplaced header) is neither echoed nor logged.
        ok = _VALID_ID.fullmatch(incoming) and SECRET_PREFIX not in incoming
        rid = incoming if ok else _request_ids.next()
        environ["HTTP_X_REQUEST_ID"] = rid
        access = _Access(rid)
        token = _current.set(access)
        status_holder: list[int] = [0]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status_holder[0] = int(status.split(" ", 1)[0])
            for name, _ in headers:
                if name.lower() == "x-request-id":
                    headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
                    break
            return start_response(status, [*headers, ("X-Request-Id", rid)], exc_info)

        try:
            body = self.app(environ, start)
        except BaseException:
            status_holder[0] = status_holder[0] or 500
            self._log(environ, access, status_holder[0], started)
            raise
        finally:
            _current.reset(token)
        if isinstance(body, list):
            # Complete already (the lean layer's answers): log it now and hand the server
            # the list itself, which granian sends in one write instead of iterating a
            # wrapper from native code and calling its close().
            self._log(environ, access, status_holder[0], started)
            return body
        return _Logged(body, lambda: self._log(environ, access, status_holder[0], started))

    @staticmethod
    def _log(environ: dict[str, Any], access: _Access, status: int, started: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        millis = (time.perf_counter() - started) * 1000
        method = environ.get("REQUEST_METHOD", "-")
        path = _printable(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), 512)
        # Never the query string: it is the one part of a URL that may carry a credential.
        # An error answer ends the line with what the client was told, so the operator
        # reads why without asking the client.
        refusal = ""
        if access.error is not None:
            refusal = f" error={access.error}"
            if access.description:
                refusal += f" ({access.description})"
        log.info(
            "%s %s %d %.1fms client=%s request_id=%s%s",
            _printable(method, 16),
            path or "/",
            status,
            millis,
            access.client_id or "-",
            access.request_id,
            refusal,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(millis, 1),
                "client_id": access.client_id,
                "request_id": access.request_id,
                "remote_addr": environ.get("REMOTE_ADDR"),
                "error": access.error,
                "error_description": access.description,
            },
        )


class _Logged:
    """The response body, logging once the server has consumed (or closed) it."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._done is not None:
                done, self._done = self._done, None
                done()
