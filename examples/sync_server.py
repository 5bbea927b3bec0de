"""Example: a Python sync server that accepts only valid authserver access tokens.

Plain WSGI on the standard library's ``wsgiref`` (threaded), with
``authserver_verifier.require_token`` in front: no token or a bad one gets 401, a good one
reaches the app with the verified claims in ``environ["authserver.claims"]``. Use the same
middleware in front of any WSGI app (Flask: ``app.wsgi_app = require_token(v)(app.wsgi_app)``).

Configuration (environment or options):

``SYNC_ISSUER``    authserver's ``AUTHSERVER_ISSUER``, e.g. ``https://auth.example.com``
``SYNC_AUDIENCE``  this server's audience, e.g. ``https://sync.example.com``

Run: ``python examples/sync_server.py --port 8080``. Each accepted request prints one line
``verified claims: {...}`` on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer
from wsgiref.simple_server import make_server

try:
    from authserver_verifier import CLAIMS_ENVIRON_KEY
    from authserver_verifier import TokenVerifier
    from authserver_verifier import require_token
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "verifiers" / "python"))
    from authserver_verifier import CLAIMS_ENVIRON_KEY
    from authserver_verifier import TokenVerifier
    from authserver_verifier import require_token


def sync_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The sync protocol would live here; the demo answers with who is connected."""
    if environ.get("PATH_INFO") == "/healthz":
        body = b'{"ok": true}'
    else:
        claims = environ[CLAIMS_ENVIRON_KEY]  # set by require_token: always verified
        print("verified claims: " + json.dumps(claims, sort_keys=True), flush=True)
        body = json.dumps({"ok": True, "user": claims["sub"], "claims": claims}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", default=os.environ.get("SYNC_ISSUER"))
    parser.add_argument("--audience", default=os.environ.get("SYNC_AUDIENCE"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if not args.issuer or not args.audience:
        parser.error("--issuer/SYNC_ISSUER and --audience/SYNC_AUDIENCE are required")
    # One verifier for the whole process: it caches the JWKS and is thread-safe.
    verifier = TokenVerifier(args.issuer, args.audience)
    app = require_token(verifier, public_paths={"/healthz"})(sync_app)
    with make_server(
        args.host, args.port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    ) as httpd:
        print(f"sync server on http://{args.host}:{args.port}", flush=True)
        httpd.serve_forever()


if __name__ == "__main__":
    main()
