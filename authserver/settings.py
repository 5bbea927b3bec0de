"""Configuration: one typed, immutable object, validated at start.

Each setting is declared once, as a field of :class:`Settings` made with :func:`setting`:
its type, default, parser, help text and secrecy side by side. Everything else is derived
from that declaration: the environment variable (``AUTHSERVER_`` + the upper-cased name),
the CLI option (``--`` + the name with dashes), the masked ``repr``, the list of variables
a server worker scrubs from its environment (:data:`SECRET_ENV`) and the reference table in
docs/reference.md (checked by a test). Adding a setting is one edit: a new field.

Values come, highest first, from CLI options, the environment, a configuration file (an env
file named by ``--config`` or ``AUTHSERVER_CONFIG``) and the defaults. A bad value raises
:class:`~authserver.errors.ConfigError` whose message is one line naming where the value
came from (the option, the variable, or the file and variable); nothing starts
half-configured.
"""

from __future__ import annotations

import calendar
import dataclasses
import difflib
import io
import os
import re
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import unquote
from urllib.parse import urlsplit

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from authserver.errors import ConfigError
from authserver.files import FileRefused
from authserver.files import read_small_text
from authserver.vocabulary import MAX_ISSUER_LENGTH
from authserver.vocabulary import MAX_TOKEN_LENGTH

_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


#: The longest duration anywhere (a setting, a CLI option, ``--since``): a client's token
#: lifetime is stored as a 32-bit integer (PostgreSQL ``integer``), about 68 years, and
#: nothing else needs longer. Unbounded, a key setting of 10^20 seconds put a key's
#: activation beyond what the platform's clock can represent, and every later key command
#: failed on the record it had written.
MAX_DURATION = 2**31 - 1


def parse_duration(raw: str) -> int:
    """Parse ``3600``, ``90s``, ``15m``, ``1h`` or ``30d`` into whole seconds, at most
    :data:`MAX_DURATION`."""
    match = _DURATION.match(raw)
    if not match:
        raise ValueError(
            "expected whole seconds or a number with s, m, h or d (e.g. 3600, 1h, 30d)"
        )
    digits = match.group(1).lstrip("0") or "0"
    value = int(digits) * _UNITS[match.group(2)] if len(digits) <= 12 else MAX_DURATION + 1
    if value > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION} seconds (about 68 years)")
    return value


#: The forms :func:`parse_since` reads, for error messages and help.
SINCE_FORMS = "a date (2026-11-23, 2026-11-23T10:00:00Z) or a duration ago (1h, 7d)"
_SINCE_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")
#: Exactly what :func:`parse_since` reads, before it reads it: ASCII digits, no spaces, a
#: date's fields at full width. strptime and :func:`parse_duration` alone would take
#: ``" 1h"``, ``"1 h"`` and ``"2026-1-5"``, which nobody sends on purpose; the CLI's other
#: audit options (``--limit``, ``--before``) refuse surrounding spaces too.
SINCE_PATTERN = re.compile(
    r"[0-9]+[smhd]?|[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z?)?"
)


class SinceOutOfRange(ValueError):
    """A duration written as :func:`parse_since` reads one, but longer than a duration may
    be: its message says so (``must be at most … seconds``), not that the form is wrong."""


def parse_since(raw: str, now: float) -> float:
    """The moment *raw* names, in POSIX seconds: a date or time in UTC (``2026-11-23``,
    ``2026-11-23T10:00:00Z``), or a duration (:func:`parse_duration`) before *now*.

    One reading for ``authserver audit --since`` and ``GET /admin/audit?since=``, kept here
    beside durations so the web layer need not import the CLI. Raises ``ValueError``:
    :class:`SinceOutOfRange` for a duration beyond :data:`MAX_DURATION`."""
    if SINCE_PATTERN.fullmatch(raw) is None:
        raise ValueError(f"expected {SINCE_FORMS}")
    for fmt in _SINCE_FORMATS:
        try:
            return float(calendar.timegm(time.strptime(raw, fmt)))
        except ValueError:
            continue
    if _DURATION.match(raw) is None:
        raise ValueError(f"expected {SINCE_FORMS}")
    try:
        return now - parse_duration(raw)
    except ValueError as exc:
        raise SinceOutOfRange(str(exc)) from None


def _positive_duration(raw: str) -> int:
    value = parse_duration(raw)
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return value

    return parse


def _key_size(raw: str) -> int:
    value = _int_in(2048, 4096)(raw)
    if value not in (2048, 3072, 4096):
        raise ValueError("must be 2048, 3072 or 4096")
    return value


def _issuer(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    # The scheme in lower case, as written: "HTTP://" passed the production rule's
    # "http://" check, and every token's iss must read as the verifiers were told.
    if not value.startswith(("http://", "https://")) or not parts.netloc:
        raise ValueError(
            "must be an http:// or https:// URL (scheme in lower case), e.g. "
            "https://auth.example.com"
        )
    # RFC 8414 §2: the issuer identifier has no query or fragment component (an empty
    # one included: "https://h?" is not "https://h").
    if "?" in value or "#" in value:
        raise ValueError("must not have a query or a fragment (RFC 8414 section 2)")
    if "@" in parts.netloc:
        raise ValueError("must not hold a user name or password")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("must not contain spaces or control characters")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port == -1 or port == 0 or not parts.hostname or parts.netloc.endswith(":"):
        raise ValueError("must name a host and, if any, a port from 1 to 65535")
    # The issuer is compared as a string (RFC 8414 §3.3, RFC 9068 §4): a form a client
    # normalizes ("/a/../b", "%2e") or cannot print (an encoded control character) would
    # name another issuer there than here.
    if re.search(r"%(?:[01][0-9a-fA-F]|7[fF])", value):
        raise ValueError("must not contain encoded control characters")
    if any(
        segment in (".", "..") or segment.lower() in ("%2e", "%2e%2e", ".%2e", "%2e.")
        for segment in parts.path.split("/")
    ):
        raise ValueError("must not have . or .. path segments")
    return value


def parse_database_url(raw: str) -> str:
    """A database URL as ``AUTHSERVER_DATABASE_URL`` takes it (and ``db copy --to``).

    :raises ValueError: saying what is wrong, never quoting the URL (it may hold a
        password)."""
    value = raw.strip()
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        raise ValueError(
            "must be a SQLAlchemy URL such as sqlite:///authserver.db or "
            "postgresql+psycopg://user@host/db"
        )
    if value.startswith("postgres://") or value.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; name it so SQLAlchemy does not look for psycopg2.
        value = "postgresql+psycopg://" + value.split("://", 1)[1]
    user_info, host_and_port = _user_info_and_host(value)
    if user_info.count("@") > 1 or "@" in host_and_port:
        # Read as it stands, the host would be the password's tail: "unknown host". Read
        # where SQLAlchemy reads them, not in the authority cut at the first "/", "?" or
        # "#": with one of those in the password, an @ after it went unnoticed.
        raise ValueError(
            "has more than one @ before the host: write an @ in the user name or password as %40"
        )
    _check_port(host_and_port)
    if _SQLITE_URL.match(value) and (user_info or host_and_port):
        # "sqlite://authserver.db": SQLAlchemy reads the file name as a host and refuses it
        # with a traceback of its own.
        raise ValueError(
            "a SQLite URL has no host: three slashes before a relative path "
            "(sqlite:///authserver.db), four before an absolute one "
            "(sqlite:////var/lib/authserver/authserver.db)"
        )
    if sqlite_in_memory(value):
        raise ValueError(
            "is an in-memory SQLite database, which lives as long as one process: every "
            "command and every server worker would have its own, empty one; use a file "
            "such as sqlite:///authserver.db"
        )
    home = _SQLITE_HOME_PATH.match(value)
    if home:
        # sqlite:///~/authserver.db: ~ is the home directory, as AUTHSERVER_KEYS_DIR=~/keys
        # reads it; SQLAlchemy took it for a directory named "~" in the working directory
        # ("cannot open the SQLite file"), which a shell never expands inside a URL.
        value = home["scheme"] + _url_path(os.path.expanduser(home["home"])) + home["rest"]
    relative = _SQLITE_RELATIVE_PATH.match(value)
    if relative and not relative["path"].lower().startswith("file:"):
        # sqlite:///authserver.db is a file in the working directory of whichever process
        # opens it. Made absolute here, as the default is, so that every command's line,
        # error and note ("created a new database") names the file it acted on, not a
        # path whose meaning depends on where the command ran.
        path = os.path.join(_url_path(os.getcwd()), relative["path"])
        value = relative["scheme"] + path + (relative["rest"] or "")
    return value


def _user_info_and_host(url: str) -> tuple[str, str]:
    """The user information (with its ``@``, or empty) and the ``host:port`` of *url* as
    SQLAlchemy reads them: a user information that ends at the first ``@`` following the
    user name, which may hold ``/``, ``?`` or ``#`` unencoded in its password (a generated
    one often does, and SQLAlchemy and libpq take it). Cut at the first ``/`` or ``?``
    after the scheme instead, such a password's head was taken for a host and its tail
    for a port, and a URL that connects was refused."""
    after = url.split("://", 1)[1]
    match = _USER_INFO.match(after)
    user_info = match.group() if match else ""
    return user_info, re.split(r"[/?]", after[len(user_info) :], maxsplit=1)[0]


#: SQLAlchemy's user information: a name without ``:`` or ``/``, a password without ``@``.
_USER_INFO = re.compile(r"^[^:/]*(?::[^@]*)?@")


def _url_path(path: str) -> str:
    """*path*, a directory's name, as it goes into a SQLite URL: SQLAlchemy percent-decodes
    a URL's database and ends it at a ``?``, so a working directory such as ``/srv/50%41``
    or ``/srv/a?b`` written as it is named another file (``/srv/50A``, ``/srv/a``)."""
    return path.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


def _check_port(hostport: str) -> None:
    """Refuse a URL whose port is not a number from 1 to 65535 here, where the error names
    where the URL came from (``--database-url``, the variable, a configuration file line),
    rather than when the engine is made, which knows none of that. SQLAlchemy itself
    raises a bare ``ValueError`` for one that is not a number (``host:notaport``, an
    unclosed ``[IPv6``), and libpq takes 0 as its default port."""
    port: str | None = None
    if hostport.startswith("["):
        _host, bracket, rest = hostport.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(BAD_PORT)
        port = rest[1:] if rest else None
    elif ":" in hostport:
        port = hostport.rpartition(":")[2]
    if port is not None and not (is_port_number(port) and int(port) >= 1):
        raise ValueError(BAD_PORT)


#: The highest TCP port number.
MAX_PORT = 65535


def is_port_number(text: str) -> bool:
    """*text* is a TCP port number: ASCII digits, at most :data:`MAX_PORT` (``05432`` is
    5432, as ``int()`` reads it). False, never an error, for a string of digits too long
    for ``int()`` (Python refuses more than 4,300)."""
    if not (text.isascii() and text.isdigit()):
        return False
    digits = text.lstrip("0") or "0"  # int() of the digits alone: never too long for it
    return len(digits) <= 5 and int(digits) <= MAX_PORT


#: What is wrong with a database URL whose port is not one (:func:`_check_port`).
BAD_PORT = "not a valid SQLAlchemy URL (its port must be a number from 1 to 65535)"

_SQLITE_URL = re.compile(r"^sqlite(\+\w+)?://", re.IGNORECASE)
_SQLITE_RELATIVE_PATH = re.compile(
    r"^(?P<scheme>sqlite(\+\w+)?:///)(?P<path>[^/?#][^?#]*)(?P<rest>[?#].*)?$", re.IGNORECASE
)
_SQLITE_HOME_PATH = re.compile(
    r"^(?P<scheme>sqlite(\+\w+)?:///)(?P<home>~[^/?#]*)(?P<rest>(/[^?#]*)?([?#].*)?)$",
    re.IGNORECASE,
)


def sqlite_in_memory(url: str) -> bool:
    """True for a SQLite URL whose database lives in memory: no file (``sqlite://``,
    ``sqlite:///:memory:``, percent-encoded or not), or, as a ``file:`` URI
    (``uri=true``), ``file::memory:``, ``mode=memory`` or the ``memdb`` VFS. The one rule:
    settings refuse such a URL, and the storage layer (for a URL given to it directly)
    keeps one engine for it."""
    if not _SQLITE_URL.match(url):
        return False
    path, _, query = url.split("://", 1)[1].partition("?")
    database = unquote(path.removeprefix("/"))
    if database in ("", ":memory:"):
        return True
    params = {k.lower(): v[-1].lower() for k, v in parse_qs(query).items()}
    if params.get("uri") not in ("true", "1", "yes", "on"):
        return False
    return (
        database.startswith("file::memory:")
        or params.get("mode") == "memory"
        or params.get("vfs") == "memdb"
    )


def redact_url(url: str) -> str:
    """*url* with any password replaced by ``***`` (for logs and reprs).

    The user information is taken to end at the *last* ``@``: a password with an ``@``,
    ``?`` or ``/`` not percent-encoded (``postgresql://u:Pa@ss?@host/db``) is hidden whole,
    never shown from such a character on. An ``@`` later in the URL (in a query) hides
    more than the password, never less. The user name may be empty:
    ``redis://:password@host`` is how Redis URLs carry a password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    user, colon, _ = rest[:at].partition(":")
    if at >= 0 and colon and "/" not in user:
        rest = f"{user}:***{rest[at:]}"
    return f"{scheme}://{_redact_query(rest)}"


#: Query parameters that carry a password (libpq's ``password`` and ``sslpassword``, which
#: psycopg takes from a URL's query; redis-py's ``password``).
SECRET_QUERY_PARAMETERS = frozenset({"password", "sslpassword"})


def _redact_query(rest: str) -> str:
    """*rest* (a URL after ``scheme://``) with the values of its password parameters
    replaced by ``***``."""
    head, question, query = rest.partition("?")
    if not question:
        return rest
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        if equals and unquote(name).strip().lower() in SECRET_QUERY_PARAMETERS:
            pair = f"{name}=***"
        pairs.append(pair)
    return f"{head}?{'&'.join(pairs)}"


#: Storages for the failed-authentication limits (web/limits.py): the ``limits`` library's
#: in-process memory storage and its Redis family (Redis must be reachable from every worker
#: and instance for the limits to be shared).
RATE_LIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")


def _rate_limit_storage(raw: str) -> str:
    value = raw.strip()
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in RATE_LIMIT_SCHEMES:
        raise ValueError(
            "must be memory:// or a redis://, rediss://, redis+unix://, "
            "redis+sentinel:// or redis+cluster:// URL"
        )
    if scheme.lower() == "memory":
        if rest:
            raise ValueError("memory:// takes no host or path")
        return "memory://"
    if scheme.lower() == "redis+unix":
        if not urlsplit(value).path:
            raise ValueError("redis+unix:// needs a socket path, e.g. redis+unix:///run/redis.sock")
    elif not urlsplit(value).netloc:
        raise ValueError(f"{scheme}:// needs a host, e.g. {scheme}://127.0.0.1:6379")
    return value


def _rate_limit(raw: str) -> str | None:
    """One or more ``limits`` rate strings (``10/minute``, ``10/minute;100/day``), or ``off``."""
    value = raw.strip()
    if value.lower() in ("0", "off"):
        return None
    # Start-up: the limits package costs about 0.15 s to import (it loads its asyncio
    # storages); only a command given this setting, and the web workers, pay for it.
    import limits

    try:
        items = limits.parse_many(value)
    except ValueError:
        raise ValueError(
            "expected a rate such as 10/minute or 10/minute;100/day, or off to disable"
        ) from None
    if not items or any(item.amount < 1 for item in items):
        raise ValueError("every rate must allow at least 1 failure (use off to disable)")
    return value


def _key_prefix(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
        raise ValueError("must be 1 to 64 letters, digits or _ . : -")
    return value


def _non_empty(raw: str) -> str:
    if raw == "":
        raise ValueError("must not be empty (unset it instead)")
    return raw


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Path(raw).expanduser()


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false (or 1/0, yes/no, on/off)")


#: The shortest admin or metrics bearer token accepted.
MIN_BEARER_TOKEN_LENGTH = 32
#: What an admin or metrics bearer token may be: printable ASCII with no space at either
#: end, what an HTTP client can send in the ``Authorization`` header and the server reads
#: back unchanged (RFC 9110 §5.5: a field value has no line breaks or other controls, and
#: the whitespace around it is not part of it; a non-ASCII byte is read as Latin-1).
_BEARER_TOKEN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")

#: A metrics token equal to the admin token (:meth:`Settings.operator_token_problems`).
METRICS_IS_ADMIN = (
    "AUTHSERVER_METRICS_TOKEN is the admin token: whatever scrapes /metrics "
    "(and its configuration) can then change clients and keys; give it its own"
)


def guessable_token(env: str, token: str) -> str | None:
    """Why the bearer token of *env* looks guessable, or None. Settings refuse a short
    token; a long one can still be a repeated character or a word typed twice, which a
    guesser tries first."""
    if len(token) < MIN_BEARER_TOKEN_LENGTH or len(set(token)) < 10:
        return (
            f"{env} looks guessable ({len(token)} characters, {len(set(token))} distinct); "
            "use python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return None


#: The prefix of every setting's environment variable.
ENV_PREFIX = "AUTHSERVER_"

#: The variable naming a configuration file; not a setting itself (it says where settings are).
CONFIG_ENV = "AUTHSERVER_CONFIG"


def _masked(value: Any) -> str:
    return "***"


@dataclass(frozen=True)
class Spec:
    """What :func:`setting` records beside a field: how to parse it, what it means, and
    whether its value is (or may carry) a secret."""

    parse: Callable[[str], Any]
    help: str
    #: Secret settings are masked in reprs and start lines, and removed from a server
    #: worker's environment once read (granian copies the environment into every request's
    #: WSGI environ, where an error reporter could show it).
    secret: bool = False
    #: How a secret value is shown: ``***`` unless the value only *may* carry a secret
    #: (a URL with a password), which is shown with the password masked.
    mask: Callable[[Any], str] = _masked


def setting(
    parse: Callable[[str], Any],
    help: str,
    *,
    default: Any = None,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
    mask: Callable[[Any], str] = _masked,
) -> Any:
    """Declare one setting: a dataclass field carrying its :class:`Spec`."""
    spec = Spec(parse=parse, help=help, secret=secret, mask=mask)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"setting": spec})
    return dataclasses.field(default=default, metadata={"setting": spec})


def _default_database_url() -> str:
    return f"sqlite:///{os.path.join(_url_path(os.getcwd()), 'authserver.db')}"


def _show_url(value: Any) -> str:
    return redact_url(str(value))


@dataclass(frozen=True, repr=False)
class Settings:
    """The validated configuration. Build it with :meth:`from_env`; never mutate it."""

    database_url: str = setting(
        parse_database_url,
        "SQLAlchemy database URL: a SQLite file or PostgreSQL, not SQLite in memory "
        "(default: SQLite file authserver.db in the working directory)",
        factory=_default_database_url,
        secret=True,
        mask=_show_url,
    )
    issuer: str = setting(
        _issuer,
        "the iss of every token and the base of every URL in metadata, at most 255 "
        "characters (default: http://localhost:PORT, following --host and --port)",
        default="",
    )
    keys_dir: Path = setting(_path, "directory of the file key store", default=Path("keys"))
    key_passphrase: str | None = setting(
        _non_empty, "when set, private keys are encrypted at rest with it", secret=True
    )
    admin_token: str | None = setting(
        _non_empty,
        "bearer token for /admin/*, at least 32 printable ASCII characters (unset: admin API off)",
        secret=True,
    )
    metrics_token: str | None = setting(
        _non_empty,
        "bearer token for GET /metrics, at least 32 printable ASCII characters (unset: /metrics "
        "answers 404)",
        secret=True,
    )
    key_store: str = setting(
        _one_of("file", "sql"),
        "where signing keys live: file (AUTHSERVER_KEYS_DIR) or sql (the database)",
        default="file",
    )
    key_size: int = setting(
        _key_size, "RSA modulus size of new signing keys: 2048, 3072 or 4096", default=2048
    )
    key_rotation_interval: int = setting(
        _positive_duration,
        "how long a key signs before the next one takes over (e.g. 30d)",
        default=30 * 86400,
    )
    key_publish_ahead: int = setting(
        _positive_duration,
        "how long a new key is published in the JWKS before it signs (at least the JWKS max-age)",
        default=3600,
    )
    jwks_max_age: int = setting(
        _positive_duration, "Cache-Control max-age of the JWKS and metadata responses", default=300
    )
    default_token_ttl: int = setting(
        _positive_duration,
        "token lifetime for clients registered without --token-ttl",
        default=3600,
    )
    max_token_ttl: int = setting(
        _positive_duration,
        "the longest lifetime any client may be given; old keys stay published this long",
        default=86400,
    )
    key_retention_leeway: int = setting(
        parse_duration,
        "extra time a retired-from-signing key stays published (clock skew)",
        default=300,
    )
    key_cache_seconds: int = setting(
        parse_duration,
        "how often each worker reads the key store's version in any case (changes are "
        "seen sooner: on every request through one stat of the key directory or a SQLite "
        "file's change counter, on PostgreSQL through the change feed)",
        default=1,
    )
    status_list_ttl: int = setting(
        _positive_duration,
        "ttl of the token status lists: offline verifiers see a revocation within this time",
        default=60,
    )
    status_list_expiry: int = setting(
        _positive_duration,
        "exp - iat of a status list: how long a verifier that cannot fetch a newer list "
        "may rely on the one it has",
        default=900,
    )
    max_body_bytes: int = setting(
        _int_in(1024, 10_485_760), "largest request body accepted, in bytes", default=65536
    )
    body_timeout: int = setting(
        _int_in(1, 300),
        "seconds a request body may take to arrive in full; a slower one is answered 408",
        default=10,
    )
    proxy_hops: int = setting(
        _int_in(0, 10),
        "number of trusted reverse proxies whose X-Forwarded-* headers are honoured",
        default=0,
    )
    host: str = setting(_non_empty, "address serve listens on", default="127.0.0.1")
    # Not 0: the system would pick a port that the issuer (following the port when unset),
    # the metadata and the start-up line would all name as 0.
    port: int = setting(_int_in(1, 65535), "port serve listens on", default=8000)
    workers: int = setting(
        _int_in(0, 256), "serve worker processes (0: one per CPU core)", default=0
    )
    threads: int = setting(
        _int_in(1, 64), "Python threads per worker process running requests", default=4
    )
    log_level: str = setting(
        _one_of("debug", "info", "warning", "error"), "logging level", default="info"
    )
    log_format: str = setting(
        _one_of("text", "json"),
        "text, or json for one JSON object per log line (log shippers)",
        default="text",
    )
    audit_retention: int = setting(
        _positive_duration,
        "how long audit events are kept (e.g. 90d); at least AUTHSERVER_MAX_TOKEN_TTL",
        default=90 * 86400,
    )
    production: bool = setting(
        _bool,
        "production mode: refuse an http:// issuer unless AUTHSERVER_ALLOW_HTTP_ISSUER is set",
        default=False,
    )
    allow_http_issuer: bool = setting(
        _bool,
        "in production mode, accept an http:// issuer anyway (TLS terminated elsewhere)",
        default=False,
    )
    jwks_uri_allow_private: bool = setting(
        _bool,
        "in production mode, let a client's jwks_uri reach private, loopback and link-local "
        "addresses (refused by default: the fetch must not reach internal services)",
        default=False,
    )
    scheduler: bool = setting(
        _bool,
        "run the schedule inside serve: key rotation, the status lists' catch-up of "
        "withdrawals (tokens on record too late for a revocation) and the hourly purges "
        "(audit retention); keep it on in at least one instance",
        default=True,
    )
    rate_limit_storage: str = setting(
        _rate_limit_storage,
        "where failed-authentication counts live: memory:// (per worker process) or a "
        "redis:// URL (shared by every worker and instance)",
        default="memory://",
        secret=True,
        mask=_show_url,
    )
    auth_failures_per_client: str | None = setting(
        _rate_limit,
        "failed client authentications allowed per presented client_id (e.g. 10/minute, "
        "10/minute;100/day; off to disable)",
        default="20/minute",
    )
    auth_failures_per_address: str | None = setting(
        _rate_limit,
        "failed client authentications allowed per source address (IPv6: per /64; off to disable)",
        default="60/minute",
    )
    rate_limit_key_prefix: str = setting(
        _key_prefix,
        "prefix of the rate limit keys (deployments sharing one Redis need different ones)",
        default="authserver",
    )

    def __post_init__(self) -> None:
        if not self.issuer:
            # docs/reference.md, "Settings": when AUTHSERVER_ISSUER is unset, the issuer
            # follows serve's host and port, so metadata and tokens name the address the
            # server answers on.
            object.__setattr__(self, "issuer", default_issuer(self.host, self.port))
        # AUTHSERVER_KEYS_DIR is relative to the working directory (``keys`` by default):
        # absolute from here on, so that every line naming it (doctor's, serve's warning,
        # the key store's errors) names the directory it is, as the database URL's is.
        object.__setattr__(self, "keys_dir", self.keys_dir.absolute())

    def __repr__(self) -> str:
        # Secrets never reach logs, even through a repr in a traceback.
        return f"Settings({ {f.name: f.shown(getattr(self, f.name)) for f in FIELDS} })"

    def describe(self) -> str:
        """Which database, key store and issuer these settings act on, secrets masked: the
        line every CLI command and ``serve`` print, so nobody acts on the wrong one."""
        store = "sql (the database)"
        if self.key_store == "file":
            store = f"file {self.keys_dir.absolute()}"
        database = redact_url(self.database_url)
        return f"database {database}; key store {store}; issuer {self.issuer}"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_file: str | Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read every setting from *overrides*, *environ* (default ``os.environ``), the
        configuration file, and the defaults, in that order.

        The configuration file is *config_file*, else the one *environ* names in
        ``AUTHSERVER_CONFIG``. A string override (a CLI option) is parsed like the
        variable, anything else is taken as already typed. Raises :class:`ConfigError`
        naming the first value that is invalid and where it came from.
        """
        env = os.environ if environ is None else environ
        source = "--config"
        if config_file is None and CONFIG_ENV in env:
            config_file, source = env[CONFIG_ENV], CONFIG_ENV
        if config_file == "":
            # An unset shell variable (--config "$CONF"): ignored, the command ran on the
            # defaults (clients create made a database and a key store in the working
            # directory). Refused as every other empty setting is.
            raise ConfigError(f"{source}: must not be empty (leave it out or unset it instead)")
        from_file = read_config_file(config_file, source=source) if config_file else {}
        values: dict[str, Any] = {}
        given: dict[str, str] = {}  # variable -> where its value came from, if not from it
        for f in FIELDS:
            raw: Any = overrides.get(f.name)
            source = f.option
            if raw is None:
                raw, source = env.get(f.env), f.env
            if raw is None and f.env in from_file:
                raw, source = from_file[f.env], f"{config_file}: {f.env}"
            if raw is None:
                continue
            given[f.env] = source
            if not isinstance(raw, str):
                values[f.name] = raw
                continue
            try:
                values[f.name] = f.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        settings = cls(**values)
        try:
            settings.validate()
        except ConfigError as exc:
            raise ConfigError(_name_sources(str(exc), given)) from None
        return settings

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with *changes* applied and validated (tests, CLI overrides)."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Check the rules that tie several variables together, and the bearer tokens'
        length (here rather than in their parser, so :meth:`replace` checks it too)."""
        for env, token in (
            ("AUTHSERVER_ADMIN_TOKEN", self.admin_token),
            ("AUTHSERVER_METRICS_TOKEN", self.metrics_token),
        ):
            # A bearer token is the whole credential: short ones can be guessed (the
            # per-address failure limit only slows that down). 32 characters of
            # secrets.token_urlsafe carry 192 bits.
            if token is not None and not _BEARER_TOKEN.fullmatch(token):
                # A token with a trailing newline (a secret file or a Kubernetes secret made
                # from one), a space or a non-ASCII letter can never be presented: the
                # server started, and every request was refused with 401.
                raise ConfigError(
                    f"{env}: must be printable ASCII, without line breaks or spaces at either end "
                    "(a trailing newline from a secret file?): no HTTP client could send it"
                )
            if token is not None and len(token) < MIN_BEARER_TOKEN_LENGTH:
                raise ConfigError(
                    f"{env}: must be at least {MIN_BEARER_TOKEN_LENGTH} characters (e.g. the "
                    "output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        if len(self.issuer) > MAX_ISSUER_LENGTH:
            # Here, not in the issuer's parser: the issuer that follows AUTHSERVER_HOST
            # when none is set is bounded too. Refused at start, not answered on every
            # token request with "the token would be too long".
            env = (
                "AUTHSERVER_HOST"
                if self.issuer == default_issuer(self.host, self.port)
                else "AUTHSERVER_ISSUER"
            )
            raise ConfigError(
                f"{env}: the issuer would be {len(self.issuer)} characters, more than the "
                f"{MAX_ISSUER_LENGTH} it may be (every token carries it twice, and a token "
                f"is at most {MAX_TOKEN_LENGTH} characters)"
            )
        # RFC 8414 §2 and RFC 9700 §2.6: the issuer is an https URL. Production mode makes
        # that a rule, with an explicit, named way out.
        if self.production and self.issuer_is_http and not self.allow_http_issuer:
            raise ConfigError(
                "AUTHSERVER_ISSUER: production mode (AUTHSERVER_PRODUCTION) requires an "
                "https:// issuer; set AUTHSERVER_ALLOW_HTTP_ISSUER=true to accept http"
            )
        # A new key is published at least as long ahead as verifiers may cache the JWKS,
        # or a verifier holding a cached copy would meet an unknown kid.
        if self.jwks_max_age > self.key_publish_ahead:
            raise ConfigError(
                "AUTHSERVER_JWKS_MAX_AGE: must not exceed AUTHSERVER_KEY_PUBLISH_AHEAD "
                f"({self.key_publish_ahead}s)"
            )
        if self.status_list_expiry <= self.status_list_ttl:
            raise ConfigError(
                "AUTHSERVER_STATUS_LIST_EXPIRY: must be longer than AUTHSERVER_STATUS_LIST_TTL "
                f"({self.status_list_ttl}s)"
            )
        if self.key_rotation_interval <= self.key_publish_ahead:
            raise ConfigError(
                "AUTHSERVER_KEY_ROTATION_INTERVAL: must be longer than "
                f"AUTHSERVER_KEY_PUBLISH_AHEAD ({self.key_publish_ahead}s)"
            )
        if self.default_token_ttl > self.max_token_ttl:
            raise ConfigError(
                "AUTHSERVER_DEFAULT_TOKEN_TTL: must not exceed AUTHSERVER_MAX_TOKEN_TTL "
                f"({self.max_token_ttl}s)"
            )
        # Revoking a user's or a client's tokens (tokens revoke, a disable or delete, and
        # the schedule's reconcile) finds the live tokens in the token.issued events: purged
        # sooner than the tokens expire, they were answered "revoked 0" and stayed valid.
        if self.audit_retention < self.max_token_ttl:
            raise ConfigError(
                "AUTHSERVER_AUDIT_RETENTION: must be at least AUTHSERVER_MAX_TOKEN_TTL "
                f"({self.max_token_ttl}s): revoking a user's or a client's tokens finds "
                "them in the audit trail"
            )

    def operator_token_problems(self) -> list[str]:
        """What is wrong with the admin and metrics tokens that :meth:`validate` lets
        through: serve warns of each at start, ``authserver doctor`` reports each as a
        problem."""
        found = [
            why
            for env, token in (
                ("AUTHSERVER_ADMIN_TOKEN", self.admin_token),
                ("AUTHSERVER_METRICS_TOKEN", self.metrics_token),
            )
            if token is not None and (why := guessable_token(env, token))
        ]
        if self.admin_token is not None and self.admin_token == self.metrics_token:
            found.append(METRICS_IS_ADMIN)
        return found

    @property
    def key_retention(self) -> int:
        """How long a key stays published after it stopped signing."""
        return self.max_token_ttl + self.key_retention_leeway

    @property
    def issuer_is_http(self) -> bool:
        return self.issuer.startswith("http://")  # the scheme is lower case (_issuer)

    @property
    def host_is_loopback(self) -> bool:
        """serve listens on a loopback address only (not a wildcard or a public one)."""
        return _is_loopback(self.host)

    @property
    def issuer_is_loopback(self) -> bool:
        return _is_loopback(urlsplit(self.issuer).hostname or "")


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def default_issuer(host: str, port: int) -> str:
    """The issuer a server listening on *host*:*port* answers as, when none is configured.

    A loopback or wildcard address is named ``localhost`` (what a browser or a verifier on
    the same machine types); any other host is used as given.
    """
    if _is_loopback(host) or host in ("0.0.0.0", "::", ""):  # noqa: S104 - a name, not a bind
        name = "localhost"
    elif ":" in host:
        name = f"[{host}]"
    else:
        name = host
    return f"http://{name}:{port}"


@dataclass(frozen=True)
class Field:
    """One setting as the rest of the program sees it, derived from its declaration."""

    name: str
    spec: Spec
    default: Callable[[], Any]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def parse(self) -> Callable[[str], Any]:
        return self.spec.parse

    @property
    def help(self) -> str:
        return self.spec.help

    @property
    def secret(self) -> bool:
        return self.spec.secret

    def shown(self, value: Any) -> Any:
        """*value* as logs and reprs may show it."""
        return self.spec.mask(value) if self.secret and value is not None else value


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _fields() -> tuple[Field, ...]:
    out = []
    for f in dataclasses.fields(Settings):
        if f.default_factory is not dataclasses.MISSING:
            default: Callable[[], Any] = f.default_factory
        else:
            default = _constant(f.default)
        out.append(Field(f.name, f.metadata["setting"], default))
    return tuple(out)


#: Every setting, in declaration order (derived from :class:`Settings`).
FIELDS: tuple[Field, ...] = _fields()

#: The variables a server worker removes from its environment once it has read them.
SECRET_ENV: tuple[str, ...] = tuple(f.env for f in FIELDS if f.secret)

_KNOWN_ENV = frozenset(f.env for f in FIELDS) | {CONFIG_ENV}


def _suggest(name: str) -> str:
    # Compared without the common prefix, which would make every name look alike.
    suffixes = {known.removeprefix(ENV_PREFIX): known for known in _KNOWN_ENV}
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.75)
    return f" (did you mean {suffixes[close[0]]}?)" if close else ""


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``AUTHSERVER_*`` variable in *environ* that no setting reads (a
    misspelling would otherwise be ignored in silence)."""
    env = os.environ if environ is None else environ
    return [
        f"ignoring unknown variable {name}{_suggest(name)}"
        for name in sorted(env)
        if name.startswith(ENV_PREFIX) and name not in _KNOWN_ENV
    ]


#: A configuration file is a few dozen lines: anything larger is not one.
MAX_CONFIG_BYTES = 1024 * 1024
#: What a setting's name looks like; anything else in a config file is not echoed back.
_SETTING_NAME = re.compile(rf"{ENV_PREFIX}[A-Z0-9_]+")


def _name_sources(message: str, given: dict[str, str]) -> str:
    """*message*, a rule of :meth:`Settings.validate` written with variable names, with
    each name of a value given elsewhere said with where it came from: the variable the
    message is about by its full source (``--key-rotation-interval
    (AUTHSERVER_KEY_ROTATION_INTERVAL)``, ``settings.env: AUTHSERVER_KEY_ROTATION_INTERVAL``),
    any other by its option beside it when an option gave it. A value that came from its
    variable, or from no one (the default), keeps the bare name."""
    subject, sep, rest = message.partition(": ")
    if sep and subject in given:
        subject = _with_variable(given[subject], subject)

    def named(match: re.Match[str]) -> str:
        source = given.get(match.group(0), "")
        return _with_variable(source, match.group(0)) if source.startswith("--") else match.group(0)

    return subject + sep + _SETTING_NAME.sub(named, rest) if sep else message


def _with_variable(source: str, variable: str) -> str:
    """*source* as a rule between settings names it: an option with its variable beside it
    (``--max-token-ttl (AUTHSERVER_MAX_TOKEN_TTL)``: the line names the variable whatever
    gave the value), a file or the variable as they are (both name it already)."""
    return f"{source} ({variable})" if source.startswith("--") else source


def read_config_file(path: str | Path, *, source: str = CONFIG_ENV) -> dict[str, str]:
    """The settings in an env file (``AUTHSERVER_X=value`` lines, ``#`` comments, optional
    quotes and ``export``, as python-dotenv reads them; values literal, no ``${VAR}``).

    *source* (``--config`` or ``AUTHSERVER_CONFIG``) is where the path came from, named
    when the file itself cannot be read.

    :raises ConfigError: when the file cannot be read, has a line python-dotenv cannot
        parse (dotenv would skip it with a warning, and the program would start without
        that setting), or names a variable no setting reads (in a file written for
        authserver, that is a mistake, not someone else's variable).
    """
    file = Path(path).expanduser()
    try:
        text = read_small_text(file, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot read {file}: {exc.strerror or type(exc).__name__}"
        ) from None
    except FileRefused as exc:
        raise ConfigError(f"{source}: {file} {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: {file} is not UTF-8 text") from None
    seen: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = _first_line(binding.original.string, binding.original.line)
        # Named by file and line only, never by its text, unless it names a setting: the
        # line may hold a secret (a passphrase pasted on a line of its own).
        name = binding.key
        if binding.error or (name is not None and binding.value is None and name not in _KNOWN_ENV):
            raise ConfigError(
                f"{file}: line {line}: not a NAME=VALUE line (is an = missing, or a quote "
                "not closed?)"
            )
        if name is None:
            continue  # a comment or a blank line
        if not _SETTING_NAME.fullmatch(name):
            raise ConfigError(f"{file}: line {line}: not a setting name (they are {ENV_PREFIX}*)")
        if name in seen:
            # The last one won in silence: an edit above an old line did nothing.
            raise ConfigError(f"{file}: {name} is set twice (lines {seen[name]} and {line})")
        seen[name] = line

    # The values are dotenv's own reading of the file (quotes, escapes), taken literally:
    # no ${VAR} expansion, which turned a passphrase such as 'pa${x}ss' into another one
    # (even single-quoted) and left no way to write a literal "${" in a secret.
    values: dict[str, str] = {}
    for name, value in dotenv_values(stream=io.StringIO(text), interpolate=False).items():
        if name == CONFIG_ENV:
            raise ConfigError(
                f"{file}: {CONFIG_ENV} names the config file; it cannot be set inside one"
            )
        if name not in _KNOWN_ENV:
            raise ConfigError(f"{file}: unknown setting {name}{_suggest(name)}")
        if value is None:
            raise ConfigError(f"{file}: {name} has no value (write {name}=VALUE)")
        values[name] = value
    return values


def _first_line(original: str, line: int) -> int:
    """The line where a statement's text begins: python-dotenv counts a statement from the
    end of the one before, so blank lines in between belong to it."""
    leading = original[: len(original) - len(original.lstrip())]
    return line + leading.count("\n")
