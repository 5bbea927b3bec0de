"""Serving under an issuer that has a path (``AUTHSERVER_ISSUER=https://example.com/auth``).

Every URL the server publishes is the issuer plus a path (``/auth/token``,
``/auth/.well-known/jwks.json``), and RFC 8414 §3.1 puts the metadata of such an issuer at
``/.well-known/oauth-authorization-server/auth``. The routes themselves stay at the root,
so the server answers each request whichever way it arrives:

* with the issuer's path in front (no proxy, or a proxy that passes the path on): the
  path moves from ``PATH_INFO`` to ``SCRIPT_NAME`` (where WSGI keeps the mount point);
* without it (a proxy that strips the prefix): as is;
* at the RFC 8414 §3.1 location (the well-known segment between the host and the path):
  the metadata document.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes
from urllib.parse import urlsplit

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: The metadata documents, whose RFC 8414 §3.1 location inserts the issuer's path after
#: the well-known name (OIDC Discovery appends it instead: the prefix rule covers that).
METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def issuer_path(issuer: str) -> str:
    """The path of *issuer* as WSGI's ``PATH_INFO`` spells it (percent-decoded, its bytes
    as latin-1), without its trailing slash: ``""`` for an issuer at the root."""
    return unquote_to_bytes(urlsplit(issuer).path).decode("latin-1").rstrip("/")


class IssuerPath:
    """The application *app* under the issuer's path *prefix* (``/auth``) as well as at
    the root (see the module's docstring)."""

    def __init__(self, app: WSGIApp, prefix: str, routes: Iterable[str] = ()) -> None:
        """*routes*: paths that are routes as they are and keep their leading segment even
        when it is the prefix (a profile's ``/auth/v1/access-tokens`` under ``/auth``)."""
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"not an issuer path: {prefix!r}")
        self.app = app
        self.prefix = prefix
        self._metadata = {f"{path}{prefix}": path for path in METADATA_PATHS}
        self._routes = frozenset(routes)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        document = self._metadata.get(path)
        if document is not None:
            # A copy: the layers outside (the access log) keep the path as it was sent.
            environ = {**environ, "PATH_INFO": document}
        elif (path == self.prefix or path.startswith(self.prefix + "/")) and (
            path not in self._routes
        ):
            environ = {
                **environ,
                "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + self.prefix,
                "PATH_INFO": path[len(self.prefix) :] or "/",
            }
        return self.app(environ, start_response)
