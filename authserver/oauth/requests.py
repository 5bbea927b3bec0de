"""An OAuth2Request that reads ``application/x-www-form-urlencoded`` and ``application/json``
bodies alike (docs/design.md, Authlib item 3: Authlib's client authentication reads
``request.form``, which Flask fills only for form bodies).

The body is parsed here, strictly, once: UTF-8 only, no repeated parameters (RFC 6749 §3.2),
empty values treated as absent (§3.1), nothing in the query string.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import OAuth2Payload
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from werkzeug.datastructures import EnvironHeaders
from werkzeug.http import parse_options_header

from authserver.oauth.errors import INSECURE_TRANSPORT_DESCRIPTION
from authserver.oauth.errors import RequestTooLargeError
from authserver.profiles.base import PROTOCOL_FIELDS
from authserver.vocabulary import MAX_CLAIM_DEPTH
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import RepeatedNames
from authserver.vocabulary import is_valid_claim_name
from authserver.vocabulary import loads_strict

#: RFC 8707 §2: "resource" may be given several times; so may its alias "audience".
REPEATABLE = frozenset({"resource", "audience"})
#: RFC 6749 §3.1: "parameters sent without a value MUST be treated as if they were
#: omitted". In a JSON body that holds for OAuth's own parameters, the ones a form carries
#: (``{"scope": ""}`` and ``{"scope": null}`` ask for the default scope). Every other member
#: (``sub``, ``email``, ``name``, ``claims``, a profile's own fields) is a JSON value that
#: its own check judges, ``null`` included: ``{"sub": ""}`` and ``{"sub": null}`` are
#: refused, not read as a request for the client's own token.
OAUTH_PARAMETERS = PROTOCOL_FIELDS | {
    "scope",
    "audience",
    "resource",
    "expires_in",
    "token",
    "token_type_hint",
}
#: Parameters that are strings in every request (RFC 6749 §4.4.2 and §2.3.1, RFC 7523
#: §2.2, RFC 7662 §2.1, RFC 7009 §2.1). In a JSON body any other type is refused by name:
#: read as "not sent", ``{"grant_type": 5}`` was told "missing grant_type parameter" and
#: ``{"token": ["..."]}`` "missing token parameter".
STRING_PARAMETERS = PROTOCOL_FIELDS | {"token", "token_type_hint"}
MAX_FIELDS = 64
#: A JSON body nests as deep as a claim value allows, under the body and ``claims``.
_BODY_TOO_DEEP = (
    f"the request body is nested deeper than {MAX_CLAIM_DEPTH + 2} levels (the body, claims, "
    f"and a claim value of at most {MAX_CLAIM_DEPTH} levels)"
)


class ParsedBody:
    """The request parameters: ``fields`` maps each name to its values (strings for a form
    body, any JSON value for a JSON body)."""

    def __init__(self, fields: dict[str, list[Any]], *, is_json: bool) -> None:
        self.fields = fields
        self.is_json = is_json

    def first(self, name: str) -> Any:
        values = self.fields.get(name)
        return values[0] if values else None


def _content_type(environ: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and its parameters, as Werkzeug parses them."""
    mimetype, params = parse_options_header(environ.get("CONTENT_TYPE", ""))
    return mimetype.lower(), params


#: What a compressed body is told. It would otherwise be read as text and refused as "not
#: valid UTF-8" or "not JSON", which sends its sender looking in the wrong place. Bodies
#: here are small; no content coding is accepted (RFC 9110 §8.4).
ENCODED_BODY = "Content-Encoding is not supported here: send the request body uncompressed"


#: What a body declared in another charset is told (``/token`` and the admin API).
NOT_UTF8_CHARSET = "the request body must be UTF-8"


def declares_utf8(environ: dict[str, Any]) -> bool:
    """Whether the Content-Type declares UTF-8 or no charset (which means UTF-8 for JSON,
    RFC 8259 §8.1, and for the forms here)."""
    charset = _content_type(environ)[1].get("charset", "utf-8").lower()
    return charset in ("utf-8", "utf8")


def is_encoded(environ: dict[str, Any]) -> bool:
    """True when the body comes with a content coding (gzip, br, ...)."""
    return environ.get("HTTP_CONTENT_ENCODING", "").strip().lower() not in ("", "identity")


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The raw body, refusing one over *limit* bytes with 413 however it is sent.

    With ``Content-Length`` an oversize body is refused before a byte is read. A chunked
    body has no length: read one byte past the limit and refuse, so a truncated body is
    never parsed as if it were whole.
    """
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            raise InvalidRequestError("the Content-Length header is not a number") from None
        if size < 0:
            raise InvalidRequestError("the Content-Length header is not a number")
        if size > limit:
            raise RequestTooLargeError("the request body is too large")
        return bytes(stream.read(size)) if size else b""
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestTooLargeError("the request body is too large")
    return bytes(raw)


def parse_body(environ: dict[str, Any], limit: int) -> ParsedBody:
    """Parse the token/introspection/revocation request body of the WSGI *environ* (at most
    *limit* bytes) or raise ``invalid_request``."""
    if environ.get("QUERY_STRING"):
        # RFC 6749 §2.3.1: credentials MUST NOT be in the request URI; we take no
        # parameters from it at all, so nothing is silently ignored.
        raise InvalidRequestError("parameters must be sent in the request body, not the URL")
    if is_encoded(environ):
        raise InvalidRequestError(ENCODED_BODY)
    if not declares_utf8(environ):
        raise InvalidRequestError(NOT_UTF8_CHARSET)
    mimetype, _ = _content_type(environ)
    raw = read_body(environ, limit)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return _parse_json(raw)
    if mimetype == "application/x-www-form-urlencoded":
        if raw.lstrip()[:1] in (b"{", b"["):
            # A JSON document sent as a form (curl -d sets this Content-Type): read as a
            # form it has no grant_type, and "missing grant_type" would mislead.
            raise InvalidRequestError(
                "the body looks like JSON but its Content-Type is "
                "application/x-www-form-urlencoded; send Content-Type: application/json"
            )
        return _parse_form(raw)
    if not mimetype and not raw:
        return ParsedBody({}, is_json=False)
    raise InvalidRequestError(
        "Content-Type must be application/x-www-form-urlencoded or application/json"
    )


def _parse_form(raw: bytes) -> ParsedBody:
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=False, errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise InvalidRequestError("the request body is not valid UTF-8") from None
    except ValueError:
        raise InvalidRequestError("the request body has too many parameters") from None
    fields: dict[str, list[Any]] = defaultdict(list)
    for name, value in pairs:
        fields[name].append(value)
    _check_repeats(fields)
    return ParsedBody(dict(fields), is_json=False)


def _parse_json(raw: bytes) -> ParsedBody:
    # json.loads keeps the last of repeated names silently; a repeated parameter is an
    # error in a form body, so it is one in a JSON body too, and so is a repeated name
    # inside a parameter's value (claims, a profile's object).
    names = RepeatedNames()
    try:
        # Strict RFC 8259 JSON (no NaN/Infinity, no lone surrogates), bounded in depth: the
        # body object, then ``claims``, then the claim values.
        data = loads_strict(
            raw.decode("utf-8"),
            "the request body",
            max_depth=MAX_CLAIM_DEPTH + 2,
            too_deep=_BODY_TOO_DEEP,
            object_pairs_hook=names,
        )
    except UnicodeDecodeError:
        raise InvalidRequestError("the request body is not valid UTF-8") from None
    except InvalidValue as exc:
        raise InvalidRequestError(str(exc)) from None
    except ValueError:
        raise InvalidRequestError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the JSON request body must be an object")
    if len(data) > MAX_FIELDS:
        raise InvalidRequestError("the request body has too many parameters")
    if names.repeat_in(data):
        raise InvalidRequestError("a request parameter is repeated (RFC 6749 section 3.2)")
    for name, value in data.items():
        try:
            # A parameter is named only when its name is plain (it came from the client).
            names.check(value, name if is_valid_claim_name(name) else "a request parameter")
        except InvalidValue as exc:
            raise InvalidRequestError(str(exc)) from None
    fields: dict[str, list[Any]] = {}
    for name, value in data.items():
        if name in OAUTH_PARAMETERS and (value is None or value == ""):
            continue  # RFC 6749 §3.1 (see OAUTH_PARAMETERS)
        if name in STRING_PARAMETERS and not isinstance(value, str):
            raise InvalidRequestError(f"{name} must be a string")
        if name in REPEATABLE and isinstance(value, list):
            fields[name] = list(value)
        else:
            fields[name] = [value]
    return ParsedBody(fields, is_json=True)


def _check_repeats(fields: dict[str, list[Any]]) -> None:
    for name, values in fields.items():
        if len(values) > 1 and name not in REPEATABLE:
            raise InvalidRequestError("a request parameter is repeated (RFC 6749 section 3.2)")


class AuthServerPayload(OAuth2Payload):
    """Authlib's view of the parameters: string values only (Authlib compares them as such)."""

    def __init__(self, body: ParsedBody) -> None:
        self._body = body
        self._data = {
            name: values[0]
            for name, values in body.fields.items()
            if values and isinstance(values[0], str)
        }

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[Any]]:
        return defaultdict(list, self._body.fields)


class ClientCredentials:
    """The client credentials a request presents, parsed once, before any is checked.

    ``basic`` is the ``(client_id, secret)`` pair of an ``Authorization: Basic`` header
    (RFC 7617; id and secret form-urlencoded first, RFC 6749 §2.3.1), ``None`` without
    one; ``basic_malformed`` says a Basic header was present but unusable (bad base64, not
    UTF-8, no colon, an empty part). ``client_id`` is the id the request claims by any
    method: Basic, else the body's ``client_id``; a ``client_assertion``'s subject is
    added by the assertion method when it reads it. Unverified: it chooses a
    failed-authentication counter and nothing else.
    """

    __slots__ = ("basic", "basic_malformed", "client_id", "uses_basic")

    def __init__(self, authorization: str | None, form: dict[str, str]) -> None:
        self.basic: tuple[str, str] | None = None
        self.basic_malformed = False
        self.uses_basic = False
        if authorization:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "basic":
                self.uses_basic = True
                self.basic = _basic_pair(token)
                self.basic_malformed = self.basic is None
        if self.basic is not None:
            claimed: str | None = self.basic[0]
        else:
            # A malformed header names no usable id: its failure counts per address only.
            claimed = None if self.basic_malformed else form.get("client_id")
        self.client_id: str | None = claimed or None


def _basic_pair(token: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id or not secret:
        return None
    return unquote(client_id), unquote(secret)


class _Headers(EnvironHeaders):
    """The request's headers, always truthy: Authlib's ``headers or {}`` would otherwise
    count them by walking the whole environ on every request."""

    def __bool__(self) -> bool:
        return True


class AuthServerOAuth2Request(OAuth2Request):
    """Authlib's request, built from a WSGI environ: the parsed body, the presented
    credentials (:class:`ClientCredentials`), the path and the source address (already
    corrected by ProxyFix when ``AUTHSERVER_PROXY_HOPS`` is set)."""

    def __init__(self, environ: dict[str, Any], path: str, body: ParsedBody) -> None:
        uri = transport_uri(environ, path)
        headers = _Headers(environ)
        try:
            super().__init__(method=environ.get("REQUEST_METHOD", "POST"), uri=uri, headers=headers)
        except InsecureTransportError:
            raise InsecureTransportError(description=INSECURE_TRANSPORT_DESCRIPTION) from None
        #: The route (``/token``, a profile's own path, ...), for the grant and the events.
        self.path = path
        self.parsed = body
        self.payload = AuthServerPayload(body)
        self.remote_addr: str | None = environ.get("REMOTE_ADDR")
        self.credentials = ClientCredentials(headers.get("Authorization"), self.payload.data)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data


def transport_uri(environ: dict[str, Any], path: str) -> str:
    """The request's URI as Authlib's transport check (``is_secure_transport``: https, or
    http on loopback) reads it: the scheme and the Host header as sent (corrected by
    ProxyFix behind a trusted proxy), never decoded. Werkzeug's ``request.url`` decodes an
    IDNA host and raised on ``Host: xn--``. No query string: parse_body refuses one on the
    endpoints this checks."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or _server_host(environ, scheme)
    return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '')}{path}"


def _server_host(environ: dict[str, Any], scheme: str) -> str:
    name, port = environ.get("SERVER_NAME", ""), str(environ.get("SERVER_PORT", ""))
    default = "443" if scheme == "https" else "80"
    return name if not port or port == default else f"{name}:{port}"
