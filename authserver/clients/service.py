"""Client registration and management: the one place the CLI and the admin API call."""

from __future__ import annotations

import builtins
import dataclasses
import logging
from collections.abc import Callable
from collections.abc import Container
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from authserver.audit.service import AuditService
from authserver.cache import BoundedCache
from authserver.cache import ChangeFeed
from authserver.clients import secrets as client_secrets
from authserver.clients.jwks import check_distinct_kids
from authserver.clients.jwks import check_jwks_uri
from authserver.clients.jwks import validate_public_jwks
from authserver.clients.model import DEFAULT_PROFILE
from authserver.clients.model import Client
from authserver.clients.model import ClientId
from authserver.clients.model import ClientPolicy
from authserver.clients.model import is_valid_scope_token
from authserver.clients.store import ClientStore
from authserver.clock import Clock
from authserver.errors import InvalidInput
from authserver.errors import not_found
from authserver.records import ReportOnce
from authserver.records import UnreadableRecord
from authserver.vocabulary import BIDI_CONTROLS
from authserver.vocabulary import CLAIM_NAME_RULE
from authserver.vocabulary import MAX_CLIENT_NAME_LENGTH
from authserver.vocabulary import MAX_REGISTERED_BYTES
from authserver.vocabulary import MAX_URI_LENGTH
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import check_claim_values
from authserver.vocabulary import check_text
from authserver.vocabulary import has_control
from authserver.vocabulary import has_visible
from authserver.vocabulary import is_server_claim
from authserver.vocabulary import is_utf8
from authserver.vocabulary import is_valid_claim_name
from authserver.vocabulary import registered_size
from authserver.vocabulary import same_json

#: The longest grace period of a rotated secret: long enough for a weekly deploy cycle
#: (a peer vendor keeps the old secret 7 days), short enough that a leaked old secret
#: does not live on indefinitely.
MAX_SECRET_GRACE = 30 * 86400

log = logging.getLogger(__name__)

_UNSET: Any = object()
#: Most fixed claims per client.
MAX_FIXED_CLAIMS = 32
#: Most allowed claim names per client: more than a request's 4096 bytes of claims could
#: name at once, and each is checked on every token request and kept in every cache.
MAX_ALLOWED_CLAIMS = 256
#: Most clients one process keeps in memory (least recently used evicted first).
CACHE_SIZE = 10_000
#: Most unknown client ids one process remembers as unknown, apart from the clients: ids
#: that anyone can send never push a registered client out of its cache.
UNKNOWN_CACHE_SIZE = 1_000
#: The longest client id a store holds (the ``clients.client_id`` column).
MAX_CLIENT_ID_LENGTH = 64


def _storable_id(client_id: str) -> bool:
    """Whether *client_id* could name a client: 1 to 64 printable characters (the ids
    authserver makes are ``as_client_`` and 22 URL-safe characters)."""
    return 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH and client_id.isprintable()


#: The change-feed name of client changes (the store announces it with every change).
CHANGE_NAME = "clients"


class ClientService:
    """Create, change and authenticate clients. Never commits: the caller's unit of work does."""

    def __init__(
        self,
        store: ClientStore,
        clock: Clock,
        *,
        max_token_ttl: int,
        audit: AuditService | None = None,
        allow_http_jwks_uri: bool = True,
        profiles: Container[str] = (DEFAULT_PROFILE,),
        single_audience: Container[str] = (),
        on_withdrawn: Callable[[ClientId], object] | None = None,
        changes: ChangeFeed | None = None,
    ) -> None:
        self._store = store
        #: Outside production mode a ``jwks_uri`` may be plain http on a loopback host
        #: (a client's development key server); in production only https.
        self._allow_http_jwks_uri = allow_http_jwks_uri
        #: The profile names a client may be registered with (built-ins and plug-ins).
        self._profiles = profiles
        #: The profiles whose requests cannot name an audience: their clients have one.
        self._single_audience = single_audience
        #: Called in the same unit of work when a client is disabled or deleted (the
        #: container revokes its live tokens in the status lists).
        self._on_withdrawn = on_withdrawn
        self._clock = clock
        self._max_token_ttl = max_token_ttl
        self._audit = audit
        self._cache: BoundedCache[str, Client] = BoundedCache(CACHE_SIZE)
        # Unknown ids are remembered too (a repeated bogus id costs no read), in a cache of
        # their own: a stranger sending new ids evicts only other unknown ids, never a
        # client, so no flood makes the real clients' requests read the store again.
        self._unknown: BoundedCache[str, None] = BoundedCache(UNKNOWN_CACHE_SIZE)
        self._changes = changes
        #: Moves on with every announced change (and every feed reconnection).
        self._generation = 0
        if changes is not None:
            changes.subscribe(CHANGE_NAME, self._changed)
        self._report = ReportOnce(log, "client record")

    def _record(self, action: str, client: Client, **detail: Any) -> None:
        if self._audit is not None:
            self._audit.record(None, action, client_id=client.client_id, name=client.name, **detail)

    # -- queries ------------------------------------------------------------------------

    def get(self, client_id: str) -> Client:
        """Return the client or raise :class:`NotFound`."""
        client = self._store.get(ClientId(client_id)) if _storable_id(client_id) else None
        if client is None:
            raise not_found("client", "id", client_id)
        return client

    def find(self, client_id: str) -> Client | None:
        """The client for authentication, from a per-process cache that sees a change made
        anywhere (disable, secret rotation, delete) by the very next request.

        With a live change feed (PostgreSQL ``LISTEN/NOTIFY``) the cache is trusted until
        a change is announced: no database round trip for a cached client. Without one
        (SQLite, or while the feed is down) it is validated against the store's version
        on every call: one indexed read instead of a full row load.
        """
        if not _storable_id(client_id):
            # Presented by anyone (a Basic header, a form field, an assertion's issuer):
            # what no client id can be is unknown without asking the database, which
            # would refuse some of it (PostgreSQL: a NUL) as an error, not as no row.
            return None
        feed = self._changes
        version = (
            ("feed", self._generation)
            if feed is not None and feed.live()
            else ("store", self._store.version())
        )
        found, client = self._cache.get(client_id, version)
        if found:
            return client
        if self._unknown.get(client_id, version)[0]:
            return None
        try:
            client = self._store.get(ClientId(client_id))
        except UnreadableRecord as exc:
            # Fails this client's authentication (invalid_client), never the request with
            # a 500, and no other client: reported once, then cached like an unknown id.
            self._report([exc])
            client = None
        if client is None:
            self._unknown.put(client_id, None, version)
        else:
            self._cache.put(client_id, client, version)
        return client

    def _changed(self) -> None:
        """A client changed somewhere (or announcements may have been missed). Also called
        by this service's own commands, so the process that makes a change stops serving
        the old row at once; a reader that re-caches the old row before the commit is
        cleared by the announcement that follows the commit."""
        self._generation += 1
        self._cache.clear()
        self._unknown.clear()

    def find_by_secret(self, secret: str) -> Client | None:
        """The client whose secret is *secret* (Bearer-secret authentication): its
        current one, or the previous one during a rotation's grace period; else ``None``.
        Secrets are unique, so the digest names at most one client."""
        try:
            client = self._store.get_by_secret_hash(client_secrets.hash_secret(secret))
        except UnreadableRecord as exc:
            self._report([exc])  # as in find: that client fails authentication, no 500
            return None
        if client is None or self.which_secret(client, secret) is None:
            return None
        return client

    def which_secret(self, client: Client, secret: str) -> str | None:
        """:meth:`check_secret` at the clock's now, as every other expiry is read."""
        return self.check_secret(client, secret, self._clock.now())

    def list(self) -> list[Client]:
        return self._store.list()

    def unreadable(self) -> builtins.list[UnreadableRecord]:
        """The client records that cannot be read (``clients list`` shows them)."""
        unreadable = self._store.scan().unreadable
        self._report(unreadable)
        return unreadable

    # -- commands -----------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        audiences: Iterable[str] = (),
        scopes: Iterable[str] = (),
        allowed_claims: Iterable[str] = (),
        token_ttl: int | None = None,
        jwks: dict[str, Any] | None = None,
        jwks_uri: str | None = None,
        require_sub: bool = False,
        profile: str = DEFAULT_PROFILE,
        fixed_claims: Mapping[str, Any] | None = None,
    ) -> tuple[Client, str | None]:
        """Register a client.

        :returns: the client and its plaintext secret, which exists only in this return
            value (``None`` for a ``private_key_jwt`` client registered with keys).
        """
        keys = self._keys(jwks, jwks_uri)
        policy = ClientPolicy(
            audiences=_audiences(audiences),
            scopes=_scopes(scopes),
            allowed_claims=_allowed_claims(allowed_claims),
            token_ttl=self._ttl(token_ttl),
            require_sub=_flag(require_sub, "require_sub"),
            profile=self._profile(profile),
            fixed_claims=_fixed_claims(fixed_claims or {}),
        )
        self._consistent(policy)
        now = self._clock.now()
        secret: str | None = None
        secret_hash: str | None = None
        if not keys:
            secret = client_secrets.new_secret()
            secret_hash = client_secrets.hash_secret(secret)
        client = Client(
            client_id=client_secrets.new_client_id(),
            name=_name(name),
            policy=policy,
            enabled=True,
            created_at=now,
            updated_at=now,
            secret_hash=secret_hash,
            **keys,
        )
        self._store.add(client)
        self._changed()
        self._record("client.created", client, auth_method=client.auth_method)
        return client, secret

    def update(
        self,
        client_id: str,
        *,
        name: str | None = None,
        audiences: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
        allowed_claims: Iterable[str] | None = None,
        token_ttl: int | None = _UNSET,
        require_sub: bool | None = None,
        profile: str | None = None,
        fixed_claims: Mapping[str, Any] | None = None,
        jwks: dict[str, Any] | None = None,
        jwks_uri: str | None = None,
    ) -> Client:
        """Change a client's name, policy or, for a ``private_key_jwt`` client, its public
        keys (*jwks* or *jwks_uri*, replacing whichever it had: the client rotates its own
        keys without a new client id); arguments left out stay as they are."""
        with self._store.lock():
            # Read under the lock: a change made meanwhile elsewhere (a disable, a rotation)
            # is in the copy written back, never undone by it.
            client = self.get(client_id)
            if (jwks is not None or jwks_uri is not None) and client.secret_hash is not None:
                raise InvalidInput(
                    "this client authenticates with a secret; only a client registered with "
                    "keys (private_key_jwt) can have them replaced"
                )
            keys = self._keys(jwks, jwks_uri)
            policy = client.policy
            if audiences is not None:
                policy = dataclasses.replace(policy, audiences=_audiences(audiences))
            if scopes is not None:
                policy = dataclasses.replace(policy, scopes=_scopes(scopes))
            if allowed_claims is not None:
                policy = dataclasses.replace(policy, allowed_claims=_allowed_claims(allowed_claims))
            if token_ttl is not _UNSET:
                policy = dataclasses.replace(policy, token_ttl=self._ttl(token_ttl))
            if require_sub is not None:
                policy = dataclasses.replace(policy, require_sub=_flag(require_sub, "require_sub"))
            if profile is not None:
                policy = dataclasses.replace(policy, profile=self._profile(profile))
            if fixed_claims is not None:
                policy = dataclasses.replace(policy, fixed_claims=_fixed_claims(fixed_claims))
            self._consistent(policy)
            updated = dataclasses.replace(
                client,
                name=_name(name) if name is not None else client.name,
                policy=policy,
                updated_at=self._clock.now(),
                **keys,
            )
            # The names of what changed, never a value (a key set, a fixed claim's value):
            # the trail says what an operator changed, not only the name it has now.
            changed = _changed_fields(client, updated)
            if not changed:
                # What it already is: the client as it stands, as an idempotent PUT
                # answers, and no write (updated_at stays), no audit event and no cache
                # change on any worker (a script that applies its whole configuration
                # on every run changes nothing on the runs that change nothing).
                return client
            self._store.update(updated)
            self._changed()
            if keys:
                self._record("client.updated", updated, changed=changed, keys_replaced=True)
            else:
                self._record("client.updated", updated, changed=changed)
            return updated

    def _consistent(self, policy: ClientPolicy) -> None:
        """A policy whose parts can work together. A claim is fixed or allowed, not both:
        no request may send a fixed claim, so allowing it too only made every request that
        sent it fail. A client of a profile whose requests cannot name an audience has one
        at most: it could be issued no token."""
        both = sorted(set(policy.allowed_claims) & set(policy.fixed_claims))
        if both:
            raise InvalidInput(
                f"a claim cannot be both fixed and allowed in a request: {', '.join(both)}"
            )
        if len(policy.audiences) > 1 and policy.profile in self._single_audience:
            raise InvalidInput(
                f"a {policy.profile} client has one audience at most: its requests cannot "
                "name one of several (register one client per audience)"
            )
        size = registered_size(policy.scopes, policy.audiences, policy.fixed_claims)
        if size > MAX_REGISTERED_BYTES:
            # Every token of the client carries its fixed claims and by default all its
            # scopes; a request may ask for all its audiences. Tokens travel in an HTTP
            # header, which servers cap at about 8 KB (vocabulary.MAX_TOKEN_LENGTH).
            raise InvalidInput(
                f"scopes, audiences and fixed claims together take {size} bytes in a token, "
                f"more than the {MAX_REGISTERED_BYTES} they may (tokens travel in an HTTP "
                "header): register fewer or shorter ones"
            )

    def _keys(self, jwks: dict[str, Any] | None, jwks_uri: str | None) -> dict[str, Any]:
        """The ``jwks``/``jwks_uri`` fields of a client registered with one of them, as
        stored (the set with public keys only, or a URL by the ``jwks_uri`` rules); empty
        when neither is given (a client with a secret, or nothing to replace)."""
        if jwks is None and jwks_uri is None:
            return {}
        if jwks is not None and jwks_uri is not None:
            raise InvalidInput("give either a JWK set or a jwks_uri, not both")
        if jwks is not None:
            checked = validate_public_jwks(jwks)
            # Registered sets only: a set fetched from a jwks_uri is the client's own
            # server's answer, read on each authentication, where refusing it whole
            # would stop the client for a key it may not use.
            check_distinct_kids(checked)
            return {"jwks": checked, "jwks_uri": None}
        return {
            "jwks": None,
            "jwks_uri": check_jwks_uri(jwks_uri, allow_http_loopback=self._allow_http_jwks_uri),
        }

    def rotate_secret(self, client_id: str, grace: int = 0) -> tuple[Client, str]:
        """Replace the secret. Without *grace* the old one stops working when the unit of
        work commits; with *grace* (seconds, at most :data:`MAX_SECRET_GRACE`) it keeps
        working that long beside the new one, so the backend can be redeployed without
        a window of refused requests. A rotation ends any earlier grace period.
        """
        with self._store.lock():
            client = self.get(client_id)
            if client.secret_hash is None:
                raise InvalidInput(
                    "this client authenticates with private_key_jwt and has no secret"
                )
            if not 0 <= grace <= MAX_SECRET_GRACE:
                raise InvalidInput(f"grace must be between 0 and {MAX_SECRET_GRACE // 86400} days")
            now = self._clock.now()
            secret = client_secrets.new_secret()
            updated = dataclasses.replace(
                client,
                secret_hash=client_secrets.hash_secret(secret),
                previous_secret_hash=client.secret_hash if grace else None,
                previous_secret_expires_at=now + grace if grace else None,
                updated_at=now,
            )
            self._store.update(updated)
            self._changed()
            self._record(
                "client.secret_rotated",
                updated,
                previous_secret_valid_until=updated.previous_secret_expires_at,
            )
            return updated, secret

    def set_enabled(self, client_id: str, enabled: bool) -> Client:
        """Enable or disable the client. A client already so is answered as it stands,
        with no write, no audit event and no second revocation of its tokens: read under
        the lock, so of two disables at once (two operators, a retried request) exactly
        one disables and revokes, and the other sees it done."""
        with self._store.lock():
            client = self.get(client_id)
            if client.enabled == enabled:
                return client
            updated = dataclasses.replace(client, enabled=enabled, updated_at=self._clock.now())
            self._store.update(updated)
            self._changed()
            self._record("client.enabled" if enabled else "client.disabled", updated)
            if not enabled and self._on_withdrawn is not None:
                self._on_withdrawn(client.client_id)
            return updated

    def delete(self, client_id: str) -> Client | None:
        """Delete the client; also one whose record cannot be read (returns ``None``
        then), so an operator can always remove a bad row."""
        with self._store.lock():
            # The lock before the row, as every other change takes them: a delete that
            # held the row while it waited for the lock deadlocked with a change holding
            # the lock while it waited for the row (PostgreSQL aborted one of them).
            try:
                client: Client | None = self.get(client_id)
            except UnreadableRecord:
                client = None
            self._store.delete(ClientId(client_id))
            self._changed()
            if client is not None:
                self._record("client.deleted", client)
            elif self._audit is not None:
                self._audit.record(None, "client.deleted", client_id=client_id)
        if self._on_withdrawn is not None:
            self._on_withdrawn(ClientId(client_id))
        return client

    # -- authentication -----------------------------------------------------------------

    @staticmethod
    def check_secret(client: Client, secret: str, now: float) -> str | None:
        """Which of the client's secrets *secret* is: ``"current"``, ``"previous"`` (the
        one replaced by a rotation with a grace period, until it expires at *now*, the
        services' clock: :meth:`which_secret`), or None. Both digests are compared, in
        constant time, whatever the first answer, so timing does not tell which one
        matched."""
        current = client_secrets.verify_secret(secret, client.secret_hash)
        previous = client_secrets.verify_secret(secret, client.previous_secret_hash)
        if current:
            return "current"
        expires = client.previous_secret_expires_at
        if previous and expires is not None and now < expires:
            return "previous"
        return None

    def _profile(self, name: str) -> str:
        if not isinstance(name, str) or name not in self._profiles:
            raise InvalidInput(
                "unknown profile: built in are oauth2, dexie, verdant, twilio and stream; "
                "others come from installed authserver.profiles plug-ins"
            )
        return name

    def _ttl(self, token_ttl: int | None) -> int | None:
        if token_ttl is None:
            return None
        if isinstance(token_ttl, bool) or not isinstance(token_ttl, int):
            raise InvalidInput("token TTL must be a whole number of seconds")
        if not 1 <= token_ttl <= self._max_token_ttl:
            raise InvalidInput(
                f"token TTL must be between 1 and {self._max_token_ttl} seconds "
                "(AUTHSERVER_MAX_TOKEN_TTL)"
            )
        return token_ttl


#: The fields of a client that ``update`` changes, as the admin API and --json name them.
_UPDATABLE = ("name", "jwks", "jwks_uri")


def _changed_fields(before: Client, after: Client) -> builtins.list[str]:
    """The names of the fields *after* changed from *before*, in the admin API's words.

    Compared as JSON values (:func:`same_json`): Python's ``==`` takes a fixed claim changed
    from ``1`` to ``true`` for no change, which every token of the client then says."""
    changed = [f for f in _UPDATABLE if not same_json(getattr(before, f), getattr(after, f))]
    changed += [
        f.name
        for f in dataclasses.fields(ClientPolicy)
        if not same_json(getattr(before.policy, f.name), getattr(after.policy, f.name))
    ]
    return changed


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false")
    return value


def _name(name: str) -> str:
    if not isinstance(name, str) or not has_visible(name):
        # Only invisible characters (U+200B, U+FEFF...) look empty in every listing.
        raise InvalidInput("name must not be empty or only whitespace or invisible characters")
    try:
        check_text(name, "name", max_length=MAX_CLIENT_NAME_LENGTH)
    except InvalidValue as exc:
        raise InvalidInput(f"{exc} (at most {MAX_CLIENT_NAME_LENGTH} characters)") from None
    if BIDI_CONTROLS.search(name):
        raise InvalidInput(
            "name must not hold bidirectional override, embedding or isolate characters "
            "(they reorder what an operator reads)"
        )
    if name != name.strip():
        # Kept as sent or refused, never changed in silence: a name stored other than
        # given is not found again by the tool that gave it (a lookup by name, a diff of
        # desired against actual configuration sees a change on every run).
        raise InvalidInput("name must not begin or end with whitespace")
    return name


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise InvalidInput(f"{what} must be a list of strings")
    # A dict keeps the first of each value in order and finds a repeat in constant time
    # (a list's ``in`` costs the number of values squared over a long body).
    out: dict[str, None] = {}
    for value in values:
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"each {what} must be a non-empty string")
        if not is_utf8(value):
            raise InvalidInput(f"each {what} must be valid Unicode text")
        out.setdefault(value)
    return list(out)


def _audiences(values: Iterable[str]) -> tuple[str, ...]:
    out = _strings(values, "audience")
    for aud in out:
        # Every control character (DEL and C1 too, not only C0) and the bidirectional
        # controls, as in a client's name: an audience is copied into each token's aud,
        # where a sync server's log or console would show it broken or reordered.
        if (
            len(aud) > MAX_URI_LENGTH
            or any(c.isspace() for c in aud)
            or has_control(aud)
            or BIDI_CONTROLS.search(aud)
        ):
            raise InvalidInput(
                f"an audience must be at most {MAX_URI_LENGTH} characters without spaces, "
                "control characters or bidirectional override, embedding or isolate characters"
            )
    return tuple(out)


def _scopes(values: Iterable[str]) -> tuple[str, ...]:
    out = _strings(values, "scope")
    for scope in out:
        if not is_valid_scope_token(scope) or len(scope) > 200:
            raise InvalidInput(
                "a scope must be 1-200 printable ASCII characters without spaces, quotes or "
                "backslashes (RFC 6749 section 3.3)"
            )
    return tuple(out)


def _allowed_claims(values: Iterable[str]) -> tuple[str, ...]:
    out = _strings(values, "allowed claim")
    if len(out) > MAX_ALLOWED_CLAIMS:
        raise InvalidInput(f"at most {MAX_ALLOWED_CLAIMS} allowed claims")
    for name in out:
        if not is_valid_claim_name(name):
            raise InvalidInput(f"an allowed claim name is not valid: {CLAIM_NAME_RULE}")
        if is_server_claim(name):
            raise InvalidInput(
                f"{name} is set by the server itself (in any letter case) and cannot be an "
                "allowed claim"
            )
    return tuple(out)


def _fixed_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Check operator-set claims: names by the allowed-claim rules (never a reserved or
    identity claim), values by the claim-value rules (strict JSON, bounded depth and size)."""
    if not isinstance(claims, Mapping):
        raise InvalidInput("fixed claims must be a JSON object of claim names to values")
    if len(claims) > MAX_FIXED_CLAIMS:
        raise InvalidInput(f"at most {MAX_FIXED_CLAIMS} fixed claims")
    for name, value in claims.items():
        if not isinstance(name, str) or not is_valid_claim_name(name):
            raise InvalidInput(f"a fixed claim name is not valid: {CLAIM_NAME_RULE}")
        if is_server_claim(name):
            raise InvalidInput(
                f"{name} is set by the server itself (in any letter case) and cannot be a "
                "fixed claim"
            )
        if value is None or value == "":
            raise InvalidInput(f"fixed claim {name}: the value must not be empty")
    out = dict(claims)
    try:
        check_claim_values(out)
    except InvalidValue as exc:
        raise InvalidInput(f"fixed claims: {exc}") from None
    return out
