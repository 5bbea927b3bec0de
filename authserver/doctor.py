"""``authserver doctor``: a configuration checked end to end, each finding in plain words.

Each check reads; none creates a database, a schema or a key. The checks run in order and
a check whose ground is missing (no database, so no key store in it) says so instead of
failing again with a less helpful cause.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from authserver_verifier.verifier import metadata_urls

from authserver import container
from authserver.errors import AuthServerError
from authserver.errors import ConfigError
from authserver.errors import StorageError
from authserver.keys import crypto
from authserver.keys.model import KeyState
from authserver.records import UnreadableRecord
from authserver.settings import METRICS_IS_ADMIN
from authserver.settings import SECRET_ENV
from authserver.settings import Settings
from authserver.settings import guessable_token
from authserver.settings import read_config_file
from authserver.settings import redact_url
from authserver.storage.sql import migrate
from authserver.storage.sql.engine import Database
from authserver.storage.sql.engine import sqlite_file

Status = Literal["ok", "warning", "problem"]

#: How long the issuer check waits for the server's answer.
HTTP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str


_Add = Callable[[Finding], None]


def run(
    settings: Settings, *, check_issuer: bool = True, config_file: str | None = None
) -> list[Finding]:
    """Every finding for *settings* (read with *config_file*, when one was named), in the
    order an operator would fix them."""
    findings: list[Finding] = []
    add = findings.append
    add(Finding("configuration", "ok", settings.describe()))
    if config_file:
        _config_file(config_file, add)
    svc = container.build(settings, readonly=True)
    plaintext: int | None = None
    try:
        # Before the first connection narrows it (storage/sql/engine.py): the report says
        # what the operator had.
        mode_before = _file_mode(sqlite_file(svc.db.url))
        schema_ok = _database(svc.db, add, mode_before)
        if settings.key_store == "sql" and not schema_ok:
            add(Finding("key store", "problem", "the key store is in the database, see above"))
        else:
            plaintext = _keys(svc, settings, add, check_database=schema_ok)
        if schema_ok:
            _clients(svc, add)
    finally:
        svc.close()
    _passphrase(settings, add, plaintext)
    _admin_token(settings, add)
    _rate_limits(settings, add)
    if check_issuer:
        _issuer(settings, add)
    return findings


#: Secret settings that are URLs: secret only when they hold a password.
_URL_SECRETS = ("AUTHSERVER_DATABASE_URL", "AUTHSERVER_RATE_LIMIT_STORAGE")


def _config_file(path: str, add: _Add) -> None:
    """A configuration file holding a secret (the key passphrase, an operator token, a
    password in a URL) must be its owner's only: other users of the machine who read it
    can decrypt the keys or use the admin API. doctor reported a database file others may
    read, and said nothing of the file that holds the passphrase of the keys."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        values = read_config_file(path)
    except (OSError, ConfigError):
        return  # reading the settings reported it already
    secrets = [
        name
        for name, value in values.items()
        if name in SECRET_ENV and (name not in _URL_SECRETS or redact_url(value) != value)
    ]
    if secrets and mode & 0o077:
        add(
            Finding(
                "configuration file",
                "problem",
                f"{path} holds {', '.join(secrets)} and other users may read it "
                f"(mode {mode:o}): chmod 600 {path}",
            )
        )


def _database(db: Database, add: _Add, mode_before: int | None) -> bool:
    if migrate.database_missing(db):
        add(
            Finding(
                "database",
                "problem",
                f"no database file at {sqlite_file(db.url)}: run 'authserver db "
                "upgrade' or start 'authserver serve', or point --database-url at yours",
            )
        )
        return False
    try:
        current = migrate.current_revision(db)
    except (StorageError, ConfigError) as exc:  # ConfigError: a database authserver refuses
        add(Finding("database", "problem", str(exc)))
        return False
    add(Finding("database", "ok", "reachable"))
    _private_file(db, add, mode_before)
    head = migrate.head_revision()
    if current == head:
        add(Finding("schema", "ok", f"migrated (revision {head})"))
        return True
    if current is None:
        add(Finding("schema", "problem", "empty: run 'authserver db upgrade'"))
    elif current not in migrate.known_revisions():
        add(Finding("schema", "problem", str(migrate.unknown_revision(current, db.url))))
    else:
        add(
            Finding(
                "schema",
                "problem",
                f"at revision {current}, this version needs {head}: run 'authserver db upgrade'",
            )
        )
    return False


def _file_mode(path: str | None) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode) if path else None
    except OSError:
        return None


def _private_file(db: Database, add: _Add, mode_before: int | None) -> None:
    """A SQLite file others may read: it holds the clients, and the private keys with the
    SQL key store. Every command narrows a file its user owns at the first connection;
    one it cannot narrow (another user's, reached through a link) keeps its mode."""
    path = sqlite_file(db.url)
    mode = _file_mode(path)
    if mode is None:
        return
    if mode & 0o077:
        add(
            Finding(
                "database file",
                "warning",
                f"{path} is readable or writable by other users (mode {mode:o}): chmod 600 {path}",
            )
        )
    elif mode_before is not None and mode_before & 0o077:
        add(
            Finding(
                "database file",
                "warning",
                f"{path} was readable or writable by other users (mode {mode_before:o}): "
                f"narrowed to its owner (mode {mode:o})",
            )
        )


def _keys(
    svc: container.Services, settings: Settings, add: _Add, *, check_database: bool
) -> int | None:
    """Check the key store; return how many stored private keys are not encrypted, or
    ``None`` when it cannot be read."""
    try:
        if check_database:  # a database that is missing or not migrated holds no keys
            container.check_key_store(svc)
            container.check_key_directory(svc)
        with svc.unit_of_work():
            views = svc.keys.views()
            svc.key_ring.check_readable()
            unreadable = svc.key_ring.unreadable()
    except StorageError as exc:
        add(Finding("key store", "problem", f"unreadable: {exc}"))
        return None
    except AuthServerError as exc:
        add(Finding("key store", "problem", str(exc)))
        return None
    except OSError as exc:
        add(Finding("key store", "problem", f"unreadable ({type(exc).__name__})"))
        return None
    where = f"{settings.keys_dir}" if settings.key_store == "file" else "the database"
    if settings.key_store == "file" and not os.path.isdir(settings.keys_dir):
        add(
            Finding(
                "key store",
                "warning",
                f"{settings.keys_dir} does not exist (is AUTHSERVER_KEYS_DIR right? "
                "'authserver serve' creates it there)",
            )
        )
    else:
        add(Finding("key store", "ok", f"readable ({len(views)} keys in {where})"))
    if unreadable:
        # Skipped everywhere (never signed with, never published): an operator should
        # still hear of a record that a bad edit or a disk error left unreadable.
        add(
            Finding(
                "key store",
                "warning",
                f"{len(unreadable)} unreadable key record(s) skipped: {_named(unreadable)} "
                "('authserver keys list' shows them)",
            )
        )
    current = [v for v in views if v.state is KeyState.CURRENT]
    if current:
        add(Finding("signing key", "ok", f"current key {current[0].key.kid}"))
    else:
        add(
            Finding(
                "signing key",
                "problem",
                "no current signing key: 'authserver serve' creates the first one, "
                "'authserver keys rotate' adds one",
            )
        )
    pems = [v.key.private_pem for v in views if v.key.private_pem is not None]
    return sum(not crypto.is_encrypted(pem) for pem in pems)


def _clients(svc: container.Services, add: _Add) -> None:
    """Client rows that cannot be read: those clients fail to authenticate (401) and
    nothing else says why."""
    try:
        with svc.unit_of_work():
            unreadable = svc.clients.unreadable()
    except AuthServerError as exc:
        add(Finding("clients", "problem", f"unreadable: {exc}"))
        return
    if unreadable:
        add(
            Finding(
                "clients",
                "warning",
                f"{len(unreadable)} unreadable client record(s), refused at every request: "
                f"{_named(unreadable)} ('authserver clients list' shows them)",
            )
        )


def _named(records: list[UnreadableRecord], shown: int = 5) -> str:
    """The names of the first *shown* unreadable *records*, and how many more there are."""
    names = ", ".join(str(record.name) for record in records[:shown])
    return names + (f" and {len(records) - shown} more" if len(records) > shown else "")


def _passphrase(settings: Settings, add: _Add, plaintext: int | None) -> None:
    if settings.key_passphrase and plaintext:
        add(
            Finding(
                "passphrase",
                "warning",
                f"AUTHSERVER_KEY_PASSPHRASE is set, but {plaintext} stored private key(s) "
                "are not encrypted yet (made before it was set): 'authserver serve' "
                "encrypts them at start",
            )
        )
    elif settings.key_passphrase:
        add(Finding("passphrase", "ok", "private keys are encrypted at rest"))
    elif plaintext is None:
        # The key store could not be read (keys encrypted with a passphrase not given
        # here, for one): nothing is known of how its keys are stored.
        add(Finding("passphrase", "warning", "AUTHSERVER_KEY_PASSPHRASE is not set"))
    else:
        add(
            Finding(
                "passphrase",
                "warning",
                "AUTHSERVER_KEY_PASSPHRASE is not set: private keys are stored unencrypted",
            )
        )


def _admin_token(settings: Settings, add: _Add) -> None:
    for check, env, token, off in (
        ("admin token", "AUTHSERVER_ADMIN_TOKEN", settings.admin_token, "the admin API is off"),
        ("metrics token", "AUTHSERVER_METRICS_TOKEN", settings.metrics_token, "/metrics is off"),
    ):
        if token is None:
            add(Finding(check, "ok", f"not set: {off}"))
        elif why := guessable_token(env, token):
            add(Finding(check, "problem", why))
        else:
            add(Finding(check, "ok", f"set ({len(token)} characters)"))
    if settings.admin_token is not None and settings.admin_token == settings.metrics_token:
        add(Finding("metrics token", "problem", METRICS_IS_ADMIN))


def _rate_limits(settings: Settings, add: _Add) -> None:
    """The failed-authentication limits' storage, reached as serve reaches it at start
    (where an unreachable one stops it): doctor said "No problems found" for a
    configuration that serve then refused."""
    if settings.auth_failures_per_client is None and settings.auth_failures_per_address is None:
        add(Finding("rate limits", "ok", "off: failed authentications are not limited"))
        return
    uri = settings.rate_limit_storage
    if uri == "memory://":
        add(
            Finding(
                "rate limits",
                "ok",
                "memory://: each worker process counts on its own (Redis for one limit "
                "across workers and instances)",
            )
        )
        return
    # Here, not at the top: the limits package costs 0.15 s of start-up.
    from authserver.limits_storage import check_storage

    try:
        check_storage(settings)
    except ConfigError as exc:
        add(Finding("rate limits", "problem", str(exc)))
        return
    add(Finding("rate limits", "ok", f"{redact_url(uri)} reachable"))


def _fetch_metadata(url: str) -> tuple[object, str | None]:
    """The JSON document at *url*, or ``None`` and why not."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
            return json.loads(response.read(1_000_000)), None
    except urllib.error.HTTPError as exc:
        return None, f"{url} answered HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        return None, (
            f"cannot reach {url}: {reason} (is 'authserver serve' running, and is "
            "AUTHSERVER_ISSUER the URL verifiers use?)"
        )
    except (OSError, ValueError) as exc:
        return None, f"{url}: no metadata document ({type(exc).__name__})"


def _issuer(settings: Settings, add: _Add) -> None:
    issuer = settings.issuer
    # The first location that answers, as verifiers look (a proxy may route only the
    # issuer's path here); the last one's failure if none does.
    for url in metadata_urls(issuer):
        metadata, problem = _fetch_metadata(url)
        if problem is None:
            break
    if problem is not None:
        add(Finding("issuer", "problem", problem))
        return
    served = metadata.get("issuer") if isinstance(metadata, dict) else None
    if served != issuer:
        add(
            Finding(
                "issuer",
                "problem",
                f"the server at {issuer} says its issuer is {served!r}: tokens it signs will "
                "not match this configuration (AUTHSERVER_ISSUER differs between them)",
            )
        )
        return
    add(Finding("issuer", "ok", f"{issuer} answers and its metadata names it"))
