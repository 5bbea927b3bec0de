"""Token Status List (draft-ietf-oauth-status-list-17) for access tokens: offline revocation.

Every access token carries ``status: {"status_list": {"idx": N, "uri": U}}`` (§6.2); the
list at ``U`` is a signed ``statuslist+jwt`` (§5.1) whose bit ``N`` is 1 once the token is
revoked (§7: 0x00 VALID, 0x01 INVALID; one bit per token). docs/status-lists.md describes
the URL layout, the ``ttl`` and what verifiers do with them.

**Index allocation** costs no database round trip per token: each process leases a
*block* of :data:`BLOCK_SIZE` consecutive indices in one committed transaction and hands
them out from memory. A lease is used for at most :data:`LEASE_WINDOW` seconds, so every
token issued from it expires before ``leased_at + LEASE_WINDOW + max_token_ttl``; the lease
is recorded as held until then plus the clock-skew leeway plus the lists' ``exp - iat``
(and shortened, when the process moves on to its next block, to the latest ``exp`` it
actually handed out plus the same). The lists built once a token has expired (beyond the
leeway) show its bit as 0, and a copy built before may be relied on until its own ``exp``:
so a block is leased again only after that moment, an index is reused only once the token
that held it has expired (§12.3 "double allocation") and no list a verifier may still use
shows that token's bit, and the number of indices in use is bounded by ``issue rate *
(longest TTL + LEASE_WINDOW + leeway + list expiry)`` plus at most one block per process
per ``LEASE_WINDOW``.

**Revocation** inserts ``(list, idx)`` rows and bumps a version counter that every
instance reads before serving a list, so a revocation anywhere is in the next list any
instance serves. Revoking "every live token" of a user or a client reads which indices
they were given from the ``token.issued`` audit records.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
import weakref
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from joserfc import jwt

from authserver import process
from authserver.audit.model import AuditQuery
from authserver.audit.service import AuditService
from authserver.clock import Clock
from authserver.errors import InvalidInput
from authserver.errors import KeyStoreError
from authserver.keys.crypto import ALG
from authserver.keys.crypto import SIGNING
from authserver.keys.ring import KeyRing
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import check_identity

#: §5.1: the ``typ`` of a Status List Token in JWT format.
STATUS_LIST_TYP = "statuslist+jwt"
#: §8.1: the media type of the response (and of the ``Accept`` a client sends).
MEDIA_TYPE = "application/statuslist+jwt"
#: Where the lists live, below the issuer: ``<issuer>/statuslists/<list id>``; the
#: aggregation document (§9) is ``<issuer>/statuslists``.
PATH = "/statuslists"
#: §4.1: bits per token. Only VALID (0) and INVALID (1) are used: revocation is final.
BITS = 1
VALID = 0x00
INVALID = 0x01
#: Indices a process leases at once.
BLOCK_SIZE = 1024
#: Blocks per list: 131,072 tokens per list, 16 KiB before compression.
BLOCKS_PER_LIST = 128
LIST_SIZE = BLOCK_SIZE * BLOCKS_PER_LIST
#: Longest time (seconds) a process hands out indices from one lease.
LEASE_WINDOW = 600.0


@dataclass(frozen=True, order=True)
class Block:
    """A leased range of indices: ``[block * BLOCK_SIZE, (block + 1) * BLOCK_SIZE)``."""

    list_id: int
    block: int

    @property
    def first(self) -> int:
        return self.block * BLOCK_SIZE


@dataclass(frozen=True)
class StatusEntry:
    """One token's place in a list, and when that token expires."""

    list_id: int
    idx: int
    expires_at: float


class StatusListStore(Protocol):
    """Where leases and revoked indices live, shared by every process and instance."""

    def lease_block(
        self, now: float, hold_until: float, release: tuple[Block, float] | None
    ) -> Block:
        """Lease a block nobody holds after *now* (the lowest; a new one when none is free)
        and record it held until *hold_until*; first shorten *release*'s hold to its
        time. Commits in its own transaction before returning, whatever the caller's unit
        of work does: an index must never be handed out from a lease that could roll back.
        Clears the revoked bits of a block it leases again, raising the horizon to the
        latest ``exp`` among them."""

    def revoke(self, entries: Iterable[StatusEntry], now: float) -> int:
        """Mark *entries* revoked (idempotent) in the caller's unit of work; bump the
        version when any is new. Returns how many were new."""

    def revoked_indices(self, list_id: int, *, live_at: float | None = None) -> list[int]:
        """The revoked indices of *list_id*; with *live_at*, only those of tokens that
        expire at or after it (an expired token's bit goes back to 0 in the lists built
        after that, well before its index may be leased again)."""

    def is_revoked(self, list_id: int, idx: int, expires_at: float | None = None) -> bool:
        """Whether the entry is revoked; with *expires_at* (its token's ``exp``), also
        when that is at or before the horizon: a purge or a new lease of its block, by a
        clock later than the reader's, may have cleared its bit."""

    def list_ids(self) -> list[int]:
        """Every list that has ever had a lease (ascending)."""

    def version(self) -> int:
        """A number that changes whenever a revocation is added or a list created."""

    def issued(
        self,
        *,
        since: float,
        sub: str | None = None,
        client_id: str | None = None,
        until: float | None = None,
    ) -> list[StatusEntry]:
        """Status entries of the tokens issued since *since* (and up to *until*) to *sub*
        and/or *client_id*, from the ``token.issued`` audit records."""

    def purge(self, now: float) -> int:
        """Forget revocations of tokens that expired before *now* and raise the horizon to
        the latest ``exp`` among them (in the same unit of work); returns how many."""


def encode_list(revoked: Iterable[int], size: int = LIST_SIZE) -> str:
    """§4.1-4.2: the ``lst`` value: one bit per index, index 0 in the least significant bit
    of byte 0, DEFLATE in the ZLIB format at the highest level, base64url without padding."""
    array = bytearray(size // 8)
    for idx in revoked:
        array[idx >> 3] |= INVALID << (idx & 7)
    compressed = zlib.compress(bytes(array), level=9)
    return base64.urlsafe_b64encode(compressed).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class PublishedList:
    """A signed list as served: the JWT, its ETag, and when it was built (``iat``)."""

    list_id: int
    token: bytes
    etag: str
    #: The token gzip-compressed once (draft §8.2: the response SHOULD use a content coding).
    gzipped: bytes
    issued_at: int
    ttl: int
    version: int
    kid: str

    def max_age(self, now: float) -> int:
        """Seconds a cache may keep this copy: what is left of its ``ttl``."""
        return max(0, int(self.issued_at + self.ttl - now))


@dataclass
class _Lease:
    block: Block
    next_offset: int
    until: float  # hand out indices before this instant (clock seconds)
    max_exp: float


def revocable_sub(sub: object, *, what: str = "sub") -> str:
    """*sub* if it is a user id a token can carry (the token request refuses the same
    values), so that revoking its tokens can mean anything; else :class:`InvalidInput`
    naming *what* (the CLI's ``--sub``). The CLI and the admin API check it before they
    wait for the audit batches; :meth:`StatusListService.revoke_user` checks it too."""
    if sub is None:
        raise InvalidInput(f"{what} is required")
    try:
        return check_identity(sub, "sub", what=what)
    except InvalidValue as exc:
        raise InvalidInput(str(exc)) from None


class StatusListService:
    """Allocates status entries, publishes signed lists and records revocations."""

    def __init__(
        self,
        store: StatusListStore,
        keys: KeyRing,
        clock: Clock,
        *,
        issuer: str,
        ttl: int,
        expiry: int,
        max_token_ttl: int,
        leeway: int,
        audit: AuditService | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._keys = keys
        self._clock = clock
        self.issuer = issuer
        self.ttl = ttl
        self.expiry = expiry
        self._max_token_ttl = max_token_ttl
        self._leeway = leeway
        self._lease: _Lease | None = None
        self._lease_lock = threading.Lock()
        self._published: dict[int, PublishedList] = {}
        self._known: tuple[int, frozenset[int]] | None = None
        self._publish_lock = threading.Lock()
        # A lease belongs to one process: a forked child must lease its own block, or parent
        # and child would hand out the same indices.
        # Weakly: the registration outlives this service (tests build many).
        forget = weakref.WeakMethod(self._forget_lease)

        def after_fork_in_child() -> None:
            method = forget()
            if method is not None:
                method()

        process.after_fork(after_fork_in_child)

    # -- URLs ---------------------------------------------------------------------------

    @property
    def aggregation_uri(self) -> str:
        return f"{self.issuer}{PATH}"

    def uri(self, list_id: int) -> str:
        return f"{self.issuer}{PATH}/{list_id}"

    def list_id_of(self, uri: Any) -> int | None:
        """The list id in one of our list URIs, ``None`` for anything else."""
        prefix = f"{self.issuer}{PATH}/"
        if not isinstance(uri, str) or not uri.startswith(prefix):
            return None
        tail = uri[len(prefix) :]
        if not tail.isascii() or not tail.isdigit() or len(tail) > 9:
            return None
        return int(tail)

    # -- allocation (the token path) ------------------------------------------------------

    def allocate(self, expires_at: float) -> StatusEntry:
        """The next free index for a token expiring at *expires_at*; a database round trip
        only when this process's lease is used up (every :data:`BLOCK_SIZE` tokens or
        :data:`LEASE_WINDOW` seconds)."""
        now = self._clock.now()
        with self._lease_lock:
            lease = self._lease
            if lease is None or lease.next_offset >= BLOCK_SIZE or now >= lease.until:
                lease = self._lease = self._new_lease(now, lease)
            idx = lease.block.first + lease.next_offset
            lease.next_offset += 1
            lease.max_exp = max(lease.max_exp, expires_at)
            return StatusEntry(lease.block.list_id, idx, expires_at)

    def _new_lease(self, now: float, old: _Lease | None) -> _Lease:
        # Every token issued from the new lease is issued before now + LEASE_WINDOW and
        # lives at most max_token_ttl; the leeway covers clocks of other instances. Past
        # that, a list built before its tokens expired may still show their revoked bits
        # to a verifier for up to the list's exp - iat (``expiry``, longer than its ttl):
        # the block is held that much longer, or a new token given one of its indices
        # would read as revoked in the copies verifiers hold.
        hold_until = now + LEASE_WINDOW + self._max_token_ttl + self._leeway + self.expiry
        release = None
        if old is not None:
            # Its tokens all expire by max_exp (a lease that issued nothing: by now).
            last_exp = old.max_exp if old.max_exp > float("-inf") else now
            release = (old.block, last_exp + self._leeway + self.expiry)
        block = self._store.lease_block(now, hold_until, release)
        return _Lease(block, 0, now + LEASE_WINDOW, float("-inf"))

    def _forget_lease(self) -> None:
        self._lease = None
        self._lease_lock = threading.Lock()

    def claim(self, entry: StatusEntry) -> dict[str, Any]:
        """§6.2: the ``status`` claim of the token holding *entry*."""
        return {"status_list": {"idx": entry.idx, "uri": self.uri(entry.list_id)}}

    # -- revocation -----------------------------------------------------------------------

    def entry_of(self, claims: dict[str, Any]) -> StatusEntry | None:
        """The status entry a token of ours names, ``None`` if it names none of ours."""
        status = claims.get("status")
        ref = status.get("status_list") if isinstance(status, dict) else None
        if not isinstance(ref, dict):
            return None
        list_id, idx, exp = self.list_id_of(ref.get("uri")), ref.get("idx"), claims.get("exp")
        if list_id is None or type(idx) is not int or not 0 <= idx < LIST_SIZE:
            return None
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return None
        return StatusEntry(list_id, idx, float(exp))

    def revoke_token(self, claims: dict[str, Any]) -> bool:
        """Set the bit of the token with these (verified) claims; in the caller's unit of
        work. ``False`` when it names no entry of ours (a token from before status lists)."""
        entry = self.entry_of(claims)
        if entry is None:
            return False
        self._store.revoke([entry], self._clock.now())
        return True

    def revoke_issued(
        self,
        *,
        sub: str | None = None,
        client_id: str | None = None,
        issued_until: float | None = None,
    ) -> int:
        """Revoke every live token issued to *sub* (of *client_id* when given) or to
        *client_id* (up to *issued_until* when given); returns how many entries were
        newly revoked."""
        return self._revoke_issued(sub, client_id, issued_until, self._longest_lifetime())

    def _revoke_issued(
        self, sub: str | None, client_id: str | None, issued_until: float | None, lifetime: float
    ) -> int:
        if sub is None and client_id is None:
            raise ValueError("name a sub, a client_id or both")
        now = self._clock.now()
        # A token issued longer ago than the longest lifetime (plus skew) has expired.
        since = now - lifetime
        entries = [
            e
            for e in self._store.issued(
                since=since, sub=sub, client_id=client_id, until=issued_until
            )
            if e.expires_at + self._leeway > now
        ]
        return self._store.revoke(entries, now) if entries else 0

    def _longest_lifetime(self) -> float:
        """How long ago a token still live can have been issued: this process's longest
        token lifetime plus the leeway, or longer where the signing keys record a longer
        one. The servers that sign record theirs with each key (``SigningKey.retention``),
        and a command run with a shorter ``AUTHSERVER_MAX_TOKEN_TTL`` than theirs must
        still reach their tokens. A key store this process cannot read (an operator
        account kept away from the private keys) records nothing here: the command's own
        setting applies, and the servers' reconcile catches up within a minute."""
        own = float(self._max_token_ttl + self._leeway)
        try:
            keys = self._keys.read()
        except KeyStoreError:
            return own
        return max([own, *(k.retention for k in keys if k.retention is not None)])

    #: Operator actions that revoke "every live token" of a user or a client.
    WITHDRAWALS = ("tokens.revoked", "client.disabled", "client.deleted")
    #: How far back :meth:`reconcile` looks for them (seconds).
    RECONCILE_WINDOW = 600.0
    #: How long after a client's disable or delete a worker may still have issued it a
    #: token: every worker of every instance refuses a changed client within a second
    #: (its cache is checked per request, or told through the change feed), and a token
    #: may be issued on that check's heels. So a client's withdrawal reaches the tokens
    #: issued up to this long after it; a user's reaches only those issued before it (the
    #: user may get new tokens at once).
    CLIENT_CHANGE_REACH = 2.0

    def reconcile(self) -> int:
        """Apply recent withdrawals again, to the tokens issued before each of them (a
        client's: up to :data:`CLIENT_CHANGE_REACH` after it).

        ``serve`` writes ``token.issued`` audit records in batches (every 0.25 s, longer
        while the database is unreachable), so a token issued just before a withdrawal may
        not have been on record when the withdrawal read the records; and a worker that
        had not yet seen a client's disable may issue it a token just after. The scheduler
        calls this on every tick; it sets the bits such a token missed. Returns how many."""
        if self._audit is None:
            return 0
        since = self._clock.now() - self.RECONCILE_WINDOW
        revoked = 0
        lifetime: float | None = None  # read once, and only when there is a withdrawal
        for action in self.WITHDRAWALS:
            for event in self._audit.query(AuditQuery(action=action, since=since, limit=1000)):
                if event.sub is None and event.client_id is None:
                    continue
                if lifetime is None:
                    lifetime = self._longest_lifetime()
                until = event.at
                if action != "tokens.revoked":
                    until += self.CLIENT_CHANGE_REACH
                revoked += self._revoke_issued(event.sub, event.client_id, until, lifetime)
        return revoked

    def revoke_user(self, sub: str, *, client_id: str | None = None) -> int:
        """The operator action: revoke every live token of *sub* (issued to *client_id*
        when given) and record it in the audit trail; returns how many were revoked.

        :raises InvalidInput: *sub* is not a user id a token can carry
            (:func:`revocable_sub`).
        """
        revocable_sub(sub)
        revoked = self.revoke_issued(sub=sub, client_id=client_id)
        if self._audit is not None:
            self._audit.record(
                None, "tokens.revoked", client_id=client_id, sub=sub, revoked=revoked
            )
        return revoked

    def is_revoked(self, claims: dict[str, Any]) -> bool:
        """Whether the token's bit is set, or may have been cleared by a clock later than
        this one (the store's horizon: a clock stepped back reads its ``exp`` as ahead)."""
        entry = self.entry_of(claims)
        return entry is not None and self._store.is_revoked(
            entry.list_id, entry.idx, entry.expires_at
        )

    def purge(self) -> int:
        # Keep a revoked bit while a verifier's leeway might still accept the token.
        return self._store.purge(self._clock.now() - self._leeway)

    # -- publication ----------------------------------------------------------------------

    def list_ids(self) -> list[int]:
        """The lists there are (cached until the version changes)."""
        version = self._store.version()
        known = self._known
        if known is None or known[0] != version:
            known = self._known = (version, frozenset(self._store.list_ids()))
        return sorted(known[1])

    def published(self, list_id: int) -> PublishedList | None:
        """The signed list *list_id* as it stands now, ``None`` if there is no such list.

        Built at most once per ``ttl`` per process, and again at once after a revocation
        anywhere (the version counter) or when the signing key changed."""
        version = self._store.version()
        now = self._clock.now()
        kid, key = self._keys.current()
        cached = self._published.get(list_id)
        if (
            cached is not None
            and cached.version == version
            and cached.kid == kid
            and now < cached.issued_at + self.ttl
        ):
            return cached
        known = self._known
        if known is None or known[0] != version:
            known = self._known = (version, frozenset(self._store.list_ids()))
        if list_id not in known[1]:
            return None
        # Every process (each worker, each instance) signs the same bytes for the same
        # list in the same ttl window: iat is the window's start and the bits are read as
        # of it (RS256 signatures are deterministic), so the strong ETag is one across
        # workers and a verifier's If-None-Match gets its 304 whichever worker answers.
        # With iat = now, each worker's copy differed and most conditional GETs got 200.
        issued_at = int(now) // self.ttl * self.ttl
        # The bits of tokens expired (beyond the leeway) are 0 again: their indices may be
        # leased again once no list showing them can be relied on any more (_new_lease).
        # Read as of the window's start, a bit is shown at most one ttl longer, by lists
        # whose exp comes no later than a list built at that token's expiry would have.
        revoked = self._store.revoked_indices(list_id, live_at=issued_at - self._leeway)
        claims = {
            "iss": self.issuer,
            # §5.1: sub MUST be the URI of the Status List Token (the token's status uri).
            "sub": self.uri(list_id),
            "iat": issued_at,
            # §12.8: exp bounds how long a verifier may rely on this copy when it cannot
            # fetch a newer one; ttl says when to look for one.
            "exp": issued_at + self.expiry,
            "ttl": self.ttl,
            "status_list": {"bits": BITS, "lst": encode_list(revoked)},
        }
        header = {"alg": ALG, "typ": STATUS_LIST_TYP, "kid": kid}
        token = jwt.encode(header, claims, key, registry=SIGNING).encode("ascii")
        built = PublishedList(
            list_id=list_id,
            token=token,
            etag=hashlib.sha256(token).hexdigest()[:32],
            # mtime 0: the same bytes in every process, as the token is (one ETag).
            gzipped=gzip.compress(token, mtime=0),
            issued_at=issued_at,
            ttl=self.ttl,
            version=version,
            kid=kid,
        )
        with self._publish_lock:
            if len(self._published) > 4096:  # lists are few; stay bounded whatever is asked
                self._published.clear()
            self._published[list_id] = built
        return built
