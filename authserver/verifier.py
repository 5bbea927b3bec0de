"""Verify authserver access tokens in a Python sync server (RFC 9068, offline).

Imports only joserfc and the standard library, so a sync server needs neither Flask nor
SQLAlchemy (``pip install joserfc`` is enough besides this one file)::

    from authserver.verifier import InvalidToken, TokenVerifier, require_token

    verifier = TokenVerifier("https://auth.example.com", "https://sync.example.com")
    claims = verifier.verify(token)          # a dict, or raises InvalidToken(.reason)
    app = require_token(verifier)(app)       # WSGI: 401 unless a valid Bearer token

What :meth:`TokenVerifier.verify` does, in order (docs/sync-servers.md has the rationale):

1. Header: ``alg`` must be ``RS256`` (pinned, never taken from the token), ``typ`` must be
   ``at+jwt`` or ``application/at+jwt`` (RFC 9068 §4), ``kid`` must be present, and no
   ``crit`` extension is accepted (RFC 7515 §4.1.11).
2. Key: from the JWKS at the ``jwks_uri`` of ``<issuer>/.well-known/oauth-authorization-server``
   (RFC 8414). The set is cached for the response's ``Cache-Control: max-age``, capped by
   ``max_cache_seconds``. A token naming an unknown ``kid`` triggers a refetch, but the JWKS
   is never fetched more than once per ``min_refetch_interval`` seconds, whatever the cause,
   so a flood of tokens with forged ``kid`` values costs the authserver one request per
   interval. When a refresh fails the last good set stays in use for ``stale_if_error``
   seconds after it was fetched.
3. Signature: RS256 with that key (joserfc).
4. Claims (RFC 9068 §2.2, §4): the required claims are present; ``iss`` equals the issuer;
   ``aud`` (a string or a list) contains the audience; ``exp`` and ``nbf`` hold within
   ``leeway`` seconds; ``iat`` is not in the future (beyond the leeway).

Every method is thread-safe: one verifier serves every thread of a process. Fetches are
single-flight (one thread fetches, the others wait for it or keep using fresh keys).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from typing import Any
from typing import Final

from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

__all__ = [
    "CLAIMS_ENVIRON_KEY",
    "REASONS",
    "InvalidToken",
    "TokenVerifier",
    "bearer_token",
    "require_token",
]

ALGORITHM: Final = "RS256"
#: RFC 9068 §4: "at+jwt" or "application/at+jwt"; media types compare case-insensitively.
ACCEPTED_TYP: Final = frozenset({"at+jwt", "application/at+jwt"})
#: RFC 9068 §2.2: claims every access token carries.
REQUIRED_CLAIMS: Final = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
#: Where :func:`require_token` puts the verified claims in the WSGI environ.
CLAIMS_ENVIRON_KEY: Final = "authserver.claims"

#: Every value :attr:`InvalidToken.reason` can take.
REASONS: Final = {
    "missing_token": "no bearer token in the request",
    "malformed": "not a JWS compact serialization with JSON header and claims",
    "unsupported_alg": "alg is not RS256",
    "wrong_typ": "typ is not at+jwt (RFC 9068 §4)",
    "unsupported_header": "the header asks for an extension (crit) this verifier lacks",
    "missing_kid": "the header names no kid",
    "unknown_kid": "no published key has this kid",
    "bad_signature": "the signature does not verify",
    "missing_claim": "a claim required by RFC 9068 §2.2 is absent",
    "wrong_issuer": "iss is not the configured issuer",
    "wrong_audience": "aud does not contain the configured audience",
    "expired": "exp is in the past (beyond the leeway)",
    "not_yet_valid": "nbf is in the future (beyond the leeway)",
    "issued_in_future": "iat is in the future (beyond the leeway)",
    "jwks_unavailable": "the authserver's keys could not be fetched",
}

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


class InvalidToken(Exception):
    """The token was not accepted. :attr:`reason` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        #: What exactly failed, when known (for ``jwks_unavailable``: the URL and the cause).
        self.detail = detail
        super().__init__(f"{reason}: {detail or REASONS.get(reason, reason)}")


def _cause(exc: BaseException) -> str:
    """Why a fetch failed, in an operator's words: refused, timed out, unknown host..."""
    reason: Any = getattr(exc, "reason", exc)  # URLError wraps the socket error
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is authserver running at that address?)"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    text = getattr(reason, "strerror", None) or str(reason)
    return f"{type(reason).__name__}: {text}"[:200]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Key material comes from the URL we were given and nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _b64json(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed") from exc
    if not isinstance(value, dict):
        raise InvalidToken("malformed")
    return value


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken("malformed", f"{name} is not a number")
    return float(value)


class TokenVerifier:
    """Verifies authserver access tokens offline against its published keys.

    :param issuer: ``AUTHSERVER_ISSUER`` as it appears in ``iss`` (a trailing ``/`` is
        dropped, as authserver drops it).
    :param audience: this sync server's audience (one of the client's ``--audience``).
    :param jwks_uri: skip discovery and fetch keys from here.
    :param leeway: seconds of clock skew tolerated for ``exp``, ``nbf`` and ``iat``.
    :param max_cache_seconds: the longest the JWKS is cached, whatever its max-age says
        (keep it at or below the authserver's ``AUTHSERVER_KEY_PUBLISH_AHEAD``).
    :param min_refetch_interval: the JWKS is fetched at most once per this many seconds.
    :param stale_if_error: how long after a successful fetch its keys stay usable while
        refreshes fail.
    :param timeout: seconds for each HTTP request.
    :param max_response_bytes: larger metadata or JWKS responses are refused.
    :param clock: seconds since the epoch (for tests); the cache uses ``time.monotonic``.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_uri: str | None = None,
        leeway: float = 30.0,
        max_cache_seconds: float = 300.0,
        min_refetch_interval: float = 10.0,
        stale_if_error: float = 3600.0,
        timeout: float = 5.0,
        max_response_bytes: int = 512 * 1024,
        max_token_bytes: int = 16 * 1024,
        required_claims: Iterable[str] = REQUIRED_CLAIMS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        # authserver normalises AUTHSERVER_ISSUER without a trailing slash (settings.py),
        # so "https://auth.example.com/" here means the same issuer.
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.max_cache_seconds = max_cache_seconds
        self.min_refetch_interval = min_refetch_interval
        self.stale_if_error = stale_if_error
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_token_bytes = max_token_bytes
        self.required_claims = tuple(required_claims)
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._jwks_uri = jwks_uri
        if jwks_uri is not None and urllib.parse.urlsplit(jwks_uri).scheme not in ("http", "https"):
            raise ValueError(f"jwks_uri must be an http(s) URL, not {jwks_uri!r}")
        # Guarded by _lock (cheap, never held during I/O).
        self._lock = threading.Lock()
        self._keys: dict[str, RSAKey] = {}
        self._fresh_until = float("-inf")  # monotonic
        self._usable_until = float("-inf")  # monotonic: stale_if_error bound
        self._etag: str | None = None
        self._last_fetch_ok = True
        self._last_fetch_error: str | None = None
        # Held by the one thread that fetches (single flight); never taken under _lock.
        self._fetch_lock = threading.Lock()
        self._last_attempt = float("-inf")  # monotonic; written under _fetch_lock
        #: How many HTTP fetches of the JWKS were attempted (for tests and metrics).
        self.fetch_count = 0

    # -- public API -------------------------------------------------------------------------

    def verify(self, token: str | bytes) -> dict[str, Any]:
        """Return the verified claims of *token*, or raise :class:`InvalidToken`."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError as exc:
                raise InvalidToken("malformed") from exc
        if len(token) > self.max_token_bytes:
            raise InvalidToken("malformed", "token too large")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise InvalidToken("malformed")
        header = _b64json(parts[0])
        # RFC 8725 §3.1: the algorithm is ours, never the token's.
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unsupported_alg")
        typ = header.get("typ")
        # RFC 9068 §4: MUST verify typ is "at+jwt" or "application/at+jwt".
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYP:
            raise InvalidToken("wrong_typ")
        # RFC 7515 §4.1.11: unknown critical extensions MUST make the JWS invalid.
        if "crit" in header:
            raise InvalidToken("unsupported_header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("missing_kid")
        key = self._key_for(kid)
        try:
            obj = jws.deserialize_compact(token, key, algorithms=[ALGORITHM])
        except BadSignatureError as exc:
            raise InvalidToken("bad_signature") from exc
        except (JoseError, ValueError) as exc:  # joserfc's parsing of a mangled segment
            raise InvalidToken("malformed") from exc
        try:
            claims = json.loads(obj.payload or b"")
        except ValueError as exc:
            raise InvalidToken("malformed") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("malformed")
        self._check_claims(claims)
        return claims

    def refresh(self) -> None:
        """Fetch the JWKS now (respecting ``min_refetch_interval``); e.g. after a retire."""
        self._refetch(force=True)

    # -- claims -----------------------------------------------------------------------------

    def _check_claims(self, claims: dict[str, Any]) -> None:
        for name in self.required_claims:
            if name not in claims:
                raise InvalidToken("missing_claim", f"no {name} claim")
        # RFC 9068 §4: iss MUST exactly match the issuer identifier.
        if "iss" in claims and claims["iss"] != self.issuer:
            raise InvalidToken("wrong_issuer")
        # RFC 9068 §4 / RFC 7519 §4.1.3: aud MUST contain the resource's identifier.
        if "aud" in claims:
            aud = claims["aud"]
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if self.audience not in audiences:
                raise InvalidToken("wrong_audience")
        now = self._clock()
        if "exp" in claims and now >= _number(claims, "exp") + self.leeway:
            raise InvalidToken("expired")
        if "nbf" in claims and now + self.leeway < _number(claims, "nbf"):
            raise InvalidToken("not_yet_valid")
        if "iat" in claims and now + self.leeway < _number(claims, "iat"):
            raise InvalidToken("issued_in_future")

    # -- keys -------------------------------------------------------------------------------

    def _key_for(self, kid: str) -> RSAKey:
        with self._lock:
            key = self._keys.get(kid)
            fresh = time.monotonic() < self._fresh_until
        if key is not None and fresh:
            return key
        # The cache expired, or the kid is unknown (a rotation we have not seen yet, or a
        # forged kid): refetch, at most once per min_refetch_interval.
        self._refetch(force=False)
        with self._lock:
            key = self._keys.get(kid)
            usable = time.monotonic() < self._usable_until
            reachable = self._last_fetch_ok
            error = self._last_fetch_error
        if key is not None and usable:
            return key
        if not reachable or not usable:
            # Not the token's fault: the keys that might verify it could not be fetched.
            raise InvalidToken("jwks_unavailable", error)
        raise InvalidToken("unknown_kid")

    def _refetch(self, *, force: bool) -> None:
        started = time.monotonic()
        with self._fetch_lock:
            now = time.monotonic()
            if self._last_attempt > started and not force:
                return  # another thread fetched while we waited: use its result
            if now - self._last_attempt < self.min_refetch_interval:
                return
            self._last_attempt = now
            self.fetch_count += 1
            error: str | None = None
            try:
                self._fetch_jwks()
            except InvalidToken as exc:
                # Keep the last good set (bounded by stale_if_error), and why this failed:
                # the error a caller then gets names the URL tried and the cause.
                error = exc.detail
            with self._lock:
                self._last_fetch_ok = error is None
                self._last_fetch_error = error

    def _fetch_jwks(self) -> None:
        if self._jwks_uri is None:
            self._jwks_uri = self._discover()
        with self._lock:
            etag = self._etag
        headers = {"If-None-Match": etag} if etag else {}
        status, body, response_headers = self._get(self._jwks_uri, headers)
        lifetime = self._cache_lifetime(response_headers.get("cache-control"))
        now = time.monotonic()
        if status == 304:
            with self._lock:
                self._fresh_until = now + lifetime
                self._usable_until = now + max(lifetime, self.stale_if_error)
            return
        keys = self._parse_jwks(body)
        with self._lock:
            self._keys = keys
            self._etag = response_headers.get("etag")
            self._fresh_until = now + lifetime
            self._usable_until = now + max(lifetime, self.stale_if_error)

    def _discover(self) -> str:
        """RFC 8414 §3: the metadata's ``issuer`` must be ours; take its ``jwks_uri``."""
        parsed = urllib.parse.urlsplit(self.issuer)
        path = parsed.path.rstrip("/")
        candidates = [
            # §3.1: the well-known segment goes between host and path ...
            f"{parsed.scheme}://{parsed.netloc}/.well-known/oauth-authorization-server{path}",
            # ... which is the same URL when the issuer has no path; else the OIDC shape.
            f"{self.issuer.rstrip('/')}/.well-known/oauth-authorization-server",
        ]
        last: InvalidToken | None = None
        for url in dict.fromkeys(candidates):
            try:
                _, body, _ = self._get(self._check_url(url), {})
            except InvalidToken as exc:
                last = exc
                continue
            try:
                metadata = json.loads(body)
            except ValueError:
                metadata = None
            if not isinstance(metadata, dict):
                last = InvalidToken("jwks_unavailable", f"{url}: not a metadata document")
                continue
            if metadata.get("issuer") != self.issuer:
                served = str(metadata.get("issuer"))[:200]
                last = InvalidToken(
                    "jwks_unavailable",
                    f"{url}: the metadata names issuer {served!r}, not {self.issuer!r}",
                )
                continue
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                last = InvalidToken("jwks_unavailable", f"{url}: no jwks_uri")
                continue
            return self._check_url(jwks_uri)
        assert last is not None
        raise last

    def _check_url(self, url: str) -> str:
        scheme = urllib.parse.urlsplit(url).scheme
        # An https issuer's keys come over https; only http and https are ever opened.
        allowed = {"https"} if self.issuer.startswith("https:") else {"http", "https"}
        if scheme not in allowed:
            raise InvalidToken("jwks_unavailable", f"refusing to fetch keys from {url!r}")
        return url

    def _get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """GET *url*: status, body and the response headers, names in lower case (header
        names are case-insensitive, RFC 9110 §5.1; many servers send them lower-cased)."""
        request = urllib.request.Request(  # noqa: S310 - scheme checked in _check_url
            url, headers={"Accept": "application/json", **headers}
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read(self.max_response_bytes + 1)
                status = int(response.status)
                response_headers = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return 304, b"", {k.lower(): v for k, v in exc.headers.items()}
            raise InvalidToken("jwks_unavailable", f"{url}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad URLs
            raise InvalidToken("jwks_unavailable", f"{url}: {_cause(exc)}") from exc
        if status != 200:
            raise InvalidToken("jwks_unavailable", f"{url}: HTTP {status}")
        if len(body) > self.max_response_bytes:
            raise InvalidToken("jwks_unavailable", f"{url}: response too large")
        return status, body, response_headers

    def _cache_lifetime(self, cache_control: str | None) -> float:
        if cache_control is None:
            return self.max_cache_seconds
        if _NO_CACHE.search(cache_control):
            return 0.0
        match = _MAX_AGE.search(cache_control)
        if match is None:
            return self.max_cache_seconds
        return min(float(match.group(1)), self.max_cache_seconds)

    @staticmethod
    def _parse_jwks(body: bytes) -> dict[str, RSAKey]:
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise InvalidToken("jwks_unavailable", "JWKS is not JSON") from exc
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise InvalidToken("jwks_unavailable", "JWKS has no keys array")
        keys: dict[str, RSAKey] = {}
        for entry in entries:
            # RFC 7517 §5: skip keys we cannot use rather than failing the whole set.
            if not isinstance(entry, dict) or entry.get("kty") != "RSA":
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("alg", ALGORITHM) != ALGORITHM or "d" in entry:
                continue  # a private key in a JWKS is a publishing bug; never trust it
            try:
                keys[kid] = RSAKey.import_key(entry)
            except (JoseError, ValueError, TypeError):
                continue
        return keys


# -- WSGI -------------------------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header (RFC 6750 §2.1)."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value and " " not in value:
            return value
    raise InvalidToken("missing_token")


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def require_token(
    verifier: TokenVerifier, *, public_paths: Collection[str] = ()
) -> Callable[[WSGIApp], WSGIApp]:
    """WSGI middleware (and decorator) that lets through only valid bearer tokens.

    ``app = require_token(verifier)(app)``; the wrapped app finds the claims in
    ``environ["authserver.claims"]``. A missing or invalid token gets 401 with an RFC 6750
    §3 ``WWW-Authenticate`` challenge and a JSON body ``{"error", "reason"}``; keys that
    cannot be fetched get 503. Paths in *public_paths* (e.g. a health check) pass unchecked.
    """

    def wrap(app: WSGIApp) -> WSGIApp:
        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO", "") in public_paths:
                return app(environ, start_response)
            try:
                token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
                environ[CLAIMS_ENVIRON_KEY] = verifier.verify(token)
            except InvalidToken as exc:
                return _refuse(exc.reason, start_response)
            return app(environ, start_response)

        return middleware

    return wrap


def _refuse(reason: str, start_response: Callable[..., Any]) -> list[bytes]:
    if reason == "jwks_unavailable":
        status, error = "503 Service Unavailable", "temporarily_unavailable"
        extra = [("Retry-After", "5")]
    else:
        status, error = "401 Unauthorized", "invalid_token"
        # RFC 6750 §3.1: no error code when the request carried no token at all.
        challenge = (
            "Bearer"
            if reason == "missing_token"
            else f'Bearer error="invalid_token", error_description="{reason}"'
        )
        extra = [("WWW-Authenticate", challenge)]
    body = json.dumps({"error": error, "reason": reason}).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *extra,
        ],
    )
    return [body]
