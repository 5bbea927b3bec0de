"""The profile interface: one token-endpoint dialect, translated both ways.

A backend written for a sync vendor sends that vendor's request shape and expects that
vendor's response shape. A *profile* is the translation between such a dialect and
authserver's own token request (the ``oauth2`` profile, docs/reference.md, ``POST /token``):

- :meth:`Profile.translate` turns the dialect's body into authserver's token parameters
  (``sub``, ``email``, ``name``, ``scope``, ``audience``, ``expires_in``, ``claims``).
  Those parameters then go through exactly the checks every request gets (identity
  rules, scope and audience policy, the claim allow-list, reserved claims, fixed claims,
  the lifetime ceiling): a profile cannot reach past them because it never builds a
  token, only parameters.
- :meth:`Profile.render` turns the issued token into the dialect's response body.

What a profile must not do: authenticate anyone (client authentication has already
happened when ``translate`` runs), read anything but the request and the client it is
given, or keep state between requests. Every field of its dialect is either honoured or
refused with :class:`ProfileError` naming the field: nothing is dropped silently.

This module is part of the core: no Flask, no Authlib, no storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import ClassVar
from typing import Protocol
from typing import runtime_checkable

from authserver.clients.model import Client
from authserver.tokens.model import IssuedToken
from authserver.tokens.model import TokenRequestError

#: Body parameters consumed before a profile runs: the grant type and the client
#: credentials (RFC 6749 §2.3.1, RFC 7523 §2.2). A profile never sees them.
PROTOCOL_FIELDS = frozenset(
    {"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type"}
)

# A field name is echoed in error descriptions, whose characters RFC 6749 §5.2 limits to
# %x20-21 / %x23-5B / %x5D-7E: names outside this shape are reported without their text.
_ECHOABLE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class ProfileError(TokenRequestError):
    """The dialect request is malformed or uses a field the profile does not honour
    (``invalid_request``). The message names the field; it never quotes a value, and uses
    only the characters RFC 6749 §5.2 allows in ``error_description`` (no ``"`` or ``\\``)."""


def field_list(names: Iterable[str]) -> str:
    """``a, b, c`` for the names that may be echoed (sorted, at most 10)."""
    unique = list(dict.fromkeys(names))
    shown = sorted(n for n in unique if _ECHOABLE.fullmatch(n))
    if not shown:
        return "a field whose name cannot be shown"
    text = ", ".join(shown[:10])
    if len(shown) > 10 or len(shown) < len(unique):
        text += " and more"
    return text


@dataclass(frozen=True)
class DialectRequest:
    """The request body as the dialect sent it, without :data:`PROTOCOL_FIELDS`.

    ``fields`` maps each parameter to its value: any JSON value when ``is_json``, a string
    for a form body. Parameters that may repeat (``audience``, ``resource``) hold a list.
    ``now`` is the server's time (POSIX seconds) for dialects that send absolute times;
    ``path`` is the URL path it arrived at (``/token`` or a dialect's own path).
    """

    fields: Mapping[str, Any]
    is_json: bool
    now: float
    path: str = "/token"


#: authserver's token parameters (the ``oauth2`` dialect), as a JSON body would carry
#: them: ``sub``/``email``/``name`` strings, ``scope`` a string or a list of strings,
#: ``audience`` a list of strings, ``expires_in`` whole seconds, ``claims`` an object.
TokenParameters = dict[str, Any]


@runtime_checkable
class Profile(Protocol):
    """A token-endpoint dialect. Implementations are stateless and thread-safe."""

    #: The name clients are registered with (``--profile NAME``): lower case letters,
    #: digits, ``-`` and ``_``.
    name: ClassVar[str]
    #: The body fields of the dialect this profile honours. Anything else in the body
    #: (besides :data:`PROTOCOL_FIELDS`) is refused before :meth:`translate` runs.
    fields: ClassVar[frozenset[str]]
    #: Extra URL paths (besides ``/token``) where the dialect is served, for clients of
    #: this profile only; empty for most profiles.
    paths: ClassVar[tuple[str, ...]]

    def translate(self, request: DialectRequest, client: Client) -> TokenParameters:
        """Map the dialect's body onto authserver's token parameters.

        *client* is the authenticated client (its fixed claims may supply a value the
        dialect would otherwise require in every request). Raise :class:`ProfileError`
        naming the field for anything that cannot be honoured.
        """
        ...

    def render(self, issued: IssuedToken, request: DialectRequest) -> dict[str, Any]:
        """The dialect's success body for *issued* (a JSON object)."""
        ...


def names_an_audience(profile: Profile) -> bool:
    """Whether the dialect's requests can name an audience (RFC 8707 ``audience`` or
    ``resource``): a client with several audiences needs one named in each request, so a
    client of a profile that cannot is registered with one audience at most."""
    return bool({"audience", "resource"} & profile.fields)


def refuse_unknown(profile: Profile, request: DialectRequest) -> None:
    """Refuse every body field the profile does not honour, naming them."""
    unknown = [name for name in request.fields if name not in profile.fields]
    if unknown:
        raise ProfileError(
            f"the {profile.name} profile does not support {field_list(unknown)}; "
            "remove them or register the client with the profile that sends them"
        )


def require_json(profile: Profile, request: DialectRequest) -> None:
    """Refuse a form body: the vendors' dialects are JSON (nested values, typed numbers)."""
    if not request.is_json:
        raise ProfileError(
            f"the {profile.name} profile takes a JSON body (Content-Type: application/json)"
        )
