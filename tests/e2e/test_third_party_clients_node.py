"""Node's OAuth 2.0 libraries against a real ``authserver serve``: each library's own code,
exactly as pinned in ``tests/vendor_clients/package-lock.json``, runs
``tests/vendor_clients/test/oauth_clients.test.js`` (Node's test runner) against one server.

openid-client 6 (discovery from the issuer through both metadata documents;
``clientCredentialsGrant`` with ``ClientSecretBasic``, ``ClientSecretPost`` and
``PrivateKeyJwt``; ``tokenIntrospection``; ``tokenRevocation``; the RFC 6749 §5.2 errors it
surfaces for a wrong secret, a refused request and a throttled sender), oauth4webapi's RFC
9068 ``validateJwtAccessToken``, and the resource-server side sync servers use: Auth0's
``express-oauth2-jwt-bearer`` (``auth({issuerBaseURL, audience, strict})``) and
``jsonwebtoken`` with ``jwks-rsa``. Each resource-server library accepts a valid token and
refuses one for another audience and an expired one, the way it documents. The Python
clients are in ``test_third_party_clients.py``.

Needs ``node`` (20 or later) and ``npm``: skipped without them, failed under CI
(``CI=true``). ``npm ci`` installs exactly the lockfile (``tests.helpers.npm_ci``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import node_and_npm
from tests.helpers import node_test
from tests.helpers import npm_ci

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PACKAGE = Path(__file__).resolve().parents[1] / "vendor_clients"
AUDIENCE = "https://sync.example.com"
SCOPES = ("sync:read", "sync:write")
JWT_KID = "backend-key-1"


@pytest.mark.waits
def test_node_oauth_libraries(tmp_path: Path) -> None:
    node, npm = node_and_npm("the Node OAuth library checks")
    npm_ci(npm, PACKAGE)
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
        "AUTHSERVER_SCHEDULER": "false",
        # The default, named: the throttling check counts on it.
        "AUTHSERVER_AUTH_FAILURES_PER_CLIENT": "20/minute",
    }
    log = tmp_path / "serve.log"
    with ServerProcess(env, log_path=log) as server:
        cli_env = {**env, "AUTHSERVER_ISSUER": server.base_url}
        registered = ("--audience", AUDIENCE, *(a for s in SCOPES for a in ("--scope", s)))
        secret = cli_json_here(cli_env, "clients", "create", "--name", "node", *registered)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=JWT_KID, use="sig", alg="RS256")
        jwks_file = tmp_path / "backend-jwks.json"
        jwks_file.write_text(json.dumps({"keys": [jwk]}))
        jwt_client = cli_json_here(
            cli_env, "clients", "create", "--name", "node jwt", *registered,
            "--jwks-file", str(jwks_file),
        )  # fmt: skip
        private_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        clients = {
            "secret": {
                "client_id": secret["client_id"],
                "client_secret": secret["client_secret"],
            },
            "jwt": {
                "client_id": jwt_client["client_id"],
                "kid": JWT_KID,
                "private_key": private_key,
            },
        }
        node_test(
            node,
            PACKAGE,
            "test/oauth_clients.test.js",
            env={
                "AUTHSERVER_URL": server.base_url,
                "AUDIENCE": AUDIENCE,
                "SCOPES": " ".join(SCOPES),
                "OAUTH_CLIENTS": json.dumps(clients),
            },
            passed=14,
            timeout=120,
        )
    assert "Traceback" not in log.read_text(errors="replace")
