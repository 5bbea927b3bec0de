"""The operator API under /admin: the same service calls and serializers as the CLI.

Registered only when ``AUTHSERVER_ADMIN_TOKEN`` is set (otherwise /admin/* is 404). The
bearer token is compared in constant time; plain http is refused as at ``/token`` (only a
loopback host, or https seen through a configured proxy); wrong tokens count against the
sender's address in the failed-authentication limits (``web/bearer.py``). A client secret
appears only in the responses of create and rotate-secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from flask import Blueprint
from flask import Response
from flask import g
from flask import jsonify
from flask import request

from authserver.audit.model import ACTIONS
from authserver.audit.model import MAX_QUERY_LIMIT
from authserver.audit.model import AuditQuery
from authserver.audit.service import acting_as
from authserver.clients.model import DEFAULT_PROFILE
from authserver.errors import Conflict
from authserver.errors import InvalidInput
from authserver.errors import NotFound
from authserver.oauth.requests import ENCODED_BODY
from authserver.oauth.requests import NOT_UTF8_CHARSET
from authserver.oauth.requests import declares_utf8
from authserver.oauth.requests import is_encoded
from authserver.profiles.base import field_list
from authserver.records import UnreadableRecord
from authserver.settings import SINCE_FORMS
from authserver.settings import SINCE_PATTERN as PARSE_SINCE_PATTERN
from authserver.settings import SinceOutOfRange
from authserver.settings import parse_since
from authserver.tokens.statuslist import revocable_sub
from authserver.vocabulary import MAX_CLAIM_DEPTH
from authserver.vocabulary import InvalidValue
from authserver.vocabulary import RepeatedNames
from authserver.vocabulary import loads_strict
from authserver.vocabulary import whole_number
from authserver.web import bearer
from authserver.web.context import services
from authserver.web.errors import error_response
from authserver.web.serializers import audit_json
from authserver.web.serializers import client_json
from authserver.web.serializers import key_change_json
from authserver.web.serializers import key_json
from authserver.web.serializers import unreadable_json

bp = Blueprint("admin", __name__, url_prefix="/admin")

CREATE_FIELDS = {
    "name",
    "audiences",
    "scopes",
    "allowed_claims",
    "token_ttl",
    "jwks",
    "jwks_uri",
    "require_sub",
    "profile",
    "fixed_claims",
}
UPDATE_FIELDS = CREATE_FIELDS
#: The deepest admin body: ``{"fixed_claims": {"name": <claim value>}}`` with a claim
#: value as deep as a claim may be (deeper than ``{"jwks": {"keys": [{"x5c": ["…"]}]}}``).
MAX_BODY_DEPTH = 2 + MAX_CLAIM_DEPTH


@bp.before_request
def _authenticate() -> Response | None:
    refused = bearer.insecure_transport()
    if refused is not None:
        return refused
    expected = services().settings.admin_token
    if not expected or not bearer.presented_matches(expected):
        bearer.count_failure()
        return bearer.unauthorized("authserver-admin", "admin")
    g.admin_actor = acting_as("admin-api")
    g.admin_actor.__enter__()
    return None


#: The one admin route that reads its query string (its filters); every other one takes
#: its fields from the body or the path.
_QUERY_ENDPOINTS = frozenset({"admin.audit"})


@bp.before_request
def _no_query() -> None:
    """A query parameter on a route that reads none is refused, not ignored: ``POST
    /admin/tokens/revoke?client_id=X`` revoked the user's tokens of every client, ``POST
    /admin/clients?token_ttl=60`` made a client with the default lifetime, and ``GET
    /admin/clients?enabled=false`` listed every client as if filtered (a script deleting
    what it lists deletes them all). As GET /admin/audit refuses a filter it does not know.
    Runs after :func:`_authenticate`: a stranger learns nothing from it."""
    if request.args and request.endpoint not in _QUERY_ENDPOINTS:
        raise InvalidInput(
            "this route takes no query parameters (the fields go in the JSON body; "
            "only GET /admin/audit has filters)"
        )


@bp.teardown_request
def _leave(exc: BaseException | None) -> None:
    actor = g.pop("admin_actor", None)
    if actor is not None:
        actor.__exit__(None, None, None)


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> Response:
    return error_response(404, "not_found", str(exc))


@bp.errorhandler(Conflict)
def _conflict(exc: Conflict) -> Response:
    return error_response(409, "conflict", str(exc))


@bp.errorhandler(UnreadableRecord)
def _unreadable(exc: UnreadableRecord) -> Response:
    # The stored record is bad, not the request; DELETE still removes it.
    return error_response(409, "unreadable_record", str(exc))


@bp.errorhandler(InvalidInput)
@bp.errorhandler(InvalidValue)
def _invalid(exc: InvalidInput | InvalidValue) -> Response:
    return error_response(400, "invalid_request", str(exc))


#: A body that is not UTF-8 (latin-1, UTF-16): said as such, not as "not a JSON object".
_NOT_UTF8 = "the request body is not valid UTF-8 (JSON is UTF-8, RFC 8259)"


def _body(allowed: set[str]) -> dict[str, Any]:
    if not request.is_json:
        raise InvalidInput("the request body must be application/json")
    if is_encoded(request.environ):
        raise InvalidInput(ENCODED_BODY)
    # JSON is UTF-8 (RFC 8259 section 8.1), as /token reads it. Decoded here, not by
    # json.loads(bytes), which guesses UTF-16 and UTF-32 from the first bytes: what is
    # stored must not depend on a guess, and a body in another charset is told so.
    if not declares_utf8(request.environ):
        raise InvalidInput(f"{NOT_UTF8_CHARSET} (RFC 8259): declare charset=utf-8 or none")
    try:
        # utf-8-sig: a leading byte order mark is ignored, as RFC 8259 lets a parser do.
        text = request.get_data().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(_NOT_UTF8) from None
    if "\x00" in text:
        # Never in JSON text (a control character is escaped inside a string), but in
        # UTF-16 or UTF-32 without a byte order mark, whose bytes may decode as UTF-8.
        raise InvalidInput(_NOT_UTF8)
    # json.loads keeps the last of repeated names in silence: {"token_ttl": 60,
    # "token_ttl": 3600} or {"fixed_claims": {"tier": "free", "tier": "pro"}} would store
    # whichever one this parser picks, where the operator's tool may have meant the other.
    # Refused, as /token refuses a repeated parameter.
    names = RepeatedNames()
    try:
        # Strict JSON: what is stored must be readable by every client of this API (no
        # NaN, no lone surrogates) and no depth of input may reach the recursion limit.
        data = loads_strict(
            text,
            "the request body",
            max_depth=MAX_BODY_DEPTH,
            object_pairs_hook=names,
        )
    except InvalidValue:
        raise
    except ValueError:
        raise InvalidInput("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = set(data) - allowed
    if unknown:
        # Named as /token's profiles name them: only plain names, at most ten (a name
        # with control or bidirectional characters would be repeated to the operator).
        raise InvalidInput(f"unknown fields: {field_list(unknown)}")
    if names.repeat_in(data):
        raise InvalidInput("a field of the request body is given more than once")
    for field, value in data.items():
        names.check(value, field)  # a known field's name: safe to echo
    return data


def _list_of_strings(data: dict[str, Any], field: str) -> Iterator[str] | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{field} must be an array of strings")
    return iter(value)


def _ttl(data: dict[str, Any]) -> Any:
    value = data.get("token_ttl")
    if value is None:
        return None
    seconds = whole_number(value)
    if seconds is None:
        raise InvalidInput("token_ttl must be a whole number of seconds or null")
    return seconds


def _bool(data: dict[str, Any], field: str) -> bool:
    value = data.get(field)
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be true or false")
    return value


def _profile(data: dict[str, Any]) -> str:
    value = data.get("profile")
    if not isinstance(value, str):
        raise InvalidInput("profile must be a string")
    return value


def _fixed_claims(data: dict[str, Any]) -> dict[str, Any]:
    value = data.get("fixed_claims")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("fixed_claims must be a JSON object of claim names to values")
    return value


def _json(obj: Any, status: int = 200) -> Response:
    response = jsonify(obj)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/clients")
def list_clients() -> Response:
    clients = services().clients
    return _json(
        {
            "clients": [client_json(c) for c in clients.list()],
            "unreadable": [unreadable_json(r) for r in clients.unreadable()],
        }
    )


@bp.post("/clients")
def create_client() -> Response:
    data = _body(CREATE_FIELDS)
    name = data.get("name")
    if not isinstance(name, str):
        raise InvalidInput("name is required and must be a string")
    jwks_uri = data.get("jwks_uri")
    if jwks_uri is not None and not isinstance(jwks_uri, str):
        raise InvalidInput("jwks_uri must be a string")
    client, secret = services().clients.create(
        name=name,
        audiences=_list_of_strings(data, "audiences") or (),
        scopes=_list_of_strings(data, "scopes") or (),
        allowed_claims=_list_of_strings(data, "allowed_claims") or (),
        token_ttl=_ttl(data),
        jwks=data.get("jwks"),
        jwks_uri=jwks_uri,
        require_sub=_bool(data, "require_sub") if "require_sub" in data else False,
        profile=_profile(data) if "profile" in data else DEFAULT_PROFILE,
        fixed_claims=_fixed_claims(data),
    )
    body = client_json(client)
    if secret is not None:
        body["client_secret"] = secret
    response = _json(body, 201)
    response.headers["Location"] = f"/admin/clients/{client.client_id}"
    return response


@bp.get("/clients/<client_id>")
def show_client(client_id: str) -> Response:
    return _json(client_json(services().clients.get(client_id)))


@bp.patch("/clients/<client_id>")
def update_client(client_id: str) -> Response:
    data = _body(UPDATE_FIELDS)
    changes: dict[str, Any] = {}
    if "name" in data:
        if not isinstance(data["name"], str):
            raise InvalidInput("name must be a string")
        changes["name"] = data["name"]
    for field in ("audiences", "scopes", "allowed_claims"):
        if field in data:
            values = _list_of_strings(data, field)
            if values is None:
                # null is no list, as it is no name: a null that cleared the list would
                # wipe a policy on a tool's missing value. [] clears it on purpose.
                raise InvalidInput(f"{field} must be an array of strings ([] removes them all)")
            changes[field] = tuple(values)
    if "token_ttl" in data:
        changes["token_ttl"] = _ttl(data)
    if "require_sub" in data:
        changes["require_sub"] = _bool(data, "require_sub")
    if "profile" in data:
        changes["profile"] = _profile(data)
    if "fixed_claims" in data:
        if data["fixed_claims"] is None:
            raise InvalidInput("fixed_claims must be a JSON object ({} removes them all)")
        changes["fixed_claims"] = _fixed_claims(data)
    if "jwks" in data:
        if not isinstance(data["jwks"], dict):
            raise InvalidInput("jwks must be a JSON Web Key Set object")
        changes["jwks"] = data["jwks"]
    if "jwks_uri" in data:
        if not isinstance(data["jwks_uri"], str):
            raise InvalidInput("jwks_uri must be a string")
        changes["jwks_uri"] = data["jwks_uri"]
    if not changes:
        raise InvalidInput("nothing to change")
    return _json(client_json(services().clients.update(client_id, **changes)))


@bp.delete("/clients/<client_id>")
def delete_client(client_id: str) -> Response:
    services().audit.settle()  # a token issued a moment ago is withdrawn too
    services().clients.delete(client_id)
    response = Response(status=204)
    del response.headers["Content-Type"]  # no content, so no type of it (RFC 9110 §8.3)
    return response


@bp.post("/clients/<client_id>/rotate-secret")
def rotate_secret(client_id: str) -> Response:
    # Optional body {"grace_seconds": N}: the old secret keeps working N seconds.
    grace = 0
    # A body only when one came: a JSON Content-Type with nothing after it (a client that
    # sets the header on every call) is no body, as no Content-Type at all is.
    if request.content_length or (request.is_json and request.get_data(cache=True).strip()):
        given = whole_number(_body({"grace_seconds"}).get("grace_seconds", 0))
        if given is None:
            raise InvalidInput("grace_seconds must be a whole number of seconds")
        grace = given
    client, secret = services().clients.rotate_secret(client_id, grace=grace)
    return _json({**client_json(client), "client_secret": secret})


@bp.post("/clients/<client_id>/disable")
def disable_client(client_id: str) -> Response:
    services().audit.settle()  # a token issued a moment ago is withdrawn too
    return _json(client_json(services().clients.set_enabled(client_id, False)))


@bp.post("/clients/<client_id>/enable")
def enable_client(client_id: str) -> Response:
    return _json(client_json(services().clients.set_enabled(client_id, True)))


@bp.get("/keys")
def list_keys() -> Response:
    svc = services()
    return _json(
        {
            "keys": [key_json(v) for v in svc.keys.views()],
            "unreadable": [unreadable_json(r) for r in svc.key_ring.unreadable()],
        }
    )


@bp.post("/keys/rotate")
def rotate_keys() -> Response:
    # As keys rotate does, before the change (its own transaction, not this request's).
    services().recover_key_records()
    keys = services().keys
    keys.ensure_current()
    result = keys.rotate()
    return _json(
        key_change_json(keys.views(), result.key.kid, created=result.created),
        201 if result.created else 200,
    )


@bp.post("/keys/<kid>/retire")
def retire_key(kid: str) -> Response:
    # As keys retire does, before the change (its own transaction, not this request's).
    services().recover_key_records()
    keys = services().keys
    keys.retire(kid)
    return _json(key_change_json(keys.views(), kid))


@bp.post("/tokens/revoke")
def revoke_tokens() -> Response:
    """Revoke every live token of a user (of one client when ``client_id`` is given),
    through the status lists so offline verifiers see it too."""
    data = _body({"sub", "client_id"})
    sub, client_id = revocable_sub(data.get("sub")), data.get("client_id")
    if client_id is not None and not isinstance(client_id, str):
        raise InvalidInput("client_id must be a string")
    services().audit.settle()  # before this request reads anything: a token issued just now counts
    if client_id is not None:
        services().clients.get(client_id)  # NotFound: 404
    revoked = services().status_lists.revoke_user(sub, client_id=client_id)
    return _json({"sub": sub, "client_id": client_id, "revoked": revoked})


#: What ``since`` may be, exactly the OpenAPI document's pattern: POSIX seconds (the
#: API's own form, what a program computes) or what :func:`parse_since` reads, as
#: ``authserver audit --since`` does. float() also read "1e3", "1_000", " 5" and other
#: scripts' digits ("\uff15") as POSIX seconds, none of which the document allows (as
#: ``limit`` takes ASCII digits only).
POSIX_SECONDS = re.compile(r"-?[0-9]+(\.[0-9]+)?")
SINCE_PATTERN = re.compile(POSIX_SECONDS.pattern + "|" + PARSE_SINCE_PATTERN.pattern)


def _audit_since(raw: str, name: str = "since") -> float:
    """POSIX seconds, or what ``authserver audit --since`` (``--until``) takes, read by the
    same :func:`parse_since`, so the CLI and the API refuse the same values."""
    if POSIX_SECONDS.fullmatch(raw) is None:
        try:
            return parse_since(raw, services().clock.now())
        except SinceOutOfRange as exc:
            raise InvalidInput(f"{name} is out of range: a duration {exc}") from None
        except ValueError:
            raise InvalidInput(f"{name} must be POSIX seconds, {SINCE_FORMS}") from None
    since = float(raw)
    if not math.isfinite(since):
        raise InvalidInput(f"{name} must be a finite number of POSIX seconds")
    return since


#: The query parameters of GET /admin/audit (the CLI's options: --client is client_id).
AUDIT_PARAMETERS = ("client_id", "sub", "action", "since", "until", "before", "limit")


@bp.get("/audit")
def audit() -> Response:
    args = request.args
    if not set(args) <= set(AUDIT_PARAMETERS):
        # A filter misspelt (?client=) was ignored, and every event came back as if filtered.
        raise InvalidInput(f"unknown query parameter; known: {', '.join(AUDIT_PARAMETERS)}")
    if any(len(args.getlist(name)) > 1 for name in args):
        raise InvalidInput("a query parameter is repeated")
    raw_limit = args.get("limit", "100")
    # ASCII digits only: int() also reads "1_0" and other scripts' digits.
    limit = int(raw_limit) if re.fullmatch(r"[0-9]{1,6}", raw_limit) else 0
    if not 1 <= limit <= MAX_QUERY_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_QUERY_LIMIT}")
    action = args.get("action")
    if action is not None and action not in ACTIONS:
        # The value is not echoed: the known ones say what was meant.
        raise InvalidInput(f"action must be one of: {', '.join(ACTIONS)}")
    since = _audit_since(args["since"]) if "since" in args else None
    until = _audit_since(args["until"], "until") if "until" in args else None
    raw_before = args.get("before")
    before = None
    if raw_before is not None:
        # An event id, as each event carries it: ASCII digits (ids are 64-bit).
        if re.fullmatch(r"[0-9]{1,19}", raw_before) is None or not 1 <= int(raw_before) < 2**63:
            raise InvalidInput("before must be the id of an audit event")
        before = int(raw_before)
    query = AuditQuery(
        client_id=args.get("client_id"),
        sub=args.get("sub"),
        action=action,
        since=since,
        until=until,
        before=before,
        limit=limit,
    )
    return _json({"events": [audit_json(e) for e in services().audit.query(query)]})
