"""Issue signed access tokens."""

from __future__ import annotations

from joserfc import jwt

from authserver.clients.model import Client
from authserver.clock import Clock
from authserver.keys.crypto import ALG
from authserver.keys.crypto import SIGNING
from authserver.keys.ring import KeyRing
from authserver.tokens.claims import build_claims
from authserver.tokens.model import IssuedToken
from authserver.tokens.model import TokenRequest
from authserver.tokens.model import TokenRequestError
from authserver.tokens.statuslist import StatusListService
from authserver.vocabulary import MAX_TOKEN_LENGTH


class TokenService:
    """Turn a client and a :class:`TokenRequest` into a signed RFC 9068 JWT."""

    def __init__(
        self,
        keys: KeyRing,
        clock: Clock,
        *,
        issuer: str,
        default_ttl: int,
        max_ttl: int,
        status_lists: StatusListService,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._issuer = issuer
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        self._status_lists = status_lists

    def now(self) -> float:
        """The time tokens are issued at (the injected clock)."""
        return self._clock.now()

    def client_ttl(self, client: Client) -> int:
        return min(client.policy.token_ttl or self._default_ttl, self._max_ttl)

    def issue(self, client: Client, request: TokenRequest) -> IssuedToken:
        claim_set = build_claims(
            issuer=self._issuer,
            client=client,
            request=request,
            client_ttl=self.client_ttl(client),
            now=self._clock.now(),
        )
        claims = claim_set.claims
        # draft-ietf-oauth-status-list §6.2: every token names its entry in a status list.
        entry = self._status_lists.allocate(float(claims["exp"]))
        claims["status"] = self._status_lists.claim(entry)
        kid, key = self._keys.current()
        # RFC 9068 §2.1: typ "at+jwt"; the kid is set here, from the one current key,
        # never left to joserfc's key-set selection (docs/design.md, Authlib item 1).
        header = {"alg": ALG, "typ": "at+jwt", "kid": kid}
        token = jwt.encode(header, claims, key, registry=SIGNING)
        if len(token) > MAX_TOKEN_LENGTH:
            # A registration fits MAX_REGISTERED_BYTES; the request's identity, claims and
            # audiences may still add too much. Refused, not issued: a sync server would
            # refuse the header that carried it.
            raise TokenRequestError(
                f"the token would be {len(token)} characters long, more than the "
                f"{MAX_TOKEN_LENGTH} a token may have (it travels in an HTTP header): ask for "
                "fewer scopes or audiences, or send shorter claims"
            )
        return IssuedToken(
            access_token=token,
            expires_in=claim_set.expires_in,
            scope=claim_set.scope,
            jti=claim_set.claims["jti"],
            sub=claim_set.claims["sub"],
            audience=claim_set.audience,
            kid=kid,
            claims=claim_set.claims,
            expires_at=float(claims["exp"]),
            status_list=entry.list_id,
            status_idx=entry.idx,
        )
