"""Client and key -> JSON, shared by the admin API and the CLI's ``--json`` output.

Never serialises a secret hash or private key material; the plaintext client secret is
added by the two callers that may show it (create, rotate-secret).
"""

from __future__ import annotations

import time
from typing import Any

from authserver.audit.model import AuditEvent
from authserver.clients.model import Client
from authserver.keys.model import KeyState
from authserver.keys.service import KeyView
from authserver.records import UnreadableRecord


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def client_json(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "enabled": client.enabled,
        "audiences": list(client.policy.audiences),
        "scopes": list(client.policy.scopes),
        "allowed_claims": list(client.policy.allowed_claims),
        "token_ttl": client.policy.token_ttl,
        "token_endpoint_auth_methods": list(client.auth_methods),
        "require_sub": client.policy.require_sub,
        "profile": client.policy.profile,
        "fixed_claims": dict(client.policy.fixed_claims),
        "jwks_uri": client.jwks_uri,
        "jwks": client.jwks,
        "created_at": iso(client.created_at),
        "updated_at": iso(client.updated_at),
        # When a rotation's grace period is running: until when the previous secret works.
        "previous_secret_expires_at": iso(client.previous_secret_expires_at),
    }


def key_json(view: KeyView) -> dict[str, Any]:
    key = view.key
    return {
        "kid": key.kid,
        "alg": key.alg,
        "kty": "RSA",
        "state": view.state.value,
        "published_at": iso(key.created_at),
        "signs_from": iso(key.activate_at),
        "signs_until": iso(key.signs_until()),
        "unpublished_at": iso(view.drop_at),
        "retired_at": iso(key.retired_at),
    }


def key_change_json(views: list[KeyView], kid: str, **extra: Any) -> dict[str, Any]:
    """The answer to a rotate or a retire of *kid* (CLI ``--json`` and admin API alike):
    that key, *extra*, and ``current_kid``, the key that signs now (None if none does)."""
    changed = next(v for v in views if v.key.kid == kid)
    current = next((v.key.kid for v in views if v.state is KeyState.CURRENT), None)
    return {**key_json(changed), **extra, "current_kid": current}


def unreadable_json(record: UnreadableRecord) -> dict[str, str]:
    return {"name": record.name, "reason": record.reason}


def audit_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "actor": event.actor,
        "action": event.action,
        "client_id": event.client_id,
        "sub": event.sub,
        "aud": event.aud,
        "jti": event.jti,
        "detail": event.detail,
    }
