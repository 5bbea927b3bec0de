"""Client authentication at the token endpoint (RFC 6749 §2.3.1).

Authlib's ``client_secret_basic`` and ``client_secret_post`` are replaced, not wrapped:
Authlib decodes the Basic header leniently and raises ``UnicodeDecodeError`` (a 500) on
non-UTF-8 credentials, and answers unknown and wrong-secret clients differently. Here a
malformed header, an unknown client, a disabled client and a wrong secret are all the
same ``invalid_client``, so the endpoint reveals nothing about which ids exist.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion

from authserver.oauth.clients import OAuthClient
from authserver.tokens.revocations import RevocationStore

QueryClient = Callable[[str], OAuthClient | None]

#: Upper bounds that keep hashing and lookups cheap for hostile input.
MAX_ID = 128
MAX_SECRET = 256
MALFORMED_BASIC = "malformed Basic authorization header"


def basic_credentials(headers: Any) -> tuple[str, str] | None:
    """Parse ``Authorization: Basic`` (RFC 7617) strictly.

    :returns: ``None`` when no Basic header is present.
    :raises InvalidClientError: when one is present but malformed.
    """
    auth = headers.get("Authorization")
    if not auth:
        return None
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidClientError(MALFORMED_BASIC, status_code=401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id or not secret:
        raise InvalidClientError(MALFORMED_BASIC, status_code=401)
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    return unquote(client_id), unquote(secret)


def uses_basic(headers: Any) -> bool:
    auth = headers.get("Authorization") or ""
    return auth.strip().lower().startswith("basic")


def _check(
    query_client: QueryClient, client_id: str, secret: str, method: str
) -> OAuthClient | None:
    if len(client_id) > MAX_ID or len(secret) > MAX_SECRET:
        return None
    client = query_client(client_id)
    if client is None or not client.check_endpoint_auth_method(method, "token"):
        return None
    if not client.check_client_secret(secret):
        return None
    return client


def authenticate_client_secret_basic(query_client: QueryClient, request: Any) -> OAuthClient | None:
    credentials = basic_credentials(request.headers)
    if credentials is None:
        return None
    form = request.form
    # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
    if form.get("client_secret") or form.get("client_assertion"):
        raise InvalidRequestError("use exactly one client authentication method")
    client_id, secret = credentials
    if form.get("client_id") and form.get("client_id") != client_id:
        raise InvalidRequestError("client_id in the body does not match the Authorization header")
    return _check(query_client, client_id, secret, "client_secret_basic")


def authenticate_client_secret_post(query_client: QueryClient, request: Any) -> OAuthClient | None:
    form = request.form
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    if not client_id or not secret or uses_basic(request.headers):
        return None
    if form.get("client_assertion"):
        raise InvalidRequestError("use exactly one client authentication method")
    return _check(query_client, client_id, secret, "client_secret_post")


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt`` (RFC 7523 §2.2, OIDC Core §9) on Authlib's assertion class.

    The assertion's ``aud`` must name this server (its issuer or one of its endpoint
    URLs), ``exp`` is required, and each ``jti`` is accepted once while the assertion is
    alive (RFC 7523 §3 item 7), across instances (stored in the database).
    """

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(
        self,
        issuer: str,
        revocations: RevocationStore,
        resolve_jwks: Callable[[OAuthClient], dict[str, Any]],
    ) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._issuer = issuer
        self._revocations = revocations
        self._resolve_jwks = resolve_jwks

    def get_audiences(self) -> list[str]:
        base = self._issuer
        return [base, f"{base}/", f"{base}/token", f"{base}/introspect", f"{base}/revoke"]

    def resolve_client_public_key(self, client: OAuthClient) -> Any:
        from joserfc.jwk import KeySet

        return KeySet.import_key_set(self._resolve_jwks(client))  # type: ignore[arg-type]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            return False
        exp = claims.get("exp")
        return self._revocations.use_assertion(str(claims["sub"]), jti, float(exp))

    def __call__(self, query_client: QueryClient, request: Any) -> OAuthClient | None:
        if uses_basic(request.headers) or request.form.get("client_secret"):
            if request.form.get("client_assertion"):
                raise InvalidRequestError("use exactly one client authentication method")
            return None
        return super().__call__(query_client, request)


class ClientJwksResolver:
    """The public JWK set of a private_key_jwt client: registered inline, or fetched from
    its ``jwks_uri`` (cached for ``ttl`` seconds, bounded in time and size)."""

    def __init__(self, ttl: float = 300.0, timeout: float = 5.0, max_bytes: int = 65536) -> None:
        self._ttl = ttl
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def __call__(self, client: OAuthClient) -> dict[str, Any]:
        domain = client.domain
        if domain.jwks is not None:
            return domain.jwks
        if not domain.jwks_uri:
            raise InvalidClientError("the client has no registered keys")
        return self._fetch(domain.jwks_uri)

    def _fetch(self, uri: str) -> dict[str, Any]:
        import json
        import time
        import urllib.request

        cached = self._cache.get(uri)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            request = urllib.request.Request(uri, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked at registration
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                data = json.loads(response.read(self._max_bytes + 1)[: self._max_bytes])
        except (OSError, ValueError):
            raise InvalidClientError("the client's jwks_uri could not be fetched") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise InvalidClientError("the client's jwks_uri did not return a JWK set")
        self._cache[uri] = (time.monotonic(), data)
        return data
