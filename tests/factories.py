"""Shared factories: one way for a test to ask for a token.

*target* is Flask's test client (``http``) or a real server (a :class:`ServerProcess`
or a base URL string): the same form request either way, so a test reads the same
whichever tier it runs at.
"""

from __future__ import annotations

from typing import Any

import requests

#: Seconds a real-HTTP token request may take on a loaded test machine.
TIMEOUT = 10


def request_token(target: Any, credentials: tuple[str, str], **params: Any) -> Any:
    """``POST /token``: ``grant_type=client_credentials`` and *params* as a form body,
    *credentials* (client id, secret) as HTTP Basic. Returns the response as is: Flask's
    test response, or a ``requests.Response`` for a real server."""
    data = {"grant_type": "client_credentials", **params}
    if isinstance(target, str) or hasattr(target, "base_url"):
        base_url = target if isinstance(target, str) else target.base_url
        return requests.post(base_url + "/token", data=data, auth=credentials, timeout=TIMEOUT)
    return target.post("/token", data=data, auth=credentials)


def body_of(response: Any) -> Any:
    """The JSON body of either kind of response."""
    return response.json() if isinstance(response, requests.Response) else response.get_json()


def text_of(response: Any) -> str:
    return (
        response.text
        if isinstance(response, requests.Response)
        else response.get_data(as_text=True)
    )


def issue_token(target: Any, credentials: tuple[str, str], **params: Any) -> str:
    """An access token: :func:`request_token`, which must succeed."""
    response = request_token(target, credentials, **params)
    assert response.status_code == 200, text_of(response)
    return str(body_of(response)["access_token"])
