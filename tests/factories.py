"""Shared factories: one way for a test to ask for a token.

*target* is Flask's test client (``http``) or a real server (a :class:`ServerProcess`
or a base URL string): the same form request either way, so a test reads the same
whichever tier it runs at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from authserver.clients.auth_methods import CLIENT_SECRET_BASIC
from authserver.clients.auth_methods import CLIENT_SECRET_POST
from authserver.keys import crypto
from authserver.keys.model import SigningKey
from tests.conftest import PRESET_KEY_POOL

#: Seconds a real-HTTP token request may take on a loaded test machine.
TIMEOUT = 10
#: A well-formed PEM public key of a type no library knows: a SubjectPublicKeyInfo whose
#: algorithm is the OID 1.2.3.4 (cryptography raises UnsupportedAlgorithm, no ValueError).
UNKNOWN_KEY_TYPE_PEM = (
    "-----BEGIN PUBLIC KEY-----\nMAswBQYDKgMEAwIAAQ==\n-----END PUBLIC KEY-----\n"
)


def _base_url(target: Any) -> str | None:
    """The base URL of a real server, or None for Flask's test client."""
    if isinstance(target, str):
        return target
    return getattr(target, "base_url", None)


def request_token(
    target: Any,
    credentials: tuple[str, str],
    *,
    method: str = CLIENT_SECRET_BASIC,
    remote_addr: str | None = None,
    **params: Any,
) -> Any:
    """``POST /token``: ``grant_type=client_credentials`` and *params* as a form body,
    *credentials* (client id, secret) sent by *method*: HTTP Basic
    (``client_secret_basic``) or in the form (``client_secret_post``). Returns the
    response as is: Flask's test response, or a ``requests.Response`` for a real server.

    *remote_addr* is the client's address as the application sees it (``REMOTE_ADDR``),
    for Flask's test client only: over real HTTP it is the loopback address the test
    connects from, and a real server's caller cannot choose it."""
    data = {"grant_type": "client_credentials", **params}
    auth: tuple[str, str] | None = credentials
    if method == CLIENT_SECRET_POST:
        data.update(client_id=credentials[0], client_secret=credentials[1])
        auth = None
    elif method != CLIENT_SECRET_BASIC:
        raise ValueError(f"request_token sends a client secret, not by {method!r}")
    base_url = _base_url(target)
    if base_url is not None:
        if remote_addr is not None:
            raise ValueError("remote_addr is for Flask's test client; a real server sees 127.0.0.1")
        return requests.post(base_url + "/token", data=data, auth=auth, timeout=TIMEOUT)
    environ = {"REMOTE_ADDR": remote_addr} if remote_addr is not None else {}
    return target.post("/token", data=data, auth=auth, environ_base=environ)


def body_of(response: Any) -> Any:
    """The JSON body of either kind of response."""
    return response.json() if isinstance(response, requests.Response) else response.get_json()


def text_of(response: Any) -> str:
    return (
        response.text
        if isinstance(response, requests.Response)
        else response.get_data(as_text=True)
    )


def token_response(
    target: Any,
    credentials: tuple[str, str],
    *,
    expires_in_at_most: int | None = None,
    **params: Any,
) -> dict[str, Any]:
    """:func:`request_token`, which must succeed as RFC 6749 §5.1 says (200, a JSON body
    that is not to be stored, a Bearer token): the response body. With
    *expires_in_at_most*, its ``expires_in`` must not exceed that many seconds."""
    response = request_token(target, credentials, **params)
    assert response.status_code == 200, text_of(response)
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("application/json"), content_type
    cache_control = response.headers.get("Cache-Control", "")
    assert "no-store" in cache_control, cache_control
    body: dict[str, Any] = body_of(response)
    assert body["token_type"] == "Bearer", body
    assert isinstance(body["access_token"], str), body
    assert body["access_token"], body
    if expires_in_at_most is not None:
        assert body["expires_in"] <= expires_in_at_most, body["expires_in"]
    return body


def issue_token(target: Any, credentials: tuple[str, str], **params: Any) -> str:
    """An access token: :func:`token_response`'s ``access_token`` (same arguments)."""
    return str(token_response(target, credentials, **params)["access_token"])


@st.composite
def signing_key_sets(
    draw: Any,
    *,
    now: float,
    offsets: Sequence[float],
    retired_offsets: Sequence[float],
    created_before: float,
    private_optional: bool = False,
) -> list[SigningKey]:
    """Up to three signing keys with starts, ends and retirements at *now* plus one of
    *offsets* (retirements: of *retired_offsets*), chained or not, with real key material
    (``PRESET_KEY_POOL``: the n-th key of a set is always the same key, and never one the
    code under test generates). With *private_optional*
    a key may lack its private half, as a crash or an operator can leave it."""
    keys = []
    for n in range(draw(st.integers(0, 3))):
        rsa, kid = PRESET_KEY_POOL.get(n)
        activate = now + draw(st.sampled_from(offsets))
        end = draw(st.one_of(st.none(), st.sampled_from(offsets).map(now.__add__)))
        if end is not None and end <= activate:
            end = None
        retired = draw(st.one_of(st.none(), st.sampled_from(retired_offsets).map(now.__add__)))
        private = not private_optional or draw(st.booleans())
        keys.append(
            SigningKey(
                kid=kid,
                private_pem=crypto.to_pem(rsa, None) if private else None,
                public_jwk=crypto.public_jwk(rsa, kid),
                created_at=activate - created_before,
                activate_at=activate,
                deactivate_at=end,
                retired_at=retired,
            )
        )
    return keys


def client_public_jwk(key: Any, kid: str = "client-key-1") -> dict[str, Any]:
    """A private_key_jwt client's public JWK for *key* (an RSA private key), made with
    PyJWT, not the server's code: kid, ``use: sig``, ``alg: RS256``."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk
