"""An OAuth2Request that reads ``application/x-www-form-urlencoded`` and ``application/json``
bodies alike (docs/design.md, Authlib item 3: Authlib's client authentication reads
``request.form``, which Flask fills only for form bodies).

The body is parsed here, strictly, once: UTF-8 only, no repeated parameters (RFC 6749 §3.2),
empty values treated as absent (§3.1), nothing in the query string.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import OAuth2Payload
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from flask import Request

from authserver.oauth.errors import RequestTooLargeError
from authserver.vocabulary import MAX_CLAIM_DEPTH
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import loads_strict

#: RFC 8707 §2: "resource" may be given several times; so may its alias "audience".
REPEATABLE = frozenset({"resource", "audience"})
MAX_FIELDS = 64


class ParsedBody:
    """The request parameters: ``fields`` maps each name to its values (strings for a form
    body, any JSON value for a JSON body)."""

    def __init__(self, fields: dict[str, list[Any]], *, is_json: bool) -> None:
        self.fields = fields
        self.is_json = is_json

    def first(self, name: str) -> Any:
        values = self.fields.get(name)
        return values[0] if values else None


def read_body(request: Request) -> bytes:
    """The raw body, refusing one over ``MAX_CONTENT_LENGTH`` with 413 however it is sent.

    With ``Content-Length`` Werkzeug refuses an oversize body itself. A chunked body has
    no length: Werkzeug's limited stream then stops quietly at the limit, which would parse
    a truncated body as if it were whole. Read one byte past the limit instead and refuse.
    """
    limit = request.max_content_length
    if request.content_length is not None or limit is None:
        return request.get_data(cache=True)
    stream = request.environ["wsgi.input"]
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestTooLargeError("the request body is too large")
    return bytes(raw)


def parse_body(request: Request) -> ParsedBody:
    """Parse the token/introspection/revocation request body or raise ``invalid_request``."""
    if request.args:
        # RFC 6749 §2.3.1: credentials MUST NOT be in the request URI; we take no
        # parameters from it at all, so nothing is silently ignored.
        raise InvalidRequestError("parameters must be sent in the request body, not the URL")
    mimetype = request.mimetype
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise InvalidRequestError("the request body must be UTF-8")
    raw = read_body(request)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return _parse_json(raw)
    if mimetype == "application/x-www-form-urlencoded":
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


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys silently; a repeated parameter is an
    # error in a form body, so it is one in a JSON body too.
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _parse_json(raw: bytes) -> ParsedBody:
    try:
        # Strict RFC 8259 JSON (no NaN/Infinity, no lone surrogates), bounded in depth: the
        # body object, then ``claims``, then the claim values.
        data = loads_strict(
            raw.decode("utf-8"),
            "the request body",
            max_depth=MAX_CLAIM_DEPTH + 2,
            object_pairs_hook=_no_duplicate_keys,
        )
    except _DuplicateKey:
        raise InvalidRequestError(
            "a request parameter is repeated (RFC 6749 section 3.2)"
        ) from None
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
    fields: dict[str, list[Any]] = {}
    for name, value in data.items():
        if value is None or value == "":
            continue  # RFC 6749 §3.1: empty parameters are treated as omitted
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


class AuthServerOAuth2Request(OAuth2Request):
    def __init__(self, request: Request, body: ParsedBody) -> None:
        # The URI only feeds Authlib's transport check (https, or http on loopback): built
        # from the same scheme, host and path as ``request.url`` without its IRI decoding,
        # which costs more than the rest of this constructor (the query string is always
        # empty: parse_body refuses one).
        uri = f"{request.scheme}://{request.host}{request.path}"
        super().__init__(method=request.method, uri=uri, headers=request.headers)
        self.parsed = body
        self.path = request.path
        self.payload = AuthServerPayload(body)
        self.remote_addr = request.remote_addr

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data
