"""Verify authserver's own access tokens, for introspection (RFC 7662) and revocation.

A token is active only if its signature verifies with a key that is published *right now*
(so a retired key's tokens are inactive at once), it is an RS256 ``at+jwt`` from this
issuer, it is within ``nbf``/``exp``, and its ``jti`` is not revoked.
"""

from __future__ import annotations

from typing import Any

from joserfc import jws
from joserfc import jwt
from joserfc.errors import JoseError

from authserver.clock import Clock
from authserver.keys.crypto import ALG
from authserver.keys.service import KeyService
from authserver.tokens.revocations import RevocationStore
from authserver.tokens.statuslist import StatusListService

#: Tokens longer than this are not ours (ours are ~1 KB); refuse before parsing.
MAX_TOKEN_LENGTH = 16384


class TokenInspector:
    def __init__(
        self,
        keys: KeyService,
        revocations: RevocationStore,
        status_lists: StatusListService,
        clock: Clock,
        *,
        issuer: str,
    ) -> None:
        self._keys = keys
        self._revocations = revocations
        self._status_lists = status_lists
        self._clock = clock
        self._issuer = issuer

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this server issued and would still honour, ignoring
        revocation; ``None`` for anything else (forged, expired, retired key, garbage)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            return None
        kid = header.get("kid")
        if header.get("alg") != ALG or header.get("typ") != "at+jwt" or not isinstance(kid, str):
            return None
        key = self._keys.verification_key(kid)
        if key is None:
            return None
        try:
            decoded = jwt.decode(token, key, algorithms=[ALG])
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        now = self._clock.now()
        if claims.get("iss") != self._issuer:
            return None
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, int | float) or exp <= now:
            return None
        if isinstance(nbf, int | float) and nbf > now + 60:
            return None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("client_id"), str):
            return None
        return dict(claims)

    def active_claims(self, token: str) -> dict[str, Any] | None:
        """Like :meth:`verify`, and not revoked (by ``jti``, or in its status list: a
        client's or a user's tokens revoked all at once are only there)."""
        claims = self.verify(token)
        if claims is None or self._revocations.is_revoked(claims["jti"]):
            return None
        if self._status_lists.is_revoked(claims):
            return None
        return claims

    def revoke(self, claims: dict[str, Any]) -> None:
        """RFC 7009: revoke by ``jti`` (introspection) and set the token's status list bit
        (offline verifiers)."""
        self._revocations.revoke(
            claims["jti"], claims["client_id"], float(claims["exp"]), self._clock.now()
        )
        self._status_lists.revoke_token(claims)
