"""The access token claim set (RFC 9068 §2.2) for a client and a :class:`TokenRequest`.

Authlib's RFC 9068 generator is not used (docs/design.md, Authlib item 2): it ignores a shorter
``expires_in`` in the JWT, writes no ``nbf`` and writes ``scope: null``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from authserver.clients.model import Client
from authserver.tokens.model import AudienceNotAllowed
from authserver.tokens.model import ScopeNotAllowed
from authserver.tokens.model import TokenRequest
from authserver.tokens.model import TokenRequestError
from authserver.vocabulary import IDENTITY_CLAIMS
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import check_claim_values
from authserver.vocabulary import check_claims_size
from authserver.vocabulary import check_identity
from authserver.vocabulary import is_server_claim
from authserver.vocabulary import is_valid_claim_name
from authserver.vocabulary import reserved_claims_text
from authserver.vocabulary import same_json


@dataclass(frozen=True)
class ClaimSet:
    claims: dict[str, Any]
    expires_in: int
    scope: str | None
    audience: str | list[str]


def resolve_audience(client: Client, requested: tuple[str, ...]) -> str | list[str]:
    """RFC 8707 §2: each requested resource must be one the client may address.

    With no request, a client with one registered audience gets it; one with none gets
    its own ``client_id`` (RFC 9068 requires an ``aud``); one with several must choose.
    """
    registered = client.policy.audiences
    if requested:
        for aud in requested:
            if aud not in registered:
                raise AudienceNotAllowed("the requested audience is not registered for this client")
        return requested[0] if len(requested) == 1 else list(requested)
    if len(registered) == 1:
        return registered[0]
    if not registered:
        return str(client.client_id)
    raise AudienceNotAllowed(
        "this client has several audiences: name one with the audience or resource parameter"
    )


def resolve_scope(client: Client, requested: tuple[str, ...] | None) -> str | None:
    """RFC 6749 §3.3: no scope requested means the client's registered scopes."""
    registered = client.policy.scopes
    if requested is None:
        return " ".join(registered) or None
    for scope in requested:
        if scope not in registered:
            raise ScopeNotAllowed("the requested scope is not registered for this client")
    return " ".join(dict.fromkeys(requested)) or None


def resolve_lifetime(client_ttl: int, requested: int | None) -> int:
    """docs/reference.md: ``expires_in`` may shorten the client's lifetime, never lengthen it."""
    if requested is None:
        return client_ttl
    if requested <= 0:
        raise TokenRequestError("expires_in must be a positive number of seconds")
    return min(requested, client_ttl)


def check_user(client: Client, request: TokenRequest) -> None:
    """Whom the token is for: non-empty values, ``email``/``name`` only with the ``sub``
    they describe (without it the token's subject is the client, and a user's email on
    the client's own token merges every user into one identity at the sync server), and
    a ``sub`` on every request of a client whose policy requires one."""
    try:
        for field in IDENTITY_CLAIMS:
            value = getattr(request, field)
            if value is not None:
                check_identity(value, field)
    except InvalidValue as exc:
        raise TokenRequestError(str(exc)) from None
    if request.sub is None:
        if request.email is not None or request.name is not None:
            raise TokenRequestError("email and name need the sub of the user they describe")
        if client.policy.require_sub:
            raise TokenRequestError("this client must name the user (sub) in every request")
    elif request.sub == str(client.client_id):
        # A user named like the client (client ids are public: every token carries one)
        # would get a token every sync server reads as the client's own (sub = client_id;
        # RFC 9068 section 5, RFC 9700 section 4.15), and a --require-sub client would get
        # its own token after all. The client's own token is asked for by leaving sub out.
        raise TokenRequestError(
            "sub must not be this client's own client_id: a user's token cannot be told from "
            "the client's own (leave sub out for the client's own token)"
        )


def extra_claims(client: Client, claims: dict[str, Any]) -> dict[str, Any]:
    """The request's extra claims, each allowed for the client and each a bounded,
    strict JSON value, together with the client's fixed claims.

    A fixed claim is the operator's: a request may repeat it with the same value (a
    backend that always sends its sync URL keeps working) but never change it.
    """
    allowed = set(client.policy.allowed_claims)
    fixed = client.policy.fixed_claims
    for name, value in claims.items():
        if name in fixed:
            # The same JSON value at every depth: true is not 1, 1.0 is 1 (same_json).
            if not same_json(value, fixed[name]):
                raise TokenRequestError(
                    f"{name} is a fixed claim of this client; a request cannot change it"
                )
            continue
        if is_server_claim(name):
            raise TokenRequestError(
                f"claims must not set a claim the server sets itself ({reserved_claims_text()}; "
                "sub, email and name are request parameters)"
            )
        if name not in allowed:
            # Named (a valid name has only safe characters): a profile adds claims of its
            # own (verdant's type, twilio's grants), which the backend never sent.
            named = f" ({name})" if is_valid_claim_name(name) else ""
            raise TokenRequestError(
                f"claims names a claim{named} this client is not allowed to set"
            )
    merged = {**claims, **fixed}
    try:
        check_claim_values(claims)
        if claims and fixed:
            # What the token carries: the request's claims and the client's fixed ones
            # (each bounded alone) fit the bound together.
            check_claims_size(merged, "claims, together with this client's fixed claims,")
    except InvalidValue as exc:
        raise TokenRequestError(str(exc)) from None
    return merged


def build_claims(
    *, issuer: str, client: Client, request: TokenRequest, client_ttl: int, now: float
) -> ClaimSet:
    """Assemble and check the claim set. Raises the ``TokenRequestError`` family."""
    check_user(client, request)
    audience = resolve_audience(client, request.audiences)
    scope = resolve_scope(client, request.scopes)
    lifetime = resolve_lifetime(client_ttl, request.expires_in)
    extras = extra_claims(client, request.claims)
    issued_at = int(now)
    claims: dict[str, Any] = dict(extras)
    # RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti are REQUIRED; nbf is ours.
    claims.update(
        {
            "iss": issuer,
            "sub": request.sub if request.sub is not None else str(client.client_id),
            "aud": audience,
            "exp": issued_at + lifetime,
            "iat": issued_at,
            "nbf": issued_at,
            "jti": secrets.token_urlsafe(18),
            "client_id": str(client.client_id),
        }
    )
    if scope:
        claims["scope"] = scope
    if request.email is not None:
        claims["email"] = request.email
    if request.name is not None:
        claims["name"] = request.name
    return ClaimSet(claims=claims, expires_in=lifetime, scope=scope, audience=audience)
