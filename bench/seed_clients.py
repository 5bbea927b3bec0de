"""Seed N registered clients into an authserver database, fast, for the benchmark.

    python bench/seed_clients.py --database-url sqlite:///authserver.db --count 100000 \
        --auth-file clients.txt [--audience https://sync.example]

Brings the schema to head (the same ``ensure_schema`` that ``authserver serve`` runs), then
inserts the clients through authserver's own SQLAlchemy table (``CLIENTS``) in batches of
10,000 rows per multi-row INSERT, with ids and secret digests made by authserver's own
``clients.secrets`` functions, and finally bumps the ``clients`` version counter the way
``ClientService`` does after any change, so running workers drop their client cache.

Every seeded client gets the same secret (generated per run) so the load generator can
authenticate as any of them; the stored form is the usual ``sha256$<hex>`` digest, so the
server does exactly the work it does for a client created by ``authserver clients create``
(same row shape, same lookup, same hash comparison). One client is created through
``ClientService.create`` itself first, as a check that the bulk rows match what the service
writes.

``--auth-file`` receives one ready ``Authorization: Basic ...`` header value per line
(the load generator's Lua script picks one at random per request). Prints one JSON object:
``{"count", "seconds", "client_id", "client_secret", "audience"}``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

BATCH = 10_000


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def seed(database_url: str, count: int, audience: str, auth_file: Path | None) -> dict[str, object]:
    from sqlalchemy import insert
    from sqlalchemy import select

    from authserver import container
    from authserver.clients import secrets as client_secrets
    from authserver.settings import Settings
    from authserver.storage.sql.engine import bump_counter
    from authserver.storage.sql.migrate import ensure_schema
    from authserver.storage.sql.tables import CLIENTS

    started = time.perf_counter()
    settings = Settings.from_env(database_url=database_url, log_level="warning")
    svc = container.build(settings)
    try:
        ensure_schema(svc.db, create=True, upgrade=True)
        # One client through the service, the path `authserver clients create` takes.
        with svc.unit_of_work():
            first, secret = svc.clients.create(name="bench-0", audiences=[audience])
        assert secret is not None
        secret_hash = client_secrets.hash_secret(secret)
        ids = [str(first.client_id)]
        # Secrets are unique (a Bearer-secret profile finds its client by the digest):
        # every seeded client gets its own.
        secrets_by_id = {ids[0]: secret}
        with svc.unit_of_work():
            conn = svc.db.connection()
            stmt = select(CLIENTS).where(CLIENTS.c.client_id == str(first.client_id))
            template = dict(conn.execute(stmt).mappings().one())
        if template["secret_hash"] != secret_hash:
            raise SystemExit("seed: ClientService stored a different digest than expected")
        now = time.time()
        remaining = count - 1
        index = 1
        table = CLIENTS
        while remaining > 0:
            n = min(BATCH, remaining)
            rows = []
            for _ in range(n):
                client_id = str(client_secrets.new_client_id())
                ids.append(client_id)
                own = client_secrets.new_secret()
                secrets_by_id[client_id] = own
                rows.append(
                    {
                        **template,
                        "client_id": client_id,
                        "secret_hash": client_secrets.hash_secret(own),
                        "name": f"bench-{index}",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                index += 1
            with svc.db.engine.begin() as conn:
                conn.execute(insert(table), rows)
            remaining -= n
        # What ClientService does after every change: invalidate every worker's cache.
        with svc.unit_of_work():
            conn = svc.db.connection()
            bump_counter(conn, "clients")
    finally:
        svc.close()
    if auth_file is not None:
        auth_file.write_text("".join(basic(i, secrets_by_id[i]) + "\n" for i in ids))
    return {
        "count": len(ids),
        "seconds": round(time.perf_counter() - started, 2),
        "client_id": ids[0],
        "client_secret": secret,
        "audience": audience,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="SQLAlchemy URL of the database")
    parser.add_argument("--count", type=int, default=10, help="clients to register (default 10)")
    parser.add_argument("--audience", default="https://sync.example")
    parser.add_argument("--auth-file", type=Path, help="write one Basic header value per line")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    result = seed(args.database_url, args.count, args.audience, args.auth_file)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
