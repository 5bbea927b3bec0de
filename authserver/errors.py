"""Domain errors. No HTTP here: ``web/`` and ``oauth/errors.py`` map them at the edge."""


class AuthServerError(Exception):
    """Root of every error authserver raises on purpose."""


class ConfigError(AuthServerError):
    """Configuration is missing or invalid. The message names the variable, on one line."""


class NotFound(AuthServerError):
    """The thing asked for does not exist."""


#: The longest unknown name an error repeats (authserver's client ids are 32 characters,
#: its kids, RFC 7638 thumbprints, 43).
MAX_REPEATED_NAME = 64


def not_found(thing: str, name: str, value: str) -> NotFound:
    """``no client with id 'x'``: the one wording of an unknown name, which reaches HTTP
    (the admin API's 404, docs/reference.md). A value no record could have (empty, longer
    than :data:`MAX_REPEATED_NAME`, control or bidirectional characters) is not repeated:
    ``no client with that id``."""
    if 0 < len(value) <= MAX_REPEATED_NAME and value.isprintable():
        return NotFound(f"no {thing} with {name} {value!r}")
    return NotFound(f"no {thing} with that {name}")


class Conflict(AuthServerError):
    """The request contradicts the current state (e.g. retiring an already retired key)."""


class InvalidInput(AuthServerError):
    """A value given by an operator or a caller is not acceptable."""


class KeyStoreError(AuthServerError):
    """The signing keys cannot be read (wrong passphrase, corrupt file, no current key)."""


class StorageError(AuthServerError):
    """The database failed. The message says why in an operator's words and where (the
    URL without its password), never the driver's own text, which can hold the URL, its
    password and SQL; the storage exception is the ``__cause__``. This class itself is
    a failure that retrying will not fix (a storage bug): only ``web/`` decides how to
    answer it (500)."""


class StorageUnavailable(StorageError):
    """The database could not do it now: unreachable, locked, timed out, the connection
    lost, no pooled connection free, a read-only standby. The web layer answers 503 with
    ``Retry-After``."""
