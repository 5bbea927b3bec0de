"""The server's introspection (``tokens/inspection.py``) and the sync servers' verifier
(``authserver_verifier``) apply one set of JWT rules (``authserver_verifier.rules``): for
every token in this matrix, at the same instant, both give the answer the rules give, and
they differ only where the rules say (``strict_exp``: no leeway on ``exp`` for the issuer).

Issue 13: they used to disagree (``typ`` exact vs case-insensitive and
``application/at+jwt``; a 60 s ``nbf`` leeway and none on ``exp`` vs 30 s on all three).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from authserver_verifier import InvalidToken
from authserver_verifier import TokenVerifier
from joserfc import jwt

from authserver.clock import FixedClock
from authserver.container import Services
from authserver.settings import Settings
from tests.conftest import make_services

ISSUER = "http://localhost:8000"
AUD = "https://sync.example"
T0 = 1_800_000_000


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": ISSUER,
        }
    )
    services = make_services(settings, FixedClock(T0))
    yield services
    services.close()


@pytest.fixture
def jwks_url(svc: Services) -> Iterator[str]:
    with svc.unit_of_work():
        body = json.dumps(svc.key_ring.published_jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks"
    httpd.shutdown()
    httpd.server_close()


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUD,
        "exp": T0 + 300,
        "iat": T0,
        "nbf": T0,
        "jti": "j1",
        "client_id": "as_client_x",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("valid", {}, {}),
    ("typ application/at+jwt", {"typ": "application/at+jwt"}, {}),
    ("typ upper case", {"typ": "AT+JWT"}, {}),
    ("typ JWT", {"typ": "JWT"}, {}),
    ("typ statuslist+jwt", {"typ": "statuslist+jwt"}, {}),
    ("no typ", {"typ": None}, {}),
    # RFC 7519 section 4.1.4: not accepted "on or after" exp: at exp itself the issuer
    # (strict_exp) refuses it, a second before it accepts it.
    ("expires now", {}, {"exp": T0}),
    ("expires in 1 s", {}, {"exp": T0 + 1}),
    ("expired 29 s ago", {}, {"exp": T0 - 29}),
    ("expired 31 s ago", {}, {"exp": T0 - 31}),
    ("nbf in 29 s", {}, {"nbf": T0 + 29}),
    ("nbf in 31 s", {}, {"nbf": T0 + 31}),
    ("nbf in 59 s", {}, {"nbf": T0 + 59}),
    ("iat in 31 s", {}, {"iat": T0 + 31}),
    ("exp a string", {}, {"exp": "soon"}),
    ("no jti", {}, {"jti": None}),
    ("no sub", {}, {"sub": None}),
    ("empty sub", {}, {"sub": ""}),
    ("no iat", {}, {"iat": None}),
    ("no client_id", {}, {"client_id": None}),
    ("other issuer", {}, {"iss": "https://evil.example"}),
]


@pytest.mark.parametrize(("name", "header", "changes"), CASES, ids=[c[0] for c in CASES])
def test_introspection_and_the_verifier_agree(
    svc: Services, jwks_url: str, name: str, header: dict[str, Any], changes: dict[str, Any]
) -> None:
    with svc.unit_of_work():
        kid, key = svc.key_ring.current()
    protected = {"alg": "RS256", "typ": "at+jwt", "kid": kid, **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    token = jwt.encode(protected, _claims(**changes), key, algorithms=["RS256"])
    with svc.unit_of_work():
        server_accepts = svc.inspector.verify(token) is not None
    verifier = TokenVerifier(ISSUER, AUD, jwks_uri=jwks_url, clock=lambda: float(T0))
    try:
        verifier.verify(token)
    except InvalidToken:
        verifier_accepts = False
    else:
        verifier_accepts = True
    # The answers RFC 9068 and the 30 s leeway give. The one difference is deliberate and
    # part of the rules (strict_exp): the issuer set exp from its own clock, so for it a
    # token is expired at exp; a sync server allows its own clock the leeway.
    accepted = {
        "valid",
        "typ application/at+jwt",
        "typ upper case",
        "nbf in 29 s",
        "expires in 1 s",
    }
    assert verifier_accepts is (name in accepted | {"expired 29 s ago", "expires now"}), name
    assert server_accepts is (name in accepted), name
