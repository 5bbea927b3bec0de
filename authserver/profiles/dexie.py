"""``dexie``: the client-credentials request of Dexie Cloud's ``POST /token`` and its
``TokenFinalResponse``, so a backend's ``fetchTokens`` endpoint can forward the answer to
``dexie-cloud-addon`` unchanged.

From the vendor's packages (dexie-cloud-common 1.0.59 ``ClientCredentialsTokenRequest``
and ``TokenFinalResponse``; dexie-cloud-addon 4.4 ``userAuthenticate``):

request (JSON)
    ``grant_type: "client_credentials"``, ``client_id``, ``client_secret``,
    ``scopes: string[]``, ``claims: {sub, email?, name?, ...}``, ``public_key?`` (PEM,
    binds Dexie's refresh token), ``expires_in?`` and ``not_before?`` (duration strings
    in jsonwebtoken's format, "10m", "1d").
response
    ``{type: "tokens", claims, accessToken, accessTokenExpiration, userType,
    refreshToken?, ...}``; ``accessTokenExpiration`` is epoch **milliseconds** (the addon
    does ``new Date(accessTokenExpiration)``); it reads ``claims.sub``, ``.email``,
    ``.name`` and ``.license`` and needs ``type === "tokens"``.

Honoured: ``scopes`` (checked against the client's scopes), ``claims`` (``sub``, ``email``,
``name`` as identity; every other claim through the allow-list), ``expires_in``.
``public_key`` is accepted and checked to be a PEM public key, but authserver issues no
refresh tokens, so the response carries none. The addon then does not call ``fetchTokens``
again by itself: from five minutes before ``accessTokenExpiration`` its ``loadAccessToken``
throws "Refresh token missing", and only a new ``db.cloud.login()`` fetches again
(docs/migrating.md says what an app does about it).
Refused: ``not_before`` (authserver tokens are valid from issue).
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from authserver.clients.model import Client
from authserver.profiles import values
from authserver.profiles.base import DialectRequest
from authserver.profiles.base import ProfileError
from authserver.profiles.base import TokenParameters
from authserver.tokens.model import IssuedToken

MAX_PUBLIC_KEY = 8192


class DexieProfile:
    name: ClassVar[str] = "dexie"
    fields: ClassVar[frozenset[str]] = frozenset(
        {"scopes", "claims", "public_key", "expires_in", "not_before"}
    )
    paths: ClassVar[tuple[str, ...]] = ()

    def translate(self, request: DialectRequest, client: Client) -> TokenParameters:
        f = request.fields
        if not request.is_json:
            raise ProfileError(
                "the dexie profile takes a JSON body (Content-Type: application/json)"
            )
        if "not_before" in f:
            raise ProfileError(
                "not_before is not supported: authserver tokens are valid from the moment "
                "they are issued"
            )
        out: TokenParameters = {}
        if "scopes" in f:
            out["scope"] = values.string_list(f["scopes"], "scopes")
        if "claims" in f:
            out["claims"] = values.json_object(f["claims"], "claims")
        if "expires_in" in f:
            out["expires_in"] = values.duration(f["expires_in"], "expires_in")
        if "public_key" in f:
            _check_public_key(f["public_key"])
        return out

    def render(self, issued: IssuedToken, request: DialectRequest) -> dict[str, Any]:
        claims = dict(issued.claims)
        return {
            "type": "tokens",
            "claims": claims,
            "accessToken": issued.access_token,
            # Epoch milliseconds: the addon builds a Date from it.
            "accessTokenExpiration": int(claims["exp"]) * 1000,
            # dexie-cloud-common's userType: "client" for a token a client holds for
            # itself, "prod" for a production user's token.
            "userType": "prod" if claims["sub"] != claims["client_id"] else "client",
        }


def _check_public_key(value: Any) -> None:
    if not isinstance(value, str) or len(value) > MAX_PUBLIC_KEY:
        raise ProfileError("public_key must be a PEM-encoded public key")
    try:
        load_pem_public_key(value.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm):
        # UnsupportedAlgorithm: a well-formed PEM of a key type cryptography does not know
        # (an unknown algorithm OID); it is no ValueError, and was a 500.
        raise ProfileError("public_key must be a PEM-encoded public key") from None
