"""The SQL schema. Portable types only: the same tables on SQLite and PostgreSQL.

Timestamps are stored as float POSIX seconds (``Double``): the domain works in those, no
timezone conversion can creep in, and both databases compare them exactly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON
from sqlalchemy import Boolean
from sqlalchemy import Double
from sqlalchemy import Integer
from sqlalchemy import LargeBinary
from sqlalchemy import MetaData
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import false
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ClientRow(Base):
    __tablename__ = "clients"

    #: The public identifier, ``as_client_…``.
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: ``sha256$<hex>`` of the secret; never the secret itself. NULL for private_key_jwt.
    #: Unique and indexed: a Bearer-authenticating (``stream``) client is found by it.
    secret_hash: Mapped[str | None] = mapped_column(String(100), unique=True)
    audiences: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_claims: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_ttl: Mapped[int | None] = mapped_column(Integer)
    #: Every token request of this client must name a user (``sub``).
    require_sub: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    jwks_uri: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    #: The request/response dialect (``authserver.profiles``).
    profile: Mapped[str] = mapped_column(String(32), default="oauth2", server_default="oauth2")
    #: Claims every token of the client carries (operator-set).
    fixed_claims: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    #: After a rotation with a grace period: the old secret's digest and when it stops
    #: being accepted.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(100), index=True)
    previous_secret_expires_at: Mapped[float | None] = mapped_column(Double)


class SigningKeyRow(Base):
    __tablename__ = "signing_keys"

    #: RFC 7638 thumbprint.
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16), default="RS256")
    #: PKCS#8 PEM, encrypted when a passphrase is configured; NULL once destroyed.
    private_pem: Mapped[bytes | None] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    activate_at: Mapped[float] = mapped_column(Double)
    deactivate_at: Mapped[float | None] = mapped_column(Double)
    retired_at: Mapped[float | None] = mapped_column(Double)
    #: Seconds the key stays published after it stops signing, recorded with it
    #: (``SigningKey.retention``); NULL on keys from before migration 0008.
    retention: Mapped[float | None] = mapped_column(Double)


class LockRow(Base):
    """Named cross-process locks, taken with ``UPDATE … SET counter = counter + 1``.

    A row lock serialises writers on PostgreSQL and the write it implies takes SQLite's
    database write lock, so one mechanism works on both; ``counter`` doubles as the
    version number caches compare.
    """

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    counter: Mapped[int] = mapped_column(Integer, default=0)


class RevokedTokenRow(Base):
    """RFC 7009 revocations, kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class UsedAssertionRow(Base):
    """RFC 7523 §3 item 7: client assertion ``jti`` values seen, kept until they expire."""

    __tablename__ = "used_assertions"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class AuditEventRow(Base):
    """Who did what, when: admin actions and issued tokens. Never a secret or a token."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str | None] = mapped_column(String(64), index=True)
    sub: Mapped[str | None] = mapped_column(String(255), index=True)
    aud: Mapped[str | None] = mapped_column(Text)
    jti: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class StatusBlockRow(Base):
    """Token Status List leases: a block of indices a process hands out, and until when
    a token issued from it may live (tokens/statuslist.py)."""

    __tablename__ = "status_blocks"

    list_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    block: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    leased_at: Mapped[float] = mapped_column(Double)
    #: No index of this block is handed out again before this instant.
    held_until: Mapped[float] = mapped_column(Double, index=True)


class StatusRevocationRow(Base):
    """Revoked Token Status List entries: the bits set to 1 (INVALID)."""

    __tablename__ = "status_revocations"

    list_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revoked_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)
