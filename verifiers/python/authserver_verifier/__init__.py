"""authserver-verifier: verify authserver's access tokens offline in a Python sync server.

See :mod:`authserver_verifier.verifier` for what is checked, and
:mod:`authserver_verifier.rules` for the JWT rules it shares with the server.
"""

from __future__ import annotations

from authserver_verifier.verifier import CLAIMS_ENVIRON_KEY
from authserver_verifier.verifier import REASONS
from authserver_verifier.verifier import InvalidToken
from authserver_verifier.verifier import TokenVerifier
from authserver_verifier.verifier import bearer_token
from authserver_verifier.verifier import require_token
from authserver_verifier.verifier import require_token_asgi

__version__ = "0.1.0"

__all__ = [
    "CLAIMS_ENVIRON_KEY",
    "REASONS",
    "InvalidToken",
    "TokenVerifier",
    "__version__",
    "bearer_token",
    "require_token",
    "require_token_asgi",
]
