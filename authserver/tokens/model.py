"""What a caller asks for, once parsed from the HTTP request (by ``oauth/grants.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any


@dataclass(frozen=True)
class TokenRequest:
    """A validated-in-shape token request; policy checks happen in ``tokens.claims``."""

    sub: str | None = None
    email: str | None = None
    name: str | None = None
    #: Requested scopes; ``None`` when the request named none.
    scopes: tuple[str, ...] | None = None
    #: Requested audiences (``audience`` and RFC 8707 ``resource``), in order, deduplicated.
    audiences: tuple[str, ...] = ()
    #: Requested lifetime in seconds, never honoured above the client's.
    expires_in: int | None = None
    #: Extra claims, each to be checked against the client's allow-list.
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str | None
    jti: str
    sub: str
    audience: str | list[str]
    kid: str
    #: The signed claim set (for profiles whose response repeats claims).
    claims: Mapping[str, Any] = field(default_factory=dict)
    #: When the token expires (its ``exp``).
    expires_at: float = 0.0
    #: Its Token Status List entry: list id and index.
    status_list: int | None = None
    status_idx: int | None = None


class TokenRequestError(Exception):
    """The request is malformed or breaks the client's policy (``invalid_request``)."""


class ScopeNotAllowed(TokenRequestError):
    """A requested scope is not registered for the client (``invalid_scope``)."""


class AudienceNotAllowed(TokenRequestError):
    """A requested audience is not registered for the client (RFC 8707 ``invalid_target``)."""
