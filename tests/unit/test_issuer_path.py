"""Routing under an issuer with a path (``authserver/web/issuer_path.py``), as WSGI sees it."""

from __future__ import annotations

from typing import Any

import pytest

from authserver.web.issuer_path import IssuerPath
from authserver.web.issuer_path import issuer_path

AS_METADATA = "/.well-known/oauth-authorization-server"


def routed(
    prefix: str, path: str, script_name: str = "", routes: tuple[str, ...] = ()
) -> tuple[str, str]:
    """``(SCRIPT_NAME, PATH_INFO)`` the application under *prefix* sees for *path*."""
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        return []

    sent = {"PATH_INFO": path, "SCRIPT_NAME": script_name}
    IssuerPath(app, prefix, routes)(sent, lambda *a: None)
    assert sent == {"PATH_INFO": path, "SCRIPT_NAME": script_name}, "the caller's environ changed"
    return seen["SCRIPT_NAME"], seen["PATH_INFO"]


@pytest.mark.parametrize(
    ("issuer", "prefix"),
    [
        ("https://auth.example.com", ""),
        ("https://auth.example.com/auth", "/auth"),
        ("https://auth.example.com/a/b", "/a/b"),
        # PATH_INFO is percent-decoded, its bytes as latin-1 (PEP 3333).
        ("https://auth.example.com/a%20b", "/a b"),
        ("https://auth.example.com/%C3%A9", "/\xc3\xa9"),
    ],
)
def test_the_prefix_is_the_issuers_path_as_wsgi_spells_it(issuer: str, prefix: str) -> None:
    assert issuer_path(issuer) == prefix


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/auth/token", ("/auth", "/token")),
        ("/auth", ("/auth", "/")),
        ("/auth/", ("/auth", "/")),
        ("/token", ("", "/token")),  # a proxy stripped the path
        ("/authx/token", ("", "/authx/token")),  # another path that starts the same
        (
            "/.well-known/oauth-authorization-server/auth",
            ("", "/.well-known/oauth-authorization-server"),
        ),
        ("/.well-known/openid-configuration/auth", ("", "/.well-known/openid-configuration")),
        (
            "/auth/.well-known/oauth-authorization-server",
            ("/auth", "/.well-known/oauth-authorization-server"),
        ),
        (
            "/.well-known/oauth-authorization-server/other",
            ("", "/.well-known/oauth-authorization-server/other"),
        ),
    ],
)
def test_requests_with_or_without_the_path_reach_the_same_routes(
    path: str, expected: tuple[str, str]
) -> None:
    assert routed("/auth", path) == expected


def test_a_mount_point_set_before_is_kept() -> None:
    assert routed("/auth", "/auth/token", script_name="/edge") == ("/edge/auth", "/token")


@pytest.mark.parametrize("prefix", ["", "/", "auth", "/auth/"])
def test_a_prefix_that_is_not_an_issuer_path_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="not an issuer path"):
        IssuerPath(lambda e, s: [], prefix)


def test_a_route_that_starts_with_the_prefix_is_kept_as_it_is() -> None:
    """The stream profile's ``/auth/v1/access-tokens`` under an issuer at ``/auth``: sent
    as it is, or under the issuer's path."""
    routes = ("/auth/v1/access-tokens",)
    assert routed("/auth", "/auth/v1/access-tokens", routes=routes) == (
        "",
        "/auth/v1/access-tokens",
    )
    assert routed("/auth", "/auth/auth/v1/access-tokens", routes=routes) == (
        "/auth",
        "/auth/v1/access-tokens",
    )
