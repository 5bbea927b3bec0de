"""The operator credentials: the admin and metrics bearer tokens, and the transport rule.

Both tokens name no client, so a wrong one is counted against the sender's address only, in
the same failed-authentication limits as ``/token`` (``web/limits.py``): once an address is
over its budget its wrong tokens get 429 instead of 401 until the window moves. Only
failures are counted or refused: the right token is always served, whatever others sent
from the same address (a NAT or a proxy without ``AUTHSERVER_PROXY_HOPS``).
"""

from __future__ import annotations

import hmac

from authlib.common.security import is_secure_transport
from flask import Response
from flask import current_app
from flask import request

from authserver.oauth.errors import INSECURE_TRANSPORT_DESCRIPTION
from authserver.oauth.requests import transport_uri
from authserver.web.errors import error_response


def _presented() -> str | None:
    """The token of the request's ``Authorization: Bearer`` header, ``None`` without one."""
    scheme, _, presented = (request.headers.get("Authorization") or "").partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else None


def presented_matches(expected: str) -> bool:
    """True when the request carries ``Authorization: Bearer <expected>``.

    :func:`hmac.compare_digest` takes the same time wherever the two differ, so the answer
    time says nothing about how much of a guess was right (tests/e2e/test_constant_time.py
    checks that this, and nothing else, compares the tokens).
    """
    presented = _presented()
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def unauthorized(realm: str, what: str) -> Response:
    """The 401 refusing a missing or wrong operator token (*what*: ``admin``, ``metrics``).

    The challenge names ``error="invalid_token"`` only when a Bearer token was sent: a
    request without one (or with another scheme) gets a bare challenge (RFC 6750 §3.1, as
    at a profile's Bearer path and in the verifiers' middleware)."""
    response = error_response(401, "invalid_token", f"a valid {what} bearer token is required")
    challenge = f'Bearer realm="{realm}"'
    if _presented():
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def count_failure() -> None:
    """Count a wrong or missing token against this address; raise the limits' 429 instead
    when the address is already over its budget (a correct token is never refused: this
    runs for failures only)."""
    failures = current_app.extensions.get("authserver.limits")
    if failures is not None:
        failures.check_address(request.remote_addr)
        failures.record_address_failure(request.remote_addr)


def insecure_transport() -> Response | None:
    """The ``/token`` transport rule (Authlib's ``is_secure_transport`` on the request URL,
    which ``ProxyFix`` has corrected when ``AUTHSERVER_PROXY_HOPS`` trusts a proxy): https,
    or plain http to a loopback host. Returns the same 400 as ``/token``, or ``None``."""
    if is_secure_transport(transport_uri(request.environ, request.path)):
        return None
    return error_response(400, "insecure_transport", INSECURE_TRANSPORT_DESCRIPTION)
