"""Domain errors. No HTTP here: ``web/`` and ``oauth/errors.py`` map them at the edge."""


class AuthServerError(Exception):
    """Root of every error authserver raises on purpose."""


class ConfigError(AuthServerError):
    """Configuration is missing or invalid. The message names the variable, on one line."""


class NotFound(AuthServerError):
    """The thing asked for does not exist."""


class Conflict(AuthServerError):
    """The request contradicts the current state (e.g. retiring an already retired key)."""


class InvalidInput(AuthServerError):
    """A value given by an operator or a caller is not acceptable."""


class KeyStoreError(AuthServerError):
    """The signing keys cannot be read (wrong passphrase, corrupt file, no current key)."""
