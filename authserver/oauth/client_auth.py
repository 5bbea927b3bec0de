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

from authserver.oauth.clients import OAuthClient

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


def _check(query_client: QueryClient, client_id: str, secret: str, method: str) -> OAuthClient | None:
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
