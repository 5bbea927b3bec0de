"""Verify authserver's own access tokens, for introspection (RFC 7662) and revocation.

A token is active only if its signature verifies with a key that is published *right now*
(so a retired key's tokens are inactive at once) and it passes the JWT rules every
authserver verifier applies (``authserver_verifier.rules``: RS256 ``at+jwt``, the RFC 9068
claims, this issuer, ``nbf``/``iat`` within the same leeway as sync servers use, ``exp``
without one: this server set it from its own clock), and it is not revoked. The audience
is not checked: introspection serves every audience (``oauth/endpoints.py`` decides who
may see which token).
"""

from __future__ import annotations

from typing import Any

from authserver_verifier import rules
from authserver_verifier.rules import RuleViolation

from authserver.clock import Clock
from authserver.keys.ring import KeyRing
from authserver.tokens.revocations import RevocationStore
from authserver.tokens.statuslist import StatusListService


class TokenInspector:
    def __init__(
        self,
        keys: KeyRing,
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
        try:
            kid = rules.check_header(rules.parse_header(token))
            key = self._keys.verification_key(kid)
            if key is None:
                return None
            claims = rules.verified_claims(token, key)
            rules.check_claims(
                claims, issuer=self._issuer, audience=None, now=self._clock.now(), strict_exp=True
            )
        except RuleViolation:
            return None
        return claims

    def active_claims(self, token: str) -> dict[str, Any] | None:
        """Like :meth:`verify`, and not revoked (by ``jti``, or in its status list: a
        client's or a user's tokens revoked all at once are only there)."""
        claims = self.verify(token)
        # With its exp: a token whose revocation a purge by a later clock may have
        # forgotten counts as revoked (tokens/revocations.py).
        if claims is None or self._revocations.is_revoked(claims["jti"], float(claims["exp"])):
            return None
        if self._status_lists.is_revoked(claims):
            return None
        return claims

    def revoke(self, claims: dict[str, Any]) -> None:
        """RFC 7009: revoke by ``jti`` (what introspection reads) and set the token's
        status-list bit (what offline verifiers read), in the caller's unit of work: both
        commit or neither does, so the two never disagree about a token."""
        self._revocations.revoke(
            claims["jti"], claims["client_id"], float(claims["exp"]), self._clock.now()
        )
        self._status_lists.revoke_token(claims)
