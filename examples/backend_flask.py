"""Example: your app's backend hands its signed-in user a token for the sync server.

The pattern every sync vendor documents ("backend mints a token, client connects with it"):

1. the browser signs in to *your* backend (here: a toy password check and Flask's signed
   session cookie; use whatever you already have);
2. the browser asks ``GET /api/sync-token``; the backend checks its own session, calls
   authserver's ``POST /token`` server to server with its client credentials and the user's
   ``sub``, ``email``, ``name`` and extra claims, and returns
   ``{"accessToken", "syncEndpoint", "expiresAt"}``;
3. the browser's sync client presents ``accessToken`` to ``syncEndpoint`` and calls
   ``/api/sync-token`` again shortly before ``expiresAt`` (docs/sync-servers.md).

The client secret never leaves this process. Configuration (environment):

``AUTH_TOKEN_URL``      authserver's token endpoint, e.g. ``https://auth.example.com/token``
``AUTH_CLIENT_ID``      from ``authserver clients create``
``AUTH_CLIENT_SECRET``  from ``authserver clients create`` (shown once)
``SYNC_AUDIENCE``       the audience registered for this client (``--audience``)
``SYNC_ENDPOINT``       the URL the browser should connect to
``SESSION_SECRET``      Flask's session signing key

Run: ``python examples/backend_flask.py --port 5000``.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flask import Flask
from flask import jsonify
from flask import request
from flask import session

#: Stand-in for your user table. Passwords here only to make the demo self-contained.
USERS: dict[str, dict[str, str]] = {
    "ada": {
        "password": "correct horse battery staple",
        "sub": "user-42",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "libraryId": "lib-7",
    },
}


def request_access_token(user: dict[str, str]) -> dict[str, Any]:
    """``POST /token`` (client_credentials, client_secret_basic) for *user*."""
    client_id = os.environ["AUTH_CLIENT_ID"]
    client_secret = os.environ["AUTH_CLIENT_SECRET"]
    # RFC 6749 §2.3.1: form-encode id and secret before joining them for Basic.
    credentials = ":".join(urllib.parse.quote(v, safe="") for v in (client_id, client_secret))
    body = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "sub": user["sub"],
            "email": user["email"],
            "name": user["name"],
            "audience": os.environ["SYNC_AUDIENCE"],
            "claims": json.dumps({"libraryId": user["libraryId"]}),
        }
    ).encode()
    token_request = urllib.request.Request(  # noqa: S310 - a configured https URL
        os.environ["AUTH_TOKEN_URL"],
        data=body,
        headers={
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
    )
    with urllib.request.urlopen(token_request, timeout=10) as response:  # noqa: S310
        answer: dict[str, Any] = json.loads(response.read(65536))
    return answer


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ.get("SESSION_SECRET") or secrets.token_hex(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True}

    @app.post("/login")
    def login() -> Any:
        form = request.get_json(silent=True) or request.form
        user = USERS.get(str(form.get("username", "")))
        password = str(form.get("password", ""))
        if user is None or not hmac.compare_digest(user["password"], password):
            return jsonify(error="invalid_credentials"), 401
        session.clear()
        session["username"] = form["username"]
        return {"ok": True}

    @app.get("/api/sync-token")
    def sync_token() -> Any:
        # 1. Your own session decides who the user is; authserver trusts this backend.
        user = USERS.get(session.get("username", ""))
        if user is None:
            return jsonify(error="not_signed_in"), 401
        # 2. Server to server: the secret stays here.
        try:
            token = request_access_token(user)
        except urllib.error.HTTPError as exc:
            detail = exc.read(4096).decode(errors="replace")
            app.logger.warning("authserver refused the token request: %s %s", exc.code, detail)
            return jsonify(error="token_service_refused"), 502
        except (OSError, ValueError) as exc:
            app.logger.warning("authserver unreachable: %s", exc)
            return jsonify(error="token_service_unavailable"), 503
        # 3. What the browser's sync client needs (the shape sync vendors' docs use).
        response = jsonify(
            accessToken=token["access_token"],
            syncEndpoint=os.environ["SYNC_ENDPOINT"],
            expiresAt=int(time.time()) + int(token["expires_in"]),
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    # Flask's development server; use a production WSGI server (granian, gunicorn, ...).
    create_app().run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
