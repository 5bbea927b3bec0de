"""Configuration: one typed, immutable object, validated at start.

Every ``AUTHSERVER_*`` variable is declared once, in :data:`FIELDS`, with its default,
its parser and its meaning. :meth:`Settings.from_env` reads them; ``authserver serve``
builds one CLI option per field from the same table, so the two can never drift apart.
A bad value raises :class:`~authserver.errors.ConfigError` whose message is one line
naming the variable; nothing starts half-configured.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import limits

from authserver.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> int:
    """Parse ``3600``, ``90s``, ``15m``, ``1h`` or ``30d`` into whole seconds."""
    match = _DURATION.match(raw)
    if not match:
        raise ValueError(
            "expected whole seconds or a number with s, m, h or d (e.g. 3600, 1h, 30d)"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


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
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL, e.g. https://auth.example.com")
    # RFC 8414 §2: the issuer identifier has no query or fragment component.
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or a fragment (RFC 8414 section 2)")
    return value


def _database_url(raw: str) -> str:
    value = raw.strip()
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        raise ValueError(
            "must be a SQLAlchemy URL such as sqlite:///authserver.db or "
            "postgresql+psycopg://user@host/db"
        )
    if value.startswith("postgres://") or value.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; name it so SQLAlchemy does not look for psycopg2.
        value = "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def redact_url(url: str) -> str:
    """*url* with any password replaced by ``***`` (for logs and reprs)."""
    # The user name may be empty: redis://:password@host is how Redis URLs carry a password.
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


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
    raise ValueError("must be true or false")


#: The shortest admin or metrics bearer token accepted.
MIN_BEARER_TOKEN_LENGTH = 32


@dataclass(frozen=True)
class Field:
    """One configuration variable: its name, default, parser and meaning."""

    name: str
    env: str
    default: Callable[[], Any]
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


def _default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / 'authserver.db'}"


#: Every setting authserver reads, in one place. The README's configuration table and the
#: ``serve`` options are generated from, or checked against, this list.
FIELDS: tuple[Field, ...] = (
    Field(
        "database_url",
        "AUTHSERVER_DATABASE_URL",
        _default_database_url,
        _database_url,
        "SQLAlchemy database URL (default: SQLite file authserver.db in the working directory)",
    ),
    Field(
        "issuer",
        "AUTHSERVER_ISSUER",
        lambda: "http://localhost:8000",
        _issuer,
        "the iss of every token and the base of every URL in metadata",
    ),
    Field(
        "keys_dir",
        "AUTHSERVER_KEYS_DIR",
        lambda: Path("keys"),
        _path,
        "directory of the file key store",
    ),
    Field(
        "key_passphrase",
        "AUTHSERVER_KEY_PASSPHRASE",
        lambda: None,
        _non_empty,
        "when set, private keys are encrypted at rest with it",
        secret=True,
    ),
    Field(
        "admin_token",
        "AUTHSERVER_ADMIN_TOKEN",
        lambda: None,
        _non_empty,
        "bearer token for /admin/*, at least 32 characters (unset: admin API off)",
        secret=True,
    ),
    Field(
        "metrics_token",
        "AUTHSERVER_METRICS_TOKEN",
        lambda: None,
        _non_empty,
        "bearer token for GET /metrics, at least 32 characters (unset: /metrics answers 404)",
        secret=True,
    ),
    Field(
        "key_store",
        "AUTHSERVER_KEY_STORE",
        lambda: "file",
        _one_of("file", "sql"),
        "where signing keys live: file (AUTHSERVER_KEYS_DIR) or sql (the database)",
    ),
    Field(
        "key_size",
        "AUTHSERVER_KEY_SIZE",
        lambda: 2048,
        _key_size,
        "RSA modulus size of new signing keys: 2048, 3072 or 4096",
    ),
    Field(
        "key_rotation_interval",
        "AUTHSERVER_KEY_ROTATION_INTERVAL",
        lambda: 30 * 86400,
        _positive_duration,
        "how long a key signs before the next one takes over (e.g. 30d)",
    ),
    Field(
        "key_publish_ahead",
        "AUTHSERVER_KEY_PUBLISH_AHEAD",
        lambda: 3600,
        _positive_duration,
        "how long a new key is published in the JWKS before it signs (at least the JWKS max-age)",
    ),
    Field(
        "jwks_max_age",
        "AUTHSERVER_JWKS_MAX_AGE",
        lambda: 300,
        _positive_duration,
        "Cache-Control max-age of the JWKS and metadata responses",
    ),
    Field(
        "default_token_ttl",
        "AUTHSERVER_DEFAULT_TOKEN_TTL",
        lambda: 3600,
        _positive_duration,
        "token lifetime for clients registered without --token-ttl",
    ),
    Field(
        "max_token_ttl",
        "AUTHSERVER_MAX_TOKEN_TTL",
        lambda: 86400,
        _positive_duration,
        "the longest lifetime any client may be given; old keys stay published this long",
    ),
    Field(
        "key_retention_leeway",
        "AUTHSERVER_KEY_RETENTION_LEEWAY",
        lambda: 300,
        parse_duration,
        "extra time a retired-from-signing key stays published (clock skew)",
    ),
    Field(
        "key_cache_seconds",
        "AUTHSERVER_KEY_CACHE_SECONDS",
        lambda: 1,
        parse_duration,
        "how often each worker re-reads the key store for changes made elsewhere",
    ),
    Field(
        "max_body_bytes",
        "AUTHSERVER_MAX_BODY_BYTES",
        lambda: 65536,
        _int_in(1024, 10_485_760),
        "largest request body accepted, in bytes",
    ),
    Field(
        "proxy_hops",
        "AUTHSERVER_PROXY_HOPS",
        lambda: 0,
        _int_in(0, 10),
        "number of trusted reverse proxies whose X-Forwarded-* headers are honoured",
    ),
    Field("host", "AUTHSERVER_HOST", lambda: "127.0.0.1", _non_empty, "address serve listens on"),
    Field("port", "AUTHSERVER_PORT", lambda: 8000, _int_in(0, 65535), "port serve listens on"),
    Field(
        "workers",
        "AUTHSERVER_WORKERS",
        lambda: 0,
        _int_in(0, 256),
        "serve worker processes (0: one per CPU core)",
    ),
    Field(
        "threads",
        "AUTHSERVER_THREADS",
        lambda: 4,
        _int_in(1, 64),
        "Python threads per worker process running requests",
    ),
    Field(
        "log_level",
        "AUTHSERVER_LOG_LEVEL",
        lambda: "info",
        _one_of("debug", "info", "warning", "error"),
        "logging level",
    ),
    Field(
        "audit_retention",
        "AUTHSERVER_AUDIT_RETENTION",
        lambda: 90 * 86400,
        _positive_duration,
        "how long audit events are kept (e.g. 90d)",
    ),
    Field(
        "production",
        "AUTHSERVER_PRODUCTION",
        lambda: False,
        _bool,
        "production mode: refuse an http:// issuer unless AUTHSERVER_ALLOW_HTTP_ISSUER is set",
    ),
    Field(
        "allow_http_issuer",
        "AUTHSERVER_ALLOW_HTTP_ISSUER",
        lambda: False,
        _bool,
        "in production mode, accept an http:// issuer anyway (TLS terminated elsewhere)",
    ),
    Field(
        "jwks_uri_allow_private",
        "AUTHSERVER_JWKS_URI_ALLOW_PRIVATE",
        lambda: False,
        _bool,
        "in production mode, let a client's jwks_uri reach private, loopback and link-local "
        "addresses (refused by default: the fetch must not reach internal services)",
    ),
    Field(
        "scheduler",
        "AUTHSERVER_SCHEDULER",
        lambda: True,
        _bool,
        "run the key rotation schedule inside serve",
    ),
    Field(
        "rate_limit_storage",
        "AUTHSERVER_RATE_LIMIT_STORAGE",
        lambda: "memory://",
        _rate_limit_storage,
        "where failed-authentication counts live: memory:// (per worker process) or a "
        "redis:// URL (shared by every worker and instance)",
    ),
    Field(
        "auth_failures_per_client",
        "AUTHSERVER_AUTH_FAILURES_PER_CLIENT",
        lambda: "20/minute",
        _rate_limit,
        "failed client authentications allowed per presented client_id (e.g. 10/minute, "
        "10/minute;100/day; off to disable)",
    ),
    Field(
        "auth_failures_per_address",
        "AUTHSERVER_AUTH_FAILURES_PER_ADDRESS",
        lambda: "60/minute",
        _rate_limit,
        "failed client authentications allowed per source address (IPv6: per /64; off to disable)",
    ),
    Field(
        "rate_limit_key_prefix",
        "AUTHSERVER_RATE_LIMIT_KEY_PREFIX",
        lambda: "authserver",
        _key_prefix,
        "prefix of the rate limit keys (deployments sharing one Redis need different ones)",
    ),
)

FIELDS_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class Settings:
    """The validated configuration. Build it with :meth:`from_env`; never mutate it."""

    database_url: str
    issuer: str
    keys_dir: Path
    key_passphrase: str | None
    admin_token: str | None
    metrics_token: str | None
    key_store: str
    key_size: int
    key_rotation_interval: int
    key_publish_ahead: int
    jwks_max_age: int
    default_token_ttl: int
    max_token_ttl: int
    key_retention_leeway: int
    key_cache_seconds: int
    max_body_bytes: int
    proxy_hops: int
    host: str
    port: int
    workers: int
    threads: int
    log_level: str
    audit_retention: int
    production: bool
    allow_http_issuer: bool
    jwks_uri_allow_private: bool
    scheduler: bool
    rate_limit_storage: str
    auth_failures_per_client: str | None
    auth_failures_per_address: str | None
    rate_limit_key_prefix: str

    def __repr__(self) -> str:
        # Secrets never reach logs, even through a repr in a traceback.
        shown = {
            f.name: ("***" if f.secret and getattr(self, f.name) else getattr(self, f.name))
            for f in FIELDS
        }
        shown["database_url"] = redact_url(self.database_url)
        shown["rate_limit_storage"] = redact_url(self.rate_limit_storage)
        return f"Settings({shown})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every ``AUTHSERVER_*`` variable from *environ* (default ``os.environ``).

        *overrides* (e.g. CLI options) win over the environment; a string override is
        parsed like the variable, anything else is taken as already typed. Raises
        :class:`ConfigError` naming the first variable that is invalid.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in FIELDS:
            raw: Any = overrides.get(f.name)
            if raw is None:
                raw = env.get(f.env)
            if raw is None:
                values[f.name] = f.default()
                continue
            if not isinstance(raw, str):
                values[f.name] = raw
                continue
            try:
                values[f.name] = f.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{f.env}: {exc}") from None
        settings = cls(**values)
        settings.validate()
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
            if token is not None and len(token) < MIN_BEARER_TOKEN_LENGTH:
                raise ConfigError(
                    f"{env}: must be at least {MIN_BEARER_TOKEN_LENGTH} characters (e.g. the "
                    "output of: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        # RFC 8414 §2 and RFC 9700 §2.6: the issuer is an https URL. Production mode makes
        # that a rule, with an explicit, named way out.
        if self.production and self.issuer_is_http and not self.allow_http_issuer:
            raise ConfigError(
                "AUTHSERVER_ISSUER: production mode (AUTHSERVER_PRODUCTION) requires an "
                "https:// issuer; set AUTHSERVER_ALLOW_HTTP_ISSUER=true to accept http"
            )
        # INTERFACE.md: a new key is published at least as long ahead as verifiers may cache
        # the JWKS, or a verifier holding a cached copy would meet an unknown kid.
        if self.jwks_max_age > self.key_publish_ahead:
            raise ConfigError(
                "AUTHSERVER_JWKS_MAX_AGE: must not exceed AUTHSERVER_KEY_PUBLISH_AHEAD "
                f"({self.key_publish_ahead}s)"
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

    @property
    def key_retention(self) -> int:
        """How long a key stays published after it stopped signing."""
        return self.max_token_ttl + self.key_retention_leeway

    @property
    def issuer_is_http(self) -> bool:
        return self.issuer.startswith("http://")

    @property
    def issuer_is_loopback(self) -> bool:
        host = urlsplit(self.issuer).hostname or ""
        return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
