"""The client-credentials grant (RFC 6749 §4.4) with authserver's user-token parameters."""

from __future__ import annotations

import re
from typing import Any
from typing import ClassVar

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oauth2.rfc6749.errors import UnauthorizedClientError

from authserver.clients import auth_methods
from authserver.clients.auth_methods import CLIENT_SECRET_BEARER
from authserver.clients.model import Client
from authserver.clients.model import is_valid_scope_token
from authserver.oauth.errors import InvalidTargetError
from authserver.oauth.errors import UnsupportedGrantError
from authserver.oauth.errors import from_token_request_error
from authserver.oauth.requests import REPEATABLE
from authserver.oauth.requests import ParsedBody
from authserver.profiles.base import PROTOCOL_FIELDS
from authserver.profiles.base import DialectRequest
from authserver.profiles.base import Profile
from authserver.profiles.base import TokenParameters
from authserver.profiles.base import names_an_audience
from authserver.profiles.base import refuse_unknown
from authserver.tokens.model import IssuedToken
from authserver.tokens.model import TokenRequest
from authserver.tokens.model import TokenRequestError
from authserver.vocabulary import CLAIM_NAME_RULE
from authserver.vocabulary import CLAIMS_TOO_DEEP
from authserver.vocabulary import IDENTITY_CLAIMS
from authserver.vocabulary import MAX_CLAIM_DEPTH
from authserver.vocabulary import MAX_SAFE_INTEGER
from authserver.vocabulary import MAX_URI_LENGTH
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import RepeatedNames
from authserver.vocabulary import beyond_safe_integer
from authserver.vocabulary import check_identity
from authserver.vocabulary import is_valid_claim_name
from authserver.vocabulary import loads_strict
from authserver.vocabulary import sent_whole_number


def _string(value: Any, field: str) -> str:
    try:
        return check_identity(value, field)
    except InvalidValue as exc:
        raise InvalidRequestError(str(exc)) from None


def _claims(body: ParsedBody) -> dict[str, Any]:
    if "claims" not in body.fields:
        return {}
    raw = body.first("claims")
    if isinstance(raw, str):
        # A JSON body's claims object was checked for repeated names with the body
        # (requests.parse_body); a form body's claims text is checked here, the same way.
        names = RepeatedNames()
        try:
            # One level more than a claim value may have: the object holding them.
            raw = loads_strict(
                raw,
                "claims",
                max_depth=MAX_CLAIM_DEPTH + 1,
                too_deep=CLAIMS_TOO_DEEP,
                object_pairs_hook=names,
            )
            names.check(raw, "claims")
        except InvalidValue as exc:
            raise InvalidRequestError(str(exc)) from None
        except ValueError:
            raise InvalidRequestError("claims is not valid JSON") from None
    if not isinstance(raw, dict):
        raise InvalidRequestError("claims must be a JSON object")
    for name in raw:
        if not is_valid_claim_name(name):
            raise InvalidRequestError(f"claims has an invalid claim name: {CLAIM_NAME_RULE}")
    return raw


def _identity(body: ParsedBody, claims: dict[str, Any], field: str) -> str | None:
    """``sub``/``email``/``name`` as a parameter or inside ``claims``; both must agree.

    A member that is present is checked whatever its value: ``null`` is refused like
    ``""`` (a backend whose user lookup came back empty must not get the client's own
    token, ``sub`` = ``client_id``, which merges every user into one at the sync server)."""
    direct = _string(body.first(field), field) if field in body.fields else None
    nested = _string(claims[field], field) if field in claims else None
    if direct is not None and nested is not None and direct != nested:
        raise InvalidRequestError(f"{field} is given twice with different values")
    return direct if direct is not None else nested


def _scopes(body: ParsedBody) -> tuple[str, ...] | None:
    raw = body.first("scope")
    if raw is None:
        return None
    if isinstance(raw, str):
        # RFC 6749 §3.3: scope tokens are separated by spaces (U+0020) only. str.split()
        # would also split at tabs, no-break spaces and other Unicode whitespace, and issue
        # "read write" for a scope the client did not write; such a separator is a
        # character no scope token may have, refused below. Repeated spaces are tolerated.
        items = [item for item in raw.split(" ") if item]
        if not items:
            raise InvalidScopeError("scope has no scope token (RFC 6749 section 3.3)")
    elif isinstance(raw, list) and body.is_json and all(isinstance(s, str) for s in raw):
        items = [s for s in raw]
    else:
        raise InvalidRequestError("scope must be a space-separated string or an array of strings")
    for item in items:
        if not is_valid_scope_token(item):
            raise InvalidScopeError("scope has an invalid scope token (RFC 6749 section 3.3)")
    return tuple(items)


#: RFC 3986 §4.3 absolute-URI: a scheme, then ":" (and no fragment, checked apart).
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:", re.ASCII)


def _audiences(body: ParsedBody) -> tuple[str, ...]:
    # The first of each value, in order; a dict finds a repeat in constant time.
    out: dict[str, None] = {}
    for field in ("audience", "resource"):
        for value in body.fields.get(field, []):
            if not isinstance(value, str) or not value or len(value) > MAX_URI_LENGTH:
                raise InvalidRequestError(f"{field} must be a non-empty string")
            if field == "resource" and (not _ABSOLUTE_URI.match(value) or "#" in value):
                # RFC 8707 §2: "MUST be an absolute URI ... MUST NOT include a fragment
                # component"; invalid_target for one that is not. ``audience`` is a logical
                # name (RFC 8693 §2.1), any registered string.
                raise InvalidTargetError(
                    "resource must be an absolute URI without a fragment (RFC 8707 section 2); "
                    "name a registered audience that is not one with the audience parameter"
                )
            out.setdefault(value)
    return tuple(out)


def _expires_in(body: ParsedBody) -> int | None:
    raw = body.first("expires_in")
    if raw is None:
        return None
    # Any longer lifetime than the client's is cut to it (tokens.claims.resolve_lifetime),
    # however long: only what is no positive whole number (within JSON's 2^53) is refused.
    seconds = sent_whole_number(raw)
    if seconds is None and beyond_safe_integer(raw):
        # A positive whole number past JSON's 2^53 (digits in a form, 1e300 in JSON): said
        # so, as the JSON body's own check says it of an integer (not "no whole number").
        raise InvalidRequestError(
            f"expires_in must be at most {MAX_SAFE_INTEGER} seconds (2^53 - 1); "
            "a lifetime longer than the client's is cut to it"
        )
    if seconds is None or seconds <= 0:
        raise InvalidRequestError("expires_in must be a positive whole number of seconds")
    return seconds


def parse_token_request(body: ParsedBody) -> TokenRequest:
    """Read authserver's token parameters (docs/reference.md, ``POST /token``)."""
    claims = _claims(body)
    return TokenRequest(
        sub=_identity(body, claims, "sub"),
        email=_identity(body, claims, "email"),
        name=_identity(body, claims, "name"),
        scopes=_scopes(body),
        audiences=_audiences(body),
        expires_in=_expires_in(body),
        claims={k: v for k, v in claims.items() if k not in IDENTITY_CLAIMS},
    )


class IssuedTokenResponse(dict[str, Any]):
    """The token response body as the client's profile renders it (RFC 6749 §5.1 for
    ``oauth2``), carrying the :class:`IssuedToken` it describes so ``save_token`` can report
    it (identifiers only) without decoding the token."""

    def __init__(self, body: dict[str, Any], issued: IssuedToken) -> None:
        super().__init__(body)
        self.issued = issued

    def __repr__(self) -> str:
        # Authlib logs the token response at debug level ("Issue token %r"): identifiers
        # only, never the bearer token itself.
        return f"<IssuedTokenResponse jti={self.issued.jti!r} kid={self.issued.kid!r}>"


class AuthServerClientCredentialsGrant(grants.ClientCredentialsGrant):
    """Authlib's client-credentials flow (authenticate, check the grant type, generate,
    ``save_token``, respond) with authserver's parameters and signer.

    The seam for request/response dialects (``authserver/profiles``): the client's profile
    translates its dialect's body into authserver's token parameters (then parsed and
    policy-checked exactly like an ``oauth2`` request) and renders the issued token in its
    dialect; authentication, issuing and the events stay here, in one code path.
    """

    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = list(auth_methods.ALL_METHODS)

    def validate_token_request(self) -> None:
        # Authenticates the client first, so an unauthenticated caller learns nothing
        # about the policy, then checks the grant type and parses our parameters.
        super().validate_token_request()
        client = self.client.domain
        profile = self.server.profiles.get(client.policy.profile)
        if profile is None:
            # A plug-in that was uninstalled or failed to load (logged at start).
            raise InvalidRequestError("this client's profile is not installed on this server")
        self.profile: Profile = profile
        self.dialect = dialect_request(self.request, self.server.token_service.now())
        # The profile only translates: its output goes through the same parser and the
        # same policy checks (tokens.claims) as an oauth2 request.
        try:
            refuse_unknown(profile, self.dialect)
            parameters = profile.translate(self.dialect, client)
        except TokenRequestError as exc:
            raise from_token_request_error(exc) from None
        _check_audience_can_be_named(profile, client, parameters)
        self.token_request = parse_token_request(as_parsed_body(parameters))

    def generate_token(
        self,
        user: Any = None,
        scope: Any = None,
        grant_type: Any = None,
        expires_in: Any = None,
        include_refresh_token: bool = True,
    ) -> IssuedTokenResponse:
        """The signed RFC 9068 token for the parsed :class:`TokenRequest` (scope and
        lifetime come from it and the client's policy, not from Authlib's arguments), in
        the body the client's profile renders. Authlib's ``create_token_response`` then
        calls ``save_token`` with it and answers 200."""
        try:
            issued = self.server.token_service.issue(self.client.domain, self.token_request)
        except TokenRequestError as exc:
            raise from_token_request_error(exc) from None
        return IssuedTokenResponse(self.profile.render(issued, self.dialect), issued)


class AuthServerProfilePathGrant(AuthServerClientCredentialsGrant):
    """A profile's own path (``stream``: ``POST /auth/v1/access-tokens``): the same grant,
    authenticated by ``Authorization: Bearer <client_secret>``, for clients of the profile
    that serves the path. The dialect's body carries no ``grant_type``; the path implies
    client credentials."""

    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [CLIENT_SECRET_BEARER]

    def validate_token_request(self) -> None:
        # The protocol fields are not the dialect's, but one that is sent must not
        # contradict the path: nothing is ignored silently.
        grant_type = self.request.payload.grant_type
        if grant_type is not None and grant_type != self.GRANT_TYPE:
            raise UnsupportedGrantError("only client credentials are issued at this path")
        super().validate_token_request()
        if self.request.path not in self.profile.paths:
            raise UnauthorizedClientError("this client's profile is not served at this path")
        named = self.request.payload.client_id
        if named is not None and named != self.client.client_id:
            raise InvalidRequestError("client_id names another client than the Bearer secret")


def _check_audience_can_be_named(
    profile: Profile, client: Client, parameters: TokenParameters
) -> None:
    """A client with several audiences must name one in each request (RFC 8707); a dialect
    without an ``audience``/``resource`` field (every built-in one but ``oauth2``) cannot,
    and the generic refusal told the caller to send a parameter its profile then refuses.
    Such a client is refused at registration (``ClientService``); this answers for one
    registered before that, or whose profile was changed by a plug-in update."""
    if (
        len(client.policy.audiences) > 1
        and not parameters.get("audience")
        and not parameters.get("resource")
        and not names_an_audience(profile)
    ):
        raise InvalidTargetError(
            f"this client has several audiences and a {profile.name} request cannot name "
            "one: register the client with one audience (clients update ID --audience AUD)"
        )


def dialect_request(request: Any, now: float) -> DialectRequest:
    """The parsed body as a profile sees it: one value per parameter (a list for the
    repeatable ``audience``/``resource``), without the grant type and credentials."""
    parsed: ParsedBody = request.parsed
    fields = {
        name: (values if name in REPEATABLE else values[0])
        for name, values in parsed.fields.items()
        if name not in PROTOCOL_FIELDS and values
    }
    return DialectRequest(fields=fields, is_json=parsed.is_json, now=now, path=request.path)


def as_parsed_body(parameters: TokenParameters) -> ParsedBody:
    """authserver's token parameters (JSON-typed values) as the oauth2 parser reads them."""
    fields: dict[str, list[Any]] = {}
    for name, value in parameters.items():
        # A None a profile passes on is the dialect's JSON null: kept, for the parameter's
        # own check to judge (a null sub is refused, not read as no sub).
        if name in REPEATABLE and isinstance(value, list):
            fields[name] = list(value)
        else:
            fields[name] = [value]
    return ParsedBody(fields, is_json=True)
