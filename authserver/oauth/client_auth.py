"""Client authentication at the token endpoint (RFC 6749 §2.3.1).

Authlib's ``client_secret_basic`` and ``client_secret_post`` are replaced, not wrapped:
Authlib decodes the Basic header leniently and raises ``UnicodeDecodeError`` (a 500) on
non-UTF-8 credentials, and answers unknown and wrong-secret clients differently. Here a
malformed header, an unknown client, a disabled client and a wrong secret are all the
same ``invalid_client``, so the endpoint reveals nothing about which ids exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authserver_verifier.rules import b64url_decode
from authserver_verifier.rules import is_b64url
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from authserver.clients import auth_methods
from authserver.clients.auth_methods import CLIENT_SECRET_BEARER
from authserver.clients.jwks import MAX_RSA_BITS
from authserver.clients.jwks_fetch import JwksFetcher
from authserver.clients.jwks_fetch import JwksUnavailable
from authserver.clients.model import Client
from authserver.clock import Clock
from authserver.clock import SystemClock
from authserver.oauth.clients import OAuthClient
from authserver.tokens.revocations import RevocationStore
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import RepeatedNames
from authserver.vocabulary import check_text
from authserver.vocabulary import loads_strict

QueryClient = Callable[[str], OAuthClient | None]
#: The client whose current secret is the given one, or ``None``.
FindBySecret = Callable[[str], OAuthClient | None]

#: Upper bounds that keep hashing and lookups cheap for hostile input.
MAX_ID = 128
MAX_SECRET = 256
MALFORMED_BASIC = "malformed Basic authorization header"
#: Client assertions are a few hundred bytes; refuse anything far larger before parsing.
MAX_ASSERTION_LENGTH = 8192
#: RFC 7523 §3 item 4 leaves the lifetime to the server: an assertion's ``exp`` may be at
#: most this far ahead, which also bounds how long its ``jti`` is remembered against
#: replay. One hour: what Authlib's client (``PrivateKeyJWT``) puts in every assertion it
#: makes, and the bound other servers set (Okta's); a tighter one refused that client.
MAX_ASSERTION_LIFETIME = 3600
#: Clock skew allowed on ``exp``/``nbf``/``iat`` of an assertion, in seconds.
LEEWAY = 30
MAX_JTI = 255
#: What assertions are checked through: the accepted algorithms, and room for the
#: signature of the largest RSA key a client may register (joserfc's default takes 1024
#: base64url characters, the signature of a 6144-bit key: an 8192-bit one was refused as
#: "exceeds 1024 bytes" whatever it signed). Built once, as ``keys.crypto.SIGNING``.
ASSERTION_REGISTRY = JWSRegistry(algorithms=auth_methods.ASSERTION_ALGS)
ASSERTION_REGISTRY.max_signature_length = math.ceil(MAX_RSA_BITS / 8 / 3) * 4


class SecretBearerAuthentication:
    """``Authorization: Bearer <client_secret>``: the operator-token authentication of the
    ``stream`` dialect, registered as ``client_secret_bearer`` and offered only by the
    grant at a profile's own path.

    The secret alone names the client: secrets are unique 256-bit values and stored as
    their SHA-256 digest, so the digest of the presented one is looked up (an indexed
    equality on a digest; its timing says nothing useful about a secret). The client
    must be of a profile that authenticates this way. Anything else, including a wrong
    secret, is the same ``invalid_client`` and is counted as a failed authentication.
    """

    def __init__(self, find_by_secret: FindBySecret) -> None:
        self._find = find_by_secret

    def __call__(self, query_client: QueryClient, request: Any) -> OAuthClient | None:
        auth = (request.headers.get("Authorization") or "").strip()
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        form = request.form
        # RFC 6749 §2.3: one authentication method per request.
        if (
            not token
            or len(token) > MAX_SECRET
            or form.get("client_secret")
            or form.get("client_assertion")
        ):
            return None
        client = self._find(token)
        if client is None or not client.check_endpoint_auth_method(CLIENT_SECRET_BEARER, "token"):
            return None
        return client


def _check(
    query_client: QueryClient, client_id: str, secret: str, method: str
) -> OAuthClient | None:
    if len(client_id) > MAX_ID or len(secret) > MAX_SECRET:
        return None
    client = query_client(client_id)
    if client is None or not client.check_endpoint_auth_method(method, "token"):
        return None
    if not client.check_client_secret(secret):
        return None
    return client


def authenticate_client_secret_basic(query_client: QueryClient, request: Any) -> OAuthClient | None:
    credentials = request.credentials
    if credentials.basic_malformed:
        raise InvalidClientError(MALFORMED_BASIC, status_code=401)
    if credentials.basic is None:
        return None
    form = request.form
    # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
    if form.get("client_secret") or form.get("client_assertion"):
        raise InvalidRequestError("use exactly one client authentication method")
    client_id, secret = credentials.basic
    if form.get("client_id") and form.get("client_id") != client_id:
        raise InvalidRequestError("client_id in the body does not match the Authorization header")
    return _check(query_client, client_id, secret, auth_methods.CLIENT_SECRET_BASIC)


def authenticate_client_secret_post(query_client: QueryClient, request: Any) -> OAuthClient | None:
    form = request.form
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    if not client_id or not secret or request.credentials.uses_basic:
        return None
    if form.get("client_assertion"):
        raise InvalidRequestError("use exactly one client authentication method")
    return _check(query_client, client_id, secret, auth_methods.CLIENT_SECRET_POST)


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt`` (RFC 7523 §2.2, OIDC Core §9) on Authlib's assertion class.

    The assertion's ``aud`` must name this server (its issuer or one of its endpoint
    URLs), ``exp`` is required and at most :data:`MAX_ASSERTION_LIFETIME` ahead, and each
    ``jti`` is accepted once while the assertion is alive (RFC 7523 §3 item 7), across
    instances (stored in the database).

    Before anything is looked up or fetched, the assertion is read strictly (size, JSON
    depth, finite numbers, a public-key ``alg``, a bounded ``exp``): an unsigned or
    malformed assertion naming a ``jwks_uri`` client costs no fetch, and no input reaches
    a parser that could fail with something other than ``invalid_client``.
    """

    CLIENT_AUTH_METHOD = auth_methods.PRIVATE_KEY_JWT

    def __init__(
        self,
        issuer: str,
        revocations: RevocationStore,
        client_keys: Callable[[Client, str | None], dict[str, Any]],
        clock: Clock | None = None,
    ) -> None:
        super().__init__(validate_jti=True, leeway=LEEWAY)
        self._issuer = issuer
        self._revocations = revocations
        self._client_keys = client_keys
        self._clock = clock or SystemClock()

    def get_audiences(self) -> list[str]:
        base = self._issuer
        return [base, f"{base}/", f"{base}/token", f"{base}/introspect", f"{base}/revoke"]

    def extract_assertion(self, assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            return read_assertion(assertion, self._clock.now())
        except InvalidValue as exc:
            raise InvalidClientError(str(exc), status_code=401) from None

    def verified_claims(self, assertion: str, keys: KeySet, *, named: bool) -> Any:
        """The claims of *assertion* once signed by a key of *keys* (the client's set) and
        checked (expiry, audience, replay), else ``InvalidClientError``.

        Authlib's ``process_assertion_claims``, with two differences. The algorithms are
        the ones the metadata advertises (:data:`auth_methods.ASSERTION_ALGS`): joserfc's
        default registry refuses PS256 as "not recommended", so a PS256 assertion was
        refused. And an assertion without a ``kid`` is checked against each key of the
        set (RFC 7515 §4.1.4: ``kid`` is optional, and Authlib's own client sends none):
        joserfc picks a key without one only from a set of one, so a client that had
        registered a second key for its rotation could no longer authenticate.

        *named*: the assertion's header has a ``kid``. The claims are checked once, for
        the key whose signature verifies."""
        error: JoseError | None = None
        for key in [keys] if named else list(keys):
            try:
                token = jwt.decode(assertion, key, registry=ASSERTION_REGISTRY)
            except JoseError as exc:
                error = exc
                continue
            self.verify_claims(token.claims)
            return token.claims
        raise InvalidClientError(
            description=error.description if error is not None else "no usable key",
            status_code=401,
        )

    def validate_jti(self, claims: Any, jti: str) -> bool:
        # read_assertion has checked jti (one non-empty line of text, at most MAX_JTI) and
        # exp (a finite number at most MAX_ASSERTION_LIFETIME ahead, so the replay row
        # lives at most an hour, not until whatever date the assertion names).
        exp = float(claims["exp"])
        if self._revocations.use_assertion(str(claims["sub"]), jti, exp):
            return True
        if exp <= self._revocations.horizon():
            # A purge by a clock later than this one may have forgotten its use: expired
            # (RFC 7523 §3 item 4), whatever this clock says.
            raise InvalidClientError("the client assertion has expired", status_code=401)
        return False

    def __call__(self, query_client: QueryClient, request: Any) -> OAuthClient | None:
        form = request.form
        if request.credentials.uses_basic or form.get("client_secret"):
            if form.get("client_assertion"):
                raise InvalidRequestError("use exactly one client authentication method")
            return None
        assertion = form.get("client_assertion")
        if form.get("client_assertion_type") != self.CLIENT_ASSERTION_TYPE or not assertion:
            return None
        header, claims = self.extract_assertion(assertion)
        # RFC 7521 §4.2: a client_id beside the assertion must name the same client.
        if form.get("client_id") and form.get("client_id") != claims["sub"]:
            raise InvalidRequestError("client_id in the body does not match the client assertion")
        # The assertion's subject is the id this request presents (RFC 7523 §3): the one
        # its failures are counted under.
        request.credentials.client_id = claims["sub"]
        client = query_client(claims["sub"])
        # A client that may not use this method (a secret client, a disabled one) is
        # refused before its keys are looked up: nothing is fetched for it.
        if client is None or not client.check_endpoint_auth_method(
            self.CLIENT_AUTH_METHOD, "token"
        ):
            raise InvalidClientError("client authentication failed", status_code=401)
        try:
            jwks = self._client_keys(client.domain, header.get("kid"))
        except JwksUnavailable:
            raise InvalidClientError("client authentication failed", status_code=401) from None
        request.client = client
        try:
            keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            self.verified_claims(assertion, keys, named=header.get("kid") is not None)
        except ValueError:
            # joserfc's message becomes the error's description, for the log ("No key for
            # kid: 'é'"), and Authlib refuses to build an OAuth error whose description has
            # characters RFC 6749 §5.2 does not allow: a kid of any other characters got a
            # 500.
            raise InvalidClientError("client authentication failed", status_code=401) from None
        return self.authenticate_client(client)


def read_assertion(assertion: Any, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a client assertion, unverified, read strictly.

    :raises InvalidValue: for anything that is not a compact JWS of small, strict JSON
        with a public-key ``alg``, a string ``sub`` and a bounded numeric ``exp``.
    """
    if not isinstance(assertion, str) or len(assertion) > MAX_ASSERTION_LENGTH:
        raise InvalidValue("the client assertion is too long")
    segments = assertion.split(".")
    if len(segments) != 3 or not all(is_b64url(s) for s in segments):
        raise InvalidValue("the client assertion is not a compact JWS")
    # A repeated name (RFC 7515 section 4, RFC 7519 section 4) is refused, not read as its
    # last value: what is checked here must be what the signature check reads.
    names = RepeatedNames()
    try:
        header = loads_strict(
            b64url_decode(segments[0]), "the assertion header", max_depth=3, object_pairs_hook=names
        )
        claims = loads_strict(
            b64url_decode(segments[1]), "the assertion claims", max_depth=4, object_pairs_hook=names
        )
    except InvalidValue:
        raise
    except ValueError:
        raise InvalidValue("the client assertion is not a compact JWS of JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidValue("the client assertion is not a compact JWS of JSON objects")
    names.check(header, "the assertion header")
    names.check(claims, "the assertion claims")
    if header.get("alg") not in auth_methods.ASSERTION_ALGS:
        raise InvalidValue("the client assertion must be signed with a public-key algorithm")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidValue("the client assertion's kid must be a string")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidValue("the client assertion has no sub")
    jti = claims.get("jti")
    if jti is not None:
        # It is stored (replay protection): one line of text, as every database takes it.
        if not isinstance(jti, str) or not jti:
            raise InvalidValue("the client assertion's jti must be a non-empty string")
        check_text(jti, "the client assertion's jti", max_length=MAX_JTI)
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidValue("the client assertion's exp must be a number")
    if exp > now + MAX_ASSERTION_LIFETIME + LEEWAY:
        raise InvalidValue("the client assertion expires too far in the future")
    return header, claims


class ClientKeys:
    """The public JWK set of a private_key_jwt client: registered inline, or fetched from
    its ``jwks_uri`` through a :class:`JwksFetcher` (cached, bounded, one fetch at a time)."""

    def __init__(self, fetcher: JwksFetcher) -> None:
        self.fetcher = fetcher

    def __call__(self, client: Client, kid: str | None = None) -> dict[str, Any]:
        if client.jwks is not None:
            return client.jwks
        if not client.jwks_uri:
            raise JwksUnavailable("the client has no registered keys")
        return self.fetcher.get(client.jwks_uri, kid=kid)
