"""``verdant``: the parameters of Verdant's (formerly lo-fi) ``TokenProvider.getToken`` and
the ``{accessToken}`` its client fetches from a backend's auth endpoint.

From the vendor's packages (@verdant-web/server 2.1 ``TokenProvider``/``TokenVerifier``,
@verdant-web/store 5.5 ``ServerSyncEndpointProvider``, @verdant-web/common ``ReplicaType``):

request (what ``getToken`` takes; sent here as a JSON body)
    ``userId``, ``libraryId``, ``syncEndpoint``, ``fileEndpoint?``, ``role?``,
    ``type?`` (``ReplicaType``: 0 Realtime, 1 Push, 2 PassiveRealtime, 3 PassivePush,
    4 ReadOnlyPull, 5 ReadOnlyRealtime; default 0), ``expiresIn?`` (jsonwebtoken: a
    duration string such as "3d", or seconds; Verdant's default "1d").
token claims
    ``sub`` = userId, ``lib`` = libraryId, ``url`` = syncEndpoint, ``file`` =
    fileEndpoint, ``role``, ``type``. The client decodes the token itself and asserts
    ``url`` and ``type`` are present.
response
    ``{accessToken}`` (the client reads only that), with ``syncEndpoint`` (what Verdant's
    documentation tells auth endpoints to return) and ``expiresIn``, the lifetime granted
    in seconds.

The sync URL is usually the same for every token of a backend: register it once as the
client's fixed claim ``url`` and ``syncEndpoint`` may be left out (when sent, it must be
that URL). ``lib``, ``file``, ``role`` and ``type`` must be allowed claims of the client.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

from authserver.clients.model import Client
from authserver.profiles import values
from authserver.profiles.base import DialectRequest
from authserver.profiles.base import ProfileError
from authserver.profiles.base import TokenParameters
from authserver.tokens.model import IssuedToken
from authserver.vocabulary import MAX_URI_LENGTH

#: @verdant-web/common ReplicaType: Realtime .. ReadOnlyRealtime.
REPLICA_TYPES = range(6)
REALTIME = 0


class VerdantProfile:
    name: ClassVar[str] = "verdant"
    fields: ClassVar[frozenset[str]] = frozenset(
        {"userId", "libraryId", "syncEndpoint", "fileEndpoint", "role", "type", "expiresIn"}
    )
    paths: ClassVar[tuple[str, ...]] = ()

    def translate(self, request: DialectRequest, client: Client) -> TokenParameters:
        f = request.fields
        if not request.is_json:
            raise ProfileError(
                "the verdant profile takes a JSON body (Content-Type: application/json)"
            )
        fixed = client.policy.fixed_claims
        for required in ("userId", "libraryId"):
            if required not in f:
                raise ProfileError(f"{required} is required")
        claims: dict[str, Any] = {"lib": values.string(f["libraryId"], "libraryId")}
        if "syncEndpoint" in f:
            claims["url"] = values.string(
                f["syncEndpoint"], "syncEndpoint", max_length=MAX_URI_LENGTH
            )
        elif "url" not in fixed:
            raise ProfileError(
                "syncEndpoint is required (or register the client with the fixed claim url)"
            )
        # TokenProvider's optional fileEndpoint and role: a JSON null is one left unset
        # (jsonwebtoken signs it as null, which Verdant's TokenVerifier reads as no role or
        # file URL), so a backend passing a user's null role keeps working.
        if f.get("fileEndpoint") is not None:
            claims["file"] = values.string(
                f["fileEndpoint"], "fileEndpoint", max_length=MAX_URI_LENGTH
            )
        if f.get("role") is not None:
            claims["role"] = values.string(f["role"], "role")
        if "type" in f:
            kind = f["type"]
            if isinstance(kind, bool) or not isinstance(kind, int) or kind not in REPLICA_TYPES:
                raise ProfileError("type must be a Verdant ReplicaType, a whole number 0 to 5")
            claims["type"] = kind
        elif "type" not in fixed:
            claims["type"] = REALTIME  # TokenProvider's default
        out: TokenParameters = {"sub": values.user(f["userId"], "userId"), "claims": claims}
        if "expiresIn" in f:
            out["expires_in"] = values.duration(f["expiresIn"], "expiresIn")
        return out

    def render(self, issued: IssuedToken, request: DialectRequest) -> dict[str, Any]:
        return {
            "accessToken": issued.access_token,
            "syncEndpoint": issued.claims.get("url"),
            "expiresIn": issued.expires_in,
        }
