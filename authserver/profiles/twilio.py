"""``twilio``: the options of Twilio's ``AccessToken`` with a ``SyncGrant``, and the
``{identity, token}`` a Twilio Sync backend answers its browser with.

From the vendor's packages (twilio 6.3 ``lib/jwt/AccessToken.js``; twilio-sync 4.0, which
hands the token string to Twilio's service without decoding it):

request (the ``AccessToken`` options and grants; sent here as a JSON body)
    ``identity`` (required, as ``AccessToken`` requires it; a string, or a whole number,
    which ``AccessToken`` writes as its decimal string), ``ttl`` (seconds, default
    3600; Twilio refuses tokens valid for more than 24 hours), ``grants``: an object keyed
    like the token's ``grants`` claim; ``data_sync`` with ``service_sid`` and
    ``endpoint_id`` (what ``SyncGrant.toPayload`` writes).
token claims
    ``sub`` = identity and ``grants`` = ``{identity, data_sync: {...}}``, the shape of a
    Twilio access token's ``grants`` claim. ``grants`` must be an allowed claim of the client.
response
    ``{identity, token}``, with ``ttl``, the lifetime granted in seconds.

Refused: ``nbf`` (tokens are valid from issue), ``region`` (Twilio's edge routing has no
meaning here) and grants other than ``data_sync`` (chat, video, voice: other products).
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

from authserver.clients.model import Client
from authserver.profiles import values
from authserver.profiles.base import DialectRequest
from authserver.profiles.base import ProfileError
from authserver.profiles.base import TokenParameters
from authserver.profiles.base import field_list
from authserver.tokens.model import IssuedToken

#: twilio AccessToken: ``this.ttl = options.ttl || 3600``.
DEFAULT_TTL = 3600
#: Twilio access tokens live at most 24 hours.
MAX_TTL = 86400
SYNC_GRANT_FIELDS = frozenset({"service_sid", "endpoint_id"})


class TwilioProfile:
    name: ClassVar[str] = "twilio"
    fields: ClassVar[frozenset[str]] = frozenset({"identity", "ttl", "grants", "nbf", "region"})
    paths: ClassVar[tuple[str, ...]] = ()

    def translate(self, request: DialectRequest, client: Client) -> TokenParameters:
        f = request.fields
        if not request.is_json:
            raise ProfileError(
                "the twilio profile takes a JSON body (Content-Type: application/json)"
            )
        for unsupported, why in (
            ("nbf", "tokens are valid from the moment they are issued"),
            ("region", "there is no Twilio edge to route to"),
        ):
            # AccessToken sets nbf only when it is a number and region only when it is a
            # non-empty string: a JSON null is an option left unset there, and here.
            if f.get(unsupported) is not None:
                raise ProfileError(f"{unsupported} is not supported: {why}")
        if "identity" not in f:
            raise ProfileError("identity is required")
        identity = values.user(_identity_text(f["identity"]), "identity")
        # AccessToken's ``options.ttl || 3600``: a JSON null or 0 (false too: JSON's false
        # equals 0 here, as it is falsy there) is the default, as in Twilio.
        given = f.get("ttl")
        ttl = DEFAULT_TTL if given is None or given == 0 else values.seconds(given, "ttl")
        if ttl > MAX_TTL:
            raise ProfileError("ttl must be at most 86400 seconds (24 hours), as in Twilio")
        grants: dict[str, Any] = {"identity": identity}
        if "grants" in f:
            requested = values.json_object(f["grants"], "grants")
            other = [f"grants.{k}" for k in requested if k != "data_sync"]
            if other:
                raise ProfileError(
                    f"only the data_sync grant is supported, not {field_list(other)}"
                )
            if "data_sync" in requested:
                sync = values.json_object(requested["data_sync"], "grants.data_sync")
                unknown = [f"grants.data_sync.{k}" for k in sync if k not in SYNC_GRANT_FIELDS]
                if unknown:
                    raise ProfileError(f"the data_sync grant does not take {field_list(unknown)}")
                grants["data_sync"] = {
                    k: values.string(v, f"grants.data_sync.{k}") for k, v in sync.items()
                }
        return {"sub": identity, "expires_in": ttl, "claims": {"grants": grants}}

    def render(self, issued: IssuedToken, request: DialectRequest) -> dict[str, Any]:
        return {"identity": issued.sub, "token": issued.access_token, "ttl": issued.expires_in}


def _identity_text(value: Any) -> Any:
    """A whole-number identity as its decimal string, as twilio's ``AccessToken`` writes it
    (``Number.isInteger(identity)``: ``String(identity)``), so a backend that passed a
    numeric user id keeps working; ``0`` it refuses as missing, and so does this."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 0:
            raise ProfileError("identity must be a non-empty string or a whole number but 0")
        return str(value)
    return value
