"""The SQL schema. Portable types only: the same tables on SQLite and PostgreSQL.

Timestamps are stored as float POSIX seconds (``Double``): the domain works in those, no
timezone conversion can creep in, and both databases compare them exactly.

Core tables, not ORM classes: the stores map rows to domain models themselves
(``storage/sql/*.py``), so nothing needs an identity map or a session, and no process pays
for importing ``sqlalchemy.orm`` (about a seventh of a command's start-up).
"""

from __future__ import annotations

from sqlalchemy import JSON
from sqlalchemy import BigInteger
from sqlalchemy import Boolean
from sqlalchemy import Column
from sqlalchemy import Double
from sqlalchemy import Integer
from sqlalchemy import LargeBinary
from sqlalchemy import MetaData
from sqlalchemy import String
from sqlalchemy import Table
from sqlalchemy import Text
from sqlalchemy import false

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


CLIENTS = Table(
    "clients",
    metadata,
    #: The public identifier, ``as_client_…``.
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    #: ``sha256$<hex>`` of the secret; never the secret itself. NULL for private_key_jwt.
    #: Unique and indexed: a Bearer-authenticating (``stream``) client is found by it.
    Column("secret_hash", String(100), unique=True),
    Column("audiences", JSON, default=list, nullable=False),
    Column("scopes", JSON, default=list, nullable=False),
    Column("allowed_claims", JSON, default=list, nullable=False),
    Column("token_ttl", Integer),
    #: Every token request of this client must name a user (``sub``).
    Column("require_sub", Boolean, default=False, server_default=false(), nullable=False),
    Column("enabled", Boolean, default=True, nullable=False),
    Column("jwks", JSON(none_as_null=True)),
    Column("jwks_uri", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    #: The request/response dialect (``authserver.profiles``).
    Column("profile", String(32), default="oauth2", server_default="oauth2", nullable=False),
    #: Claims every token of the client carries (operator-set).
    Column("fixed_claims", JSON(none_as_null=True)),
    #: After a rotation with a grace period: the old secret's digest and when it stops
    #: being accepted.
    Column("previous_secret_hash", String(100), index=True),
    Column("previous_secret_expires_at", Double),
)


SIGNING_KEYS = Table(
    "signing_keys",
    metadata,
    #: RFC 7638 thumbprint.
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), default="RS256", nullable=False),
    #: PKCS#8 PEM, encrypted when a passphrase is configured; NULL once destroyed.
    Column("private_pem", LargeBinary),
    Column("public_jwk", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("activate_at", Double, nullable=False),
    Column("deactivate_at", Double),
    Column("retired_at", Double),
    #: Seconds the key stays published after it stops signing, recorded with it
    #: (``SigningKey.retention``); NULL on keys from before migration 0008.
    Column("retention", Double),
)


#: Named cross-process locks, taken with ``UPDATE … SET counter = counter + 1``.
#:
#: A row lock serialises writers on PostgreSQL and the write it implies takes SQLite's
#: database write lock, so one mechanism works on both; ``counter`` doubles as the
#: version number caches compare.
LOCKS = Table(
    "locks",
    metadata,
    Column("name", String(32), primary_key=True),
    #: 64 bits on both databases (migration 0010 on PostgreSQL): ``status_version`` moves
    #: with every revocation.
    Column("counter", BigInteger().with_variant(Integer, "sqlite"), default=0, nullable=False),
)


#: RFC 7009 revocations, kept until the token would have expired anyway.
REVOKED_TOKENS = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(128), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("revoked_at", Double, nullable=False),
    Column("expires_at", Double, index=True, nullable=False),
)


#: RFC 7523 §3 item 7: client assertion ``jti`` values seen, kept until they expire.
USED_ASSERTIONS = Table(
    "used_assertions",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", Double, index=True, nullable=False),
)


#: Per kind of record forgotten once expired (``revocations``: revoked jtis and used
#: assertion jtis; ``status``: status-list revocations), the latest ``exp`` among those
#: ever forgotten. Only ever raised. A record that expires at or before it may be gone, so
#: whatever it stood for counts as expired, whatever a clock stepped back says
#: (``storage/sql/horizons.py``).
PURGE_HORIZONS = Table(
    "purge_horizons",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("horizon", Double, nullable=False),
)


#: Who did what, when: admin actions and issued tokens. Never a secret or a token.
AUDIT_EVENTS = Table(
    "audit_events",
    metadata,
    #: 64 bits on both databases (SQLite's rowid; ``bigint`` on PostgreSQL, migration
    #: 0009): ids are never reused, and every issued token takes one.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", Double, index=True, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), index=True, nullable=False),
    Column("client_id", String(64), index=True),
    Column("sub", String(255), index=True),
    Column("aud", Text),
    Column("jti", String(128)),
    Column("detail", JSON(none_as_null=True)),
)


#: Token Status List leases: a block of indices a process hands out, and until when
#: a token issued from it may live (tokens/statuslist.py).
STATUS_BLOCKS = Table(
    "status_blocks",
    metadata,
    Column("list_id", Integer, primary_key=True, autoincrement=False),
    Column("block", Integer, primary_key=True, autoincrement=False),
    Column("leased_at", Double, nullable=False),
    #: No index of this block is handed out again before this instant.
    Column("held_until", Double, index=True, nullable=False),
)


#: Revoked Token Status List entries: the bits set to 1 (INVALID).
STATUS_REVOCATIONS = Table(
    "status_revocations",
    metadata,
    Column("list_id", Integer, primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("revoked_at", Double, nullable=False),
    Column("expires_at", Double, index=True, nullable=False),
)
