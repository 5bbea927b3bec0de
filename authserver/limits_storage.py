"""The storage of the failed-authentication limits (``AUTHSERVER_RATE_LIMIT_STORAGE``):
opened the same way by the web layer's limits (``web/limits.py``) and checked by ``serve``
at start, which therefore needs no web module for it."""

from __future__ import annotations

from limits.storage import Storage
from limits.storage import storage_from_string

from authserver.errors import ConfigError
from authserver.settings import Settings
from authserver.settings import redact_url

#: Timeouts for the Redis client: a blackholed Redis must not stall the token endpoint.
REDIS_OPTIONS: dict[str, str | int] = {"socket_connect_timeout": 1, "socket_timeout": 1}


def open_storage(uri: str) -> Storage:
    """The ``limits`` storage for *uri*, with short timeouts for Redis."""
    options = dict(REDIS_OPTIONS) if uri.startswith(("redis", "rediss")) else {}
    storage = storage_from_string(uri, **options)
    if not isinstance(storage, Storage):
        # An async+ scheme: settings.py accepts none, so this is a programming error.
        raise ConfigError(f"AUTHSERVER_RATE_LIMIT_STORAGE: {redact_url(uri)} is not supported")
    return storage


def check_storage(settings: Settings) -> None:
    """Refuse to start when the configured storage is unreachable (for ``serve``, in the
    master process, before any worker starts; at run time the limits fail open).

    :raises ConfigError: one line naming ``AUTHSERVER_RATE_LIMIT_STORAGE``.
    """
    if settings.auth_failures_per_client is None and settings.auth_failures_per_address is None:
        return
    uri = settings.rate_limit_storage
    try:
        reachable = open_storage(uri).check()
    except Exception as exc:
        # The type only: the message of a client library may repeat the URL and its password.
        raise ConfigError(
            f"AUTHSERVER_RATE_LIMIT_STORAGE: cannot use {redact_url(uri)}: {type(exc).__name__}"
        ) from None
    if not reachable:
        raise ConfigError(f"AUTHSERVER_RATE_LIMIT_STORAGE: cannot reach {redact_url(uri)}")
