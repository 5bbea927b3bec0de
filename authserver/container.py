"""The composition root: Settings -> stores -> services.

The only module that names concrete storage classes (Warehouse's ``includeme``, Hydra's
``driver/``). Everything else receives services and store *interfaces*.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass

from authserver.audit.service import AuditService
from authserver.clients.jwks_fetch import FetchPolicy
from authserver.clients.jwks_fetch import JwksFetcher
from authserver.clients.service import ClientService
from authserver.clock import Clock
from authserver.clock import SystemClock
from authserver.errors import ConfigError
from authserver.keys.model import KeyState
from authserver.keys.model import SigningKey
from authserver.keys.plan import KeyPolicy
from authserver.keys.ring import KeyRing
from authserver.keys.service import KeyService
from authserver.keys.store import KeyStore
from authserver.profiles.registry import ProfileRegistry
from authserver.settings import Settings
from authserver.storage.files.keys import FileKeyStore
from authserver.storage.sql.audit import SqlAuditStore
from authserver.storage.sql.clients import SqlClientStore
from authserver.storage.sql.engine import Database
from authserver.storage.sql.keys import SqlKeyStore
from authserver.storage.sql.notify import PostgresChangeFeed
from authserver.storage.sql.revocations import SqlRevocationStore
from authserver.storage.sql.statuslist import SqlStatusListStore
from authserver.tokens.inspection import TokenInspector
from authserver.tokens.revocations import RevocationStore
from authserver.tokens.service import TokenService
from authserver.tokens.statuslist import StatusListService

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request, a CLI command or a scheduler tick needs."""

    settings: Settings
    clock: Clock
    db: Database
    clients: ClientService
    #: The key lifecycle commands (rotate, retire, the schedule's tick).
    keys: KeyService
    #: The cached key set: the signing key, the JWKS, verification keys.
    key_ring: KeyRing
    tokens: TokenService
    audit: AuditService
    revocations: RevocationStore
    inspector: TokenInspector
    #: Fetches and caches the JWK sets of clients registered with a ``jwks_uri``.
    jwks_fetcher: JwksFetcher
    profiles: ProfileRegistry
    status_lists: StatusListService
    #: The change feed of a PostgreSQL database (``None`` on SQLite); started by
    #: :meth:`start_change_feed` in each serving worker.
    changes: PostgresChangeFeed | None = None

    def start_change_feed(self) -> None:
        """Listen for changes made by other processes and instances (PostgreSQL only), so
        cached clients and keys need no version read per request while it is up."""
        if self.changes is not None:
            self.changes.start()

    def unit_of_work(self) -> AbstractContextManager[None]:
        """One transaction: commit at the end, roll back on error."""
        return self.db.unit_of_work()

    def recover_key_records(self) -> list[tuple[str, SigningKey]]:
        """The audit records of keys whose writer stopped before recording them
        (:meth:`KeyService.recover_records`): what ``keys rotate``/``keys retire`` and
        ``POST /admin/keys/rotate``/``…/retire`` do before their own change, and the key
        schedule and serve's start. In a unit of work of its own, even inside another (an
        admin request's): committed before the caller's change takes the key store's
        lock, never under it (keys/service.py)."""
        with self.db.lazy_unit_of_work():
            return self.keys.recover_records()

    def close(self) -> None:
        if self.changes is not None:
            self.changes.stop()
        self.db.dispose()


def check_key_store(svc: Services) -> None:
    """Refuse the file key store on a database that holds signing keys still in use.

    The SQL key store keeps its keys in the database every instance shares; the file store
    in a directory of this host. A process given the file store (the default) on such a
    database (AUTHSERVER_KEY_STORE=sql forgotten for one instance, or for a command) found
    no key there, created one and signed with it: its JWKS and tokens named keys that the
    other instances never publish, and ``keys list`` said there were no keys yet.

    :raises ConfigError: naming ``AUTHSERVER_KEY_STORE`` and how many keys the database
        holds.
    """
    if svc.settings.key_store != "file":
        return
    now = svc.clock.now()
    retention = svc.settings.key_retention
    with svc.unit_of_work():
        in_use = [
            key
            for key in SqlKeyStore(svc.db).list()
            if key.state(now, retention) is not KeyState.GONE
        ]
    if in_use:
        raise ConfigError(
            f"AUTHSERVER_KEY_STORE: is file ({svc.settings.keys_dir.absolute()}), but the "
            f"database holds {len(in_use)} signing key(s) in use, stored with "
            "AUTHSERVER_KEY_STORE=sql: set AUTHSERVER_KEY_STORE=sql, as for the servers "
            "on this database (with the file store, keys other than theirs would be used)"
        )


def check_key_directory(svc: Services) -> None:
    """Refuse a key directory that holds no keys, on a database whose audit trail records
    keys made for it: the servers' directory is elsewhere.

    ``AUTHSERVER_KEYS_DIR`` is ``keys`` by default, in the working directory. A ``keys``
    command run from another directory than the servers', with the right database, said
    "no signing keys yet" (``keys list``), or made a new key directory there, recorded
    its keys on that database's audit trail and said "published key" (``keys rotate``):
    keys no server ever used. ``serve`` is not refused: on a key directory that was lost,
    it makes a new key (docs/operations.md, "Backup and restore").

    :raises ConfigError: naming ``AUTHSERVER_KEYS_DIR`` and the directory it looked in.
    """
    if svc.settings.key_store != "file":
        return
    with svc.unit_of_work():
        if svc.keys.views() or svc.key_ring.unreadable():
            return
        made = {kid for action, kid in svc.audit.key_records() if action == "created"}
    if made:
        raise ConfigError(
            f"AUTHSERVER_KEYS_DIR: {svc.settings.keys_dir.absolute()} holds no signing "
            f"keys, but the database's audit trail records {len(made)} made for it: point "
            "--keys-dir, AUTHSERVER_KEYS_DIR or --config at the servers' key directory (a "
            "relative one is taken from the working directory); if theirs is lost, "
            "'authserver serve' makes a new key"
        )


def key_policy(settings: Settings) -> KeyPolicy:
    return KeyPolicy(
        key_size=settings.key_size,
        passphrase=settings.key_passphrase,
        rotation_interval=settings.key_rotation_interval,
        publish_ahead=settings.key_publish_ahead,
        jwks_max_age=settings.jwks_max_age,
        retention=settings.key_retention,
        cache_seconds=settings.key_cache_seconds,
    )


def build(settings: Settings, clock: Clock | None = None, *, readonly: bool = False) -> Services:
    """Wire the services for *settings*. Opens no connection yet and creates no key
    directory (the file store makes it when it writes a key); with *readonly*, a missing
    one is never created (commands that only read)."""
    clock = clock or SystemClock()
    db = Database(settings.database_url)
    changes = (
        PostgresChangeFeed(settings.database_url, db.connect_args)
        if db.engine.dialect.name == "postgresql"
        else None
    )
    key_store: KeyStore = (
        SqlKeyStore(db)
        if settings.key_store == "sql"
        else FileKeyStore(settings.keys_dir, create=not readonly)
    )
    audit = AuditService(SqlAuditStore(db), clock, retention=settings.audit_retention)
    # Only the SQL key store announces its changes; the file store keeps its version check.
    key_ring = KeyRing(
        key_store,
        clock,
        key_policy(settings),
        changes=changes if settings.key_store == "sql" else None,
    )
    revocations = SqlRevocationStore(db)
    profiles = ProfileRegistry.load()
    status_lists = StatusListService(
        SqlStatusListStore(db),
        key_ring,
        clock,
        issuer=settings.issuer,
        ttl=settings.status_list_ttl,
        expiry=settings.status_list_expiry,
        max_token_ttl=settings.max_token_ttl,
        leeway=settings.key_retention_leeway,
        audit=audit,
    )
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        clients=ClientService(
            SqlClientStore(db),
            clock,
            max_token_ttl=settings.max_token_ttl,
            audit=audit,
            allow_http_jwks_uri=not settings.production,
            profiles=profiles,
            single_audience=profiles.single_audience(),
            # A disabled or deleted client's live tokens are revoked in its status lists.
            on_withdrawn=lambda client_id: status_lists.revoke_issued(client_id=client_id),
            changes=changes,
        ),
        keys=KeyService(
            key_store, key_ring, clock, audit, clock_skew=settings.key_retention_leeway
        ),
        key_ring=key_ring,
        tokens=TokenService(
            key_ring,
            clock,
            issuer=settings.issuer,
            default_ttl=settings.default_token_ttl,
            max_ttl=settings.max_token_ttl,
            status_lists=status_lists,
        ),
        audit=audit,
        revocations=revocations,
        inspector=TokenInspector(
            key_ring, revocations, status_lists, clock, issuer=settings.issuer
        ),
        jwks_fetcher=JwksFetcher(
            FetchPolicy(
                production=settings.production,
                allow_private=settings.jwks_uri_allow_private,
            ),
            clock=clock,
        ),
        profiles=profiles,
        status_lists=status_lists,
        changes=changes,
    )
