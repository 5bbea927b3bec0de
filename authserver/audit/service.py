"""Record and read the audit trail."""

from __future__ import annotations

import atexit
import collections
import contextvars
import logging
import multiprocessing.util
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import AbstractContextManager
from contextlib import contextmanager
from typing import Any

from authserver.audit.model import AuditEvent
from authserver.audit.model import AuditQuery
from authserver.audit.store import AuditStore
from authserver.audit.store import key_record
from authserver.clock import Clock
from authserver.errors import InvalidInput
from authserver.errors import StorageError
from authserver.errors import StorageUnavailable
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import check_text

log = logging.getLogger(__name__)

#: Detail keys that must never be recorded, whatever a caller passes.
#: The longest text filter a query takes (the widest filtered column, ``sub``, is 255).
_MAX_FILTER = 255
_FORBIDDEN = frozenset(
    {
        "client_secret",
        "secret",
        "token",
        "access_token",
        "private_key",
        "passphrase",
        "password",
        "assertion",
        "client_assertion",
    }
)


#: Who is acting, set by each boundary (CLI command, admin API request, scheduler tick,
#: token request), so services record the right actor without being told at every call.
_actor: contextvars.ContextVar[str] = contextvars.ContextVar("authserver_actor", default="system")


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> str:
    return _actor.get()


#: How often a serving worker writes its batch of ``token.issued`` records.
BATCH_INTERVAL = 0.25


def settle_batches() -> None:
    """Wait until every serving worker has written the ``token.issued`` records of the
    requests it answered before this call: two batch intervals. Revoking "every live
    token" of a user reads those records, so waiting first counts (and revokes at once)
    a token issued a moment before. Call it before the unit of work that reads them
    opens. A worker whose database is slower still is caught by the key schedule's
    reconcile (``StatusLists.reconcile``) within about a minute."""
    time.sleep(2 * BATCH_INTERVAL)


class AuditService:
    def __init__(self, store: AuditStore, clock: Clock, *, retention: int) -> None:
        self._store = store
        self._clock = clock
        self.retention = retention
        self._batch: AuditBatcher | None = None

    def start_batching(
        self,
        unit_of_work: Callable[[], AbstractContextManager[Any]],
        interval: float = BATCH_INTERVAL,
    ) -> AuditBatcher:
        """Write ``token.issued`` events from a background thread, in one transaction per
        *interval*, instead of one write per token request (``serve`` turns this on).

        Operator actions stay in the caller's transaction. What this trades: a token
        issued in the last *interval* before a hard crash (``kill -9``) may miss its
        audit event; a graceful stop flushes everything the database takes within
        :data:`AuditBatcher.FINAL_FLUSH_TIMEOUT` and says how many it lost otherwise.
        """
        self._batch = AuditBatcher(self._store, unit_of_work, interval)
        self._batch.start()
        return self._batch

    def settle(self) -> None:
        """:func:`settle_batches` for a request this process serves: a process that batches
        its ``token.issued`` records (every ``serve`` worker, like its siblings) waits for
        them; one that writes each record at once (an app run without ``serve``) has no
        batch to wait for."""
        if self._batch is not None:
            settle_batches()

    def record_issued(self, actor: str, **fields: Any) -> None:
        """Record a ``token.issued`` event, batched when batching is on."""
        if self._batch is None:
            self.record(actor, "token.issued", **fields)
            return
        self._batch.put(self._event(actor, "token.issued", **fields))

    def record(self, actor: str | None, action: str, **fields: Any) -> None:
        """Record an event now, in the caller's unit of work. *actor* ``None`` means the
        boundary's actor (:func:`acting_as`); *fields* are those of :meth:`_event`."""
        self._store.add(self._event(actor, action, **fields))

    def _event(
        self,
        actor: str | None,
        action: str,
        *,
        client_id: str | None = None,
        sub: str | None = None,
        aud: str | list[str] | None = None,
        jti: str | None = None,
        **detail: Any,
    ) -> AuditEvent:
        if isinstance(aud, list):
            aud = " ".join(aud)
        clean = {k: v for k, v in detail.items() if k not in _FORBIDDEN and v is not None}
        return AuditEvent(
            at=self._clock.now(),
            actor=actor or current_actor(),
            action=action,
            client_id=client_id,
            sub=sub,
            aud=aud,
            jti=jti,
            detail=clean,
        )

    def key_records(self) -> set[tuple[str, str | None]]:
        """What the trail records of signing keys: ``("created", kid)`` for a
        ``key.created`` or ``key.rotated`` event, ``("retired", kid)`` for a
        ``key.retired`` one."""
        return {key_record(e) for e in self._store.key_events()}

    def record_keys_once(self, events: list[tuple[str, dict[str, Any]]]) -> list[AuditEvent]:
        """Record each ``(action, fields)`` of *events* (a key event, ``kid`` among its
        fields) unless the trail records the same of the same key, re-checked under the
        store's lock so that two processes recording it at once record it once; in the
        caller's unit of work. Returns the events recorded."""
        return self._store.add_key_events_once(
            [self._event(None, action, **fields) for action, fields in events]
        )

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        """The matching events, newest first.

        :raises InvalidInput: a text filter no record can hold (empty, control characters, or
            longer than any column), refused here rather than by the database.
        """
        for name in ("client_id", "sub", "action"):
            value = getattr(query, name)
            if value == "" and name != "action":
                # No event has an empty client_id or sub: an empty filter (an unset shell
                # variable, ?client_id=) answered "no events" as if there were none.
                raise InvalidInput(f"{name} must not be empty (leave the filter out instead)")
            if value is not None and not _recordable(value):
                raise InvalidInput(f"{name} is not a value any audit record has")
        return self._store.query(query)

    #: The most events one :meth:`purge` deletes: one transaction of a few tenths of a
    #: second at most, however many events crossed the retention at once (on SQLite every
    #: writer, token requests' included, waits for it).
    PURGE_BATCH = 5_000

    def purge(self, before: float | None = None) -> int:
        """Delete up to :data:`PURGE_BATCH` of the oldest events older than *before* (the
        retention period ago when ``None``); returns how many. Fewer than
        :data:`PURGE_BATCH` means none is left: call it again, each time in a unit of work
        of its own, until then (``scheduler.housekeeping``)."""
        cut = self._clock.now() - self.retention if before is None else before
        return self._store.purge(cut, limit=self.PURGE_BATCH)


def _recordable(value: str) -> bool:
    """Whether a record could hold *value* in a text column: one line of Unicode text (the
    rule of every value that reaches one, ``sub`` included: vocabulary.check_text), at most
    as long as the widest filtered column. Not ``str.isprintable``: that refuses what a
    ``sub`` may hold (a no-break or ideographic space, a zero width joiner in an emoji, a
    character newer than Python's Unicode tables), whose events could then not be found.
    What it refuses (a NUL, a lone surrogate) no database is asked about."""
    try:
        check_text(value, "filter", max_length=_MAX_FILTER)
    except InvalidValue:
        return False
    return True


def _safe_reason(exc: BaseException | None) -> str:
    """Why a write failed, for a log line: a storage error's own text (written for
    operators, without the URL's password), else only the error's type: never a driver's
    text or a traceback, which can carry the database URL or the values refused."""
    return str(exc) if isinstance(exc, StorageError) else type(exc).__name__


class AuditBatcher:
    """A per-process buffer of audit events, flushed by a daemon thread."""

    #: Events kept while the database is unreachable; beyond it the oldest are dropped
    #: (and the number dropped is logged), so an outage cannot exhaust memory.
    MAX_PENDING = 100_000

    def __init__(
        self,
        store: AuditStore,
        unit_of_work: Callable[[], AbstractContextManager[Any]],
        interval: float,
    ) -> None:
        self._store = store
        self._unit_of_work = unit_of_work
        self._interval = interval
        self._pending: collections.deque[AuditEvent] = collections.deque()
        self._flush_lock = threading.Lock()
        self._dropped = 0
        #: Events taken from ``_pending`` by a flush and not yet written or dropped.
        self._in_flight = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="authserver-audit", daemon=True)

    def start(self) -> None:
        self._thread.start()
        # A graceful stop writes what is pending. atexit covers a process that exits
        # normally; a worker process started by multiprocessing (the HTTP server's workers
        # are forked that way) ends with os._exit, which skips atexit but runs
        # multiprocessing's finalizers first.
        atexit.register(self._final_flush)
        multiprocessing.util.Finalize(None, self._final_flush, exitpriority=10)

    #: The longest a stopping process waits for its last batch (seconds): well within the
    #: time ``serve`` gives a stopping worker (``GRACEFUL_TIMEOUT``, 10 s) before it kills
    #: it, so that a database that does not answer (a SQLite file locked past its 15 s busy
    #: timeout) still leaves the line saying how many records were lost.
    FINAL_FLUSH_TIMEOUT = 5.0

    def _final_flush(self) -> None:
        """The last flush of a stopping process (once, whichever exit hook runs first); when
        it cannot write everything in :data:`FINAL_FLUSH_TIMEOUT`, one line says how many
        ``token.issued`` records are lost and why."""
        if self._closed:
            return
        self._closed = True
        failure: list[BaseException | None] = []

        def last_flush() -> None:
            try:
                self.flush()
            except Exception as exc:
                failure.append(exc)
            else:
                failure.append(None)

        # A thread, so that a database that does not answer cannot hold the exit.
        writer = threading.Thread(target=last_flush, name="authserver-audit-exit", daemon=True)
        writer.start()
        writer.join(self.FINAL_FLUSH_TIMEOUT)
        if failure == [None]:
            return
        if not failure:
            reason = f"the database did not answer within {self.FINAL_FLUSH_TIMEOUT:g} s"
        else:
            reason = _safe_reason(failure[0])
        lost = len(self._pending) + self._in_flight + self._dropped
        log.error("audit: %d token.issued records lost at exit: %s", lost, reason)

    def put(self, event: AuditEvent) -> None:
        if len(self._pending) >= self.MAX_PENDING:
            self._pending.popleft()
            self._dropped += 1
        self._pending.append(event)

    def flush(self) -> int:
        """Write everything pending in one transaction; returns how many were written.

        When the database cannot be used now (:class:`StorageUnavailable`: down, locked,
        timed out) the batch is kept for the next try. Any other failure is the data's: a
        value the database refuses (too long for its column on PostgreSQL, a NUL, text
        that is no UTF-8) would fail the whole batch on every retry, holding every event
        behind it until an outage's limit dropped them. The batch is then written event by
        event, and only the events refused are dropped, each logged (without its values).
        """
        with self._flush_lock:
            batch: list[AuditEvent] = []
            while self._pending:
                batch.append(self._pending.popleft())
            if not batch:
                return 0
            self._in_flight = len(batch)
            try:
                try:
                    self._write(batch)
                    written = len(batch)
                except StorageUnavailable:
                    self._pending.extendleft(reversed(batch))
                    raise
                except Exception:
                    written = self._write_each(batch)
            finally:
                self._in_flight = 0
            if self._dropped:
                log.error(
                    "audit: %d token.issued events were dropped during an outage", self._dropped
                )
                self._dropped = 0
            return written

    def _write(self, events: list[AuditEvent]) -> None:
        with self._unit_of_work():
            self._store.add_many(events)

    def _write_each(self, batch: list[AuditEvent]) -> int:
        """Write *batch* one event per transaction, dropping (and logging) each one the
        database refuses; when it becomes unavailable meanwhile, what is left waits for the
        next flush. Returns how many were written."""
        written = 0
        for n, event in enumerate(batch):
            try:
                self._write([event])
            except StorageUnavailable:
                self._pending.extendleft(reversed(batch[n:]))
                raise
            except Exception as exc:
                # The event's values are not logged (one of them is what was refused, and
                # a log line must stay one line); its action and time find it.
                log.error(  # noqa: TRY400 -- no traceback: a driver's text can hold values
                    "audit: dropped a %s event (at %.3f) the database refused: %s",
                    event.action,
                    event.at,
                    _safe_reason(exc),
                )
            else:
                written += 1
            finally:
                self._in_flight -= 1
        return written

    def _run(self) -> None:
        # A daemon thread: it ends with its process, after the final flush (start()).
        failing: str | None = None
        while True:
            time.sleep(self._interval)
            try:
                self.flush()
            except Exception as exc:
                # One line when the writes start failing (or fail for another reason) and
                # one when they succeed again, as the key schedule reports an outage: not a
                # line every quarter second of every worker for as long as it lasts.
                reason = _safe_reason(exc)
                if reason != failing:
                    failing = reason
                    log.warning(
                        "audit: cannot write token.issued records (%s); %d kept, retrying",
                        reason,
                        len(self._pending),
                    )
            else:
                if failing is not None:
                    failing = None
                    log.info("audit: token.issued records are written again")
