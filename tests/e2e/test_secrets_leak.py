"""Secrets stay secret: a full session against a real server at debug log level, then every
byte the server wrote (its log, response bodies other than the two that must show a
secret, the audit trail, /metrics, every table of the database, the key directory) is
searched for every secret, passphrase, token and private key used. None may appear, in
any of the forms a careless log line would give it: as sent, URL-encoded, inside the
base64 of an ``Authorization: Basic`` header (or any other base64 text), or cut short
(a secret's random part without its public prefix, or the first characters of it)."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote
from urllib.parse import quote_plus
from urllib.parse import urlencode

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from sqlalchemy import create_engine

from authserver.clients.secrets import SECRET_PREFIX
from authserver.storage.sql.tables import metadata
from tests.helpers import ServerProcess
from tests.helpers import cli_json
from tests.helpers import run_cli

# Characters that URL encoding changes, so the URL-encoded forms differ from the plain ones.
PASSPHRASE = "pp Zq8+vN3/kLr7&TcW2=yX"
ADMIN_TOKEN = "admin+Hf4Ks9/Pq2Lm7Vx3Bn8+Zr6Wt1Yc5Qa0=="
METRICS_TOKEN = "metrics-Jd8Rw2Xe5Tn1Gc7Vb4/Mk9Ls3Pz6+"
WRONG_SECRET = "as_secret_WRONGwrongWRONGwrongWRONGwrongWRONGwr"
AUD = "https://sync.example"


def base64_forms(value: bytes) -> list[str]:
    """The text *value* leaves inside any standard or URL-safe base64 string, whatever
    bytes come before it: its encoding at each of the three byte alignments, without the
    characters the neighbouring bytes share. Finds ``client_id:secret`` in a Basic header."""
    forms = []
    for shift in range(3):
        start = (shift + 2) // 3 * 4  # first character encoding only bytes of *value*
        end = (shift + len(value)) // 3 * 4  # last full group made of *value* alone
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.append(encode(b"\0" * shift + value).decode()[start:end])
    return [f for f in forms if len(f) >= 16]


def leak_forms(name: str, value: str, *, client_id: str | None = None) -> dict[str, str]:
    """Every form of *value* to search for, by a name that says which one was found."""
    forms = {
        f"{name}": value,
        f"{name} url-encoded": quote(value, safe=""),
        f"{name} form-encoded": quote_plus(value),
    }
    body = value.removeprefix(SECRET_PREFIX)
    if body != value:
        forms[f"{name} without its prefix"] = body
    forms[f"{name} cut short"] = body[:16]
    for i, form in enumerate(base64_forms(value.encode())):
        forms[f"{name} in base64 ({i})"] = form
    if client_id is not None:
        basic = base64.b64encode(f"{client_id}:{value}".encode()).decode()
        forms[f"{name} as Basic credentials"] = basic
    return forms


def test_leak_forms_find_a_basic_header_and_a_url_encoded_value() -> None:
    """The search itself: a log line with the raw Authorization header or a form body is
    found by the forms, though neither holds the secret as sent."""
    secret = "as_secret_Zx9Qw2Er7Ty5Ui3Op1As8Df6Gh4Jk0Lz"
    header = "Basic " + base64.b64encode(f"as_client_abc:{secret}".encode()).decode()
    forms = leak_forms("s", secret, client_id="as_client_abc")
    assert secret not in header
    assert any(f in f"DEBUG Authorization: {header}" for f in forms.values())
    for prefix in ("", "x", "xy"):  # whatever the id's length, the alignment is covered
        encoded = base64.b64encode(f"{prefix}:{secret}".encode()).decode()
        assert any(f in encoded for k, f in forms.items() if "base64" in k)
    assert leak_forms("p", PASSPHRASE)["p form-encoded"] in urlencode({"p": PASSPHRASE})
    assert PASSPHRASE not in urlencode({"p": PASSPHRASE})


def _private_key_material(keys_dir: Path) -> list[str]:
    """Plaintext forms of every private key in the store: the unencrypted PKCS#8 body and
    the private exponent, as they would appear if leaked."""
    out: list[str] = []
    for pem_path in keys_dir.glob("*.pem"):
        key = serialization.load_pem_private_key(pem_path.read_bytes(), PASSPHRASE.encode())
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        body = "".join(pkcs8.strip().splitlines()[1:-1])
        out.append(body[40:120])  # a distinctive slice of the base64 body
        d = key.private_numbers().d  # type: ignore[union-attr]
        d_bytes = d.to_bytes((d.bit_length() + 7) // 8, "big")
        out.append(base64.urlsafe_b64encode(d_bytes).rstrip(b"=").decode()[:64])
    assert out, "the key store holds no private keys"
    return out


@pytest.mark.slow
def test_no_secret_appears_in_anything_the_server_writes(
    db_url: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    env = env_for(
        db_url,
        AUTHSERVER_KEY_PASSPHRASE=PASSPHRASE,
        AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN,
        AUTHSERVER_METRICS_TOKEN=METRICS_TOKEN,
        AUTHSERVER_LOG_LEVEL="debug",
    )
    env.pop("AUTHSERVER_ISSUER")
    log_path = tmp_path / "serve.log"
    secrets: list[str] = [PASSPHRASE, ADMIN_TOKEN, METRICS_TOKEN, WRONG_SECRET]
    tokens: list[str] = []
    written: list[str] = []  # every response body that must not carry a secret

    with ServerProcess(env, workers=2, log_path=log_path) as server:
        base = server.base_url
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def keep(response: requests.Response) -> requests.Response:
            written.append(response.text)
            return response

        created = cli_json(env, "clients", "create", "--name", "cli", "--audience", AUD)
        cid, secret = created["client_id"], created["client_secret"]
        secrets.append(secret)

        # Tokens: Basic, post, JSON.
        for kwargs in (
            {"auth": (cid, secret), "data": {"grant_type": "client_credentials", "sub": "u1"}},
            {
                "data": {
                    "grant_type": "client_credentials",
                    "client_id": cid,
                    "client_secret": secret,
                    "sub": "u2",
                }
            },
            {
                "json": {
                    "grant_type": "client_credentials",
                    "client_id": cid,
                    "client_secret": secret,
                    "claims": {"sub": "u3"},
                }
            },
        ):
            response = requests.post(base + "/token", timeout=10, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 200
            tokens.append(response.json()["access_token"])

        # Failed authentication of every kind.
        keep(
            requests.post(
                base + "/token",
                auth=(cid, WRONG_SECRET),
                data={"grant_type": "client_credentials"},
                timeout=10,
            )
        )
        keep(
            requests.post(
                base + "/token",
                timeout=10,
                data={
                    "grant_type": "client_credentials",
                    "client_id": cid,
                    "client_secret": WRONG_SECRET,
                },
            )
        )
        keep(
            requests.post(
                base + "/token",
                timeout=10,
                json={
                    "grant_type": "client_credentials",
                    "client_id": "nobody",
                    "client_secret": WRONG_SECRET,
                },
            )
        )
        keep(
            requests.post(
                base + "/token",
                timeout=10,
                data=b"\xff" + WRONG_SECRET.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        )
        keep(
            requests.get(
                base + "/admin/clients",
                timeout=10,
                headers={"Authorization": f"Bearer {WRONG_SECRET}"},
            )
        )

        # A secret put where no secret belongs, by a backend that misplaced it: as a
        # parameter's name, a claim's name, a request id, a path. Each such field is logged
        # and named in errors as sent; the secret in it never is.
        for body in (
            {"grant_type": "client_credentials", WRONG_SECRET: "1"},
            {"grant_type": "client_credentials", "claims": {WRONG_SECRET: 1}},
        ):
            keep(requests.post(base + "/token", auth=(cid, secret), json=body, timeout=10))
        misplaced = requests.post(
            base + "/token",
            auth=(cid, secret),
            data={"grant_type": "client_credentials"},
            headers={"X-Request-Id": WRONG_SECRET},
            timeout=10,
        )
        written.append(f"{keep(misplaced).headers}")
        keep(requests.get(f"{base}/{WRONG_SECRET}", timeout=10))
        keep(requests.get(f"{base}/admin/clients/{WRONG_SECRET}", headers=admin, timeout=10))

        # Introspection and revocation carry tokens in requests.
        keep(
            requests.post(
                base + "/introspect", auth=(cid, secret), data={"token": tokens[0]}, timeout=10
            )
        )
        keep(
            requests.post(
                base + "/revoke", auth=(cid, secret), data={"token": tokens[0]}, timeout=10
            )
        )

        # Admin API: create and rotate show a secret (not kept); everything else is kept.
        api_created = requests.post(
            base + "/admin/clients",
            headers=admin,
            timeout=10,
            json={"name": "api", "audiences": [AUD]},
        ).json()
        secrets.append(api_created["client_secret"])
        api_rotated = requests.post(
            base + f"/admin/clients/{api_created['client_id']}/rotate-secret",
            headers=admin,
            timeout=10,
        ).json()
        secrets.append(api_rotated["client_secret"])
        keep(requests.get(base + "/admin/clients", headers=admin, timeout=10))
        keep(requests.get(base + f"/admin/clients/{cid}", headers=admin, timeout=10))
        keep(requests.post(base + "/admin/keys/rotate", headers=admin, timeout=10))
        keep(requests.get(base + "/admin/keys", headers=admin, timeout=10))
        keep(requests.get(base + "/admin/audit?limit=1000", headers=admin, timeout=10))

        rotated = cli_json(env, "clients", "rotate-secret", cid)
        secrets.append(rotated["client_secret"])
        response = requests.post(
            base + "/token",
            auth=(cid, rotated["client_secret"]),
            data={"grant_type": "client_credentials"},
            timeout=10,
        )
        tokens.append(response.json()["access_token"])
        keep(requests.get(base + "/.well-known/jwks.json", timeout=10))
        keep(requests.get(base + "/openapi.json", timeout=10))
        time.sleep(0.6)  # let the audit batchers flush
        metrics = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert keep(requests.get(base + "/metrics", headers=metrics, timeout=10)).ok

    # After a graceful stop: the audit trail, the CLI's own output, the database.
    audit = run_cli(env, "audit", "--json", "--limit", "10000")
    assert audit.returncode == 0
    written.append(audit.stdout + audit.stderr)
    for args in (("clients", "list", "--json"), ("keys", "list", "--json")):
        result = run_cli(env, *args)
        written.append(result.stdout + result.stderr)
    written.append(log_path.read_text(errors="replace"))
    written.append(_database_dump(db_url))
    keys_dir = Path(env["AUTHSERVER_KEYS_DIR"])
    for path in keys_dir.iterdir():
        if path.is_file():
            written.append(path.read_bytes().decode("latin-1"))

    haystack = "\n".join(written)
    client_ids = {s: cid for s in secrets if s.startswith(SECRET_PREFIX)}
    needles = {
        **{
            form: needle
            for i, s in enumerate(secrets)
            for form, needle in leak_forms(f"secret {i}", s, client_id=client_ids.get(s)).items()
        },
        **{f"token {i}": t for i, t in enumerate(tokens)},
        **{f"token signature {i}": t.rsplit(".", 1)[1] for i, t in enumerate(tokens)},
        **{f"private key {i}": m for i, m in enumerate(_private_key_material(keys_dir))},
    }
    leaked = sorted(name for name, needle in needles.items() if needle in haystack)
    assert not leaked, f"found in server output: {leaked}"
    # Sanity: the haystack really holds what was searched (the log is verbose, the audit full).
    assert "token.issued" in haystack
    assert cid in haystack


def _database_dump(db_url: str) -> str:
    if db_url.startswith("sqlite"):
        path = db_url.split("sqlite:///", 1)[1]
        with sqlite3.connect(path) as conn:
            return "\n".join(conn.iterdump())
    engine = create_engine(db_url)
    rows: list[Any] = []
    try:
        with engine.connect() as conn:
            # Every table the application has, from its own metadata: a new table cannot
            # be missed by this search.
            for table in metadata.sorted_tables:
                rows.extend(conn.execute(table.select()).fetchall())
    finally:
        engine.dispose()
    return "\n".join(json.dumps([str(c) for c in row]) for row in rows)
