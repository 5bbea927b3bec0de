"""Settings.from_env: every AUTHSERVER_* variable, its default, a valid and an invalid value.

Missing or invalid configuration stops the program at start with one clear line naming the
variable (docs/reference.md, "Settings"). The table below must name every field in
``FIELDS``; a new field without a row here fails :func:`test_every_field_is_covered`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from authserver.errors import ConfigError
from authserver.settings import FIELDS
from authserver.settings import MAX_CONFIG_BYTES
from authserver.settings import SECRET_ENV
from authserver.settings import Settings
from authserver.settings import SinceOutOfRange
from authserver.settings import is_port_number
from authserver.settings import parse_database_url
from authserver.settings import parse_duration
from authserver.settings import parse_since
from authserver.settings import read_config_file
from authserver.settings import redact_url
from authserver.settings import unknown_variables
from authserver.vocabulary import MAX_ISSUER_LENGTH

#: env -> (attribute, expected default, valid raw value, expected parsed value, invalid values)
CASES: dict[str, tuple[str, Any, str, Any, tuple[str, ...]]] = {
    "AUTHSERVER_DATABASE_URL": (
        "database_url",
        None,  # depends on the working directory: checked in test_database_url_default
        "postgresql+psycopg://user@db.example/auth",
        "postgresql+psycopg://user@db.example/auth",
        (
            "not a url",
            "",
            "authserver.db",
            # Two slashes: the file name would be a host, which SQLAlchemy refuses with a
            # traceback (three slashes before a relative path, four before an absolute one).
            "sqlite://authserver.db",
            "sqlite+pysqlite://localhost/tmp/x.db",
            # A "#" is no end of the host to SQLAlchemy: "#x" is one.
            "sqlite://#x/a.db",
            # In memory: one empty database per process (each command, each worker).
            "sqlite://",
            "sqlite:///:memory:",
            "sqlite+pysqlite:///:memory:",
            "sqlite:///file:auth?mode=memory&cache=shared&uri=true",
            "sqlite:///file::memory:?uri=true",
            "sqlite:///%3Amemory%3A",
            "sqlite:///file:x.db?uri=true&vfs=memdb",
            # An unencoded @ in the password: the host would be the password's tail.
            "postgresql://postgres:Pa@ss@db.example/auth",
        ),
    ),
    "AUTHSERVER_ISSUER": (
        "issuer",
        "http://localhost:8000",
        "https://auth.example.com/",
        "https://auth.example.com",
        (
            "auth.example.com",
            "ftp://auth.example.com",
            "https://auth.example.com/?x=1",
            "https://auth.example.com/#frag",
            "",
            # The scheme as the production rule reads it; a port, a host, no user info.
            "HTTP://auth.example.com",
            "Https://auth.example.com",
            "https://auth.example.com:abc",
            "https://auth.example.com:99999",
            "https://auth.example.com:0",
            "https://user:pw@auth.example.com",
            "https://auth.example.com/a b",
            "https://auth.example.com/a\tb",
            "https://:443",
            "https://auth.example.com:",
            "https://auth.example.com/path?",
            "https://auth.example.com#",
            # Compared as a string: forms a client normalizes or cannot print.
            "https://auth.exa%00mple.com",
            "https://auth.example.com/a%1Fb",
            "https://auth.example.com/a/../b",
            "https://auth.example.com/./auth",
            "https://auth.example.com/a/%2e%2e/b",
        ),
    ),
    "AUTHSERVER_KEYS_DIR": (
        "keys_dir",
        Path("keys"),
        "/var/lib/authserver/keys",
        Path("/var/lib/authserver/keys"),
        ("", "   "),
    ),
    "AUTHSERVER_KEY_PASSPHRASE": (
        "key_passphrase",
        None,
        "correct horse battery staple",
        "correct horse battery staple",
        ("",),
    ),
    "AUTHSERVER_ADMIN_TOKEN": (
        "admin_token",
        None,
        "s3cr3t-admin-token-of-32-characters",
        "s3cr3t-admin-token-of-32-characters",
        ("", "a", "x" * 31),
    ),
    "AUTHSERVER_METRICS_TOKEN": (
        "metrics_token",
        None,
        "s3cr3t-metrics-token-32-characters",
        "s3cr3t-metrics-token-32-characters",
        ("", "a", "x" * 31),
    ),
    "AUTHSERVER_KEY_STORE": ("key_store", "file", "sql", "sql", ("s3", "", "memory")),
    "AUTHSERVER_KEY_SIZE": ("key_size", 2048, "3072", 3072, ("1024", "2500", "8192", "big", "")),
    "AUTHSERVER_KEY_ROTATION_INTERVAL": (
        "key_rotation_interval",
        30 * 86400,
        "7d",
        7 * 86400,
        ("0", "-1d", "1w", "soon", ""),
    ),
    "AUTHSERVER_KEY_PUBLISH_AHEAD": (
        "key_publish_ahead",
        3600,
        "2h",
        7200,
        ("0", "1.5h", "ahead", ""),
    ),
    "AUTHSERVER_JWKS_MAX_AGE": ("jwks_max_age", 300, "10m", 600, ("0", "5 minutes", "")),
    "AUTHSERVER_DEFAULT_TOKEN_TTL": ("default_token_ttl", 3600, "15m", 900, ("0", "1y", "")),
    # At most 2^31 - 1 s: a client's lifetime is a 32-bit column (2^31 s was a 500 on PostgreSQL).
    "AUTHSERVER_MAX_TOKEN_TTL": (
        "max_token_ttl",
        86400,
        "2d",
        2 * 86400,
        ("0", "-3600", "", "2147483648", "36500d"),
    ),
    "AUTHSERVER_KEY_RETENTION_LEEWAY": (
        "key_retention_leeway",
        300,
        "90s",
        90,
        ("-1", "1x", "", "99999999999999999999999"),
    ),
    # Every duration is at most 2^31 - 1 s (settings.MAX_DURATION): 10^20 s put a key's
    # activation past what the clock can represent.
    "AUTHSERVER_KEY_CACHE_SECONDS": (
        "key_cache_seconds",
        1,
        "5",
        5,
        ("-1", "fast", "", "99999999999999999999999", "1000000000000", "24856d"),
    ),
    "AUTHSERVER_STATUS_LIST_TTL": ("status_list_ttl", 60, "30s", 30, ("0", "-5", "soon", "")),
    "AUTHSERVER_STATUS_LIST_EXPIRY": ("status_list_expiry", 900, "1h", 3600, ("0", "1w", "")),
    "AUTHSERVER_MAX_BODY_BYTES": (
        "max_body_bytes",
        65536,
        "1048576",
        1048576,
        ("100", "99999999", "1MB", ""),
    ),
    "AUTHSERVER_BODY_TIMEOUT": ("body_timeout", 10, "30", 30, ("0", "301", "10s", "")),
    "AUTHSERVER_PROXY_HOPS": ("proxy_hops", 0, "1", 1, ("-1", "11", "one", "")),
    "AUTHSERVER_HOST": ("host", "127.0.0.1", "0.0.0.0", "0.0.0.0", ("",)),  # noqa: S104
    "AUTHSERVER_PORT": ("port", 8000, "8443", 8443, ("65536", "-1", "http", "")),
    "AUTHSERVER_WORKERS": ("workers", 0, "4", 4, ("-1", "257", "many", "")),
    "AUTHSERVER_THREADS": ("threads", 4, "8", 8, ("0", "65", "x", "")),
    "AUTHSERVER_LOG_LEVEL": ("log_level", "info", "DEBUG", "debug", ("verbose", "")),
    "AUTHSERVER_LOG_FORMAT": ("log_format", "text", "JSON", "json", ("xml", "")),
    "AUTHSERVER_SCHEDULER": ("scheduler", True, "false", False, ("maybe", "2")),
    # "true" needs an https issuer too: test_production_mode_* cover it.
    "AUTHSERVER_PRODUCTION": ("production", False, "off", False, ("maybe", "2")),
    "AUTHSERVER_ALLOW_HTTP_ISSUER": ("allow_http_issuer", False, "yes", True, ("sure",)),
    "AUTHSERVER_JWKS_URI_ALLOW_PRIVATE": ("jwks_uri_allow_private", False, "true", True, ("x",)),
    "AUTHSERVER_AUDIT_RETENTION": (
        "audit_retention",
        90 * 86400,
        "30d",
        30 * 86400,
        ("0", "forever", ""),
    ),
    "AUTHSERVER_RATE_LIMIT_STORAGE": (
        "rate_limit_storage",
        "memory://",
        "redis://:pw@127.0.0.1:6379/0",
        "redis://:pw@127.0.0.1:6379/0",
        ("memcached://127.0.0.1:11211", "redis://", "memory://x", "127.0.0.1:6379", ""),
    ),
    "AUTHSERVER_AUTH_FAILURES_PER_CLIENT": (
        "auth_failures_per_client",
        "20/minute",
        "5/second;100/day",
        "5/second;100/day",
        ("10", "ten per minute", "0/minute", "-1/minute", "10/minute;", ""),
    ),
    "AUTHSERVER_AUTH_FAILURES_PER_ADDRESS": (
        "auth_failures_per_address",
        "60/minute",
        "3 per 2 seconds",
        "3 per 2 seconds",
        ("30", "30/fortnight", "0/hour", ""),
    ),
    "AUTHSERVER_RATE_LIMIT_KEY_PREFIX": (
        "rate_limit_key_prefix",
        "authserver",
        "prod-eu",
        "prod-eu",
        ("", "has space", "x" * 65, "a/b"),
    ),
}

VALID = [(env, case[0], case[2], case[3]) for env, case in CASES.items()]
#: Less the two that depend on the working directory (tested on their own below).
DEFAULTS = [
    (env, case[0], case[1])
    for env, case in CASES.items()
    if env not in ("AUTHSERVER_DATABASE_URL", "AUTHSERVER_KEYS_DIR")
]
INVALID = [(env, raw) for env, case in CASES.items() for raw in case[4]]


def _assert_one_line_naming(exc: pytest.ExceptionInfo[ConfigError], env: str) -> None:
    message = str(exc.value)
    assert message.startswith(f"{env}:"), message
    assert "\n" not in message, message
    assert "\r" not in message, message
    assert len(message) > len(env) + 2, "the message should say what is wrong"


def test_every_field_is_covered() -> None:
    assert {f.env for f in FIELDS} == set(CASES)
    assert all(f.env.startswith("AUTHSERVER_") for f in FIELDS)
    assert {f.name for f in FIELDS} == {case[0] for case in CASES.values()}


def test_empty_environment_gives_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    for _env, attribute, default in DEFAULTS:
        assert getattr(settings, attribute) == default, attribute


@pytest.mark.parametrize(("env", "attribute", "default"), DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_default(env: str, attribute: str, default: Any) -> None:
    assert getattr(Settings.from_env({}), attribute) == default


def test_database_url_default_is_sqlite_in_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = Settings.from_env({}).database_url
    assert url == f"sqlite:///{tmp_path / 'authserver.db'}"


@pytest.mark.parametrize("name", ["50%41", "a?b", "c#d"])
def test_the_working_directory_in_a_sqlite_url_is_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    # SQLAlchemy percent-decodes the database and ends it at a "?".
    from sqlalchemy.engine import make_url

    (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / name)
    for env in ({}, {"AUTHSERVER_DATABASE_URL": "sqlite:///authserver.db"}):
        url = Settings.from_env(env).database_url
        assert make_url(url).database == str(tmp_path / name / "authserver.db")
    monkeypatch.setenv("HOME", str(tmp_path / name))
    url = Settings.from_env({"AUTHSERVER_DATABASE_URL": "sqlite:///~/a.db"}).database_url
    assert make_url(url).database == str(tmp_path / name / "a.db")


def test_keys_dir_default_is_keys_in_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).keys_dir == tmp_path / "keys"
    assert Settings.from_env({"AUTHSERVER_KEYS_DIR": "k/s"}).keys_dir == tmp_path / "k" / "s"


def test_environ_argument_is_used_instead_of_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSERVER_PORT", "not a port")
    assert Settings.from_env({}).port == 8000
    with pytest.raises(ConfigError) as exc:
        Settings.from_env()
    _assert_one_line_naming(exc, "AUTHSERVER_PORT")


def test_os_environ_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSERVER_PORT", "9001")
    assert Settings.from_env().port == 9001


@pytest.mark.parametrize(("env", "attribute", "raw", "expected"), VALID, ids=[v[0] for v in VALID])
def test_valid_value(env: str, attribute: str, raw: str, expected: Any) -> None:
    settings = Settings.from_env({env: raw})
    assert getattr(settings, attribute) == expected
    assert type(getattr(settings, attribute)) is type(expected)


@pytest.mark.parametrize(("env", "raw"), INVALID, ids=[f"{e}={r!r}" for e, r in INVALID])
def test_invalid_value_is_one_line_naming_the_variable(env: str, raw: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({env: raw})
    _assert_one_line_naming(exc, env)


@pytest.mark.parametrize("raw", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_database_url_names_the_psycopg_driver(raw: str) -> None:
    assert Settings.from_env({"AUTHSERVER_DATABASE_URL": raw}).database_url == (
        "postgresql+psycopg://u@h/db"
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///./x.db",
        "sqlite+pysqlite:////tmp/x.db",
        "sqlite:////tmp/mode=memory/x.db",  # the words in a path, not a parameter
        "sqlite:///x.db?mode=memory",  # not a file: URI, so SQLite ignores mode: a file
        "sqlite:///file:x.db?mode=ro&uri=true",
    ],
)
def test_sqlite_files_are_not_taken_for_memory(url: str) -> None:
    # A relative path is the working directory's file, named by its absolute path.
    relative = not url.split(":///", 1)[1].startswith(("/", "file:"))
    expected = url.replace(":///", f":///{Path.cwd()}/", 1) if relative else url
    assert Settings.from_env({"AUTHSERVER_DATABASE_URL": url}).database_url == expected


def test_sqlite_url_is_accepted() -> None:
    settings = Settings.from_env({"AUTHSERVER_DATABASE_URL": "sqlite:////tmp/x.db"})
    assert settings.database_url == "sqlite:////tmp/x.db"


@pytest.mark.parametrize("raw", ["2048", "3072", "4096"])
def test_every_supported_key_size(raw: str) -> None:
    assert Settings.from_env({"AUTHSERVER_KEY_SIZE": raw}).key_size == int(raw)


@pytest.mark.parametrize("raw", ["1", "true", "yes", "on", "TRUE"])
def test_scheduler_true_values(raw: str) -> None:
    assert Settings.from_env({"AUTHSERVER_SCHEDULER": raw}).scheduler is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", "False"])
def test_scheduler_false_values(raw: str) -> None:
    assert Settings.from_env({"AUTHSERVER_SCHEDULER": raw}).scheduler is False


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("30d", 30 * 86400),
        ("3600", 3600),
        (" 2h ", 7200),
        ("0", 0),
    ],
)
def test_parse_duration(raw: str, seconds: int) -> None:
    assert parse_duration(raw) == seconds


# Other scripts' digits (U+0665, ARABIC-INDIC DIGIT FIVE) and "1_0" are numbers to int(),
# not here.
@pytest.mark.parametrize(
    "raw", ["", "h", "1w", "1.5h", "-5", "1h30m", "ten", "\u0665", "\u0665s", "1_0"]
)
def test_parse_duration_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("30d", 30 * 86400)]
)
def test_durations_through_the_environment(raw: str, seconds: int) -> None:
    settings = Settings.from_env(
        {
            "AUTHSERVER_KEY_ROTATION_INTERVAL": "60d",
            "AUTHSERVER_KEY_PUBLISH_AHEAD": "31d",
            "AUTHSERVER_JWKS_MAX_AGE": "90s",
            "AUTHSERVER_MAX_TOKEN_TTL": "30d",
            "AUTHSERVER_DEFAULT_TOKEN_TTL": raw,
            "AUTHSERVER_KEY_RETENTION_LEEWAY": raw,
        }
    )
    assert settings.default_token_ttl == seconds
    assert settings.key_retention_leeway == seconds
    assert settings.key_retention == 30 * 86400 + seconds


# -- rules that tie several variables together -------------------------------------------------


@pytest.mark.parametrize("env", ["AUTHSERVER_ADMIN_TOKEN", "AUTHSERVER_METRICS_TOKEN"])
def test_a_short_bearer_token_is_refused_with_a_command_that_runs(env: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({env: "x" * 31})
    # The suggested command is whole: its closing parenthesis was missing.
    assert str(exc.value) == (
        f"{env}: must be at least 32 characters (e.g. the output of: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )
    assert "x" * 31 not in str(exc.value)


@pytest.mark.parametrize("env", ["AUTHSERVER_ADMIN_TOKEN", "AUTHSERVER_METRICS_TOKEN"])
@pytest.mark.parametrize(
    "token",
    [
        "t" * 40 + "\n",  # a secret file's trailing newline (kubectl --from-file)
        "t" * 40 + "\r\n",
        " " + "t" * 40,
        "t" * 40 + "\t",
        "t" * 20 + "\x00" + "t" * 20,
        "\u00e9" * 40,  # no HTTP client sends it as the server reads it
        " " * 40,
    ],
    ids=["LF", "CRLF", "leading-space", "tab", "NUL", "non-ASCII", "spaces"],
)
def test_a_bearer_token_no_client_could_send_is_refused(env: str, token: str) -> None:
    """The server started with it, and every request with the token was refused 401 (an
    HTTP client refuses a line break in a header; the space around a value is not part
    of it)."""
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({env: token})
    _assert_one_line_naming(exc, env)
    assert "printable ASCII, without line breaks or spaces at either end" in str(exc.value)
    assert "t" * 20 not in str(exc.value)


def test_a_bearer_token_with_a_space_inside_is_accepted() -> None:
    token = "t" * 20 + " " + "!#$%&()*+,-./:;<=>?@[]^_`{|}~" + "t" * 20
    assert Settings.from_env({"AUTHSERVER_ADMIN_TOKEN": token}).admin_token == token


def test_jwks_max_age_above_publish_ahead_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"AUTHSERVER_JWKS_MAX_AGE": "2h", "AUTHSERVER_KEY_PUBLISH_AHEAD": "1h"})
    _assert_one_line_naming(exc, "AUTHSERVER_JWKS_MAX_AGE")
    assert "AUTHSERVER_KEY_PUBLISH_AHEAD" in str(exc.value)


def test_jwks_max_age_equal_to_publish_ahead_is_accepted() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_JWKS_MAX_AGE": "1h", "AUTHSERVER_KEY_PUBLISH_AHEAD": "3600"}
    )
    assert settings.jwks_max_age == settings.key_publish_ahead == 3600


@pytest.mark.parametrize(("interval", "ahead"), [("1h", "1h"), ("1h", "2h")])
def test_rotation_interval_not_longer_than_publish_ahead_is_refused(
    interval: str, ahead: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(
            {"AUTHSERVER_KEY_ROTATION_INTERVAL": interval, "AUTHSERVER_KEY_PUBLISH_AHEAD": ahead}
        )
    _assert_one_line_naming(exc, "AUTHSERVER_KEY_ROTATION_INTERVAL")


def test_rotation_interval_just_longer_than_publish_ahead_is_accepted() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_KEY_ROTATION_INTERVAL": "3601", "AUTHSERVER_KEY_PUBLISH_AHEAD": "1h"}
    )
    assert settings.key_rotation_interval == 3601


def test_default_ttl_above_max_ttl_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"AUTHSERVER_DEFAULT_TOKEN_TTL": "2h", "AUTHSERVER_MAX_TOKEN_TTL": "1h"})
    _assert_one_line_naming(exc, "AUTHSERVER_DEFAULT_TOKEN_TTL")
    assert "AUTHSERVER_MAX_TOKEN_TTL" in str(exc.value)


def test_default_ttl_equal_to_max_ttl_is_accepted() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_DEFAULT_TOKEN_TTL": "1h", "AUTHSERVER_MAX_TOKEN_TTL": "60m"}
    )
    assert settings.default_token_ttl == settings.max_token_ttl == 3600


def test_audit_retention_shorter_than_the_longest_token_is_refused() -> None:
    """The token.issued events are how 'tokens revoke' and a client's disable find live
    tokens: purged sooner than the tokens expire, a revocation said 'revoked 0' and the
    tokens stayed valid."""
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"AUTHSERVER_AUDIT_RETENTION": "1h"})  # the longest token: 24h
    _assert_one_line_naming(exc, "AUTHSERVER_AUDIT_RETENTION")
    assert "AUTHSERVER_MAX_TOKEN_TTL (86400s)" in str(exc.value)
    settings = Settings.from_env(
        {"AUTHSERVER_AUDIT_RETENTION": "1h", "AUTHSERVER_MAX_TOKEN_TTL": "1h"}
    )
    assert settings.audit_retention == settings.max_token_ttl == 3600


def test_replace_validates_the_cross_field_rules() -> None:
    settings = Settings.from_env({})
    assert settings.replace(jwks_max_age=600).jwks_max_age == 600
    with pytest.raises(ConfigError) as exc:
        settings.replace(default_token_ttl=settings.max_token_ttl + 1)
    _assert_one_line_naming(exc, "AUTHSERVER_DEFAULT_TOKEN_TTL")


def test_settings_are_immutable() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


# -- secrets stay out of logs -------------------------------------------------------------------


def test_repr_hides_passphrase_and_admin_token() -> None:
    passphrase = "passphrase-value-7c1e"
    token = "admin-token-value-93ab-long-enough-now"
    settings = Settings.from_env(
        {"AUTHSERVER_KEY_PASSPHRASE": passphrase, "AUTHSERVER_ADMIN_TOKEN": token}
    )
    assert settings.key_passphrase == passphrase
    assert settings.admin_token == token
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert passphrase not in text
        assert token not in text
        assert "key_passphrase" in text
        assert "admin_token" in text
    # Non-secret values stay visible, so the repr is still useful in a traceback.
    assert "http://localhost:8000" in repr(settings)


def test_repr_of_unset_secrets() -> None:
    text = repr(Settings.from_env({}))
    assert "'key_passphrase': None" in text
    assert "'admin_token': None" in text


# -- failed-authentication limits ---------------------------------------------------------------


@pytest.mark.parametrize("raw", ["off", "OFF", "0", " off "])
@pytest.mark.parametrize(
    "env", ["AUTHSERVER_AUTH_FAILURES_PER_CLIENT", "AUTHSERVER_AUTH_FAILURES_PER_ADDRESS"]
)
def test_failure_limits_can_be_turned_off(env: str, raw: str) -> None:
    field = next(f for f in FIELDS if f.env == env)
    assert getattr(Settings.from_env({env: raw}), field.name) is None


@pytest.mark.parametrize(
    "raw",
    [
        "memory://",
        "redis://127.0.0.1:6379",
        "rediss://user:pw@redis.example:6380/2",
        "redis+unix:///run/redis/redis.sock",
        "redis+sentinel://sentinel.example:26379/mymaster",
        "redis+cluster://node1.example:7000,node2.example:7000",
    ],
)
def test_rate_limit_storages(raw: str) -> None:
    assert Settings.from_env({"AUTHSERVER_RATE_LIMIT_STORAGE": raw}).rate_limit_storage == raw


def test_repr_hides_the_redis_password() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_RATE_LIMIT_STORAGE": "redis://:redis-pw-51f0@127.0.0.1:6379/0"}
    )
    assert "redis-pw-51f0" not in repr(settings)
    assert "redis://:***@127.0.0.1:6379/0" in repr(settings)


def test_production_mode_refuses_an_http_issuer() -> None:
    env = {"AUTHSERVER_PRODUCTION": "true", "AUTHSERVER_ISSUER": "http://auth.example.com"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert message.startswith("AUTHSERVER_ISSUER:")
    assert "AUTHSERVER_ALLOW_HTTP_ISSUER" in message
    assert "\n" not in message
    # Loopback http is no exception in production: the rule is https.
    with pytest.raises(ConfigError):
        Settings.from_env({"AUTHSERVER_PRODUCTION": "true"})


def test_production_mode_accepts_https_or_an_explicit_opt_in() -> None:
    assert Settings.from_env(
        {"AUTHSERVER_PRODUCTION": "true", "AUTHSERVER_ISSUER": "https://auth.example.com"}
    ).production
    allowed = Settings.from_env(
        {
            "AUTHSERVER_PRODUCTION": "true",
            "AUTHSERVER_ISSUER": "http://auth.example.com",
            "AUTHSERVER_ALLOW_HTTP_ISSUER": "true",
        }
    )
    assert allowed.issuer_is_http
    assert not allowed.issuer_is_loopback


def test_outside_production_an_http_issuer_is_accepted() -> None:
    settings = Settings.from_env({"AUTHSERVER_ISSUER": "http://auth.example.com"})
    assert settings.issuer_is_http
    assert Settings.from_env({}).issuer_is_loopback


def test_the_issuer_is_bounded_whether_set_or_following_the_host() -> None:
    """Every token carries the issuer twice (``iss``, its status list's URI): one longer
    than MAX_ISSUER_LENGTH had every token request of a client near the registration
    bound refused as too long. Refused at start instead, naming what to change."""
    at_bound = "https://" + "a" * (MAX_ISSUER_LENGTH - len("https://"))
    assert Settings.from_env({"AUTHSERVER_ISSUER": at_bound}).issuer == at_bound
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"AUTHSERVER_ISSUER": at_bound + "/x"})
    message = str(info.value)
    assert message.startswith("AUTHSERVER_ISSUER: the issuer would be 257 characters"), message
    assert f"more than the {MAX_ISSUER_LENGTH} it may be" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_HOST: the issuer would be 312"):
        Settings.from_env({"AUTHSERVER_HOST": "h" * 300})
    with pytest.raises(ConfigError, match=r"^AUTHSERVER_ISSUER: the issuer would be"):
        Settings.from_env({}).replace(issuer=at_bound + "/x")


# -- one declaration per setting -----------------------------------------------------------------


def test_names_are_derived_from_the_declaration() -> None:
    for f in FIELDS:
        assert f.env == "AUTHSERVER_" + f.name.upper()
        assert f.option == "--" + f.name.replace("_", "-")
        assert f.help


def test_secret_env_is_exactly_the_settings_declared_secret() -> None:
    # Derived, not listed: a new secret setting is scrubbed from workers by being declared so.
    assert set(SECRET_ENV) == {f.env for f in FIELDS if f.secret}
    assert {
        "AUTHSERVER_ADMIN_TOKEN",
        "AUTHSERVER_KEY_PASSPHRASE",
        "AUTHSERVER_DATABASE_URL",
        "AUTHSERVER_RATE_LIMIT_STORAGE",
    } <= set(SECRET_ENV)


def test_repr_masks_every_secret_setting() -> None:
    # Settings that only *may* carry a secret (URLs) are covered by the password tests.
    values = {
        f.env: "s3cr3t-value-long-enough-to-be-accepted-for-" + f.name
        for f in FIELDS
        if f.secret and f.env not in ("AUTHSERVER_DATABASE_URL", "AUTHSERVER_RATE_LIMIT_STORAGE")
    }
    text = repr(Settings.from_env(values))
    for value in values.values():
        assert value not in text


def test_database_password_is_masked_in_repr_and_describe() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_DATABASE_URL": "postgresql+psycopg://app:db-pw-9a1c@db.example/auth"}
    )
    for text in (repr(settings), settings.describe()):
        assert "db-pw-9a1c" not in text
        assert "db.example/auth" in text


def test_describe_names_database_key_store_and_issuer(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "k"),
            "AUTHSERVER_ISSUER": "https://auth.example.com",
        }
    )
    text = settings.describe()
    assert f"{tmp_path}/a.db" in text
    assert f"file {tmp_path / 'k'}" in text
    assert "https://auth.example.com" in text
    assert "key store sql" in settings.replace(key_store="sql").describe()


# -- the issuer follows host and port -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "issuer"),
    [
        ("127.0.0.1", "18700", "http://localhost:18700"),
        ("0.0.0.0", "8080", "http://localhost:8080"),  # noqa: S104 - a setting, nothing binds
        ("::1", "9000", "http://localhost:9000"),
        ("auth.internal", "8000", "http://auth.internal:8000"),
        ("10.1.2.3", "8000", "http://10.1.2.3:8000"),
        ("fd00::5", "8000", "http://[fd00::5]:8000"),
    ],
)
def test_default_issuer_follows_host_and_port(host: str, port: str, issuer: str) -> None:
    assert Settings.from_env({"AUTHSERVER_HOST": host, "AUTHSERVER_PORT": port}).issuer == issuer
    assert Settings.from_env({}, host=host, port=port).issuer == issuer


def test_an_explicit_issuer_does_not_follow_the_port() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_ISSUER": "https://auth.example.com", "AUTHSERVER_PORT": "9000"}
    )
    assert settings.issuer == "https://auth.example.com"


# -- where a value came from ---------------------------------------------------------------------


def test_a_bad_option_names_the_option_not_the_variable() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({}, port="abc")
    assert str(exc.value).startswith("--port:"), str(exc.value)
    assert "AUTHSERVER_PORT" not in str(exc.value)


def test_options_win_over_variables_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "authserver.env"
    config.write_text(
        "# a comment\n"
        "export AUTHSERVER_PORT=7001\n"
        "AUTHSERVER_THREADS='3'\n"
        'AUTHSERVER_LOG_LEVEL="debug"\n'
    )
    env = {"AUTHSERVER_CONFIG": str(config), "AUTHSERVER_THREADS": "5"}
    settings = Settings.from_env(env)
    assert (settings.port, settings.threads, settings.log_level) == (7001, 5, "debug")
    assert settings.issuer == "http://localhost:7001"
    assert Settings.from_env(env, port="7002").port == 7002
    assert Settings.from_env({}, config_file=config).threads == 3


def test_a_bad_value_in_the_file_names_the_file_and_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "authserver.env"
    config.write_text("AUTHSERVER_PORT=abc\n")
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({}, config_file=config)
    assert str(exc.value).startswith(f"{config}: AUTHSERVER_PORT:"), str(exc.value)


def test_an_unknown_name_in_the_file_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "authserver.env"
    config.write_text("AUTHSERVER_DATABSE_URL=sqlite:///x.db\n")
    with pytest.raises(ConfigError, match="did you mean AUTHSERVER_DATABASE_URL"):
        Settings.from_env({}, config_file=config)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('AUTHSERVER_ISSUER="https://a.example\n', 1),
        ("# a comment\n\nAUTHSERVER_PORT 9000\n", 3),
        ("AUTHSERVER_THREADS=3\n\n\n  this is not a line\nAUTHSERVER_PORT=7001\n", 4),
    ],
)
def test_a_line_dotenv_cannot_parse_stops_the_program_naming_file_and_line(
    tmp_path: Path, text: str, line: int
) -> None:
    """python-dotenv skips such a line with a warning; the settings it meant to give would
    silently be defaults. The message names the file and line, never the line's text (it may
    hold a secret)."""
    config = tmp_path / "authserver.env"
    config.write_text(text)
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({}, config_file=config)
    message = str(exc.value)
    assert message.startswith(f"{config}: line {line}: "), message
    assert "\n" not in message
    for secret_ish in ("a.example", "9000", "is not a line"):
        assert secret_ish not in message


def test_blank_lines_comments_and_multiline_quotes_are_fine_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "authserver.env"
    config.write_text(
        "\n# comment\n   \nexport AUTHSERVER_PORT=7001  # inline\n"
        "AUTHSERVER_ISSUER='https://auth.example.com'\n\n"
    )
    settings = Settings.from_env({}, config_file=config)
    assert (settings.port, settings.issuer) == (7001, "https://auth.example.com")


@pytest.mark.parametrize("quote", ["", "'", '"'])
def test_values_in_the_file_are_literal(
    tmp_path: Path, quote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ${VAR} expansion: a generated passphrase with a "$" is the passphrase."""
    monkeypatch.setenv("HOME", "/root")
    config = tmp_path / "authserver.env"
    config.write_text(f"AUTHSERVER_KEY_PASSPHRASE={quote}pa${{HOME}}ss-$x{quote}\n")
    settings = Settings.from_env({}, config_file=config)
    assert settings.key_passphrase == "pa${HOME}ss-$x"


def test_the_config_variable_inside_a_config_file_is_named_as_such(tmp_path: Path) -> None:
    config = tmp_path / "authserver.env"
    config.write_text("AUTHSERVER_CONFIG=other.env\n")
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({}, config_file=config)
    assert "cannot be set inside" in str(exc.value)
    assert "did you mean" not in str(exc.value)


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"AUTHSERVER_CONFIG": str(tmp_path / "nope.env")})
    assert str(exc.value).startswith("AUTHSERVER_CONFIG: cannot read")


def test_unknown_variables_are_named_with_a_suggestion() -> None:
    warnings = unknown_variables(
        {
            "AUTHSERVER_DATABSE_URL": "x",
            "AUTHSERVER_PORT": "1",
            "AUTHSERVER_CONFIG": "f",
            "AUTHSERVER_ZZZ": "1",
            "HOME": "/",
        }
    )
    assert warnings == [
        "ignoring unknown variable AUTHSERVER_DATABSE_URL (did you mean AUTHSERVER_DATABASE_URL?)",
        "ignoring unknown variable AUTHSERVER_ZZZ",
    ]


def test_status_list_expiry_must_outlast_its_ttl() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(
            {"AUTHSERVER_STATUS_LIST_TTL": "10m", "AUTHSERVER_STATUS_LIST_EXPIRY": "10m"}
        )
    _assert_one_line_naming(exc, "AUTHSERVER_STATUS_LIST_EXPIRY")
    assert "AUTHSERVER_STATUS_LIST_TTL" in str(exc.value)


def test_parse_since_reads_a_utc_date_or_a_duration_ago() -> None:
    """One reading for ``audit --since`` and ``GET /admin/audit?since=``."""
    now = 1_800_000_000.0
    assert parse_since("2026-11-23", now) == 1_795_392_000.0
    assert parse_since("2026-11-23T10:00:00Z", now) == 1_795_392_000.0 + 36_000
    assert parse_since("2026-11-23T10:00:00", now) == 1_795_392_000.0 + 36_000
    assert parse_since("1h", now) == now - 3600
    assert parse_since("7d", now) == now - 7 * 86400
    for bad in ("yesterday", "2026-13-01", "", "1w", " 1h", "1h ", "1 h", "2026-1-5"):
        with pytest.raises(ValueError, match=r"^expected a date \(2026-11-23"):
            parse_since(bad, now)
    # A duration in the right form but too long is told as such, not as a wrong form.
    for long in ("99999999999999999d", "24856d", "2147483648"):
        with pytest.raises(SinceOutOfRange, match=r"^must be at most 2147483647 seconds"):
            parse_since(long, now)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@db/x", "postgresql://u:***@db/x"),
        # An @ in the password, not written %40: hidden whole, not from its first @ on.
        (
            "postgresql://postgres:Pa@ss-S3cret@127.0.0.1:5432/a",
            "postgresql://postgres:***@127.0.0.1:5432/a",
        ),
        ("postgresql://u:S3c@ret/PW@db/x", "postgresql://u:***@db/x"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        # An @ in a query hides more than the password, never less.
        ("postgresql://u:pw@db/x?options=a@b", "postgresql://u:***@b"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
        # A ? or / in the password, not percent-encoded: still hidden whole.
        ("postgresql://u:pa?ss@host/db", "postgresql://u:***@host/db"),
        ("redis://:pa?ss@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://u:a/b@host/db", "postgresql://u:***@host/db"),
        ("sqlite:////tmp/a@b/x.db", "sqlite:////tmp/a@b/x.db"),
        # A password as a query parameter (libpq, psycopg and redis-py take it there).
        (
            "postgresql+psycopg://postgres@127.0.0.1/db?password=S3cretPw",
            "postgresql+psycopg://postgres@127.0.0.1/db?password=***",
        ),
        (
            "postgresql://h/db?sslmode=require&PassWord=a&sslpassword=b&passfile=/p",
            "postgresql://h/db?sslmode=require&PassWord=***&sslpassword=***&passfile=/p",
        ),
        ("postgresql://u:pw@h/db?pass%77ord=x", "postgresql://u:***@h/db?pass%77ord=***"),
        ("redis://cache:6379/0?password=pw", "redis://cache:6379/0?password=***"),
    ],
)
def test_redact_url_hides_the_whole_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_longest_duration_is_accepted() -> None:
    settings = Settings.from_env(
        {"AUTHSERVER_MAX_TOKEN_TTL": "2147483647", "AUTHSERVER_AUDIT_RETENTION": "2147483647"}
    )
    assert settings.max_token_ttl == 2**31 - 1


def test_an_at_sign_in_a_query_is_not_taken_for_one_in_the_password() -> None:
    url = "postgresql+psycopg://u:p@db.example?sslrootcert=/etc/x@y"
    assert Settings.from_env({"AUTHSERVER_DATABASE_URL": url}).database_url == url


def test_leading_zeros_do_not_make_a_duration_long() -> None:
    assert Settings.from_env({"AUTHSERVER_JWKS_MAX_AGE": "0000000000000060"}).jwks_max_age == 60


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # A passphrase pasted on a line of its own: named by its line, never echoed.
        ("hunter2-secret-passphrase\n", "line 1: not a NAME=VALUE line"),
        ("AUTHSERVER_ISSUER=https://a.example\n def\n", "line 2: not a NAME=VALUE line"),
        ("authserver_issuer=https://a.example\n", "line 1: not a setting name"),
        ("hunter2\x00pass=1\n", "line 1: not a setting name"),
        # A setting's own name may be shown.
        ("AUTHSERVER_ISSUR=https://a.example\n", "unknown setting AUTHSERVER_ISSUR"),
        ("AUTHSERVER_ISSUER\n", "AUTHSERVER_ISSUER has no value"),
        # The last one won in silence: an edit above an old line did nothing.
        (
            "AUTHSERVER_ISSUER=https://a.example\n\nAUTHSERVER_ISSUER=https://b.example\n",
            "AUTHSERVER_ISSUER is set twice (lines 1 and 3)",
        ),
    ],
)
def test_a_config_file_line_is_shown_only_when_it_names_a_setting(
    tmp_path: Path, content: str, expected: str
) -> None:
    config = tmp_path / "authserver.env"
    config.write_text(content)
    with pytest.raises(ConfigError) as refused:
        read_config_file(config)
    assert expected in str(refused.value)
    for secret in ("hunter2", "def", "authserver_issuer"):
        if not expected.startswith("unknown") and secret in content:
            assert secret not in str(refused.value).replace(str(config), "")


def test_a_config_file_that_is_not_a_small_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.env"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.env"
    huge.write_text("#" * (MAX_CONFIG_BYTES + 1))
    for path, words in (
        (fifo, "is not a regular file"),  # it waited for a writer, forever
        (Path("/dev/zero"), "is not a regular file"),  # it was read until memory ran out
        (tmp_path, "is not a regular file"),
        (huge, "is larger than 1024 KiB"),
    ):
        with pytest.raises(ConfigError, match=words):
            read_config_file(path)


@pytest.mark.parametrize(
    "authority",
    ["db.example", "db.example:1", "db.example:65535", "u:pw@db.example:5432", "[::1]",
     "[::1]:5432", "db.example:05432", "u:p/w@db.example:5432", "u:p?w#d@db.example",
     "u:p/w@[::1]:5432"],
)  # fmt: skip
def test_database_url_ports_in_the_range_are_taken(authority: str) -> None:
    url = f"postgresql+psycopg://{authority}/x"
    assert parse_database_url(url) == url


@pytest.mark.parametrize(
    "authority",
    ["db.example:0", "db.example:", "db.example:65536", "db.example:notaport", "db.example:\u0663",
     "db.example:" + "9" * 5000, "[::1", "[::1]5432", "u:pw@[::1]:x", "u:p/w@db.example:x"],
)  # fmt: skip
def test_database_url_ports_outside_the_range_are_refused(authority: str) -> None:
    with pytest.raises(ValueError, match=r"^not a valid SQLAlchemy URL \(its port must be"):
        parse_database_url(f"postgresql+psycopg://{authority}/x")


def test_a_flag_that_is_not_one_names_every_form_it_takes() -> None:
    # "no" is taken, and the error said "must be true or false" only.
    assert Settings.from_env({"AUTHSERVER_SCHEDULER": "no"}).scheduler is False
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"AUTHSERVER_PRODUCTION": "maybe"})
    assert str(refused.value) == (
        "AUTHSERVER_PRODUCTION: must be true or false (or 1/0, yes/no, on/off)"
    )


@pytest.mark.parametrize(
    ("password", "written"),
    [("pa/ss", "pa/ss"), ("pa?ss", "pa?ss"), ("pa#ss", "pa#ss"), ("p/a?s#s", "p/a?s#s"),
     ("pa@ss", "pa%40ss"), ("a/b@c", "a/b%40c"), ("a?b@c", "a%3Fb%40c"), ("/?#@", "%2F%3F%23%40"),
     ("a#b@c", "a#b%40c")],
)  # fmt: skip
@pytest.mark.parametrize("port", ["", ":5432"])
def test_database_url_passwords_are_read_as_sqlalchemy_reads_them(
    password: str, written: str, port: str
) -> None:
    """ "/", "?" and "#" may stand unencoded in a password (SQLAlchemy and libpq take them),
    an "@" encoded as %40: taken, and read as meant (the user, the password, the host)."""
    from sqlalchemy.engine import make_url

    url = parse_database_url(f"postgresql://u:{written}@db.example{port}/x?sslmode=require")
    read = make_url(url)
    assert (read.username, read.password, read.host, read.database) == (
        "u",
        password,
        "db.example",
        "x",
    )


@pytest.mark.parametrize(
    "user_info",
    ["u:pa@ss", "u:pa/s@s", "u:pa?s@s", "u:pa#s@s", "u:p/a?s#s@s", "u@x", "u:a/b%40c@d"],
)
def test_database_url_with_two_unencoded_at_signs_before_the_host_is_refused(
    user_info: str,
) -> None:
    """SQLAlchemy ends the password at its first "@" and takes the rest for the host. With
    a "/", "?" or "#" in the password before that "@", the check read the authority cut at
    that character, saw one "@" at most, and took a URL whose host is the password's tail."""
    with pytest.raises(ValueError, match=r"^has more than one @ before the host"):
        parse_database_url(f"postgresql://{user_info}@db.example:5432/x")


@pytest.mark.parametrize(
    ("text", "is_port"),
    [("0", True), ("1", True), ("65535", True), ("05432", True), ("65536", False), ("", False),
     ("\u0663", False), ("-1", False), ("1 ", False), ("9" * 5000, False),
     ("0" * 5000 + "1", True)],
)  # fmt: skip
def test_what_a_port_number_is(text: str, is_port: bool) -> None:
    # One rule for the database URL, the Host line, a forwarded port and a port in
    # X-Forwarded-For; a string of digits too long for int() is no port, not an error.
    assert is_port_number(text) is is_port


@pytest.mark.parametrize(
    ("environ", "overrides", "config", "expected"),
    [
        (
            {},
            {"key_rotation_interval": "10s"},
            None,
            "--key-rotation-interval (AUTHSERVER_KEY_ROTATION_INTERVAL): must be longer than "
            "AUTHSERVER_KEY_PUBLISH_AHEAD (3600s)",
        ),
        (
            {"AUTHSERVER_KEY_ROTATION_INTERVAL": "10s"},
            {},
            None,
            "AUTHSERVER_KEY_ROTATION_INTERVAL: must be longer than AUTHSERVER_KEY_PUBLISH_AHEAD "
            "(3600s)",
        ),
        (
            {},
            {},
            "AUTHSERVER_KEY_ROTATION_INTERVAL=10s\n",
            "{file}: AUTHSERVER_KEY_ROTATION_INTERVAL: must be longer than "
            "AUTHSERVER_KEY_PUBLISH_AHEAD (3600s)",
        ),
        (
            {},
            {"max_token_ttl": "100d"},
            None,
            "AUTHSERVER_AUDIT_RETENTION: must be at least --max-token-ttl "
            "(AUTHSERVER_MAX_TOKEN_TTL) (8640000s): revoking a user's or a client's tokens "
            "finds them in the audit trail",
        ),
        (
            {"AUTHSERVER_MAX_TOKEN_TTL": "1h"},
            {"default_token_ttl": "2h"},
            None,
            "--default-token-ttl (AUTHSERVER_DEFAULT_TOKEN_TTL): must not exceed "
            "AUTHSERVER_MAX_TOKEN_TTL (3600s)",
        ),
    ],
    ids=["option", "variable", "file", "the-other-by-its-option", "option-against-variable"],
)
def test_a_rule_between_settings_names_where_each_value_came_from(
    tmp_path: Path,
    environ: dict[str, str],
    overrides: dict[str, str],
    config: str | None,
    expected: str,
) -> None:
    """The rules that tie settings together named the variables even when a value came
    from an option or the configuration file, as every other setting error says."""
    config_file = None
    if config is not None:
        config_file = tmp_path / "settings.env"
        config_file.write_text(config)
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(environ, config_file=config_file, **overrides)
    assert str(exc.value) == expected.format(file=config_file)
