"""``private_key_jwt`` clients registered with a ``jwks_uri``, through a real
``authserver serve`` process and a real key server on loopback.

What a stranger can make the server fetch: nothing for an unsigned or malformed assertion,
one fetch per URI per failure period for anything else, never a redirect target, never a
private address in production mode (unless the operator allows it), and every failure is
``invalid_client`` (401), never a 5xx or a hung request.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import run_cli_here
from tests.jwks_servers import KeyServer
from tests.jwks_servers import drip
from tests.jwks_servers import redirect
from tests.jwks_servers import self_signed_cert
from tests.jwks_servers import send_json
from tests.jwks_servers import server_tls

pytestmark = pytest.mark.e2e

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def jwks(rsa_private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_private_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    return {"keys": [jwk]}


def assertion(
    client_id: str, key: rsa.RSAPrivateKey, aud: str, *, alg: str = "RS256", **extra: Any
) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
        **extra,
    }
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none")
    # The key, not its PEM: PyJWT would parse (and check) a PEM again at every call.
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": "k1"})


class Deployment:
    """A SQLite database, a real server process and a way to register jwks_uri clients."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.env = {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
            "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
            # Failure limits would answer 429 before the fetch is reached; what is
            # counted here is what reaches the key server.
            "AUTHSERVER_AUTH_FAILURES_PER_CLIENT": "off",
            "AUTHSERVER_AUTH_FAILURES_PER_ADDRESS": "off",
            **env,
        }
        self.log = tmp / "server.log"
        self.server = ServerProcess(self.env, log_path=self.log)
        self.env["AUTHSERVER_ISSUER"] = self.server.base_url

    def register(self, jwks_uri: str) -> str:
        created = cli_json_here(
            self.env, "clients", "create", "--name", "jwt", "--jwks-uri", jwks_uri
        )
        return str(created["client_id"])

    def token(self, client_assertion: str) -> requests.Response:
        return requests.post(
            self.server.base_url + "/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion,
            },
            timeout=30,
        )

    @property
    def token_url(self) -> str:
        return self.server.base_url + "/token"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One server for the tests below; each registers its own client and key server."""
    d = Deployment(tmp_path_factory.mktemp("jwks-uri"))
    d.server.start()
    yield d
    d.server.stop()
    assert "Traceback" not in d.log.read_text(errors="replace")


def assert_invalid_client(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


def test_a_jwks_uri_client_gets_tokens_with_one_fetch(
    deployment: Deployment, jwks: dict[str, Any], rsa_private_key: rsa.RSAPrivateKey
) -> None:
    with KeyServer(send_json(jwks)) as keys:
        client_id = deployment.register(keys.url())
        for _ in range(3):
            response = deployment.token(assertion(client_id, rsa_private_key, deployment.token_url))
            assert response.status_code == 200, response.text
        assert keys.requests == ["/jwks.json"]


def test_strangers_cannot_make_the_server_fetch_repeatedly(
    deployment: Deployment, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """Unsigned and malformed assertions naming the client cost no fetch at all; signed
    ones by a stranger's key cost one fetch per failure period, not one per request."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with KeyServer(send_json({"error": "down"}, status=500)) as keys:
        client_id = deployment.register(keys.url())
        aud = deployment.token_url
        unsigned = [assertion(client_id, stranger, aud, alg="none") for _ in range(10)]
        hmac = [jwt.encode({"sub": client_id, "exp": 2**31}, "k" * 32, "HS256")]
        far = [assertion(client_id, stranger, aud, exp=int(time.time()) + 10**6)]
        huge = [assertion(client_id, stranger, aud, exp=10**400)]
        for value in [*unsigned, *hmac, *far, *huge, "garbage", "a.b.c"]:
            assert_invalid_client(deployment.token(value))
        assert keys.requests == []
        for _ in range(15):
            assert_invalid_client(deployment.token(assertion(client_id, stranger, aud)))
        assert len(keys.requests) == 1


def test_strangers_waiting_on_a_hanging_first_fetch_do_not_hold_every_thread(
    deployment: Deployment, jwks: dict[str, Any], rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """A client's first assertion starts the fetch of its set; the key server holds its
    answer. Strangers' assertions naming the client, more than the worker has threads,
    stop waiting for that fetch once it is a second old: another client's token request
    is answered while the fetch is still in flight, and the fetch, answered afterwards,
    still lets the client in. (When the strangers waited for the fetch's whole deadline,
    the other request could not be answered before the deadline cut the fetch, and the
    client was refused.)"""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = cli_json_here(deployment.env, "clients", "create", "--name", "other")
    release = threading.Event()

    def held(handler: Any) -> None:
        release.wait(30)
        send_json(jwks)(handler)

    with KeyServer(held) as hanging:
        client_id = deployment.register(hanging.url())
        aud = deployment.token_url
        answers: dict[str, requests.Response] = {}

        def ask(name: str, key: rsa.RSAPrivateKey) -> None:
            answers[name] = deployment.token(assertion(client_id, key, aud))

        first = threading.Thread(target=ask, args=("client", rsa_private_key))
        first.start()
        deadline = time.monotonic() + 10
        while not hanging.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hanging.requests == ["/jwks.json"]
        strangers = [
            threading.Thread(target=ask, args=(f"stranger {i}", stranger)) for i in range(8)
        ]
        for t in strangers:
            t.start()
        time.sleep(0.2)  # they reach the server first
        answered = requests.post(
            deployment.token_url,
            data={"grant_type": "client_credentials"},
            auth=(other["client_id"], other["client_secret"]),
            timeout=30,
        )
        release.set()
        for t in [first, *strangers]:
            t.join(30)
    assert answered.status_code == 200, answered.text
    assert answers["client"].status_code == 200, answers["client"].text
    for i in range(8):
        assert_invalid_client(answers[f"stranger {i}"])
    assert hanging.requests == ["/jwks.json"]


def test_an_assertion_with_an_algorithm_outside_the_allow_list_costs_no_fetch(
    deployment: Deployment,
) -> None:
    """Well-formed in every other way (a kid, a sub, an exp within the hour): the
    algorithm alone is refused before the client's keys are fetched, whatever it is."""
    with KeyServer(send_json({"error": "down"}, status=500)) as keys:
        client_id = deployment.register(keys.url())
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": deployment.token_url, "exp": now + 60}
        for alg in ("HS256", "HS512", "RS384", "PS512"):
            claims["jti"] = str(uuid.uuid4())
            key: Any = "k" * 64
            if alg[:2] in ("RS", "PS"):
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            signed = jwt.encode(claims, key, algorithm=alg, headers={"kid": "k1"})
            assert_invalid_client(deployment.token(signed))
        assert keys.requests == []


def test_a_disabled_jwks_uri_client_costs_no_fetch(
    deployment: Deployment, jwks: dict[str, Any], rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """A disabled client is refused before its keys are looked up: its own valid
    assertions make the server fetch nothing."""
    with KeyServer(send_json(jwks)) as keys:
        client_id = deployment.register(keys.url())
        assert run_cli_here(deployment.env, "clients", "disable", client_id).returncode == 0
        for _ in range(3):
            response = deployment.token(assertion(client_id, rsa_private_key, deployment.token_url))
            assert_invalid_client(response)
        assert keys.requests == []


def test_a_redirecting_key_server_is_not_followed(
    deployment: Deployment, jwks: dict[str, Any], rsa_private_key: rsa.RSAPrivateKey
) -> None:
    with KeyServer(send_json(jwks)) as target, KeyServer(redirect(target.url())) as redirector:
        client_id = deployment.register(redirector.url())
        response = deployment.token(assertion(client_id, rsa_private_key, deployment.token_url))
        assert_invalid_client(response)
        assert redirector.requests == ["/jwks.json"]
        assert target.requests == []


@pytest.mark.waits
def test_a_slow_drip_key_server_gets_invalid_client_within_the_deadline(
    deployment: Deployment, jwks: dict[str, Any], rsa_private_key: rsa.RSAPrivateKey
) -> None:
    body = json.dumps(jwks).encode()
    with KeyServer(drip(body, every=0.1)) as dripping:  # would take over a minute
        client_id = deployment.register(dripping.url())
        started = time.monotonic()
        response = deployment.token(assertion(client_id, rsa_private_key, deployment.token_url))
        assert_invalid_client(response)
        # The deadline is 5 s for the whole fetch; the drip alone would take > 60 s.
        assert time.monotonic() - started < 20


def test_a_fetched_set_with_private_key_material_is_refused(
    deployment: Deployment, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    private = json.loads(RSAAlgorithm.to_jwk(rsa_private_key))
    private.update(kid="k1")
    with KeyServer(send_json({"keys": [private]})) as leaky:
        client_id = deployment.register(leaky.url())
        response = deployment.token(assertion(client_id, rsa_private_key, deployment.token_url))
        assert_invalid_client(response)
    assert private["d"] not in deployment.log.read_text(errors="replace")


def test_registration_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    # The other refused shapes (ftp, file, credentials, no host) are checked on the rule
    # itself in tests/integration/test_jwks_fetch.py; this is the CLI's one-line error.
    env = Deployment(tmp_path).env
    uri = "http://keys.example.com/jwks.json"
    result = run_cli_here(env, "clients", "create", "--name", "x", "--jwks-uri", uri)
    assert result.returncode != 0
    assert "jwks_uri must be an https:// URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("allow_private", [False, True], ids=["default", "allowed"])
def test_production_mode_refuses_private_targets_unless_allowed(
    tmp_path: Path,
    jwks: dict[str, Any],
    rsa_private_key: rsa.RSAPrivateKey,
    allow_private: bool,
) -> None:
    cert, key = self_signed_cert(tmp_path)
    env = {
        "AUTHSERVER_PRODUCTION": "true",
        "AUTHSERVER_ALLOW_HTTP_ISSUER": "true",
        # The key server's certificate is trusted like a CA the operator installed.
        "SSL_CERT_FILE": str(cert),
    }
    if allow_private:
        env["AUTHSERVER_JWKS_URI_ALLOW_PRIVATE"] = "true"
    deployment = Deployment(tmp_path, **env)
    with KeyServer(send_json(jwks), tls=server_tls(cert, key)) as keys:
        # Production mode refuses plain http at registration, even on loopback.
        result = run_cli_here(
            deployment.env, "clients", "create", "--name", "x", "--jwks-uri", "http://127.0.0.1/x"
        )
        assert result.returncode != 0
        assert "production" in result.stderr
        client_id = deployment.register(keys.url())
        with deployment.server:
            response = deployment.token(assertion(client_id, rsa_private_key, deployment.token_url))
        if allow_private:
            assert response.status_code == 200, response.text
            assert keys.requests == ["/jwks.json"]
        else:
            assert_invalid_client(response)
            assert keys.connections == 0
