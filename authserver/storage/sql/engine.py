"""Engines, connections and the unit of work: one transaction per request, command or tick."""

from __future__ import annotations

import contextvars
import functools
import os
import stat
import threading
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import AbstractContextManager
from contextlib import contextmanager
from typing import Any
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import Table
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.engine import URL
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.exc import DataError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from authserver.errors import ConfigError
from authserver.errors import StorageError
from authserver.errors import StorageUnavailable
from authserver.settings import BAD_PORT
from authserver.settings import redact_url
from authserver.settings import sqlite_in_memory
from authserver.storage.sql import raw
from authserver.storage.sql.notify import CHANNEL
from authserver.storage.sql.tables import LOCKS

#: PostgreSQL: give up on a connection attempt after this many seconds (libpq
#: ``connect_timeout``; its default is to wait forever, and 2 is the least it accepts).
#: Ample for a healthy server (a connection with TLS and SCRAM takes a few round trips);
#: /readyz may make two attempts, so it still answers within about 4 s.
POSTGRES_CONNECT_TIMEOUT_S = 2
#: PostgreSQL: how long a request waits for a free pooled connection before its 503.
POSTGRES_POOL_TIMEOUT_S = 5

#: libpq parameters for every PostgreSQL connection (see make_engine). The keepalives and
#: ``tcp_user_timeout`` make a connection whose peer vanished without a FIN or RST (host
#: down, network cut) fail within seconds instead of after the kernel's ~15 minutes of
#: retransmissions, so pool_pre_ping and running queries notice it.
_POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # milliseconds
}
#: PostgreSQL: how long a statement of authserver waits for a lock another session holds
#: (``lock_timeout``, set on every connection; PostgreSQL's default is to wait forever).
#: A ``LOCK TABLE`` or a long ``ALTER TABLE`` in an operator's psql session would otherwise
#: hang every request and command that needs that table for as long as it is held;
#: after this they fail as "database unavailable" (503, or the CLI's one-line error).
#: authserver's own transactions hold their locks for milliseconds. The two deliberate
#: waits widen it for themselves (:func:`lock_wait`): the migration lock and the key lock.
POSTGRES_LOCK_TIMEOUT_S = 5
#: PostgreSQL: how long one statement of authserver may run, lock waits included
#: (``statement_timeout``, set on every connection with the lock timeout; PostgreSQL's
#: default is without end). A statement made slow by something outside authserver (a
#: trigger, a server starved of I/O, a plan gone wrong) would otherwise hold its request
#: and its worker's thread for as long as it runs; after this it is cancelled and the
#: request answers 503 like any other database failure. A request's statements take
#: milliseconds on a healthy database. Ten seconds: above the lock timeout, so that a lock
#: wait is still reported as one, and below the bundled nginx's 15 s ``proxy_read_timeout``
#: (deploy/nginx.conf), so the 503 reaches it and it can try the other instance instead of
#: answering 504 itself. The work that may rightly run long lifts it for its own transaction
#: (:func:`unbounded_statements`): migrations, ``db copy``, purges, the revocation of
#: every live token of a user or a client, the deliberate lock waits (:func:`lock_wait`).
POSTGRES_STATEMENT_TIMEOUT_S = 10

#: The drivers built on libpq, which understand those parameters.
_LIBPQ_DRIVERS = frozenset({"psycopg", "psycopg2", "psycopg2cffi"})


#: The settings refuse such a URL first, naming where it came from
#: (:func:`authserver.settings.parse_database_url`); this is for a URL that did not pass
#: through them.
_BAD_PORT = f"AUTHSERVER_DATABASE_URL: {BAD_PORT}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings authserver relies on for *url*'s dialect."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("AUTHSERVER_DATABASE_URL: not a valid SQLAlchemy URL") from None
    except ValueError:
        # A port that is not a number (host:notaport, an unclosed [IPv6): SQLAlchemy's
        # int() fails. Its text is not repeated: it may quote part of the URL.
        raise ConfigError(_BAD_PORT) from None
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        # libpq reads 99999 as a connection failure ("database error ... OperationalError",
        # no reason given) and 0 as its default port: a typo it would not point at.
        raise ConfigError(_BAD_PORT)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": raw.BUSY_TIMEOUT_S}, **kwargs)

        @event.listens_for(engine, "do_connect")
        def _private_file(*_args: Any) -> None:
            # At the first connection, not when the engine is made: a command that only
            # reads checks that the file exists first and must not create it.
            _create_private_file(parsed.database, uri="uri" in parsed.query)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets readers proceed while one writer commits (several workers).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in _LIBPQ_DRIVERS:
        # Fail fast when PostgreSQL is unreachable but not refusing (a hung host, a
        # dropped network path, a full listen backlog): libpq's default is to wait for
        # the connection forever, which would hang every request needing a new connection
        # for as long as the outage lasts instead of answering 503 (tests/integration/
        # test_db_outage.py). A value set in the URL's query string wins.
        connect_args = {k: v for k, v in _POSTGRES_CONNECT_ARGS.items() if k not in parsed.query}
        connect_args.update(kwargs.pop("connect_args", {}))
        kwargs["connect_args"] = connect_args
        # A request waiting for a pooled connection gives up (503) instead of queueing for the
        # whole timeout of its client (SQLAlchemy's default is 30 s).
        kwargs.setdefault("pool_timeout", POSTGRES_POOL_TIMEOUT_S)
    if parsed.get_backend_name() == "postgresql":
        engine = _create_engine(parsed, kwargs)
        # First, before SQLAlchemy's own first-connection set-up (which fails on the bytes
        # psycopg returns from a SQL_ASCII database with a TypeError).
        event.listen(engine, "connect", _utf8_only(url), insert=True)
        # Per connection, with set_config rather than libpq's ``options``: that one would
        # replace the URL's own ``options`` (a search_path), and connection poolers such as
        # PgBouncer refuse it. A value in the URL's options wins.
        options = str(parsed.query.get("options", ""))
        bounds = {
            name: f"{round(seconds * 1000)}ms"
            for name, seconds in (
                ("lock_timeout", POSTGRES_LOCK_TIMEOUT_S),
                ("statement_timeout", POSTGRES_STATEMENT_TIMEOUT_S),
            )
            if name not in options
        }
        if bounds:
            event.listen(engine, "connect", _bounded_waits(bounds))
        return engine
    return _create_engine(parsed, kwargs)


def server_encoding(dbapi_conn: Any) -> str | None:
    """The encoding of the PostgreSQL database *dbapi_conn* is connected to, as the server
    reports it at connection (no query): ``UTF8``, ``LATIN1``, ``SQL_ASCII``..."""
    info = getattr(dbapi_conn, "info", None)
    if info is not None and hasattr(info, "parameter_status"):  # psycopg 3
        value = info.parameter_status("server_encoding")
    elif hasattr(dbapi_conn, "get_parameter_status"):  # psycopg2
        value = dbapi_conn.get_parameter_status("server_encoding")
    else:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _utf8_only(url: str) -> Callable[[Any, Any], None]:
    """A ``connect`` listener refusing a PostgreSQL database whose encoding is not UTF8.

    Every text authserver stores is Unicode (client names, user ids, audiences). A
    ``LATIN1`` database refused any other character with an error that became a 500 (and
    a batch of ``token.issued`` records that could never be written: a lost audit trail),
    and psycopg returns bytes from a ``SQL_ASCII`` one, on which nothing works; SQLite
    stores UTF-8 whatever it is given. Refused at the first connection, saying what to do,
    instead of failing one value at a time."""

    def check(dbapi_conn: Any, _record: Any) -> None:
        encoding = server_encoding(dbapi_conn)
        if encoding is not None and encoding.upper().replace("-", "") != "UTF8":
            raise ConfigError(
                f"AUTHSERVER_DATABASE_URL: the PostgreSQL database at {redact_url(url)} has "
                f"the encoding {encoding}; authserver stores Unicode text and needs a UTF8 "
                "database (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0; move the "
                "data with authserver db copy)"
            )

    return check


def _bounded_waits(bounds: dict[str, str]) -> Callable[[Any, Any], None]:
    """A ``connect`` listener setting each of *bounds* (setting: value) for the session,
    in one statement."""
    sql = "SELECT " + ", ".join(
        f"set_config('{name}', '{value}', false)" for name, value in bounds.items()
    )

    def bound(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
        # The statement opened a transaction on a connection that is not in autocommit
        # mode; a session-level setting outlives it.
        dbapi_conn.commit()

    return bound


def _create_engine(parsed: URL, kwargs: dict[str, Any]) -> Engine:
    kwargs.setdefault("pool_pre_ping", True)
    try:
        return create_engine(parsed, **kwargs)
    except ImportError as exc:
        # A dialect whose driver is not installed (mysql:// wants MySQLdb): say what
        # authserver runs on and how another driver would be added.
        raise ConfigError(
            f"AUTHSERVER_DATABASE_URL: no driver for {parsed.drivername} ({exc}); authserver "
            "supports sqlite:///PATH and postgresql+psycopg://USER:PASSWORD@HOST/DB (psycopg 3, "
            "installed with it); another SQLAlchemy dialect needs its driver installed next "
            "to authserver (pip install ...) and is untested"
        ) from None
    except NoSuchModuleError:
        raise ConfigError(
            f"AUTHSERVER_DATABASE_URL: SQLAlchemy has no dialect {parsed.drivername!r}; use "
            "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from None
    except ArgumentError as exc:
        raise ConfigError(f"AUTHSERVER_DATABASE_URL: {exc}") from None


def _create_private_file(database: str | None, *, uri: bool) -> None:
    """Create a SQLite database file owner-only (0600) before SQLite does: SQLite creates
    it with the process umask (usually world-readable), and with the SQL key store and no
    passphrase it holds a plaintext private key. SQLite gives its -wal and -shm files the
    mode of the database file.

    A file that already exists (made by hand or by ``touch`` before a bind mount, or
    restored from a backup) is narrowed to its owner, with its -wal and -shm files, as the
    key directory is (``storage/files/keys.py``): it is about to receive the clients and
    perhaps the keys. What another user owns, and links, are left alone (``doctor``
    reports them)."""
    if not database or database == ":memory:" or uri:
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for path in (database, f"{database}-wal", f"{database}-shm", f"{database}-journal"):
            _narrow_to_owner(path)
        return
    except OSError:
        return  # a missing directory or no permission: SQLite reports it, naming the file
    os.close(fd)


def _narrow_to_owner(path: str) -> None:
    # By path, never through a descriptor of our own: closing any descriptor of a SQLite
    # file releases every POSIX lock this process holds on it, those of SQLite's open
    # connections included (the database's, and the -shm file's WAL locks), and this runs
    # as each new connection opens. A link is left alone (lstat).
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
    except OSError:
        return  # gone meanwhile, or a file system without modes: SQLite goes on


#: Phrases in driver messages, and what they mean to an operator (psycopg/libpq, sqlite3).
_CAUSES = (
    (
        "connection refused",
        "connection refused (is the database server running on that host and port?)",
    ),
    ("password authentication failed", "authentication failed (check the user and password)"),
    ("no password supplied", "authentication failed (the server wants a password)"),
    ("does not exist", "the database or role does not exist"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
    ("failed to resolve host", "unknown host"),
    ("nodename nor servname", "unknown host"),
    (
        "lock timeout",
        "another session held a lock on authserver's tables past the lock timeout (a long "
        "transaction, a LOCK TABLE or an ALTER TABLE?)",
    ),
    (
        "statement timeout",
        "a statement ran past the statement timeout (an overloaded database server, or a "
        "trigger or query of someone else's slowing authserver's tables?)",
    ),
    ("timeout expired", "timed out"),
    ("timed out", "timed out"),
    (
        "unable to open database file",
        "cannot open the SQLite file (does its directory exist, and may this user write there?)",
    ),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("ssl", "a TLS problem"),
    (
        "database is locked",
        "the SQLite file stayed locked by another process past the busy timeout (a long "
        "transaction or a backup holding it?)",
    ),
    ("file is not a database", "the file is not a SQLite database (overwritten or corrupted)"),
    ("disk image is malformed", "the SQLite file is corrupted"),
    ("readonly database", "the SQLite file is read-only for this user"),
    ("invalid dsn", "the URL has a parameter PostgreSQL does not know"),
    ("invalid connection option", "the URL has a parameter PostgreSQL does not know"),
)


def explain_error(exc: BaseException, url: str) -> str:
    """One line telling an operator why the database at *url* failed, without its password.

    The driver's own text can hold the URL and its password, so it is never shown; it is
    matched against known causes instead.
    """
    text = " ".join(str(getattr(exc, "orig", None) or exc).lower().split())
    cause = next((meaning for phrase, meaning in _CAUSES if phrase in text), None)
    # settings.redact_url, not SQLAlchemy's rendering: that one takes a password holding
    # an unencoded "@" to end there and showed the rest of it as the host.
    where = redact_url(url)
    if cause is None:
        return f"database error at {where} ({type(exc).__name__})"
    return f"cannot use the database at {where}: {cause}"


def storage_error(exc: SQLAlchemyError, url: str) -> StorageError:
    """The domain error for a storage failure at *url* (raise it ``from exc``): what the
    layers above storage see instead of SQLAlchemy's exceptions.

    :class:`StorageUnavailable` for what the driver reported about the database itself
    (``DBAPIError``: server unreachable or gone, file locked or unopenable, timeout, a
    read-only standby, a schema not there) and for a pool with no free connection;
    :class:`StorageError` for a value or constraint the database refused (``DataError``,
    ``IntegrityError``: the caller should have checked it, so retrying cannot help) and
    for SQLAlchemy's own errors (a storage bug). The message is :func:`explain_error`'s,
    safe to show.
    """
    message = explain_error(exc, url)
    if isinstance(exc, DataError | IntegrityError):
        return StorageError(message)
    if isinstance(exc, DBAPIError | PoolTimeoutError):
        return StorageUnavailable(message)
    return StorageError(message)


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Raise a storage failure inside the block as :func:`storage_error`'s domain error."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise storage_error(exc, url) from exc


F = TypeVar("F", bound=Callable[..., Any])


def _mapping_errors(url_of: Callable[[Any], str]) -> Callable[[F], F]:
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def mapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except SQLAlchemyError as exc:
                raise storage_error(exc, url_of(self)) from exc

        return mapped  # type: ignore[return-value]

    return decorate


#: Method decorators: one for :class:`Database`'s methods that reach the database, one
#: for a store's (see :func:`maps_storage_errors`).
_database_errors = _mapping_errors(lambda db: db.url)
_store_method = _mapping_errors(lambda store: store._db.url)

T = TypeVar("T", bound=type)


def maps_storage_errors(store: T) -> T:
    """Class decorator for a SQL store (one that keeps its :class:`Database` as ``_db``):
    every public method raises :func:`storage_error`'s domain errors instead of
    SQLAlchemy's, so the layers above never see SQLAlchemy. A method that returns a
    context manager is covered only while it is called: its body maps its own errors."""
    for name, member in list(vars(store).items()):
        if callable(member) and not name.startswith("_"):
            setattr(store, name, _store_method(member))
    return store


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL, or None (another database, or SQLite in memory: the one
    rule, settings.sqlite_in_memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or sqlite_in_memory(url):
        return None
    return parsed.database


class _Unit:
    """One unit of work; its connection is opened on first use, so a request that needs no
    database work (a JWKS GET, a token issued from cached state) costs no connection at all."""

    __slots__ = ("conn",)

    def __init__(self) -> None:
        self.conn: Connection | None = None


class _LazyUnitOfWork:
    """A unit of work whose connection (and transaction) is opened only if a store asks
    for one: committed when the block ends normally, rolled back when it raises. A class, not
    a generator-based context manager: the lean WSGI layer opens one per request."""

    __slots__ = ("_db", "_token")

    def __init__(self, db: Database) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._token = self._db.begin()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._db.end(self._token, commit=kind is None)


class Database:
    """Owns the engines and the connection of the current unit of work.

    Two engines on the same database: the main one for units of work (transactions,
    ``pool_pre_ping``), and a small autocommit one for :meth:`read_one`, the hot path's
    single-statement reads that need no transaction (the cache version counters and a
    client row on a cache miss). A token request then costs one statement round trip
    instead of four (pre-ping, BEGIN, SELECT, COMMIT).
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self._engine_kwargs = engine_kwargs
        self.engine = make_engine(url, **engine_kwargs)
        self._reads: Engine | None = None
        self._reads_lock = threading.Lock()
        path = sqlite_file(url)
        self._counters = raw.SqliteCounters(path) if path and not make_url(url).query else None
        self._current: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar(
            f"authserver_unit_{id(self)}", default=None
        )

    @property
    def has_local_counters(self) -> bool:
        """Whether :meth:`read_counter` is answered without a round trip (a SQLite file,
        through ``PRAGMA data_version``), cheap enough for every request."""
        return self._counters is not None

    @property
    def connect_args(self) -> dict[str, Any]:
        """The libpq parameters of this database's connections (PostgreSQL: connect
        timeout and keepalives), for a connection made outside the pools."""
        if self.engine.dialect.name != "postgresql":
            return {}
        query = make_url(self.url).query
        return {k: v for k, v in _POSTGRES_CONNECT_ARGS.items() if k not in query}

    @_database_errors
    def connection(self) -> Connection:
        """The connection of the current unit of work (stores call this), opened on first
        use; its transaction begins with its first statement."""
        unit = self._current.get()
        if unit is None:
            raise RuntimeError("no unit of work: wrap the call in Database.unit_of_work()")
        if unit.conn is None:
            unit.conn = self.engine.connect()
        return unit.conn

    def begin(self) -> contextvars.Token[_Unit | None]:
        """Start a unit of work bound to the current context; pair with :meth:`end`. Opens
        nothing until a store asks for :meth:`connection`."""
        return self._current.set(_Unit())

    @_database_errors
    def end(self, token: contextvars.Token[_Unit | None], *, commit: bool) -> None:
        """Commit (or roll back) and close the unit of work started by :meth:`begin`."""
        unit = self._current.get()
        conn = unit.conn if unit is not None else None
        try:
            if conn is not None:
                if commit:
                    conn.commit()
                else:
                    conn.rollback()
        finally:
            if conn is not None:
                conn.close()
            self._current.reset(token)

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Commit once at the end, roll back on any exception. Re-entrant: a nested call
        joins the outer unit of work. Its connection opens when a store first asks for it
        (:meth:`connection`): a unit that needs no database (a key tick on a file key
        store) works while the database is down."""
        if self._current.get() is not None:
            yield
            return
        with self.lazy_unit_of_work():
            yield

    def lazy_unit_of_work(self) -> AbstractContextManager[None]:
        """A unit of work that opens its connection only when a store asks for one (a token
        issued from cached state costs no transaction); not re-entrant."""
        return _LazyUnitOfWork(self)

    def driver_sql(self, sql: str) -> str:
        """*sql* written with ``?`` placeholders, in the driver's own paramstyle."""
        return raw.driver_sql(self.engine, sql)

    @_database_errors
    def read_counter(self, name: str) -> int:
        """The current value of a ``locks`` counter (0 before first use); it runs on every
        token request. On a SQLite file, outside an open unit of work, from
        :class:`~authserver.storage.sql.raw.SqliteCounters` (no read at all while nothing
        was committed); otherwise one :meth:`read_one`."""
        if self._counters is not None and self._open_connection() is None:
            return self._counters.read(name)
        row = self.read_one(raw.COUNTER_SQL, name)
        return int(row[0]) if row else 0

    @_database_errors
    def read_one(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        """The first row of *sql* (positional ``?`` placeholders) as the driver returns it
        (no SQLAlchemy type processing): the reads on every token request.

        Inside a unit of work whose connection is already open, on that connection, so the
        read sees the unit's own uncommitted writes; otherwise on the autocommit engine,
        through :func:`~authserver.storage.sql.raw.read_one`."""
        conn = self._open_connection()
        if conn is not None:
            found = conn.exec_driver_sql(self.driver_sql(sql), params).first()
            return tuple(found) if found is not None else None
        return raw.read_one(self._read_engine(), sql, params)

    def _open_connection(self) -> Connection | None:
        """The current unit of work's connection if one is open (its writes must be seen)."""
        unit = self._current.get()
        return unit.conn if unit is not None else None

    def _read_engine(self) -> Engine:
        if self._reads is None:
            with self._reads_lock:
                if self._reads is None and sqlite_in_memory(self.url):
                    # A second engine would open a second, empty in-memory database.
                    self._reads = self.engine
                elif self._reads is None:
                    self._reads = make_engine(
                        self.url,
                        **self._engine_kwargs,
                        isolation_level="AUTOCOMMIT",
                        pool_pre_ping=False,
                        # One connection per request thread (AUTHSERVER_THREADS defaults
                        # to 4): token requests read here and rarely need the main pool.
                        pool_size=4,
                        max_overflow=8,
                        # Autocommit: there is never a transaction to reset on check-in.
                        pool_reset_on_return=None,
                    )
        return self._reads

    @_database_errors
    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._reads is not None and self._reads is not self.engine:
            self._reads.dispose()


@contextmanager
def lock_wait(conn: Connection, seconds: float | None) -> Iterator[None]:
    """Inside the block, on PostgreSQL, *conn*'s statements wait up to *seconds* for a lock
    (None: without end) instead of :data:`POSTGRES_LOCK_TIMEOUT_S`, and the statement
    timeout does not cut that wait; for the deliberate waits on another authserver process
    (the migration lock, the key lock). The connection's own values come back after the
    block, for the rest of its transaction. Nothing on SQLite, whose waits the busy
    timeout bounds."""
    if conn.dialect.name != "postgresql":
        yield
        return
    lock, statement = conn.execute(
        text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
    ).one()
    wait = "0" if seconds is None else f"{round(seconds * 1000)}ms"
    _set_waits(conn, lock=wait, statement="0")
    yield
    _set_waits(conn, lock=lock, statement=statement)


def _set_waits(conn: Connection, *, lock: str, statement: str) -> None:
    conn.execute(
        text(
            "SELECT set_config('lock_timeout', :lock, true), "
            "set_config('statement_timeout', :statement, true)"
        ),
        {"lock": lock, "statement": statement},
    )


def unbounded_statements(conn: Connection) -> None:
    """On PostgreSQL, lift the statement timeout for the rest of *conn*'s transaction
    (``SET LOCAL``: it ends with the transaction, so a pooled connection and a PgBouncer
    server connection keep their bound for the next one): for the work that may rightly
    run long (migrations, ``db copy``, purges, revoking every live token of a user or a
    client), never a request's. Lock waits keep their
    bound. Nothing on SQLite, which has no statement timeout."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT set_config('statement_timeout', '0', true)"))


def insert_or_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING``: True when the row was inserted.

    Atomic on both databases without a SAVEPOINT (pysqlite's legacy transaction handling
    makes SAVEPOINTs unreliable), so "first writer wins" checks (assertion replay,
    revocation) hold under concurrency.
    """
    # RETURNING, not rowcount: with psycopg 3 an INSERT's rowcount can be -1, which would
    # make every duplicate look inserted. A returned row is unambiguous.
    stmt = _insert_ignoring_conflicts(conn, table).values(**values)
    key = next(iter(table.primary_key.columns))
    return conn.execute(stmt.returning(key)).first() is not None


def _insert_ignoring_conflicts(conn: Connection, table: Table) -> Any:
    """``INSERT INTO table … ON CONFLICT DO NOTHING`` in the dialect of *conn*."""
    if conn.dialect.name == "postgresql":
        # Start-up: each process imports only the dialect it runs on (its engine has
        # loaded it already), so one on PostgreSQL never loads SQLite's for this.
        from sqlalchemy.dialects.postgresql import insert
    else:
        # Start-up: the dialect in use only, as above.
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert(table).on_conflict_do_nothing()


#: Most rows one multi-row INSERT carries: few enough that its parameters stay far below
#: either database's bound (SQLite's 32,766, PostgreSQL's 65,535) for a table of a few
#: columns, many enough that a bulk write is a handful of round trips.
INSERT_BATCH_ROWS = 500


def insert_many_or_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> int:
    """:func:`insert_or_ignore` for many rows, :data:`INSERT_BATCH_ROWS` to a statement:
    how many were inserted (a row whose key is taken, or repeated in *rows*, is not)."""
    key = next(iter(table.primary_key.columns))
    inserted = 0
    for start in range(0, len(rows), INSERT_BATCH_ROWS):
        batch = list(rows[start : start + INSERT_BATCH_ROWS])
        # RETURNING counts the rows written, as in insert_or_ignore (rowcount can be -1).
        stmt = _insert_ignoring_conflicts(conn, table).values(batch).returning(key)
        inserted += len(conn.execute(stmt).all())
    return inserted


def bump_counter(conn: Connection, name: str, *, announce: bool = True) -> None:
    """Increment the named row of ``locks``, creating it on first use.

    The UPDATE takes the row lock (PostgreSQL) or the write lock (SQLite) until the unit of
    work ends, so it doubles as a cross-process lock; the counter is a version caches read.
    *announce* False: a row taken only as a lock, which no cache reads, is announced to no
    worker.
    """
    bump = update(LOCKS).where(LOCKS.c.name == name).values(counter=LOCKS.c.counter + 1)
    if not conn.execute(bump).rowcount:
        insert_or_ignore(conn, LOCKS, {"name": name, "counter": 0})
        conn.execute(bump)
    if announce and conn.dialect.name == "postgresql":
        # Announce the change to every listening worker (storage/sql/notify.py).
        # PostgreSQL delivers it when, and only if, this transaction commits.
        conn.execute(text("SELECT pg_notify(:channel, :name)"), {"channel": CHANNEL, "name": name})
