"""The profiles a server knows: the built-ins and those installed through the Python
entry point group ``authserver.profiles``.

A third-party distribution declares, in its ``pyproject.toml``::

    [project.entry-points."authserver.profiles"]
    acme = "acme_authserver:AcmeProfile"

The entry point's name must equal the profile's ``name``; the object it loads is a class
(instantiated without arguments) or an instance satisfying :class:`Profile`. A broken
plug-in does not stop the server: it is logged once by name and its name is unknown, so
clients registered with it are refused (``invalid_request``) until it is fixed. A plug-in
cannot replace a built-in profile, nor serve a path another profile or the server itself
serves (such a plug-in is broken in that sense: logged and skipped).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points
from types import MappingProxyType

from authserver.clients.model import DEFAULT_PROFILE
from authserver.profiles.base import Profile
from authserver.profiles.base import names_an_audience
from authserver.profiles.dexie import DexieProfile
from authserver.profiles.oauth2 import OAuth2Profile
from authserver.profiles.stream import StreamProfile
from authserver.profiles.twilio import TwilioProfile
from authserver.profiles.verdant import VerdantProfile

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "authserver.profiles"
DEFAULT = DEFAULT_PROFILE
#: Paths no profile may claim: the server's own endpoints. A profile's path is served
#: before every other route, so one of these would hide the endpoint (a plug-in claiming
#: the JWKS path left verifiers with a 405). tests/e2e/test_profiles.py checks this
#: against every route the application serves.
RESERVED_PATHS = frozenset(
    {"/token", "/introspect", "/revoke", "/metrics", "/healthz", "/readyz", "/openapi.json"}
)
#: Route families: the path itself and every path below it (the well-known documents,
#: the operator API, the status lists).
RESERVED_PREFIXES = ("/.well-known", "/admin", "/statuslists")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def builtin_profiles() -> list[Profile]:
    return [OAuth2Profile(), DexieProfile(), VerdantProfile(), TwilioProfile(), StreamProfile()]


def _problem(profile: Profile, taken: Mapping[str, Profile], paths: set[str]) -> str | None:
    if not _NAME.fullmatch(profile.name):
        return f"profile name {profile.name!r} is not a lower-case identifier"
    if profile.name in taken:
        return f"two profiles are named {profile.name!r}"
    for path in profile.paths:
        if not path.startswith("/") or path in paths or is_reserved_path(path):
            return f"profile {profile.name} claims a path that is taken or not absolute"
    return None


def is_reserved_path(path: str) -> bool:
    """True for a path of the server's own endpoints (:data:`RESERVED_PATHS`,
    :data:`RESERVED_PREFIXES`), which no profile may serve."""
    return path in RESERVED_PATHS or any(
        path == prefix or path.startswith(prefix + "/") for prefix in RESERVED_PREFIXES
    )


class ProfileRegistry:
    """Profiles by name, and the extra paths they serve."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        by_name: dict[str, Profile] = {}
        paths: set[str] = set()
        for profile in profiles:
            problem = _problem(profile, by_name, paths)
            if problem:
                raise ValueError(problem)
            by_name[profile.name] = profile
            paths.update(profile.paths)
        if DEFAULT not in by_name:
            raise ValueError("the oauth2 profile is required")
        self._by_name: Mapping[str, Profile] = MappingProxyType(by_name)

    @classmethod
    def load(cls) -> ProfileRegistry:
        """The built-ins plus every loadable ``authserver.profiles`` entry point."""
        profiles = {p.name: p for p in builtin_profiles()}
        paths = {path for p in profiles.values() for path in p.paths}
        for ep in _plug_ins(entry_points):
            if ep.name in profiles:
                log.error("profile plug-in %s ignored: the name is taken", ep.name)
                continue
            try:
                loaded = ep.load()
                profile = loaded() if isinstance(loaded, type) else loaded
            except Exception:  # a broken plug-in must not stop the server
                log.exception("profile plug-in %s could not be loaded", ep.name)
                continue
            if not isinstance(profile, Profile) or profile.name != ep.name:
                log.error(
                    "profile plug-in %s ignored: not a Profile named after its entry point",
                    ep.name,
                )
                continue
            problem = _problem(profile, profiles, paths)
            if problem:
                log.error("profile plug-in %s ignored: %s", ep.name, problem)
                continue
            profiles[profile.name] = profile
            paths.update(profile.paths)
        return cls(profiles.values())

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def single_audience(self) -> frozenset[str]:
        """The profiles whose clients have one audience at most (their requests cannot
        name one: :func:`~authserver.profiles.base.names_an_audience`)."""
        return frozenset(n for n, p in self._by_name.items() if not names_an_audience(p))

    def get(self, name: str) -> Profile | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def paths(self) -> dict[str, Profile]:
        """Each extra path and the profile that serves it."""
        out: dict[str, Profile] = {}
        for profile in self._by_name.values():
            for path in profile.paths:
                out[path] = profile
        return out


@functools.cache
def _plug_ins(find: Callable[..., Iterable[EntryPoint]]) -> tuple[EntryPoint, ...]:
    """The ``authserver.profiles`` entry points, read once per process (installing a
    plug-in takes a restart anyway): scanning every installed distribution's metadata
    costs milliseconds, and services are built per CLI command and per test. Keyed on
    the finder, so a test that replaces ``entry_points`` gets a fresh scan."""
    return tuple(find(group=ENTRY_POINT_GROUP))
