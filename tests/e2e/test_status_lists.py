"""Token Status Lists (draft-ietf-oauth-status-list-17) over HTTP, on SQLite and PostgreSQL.

Each list is checked with code that is not the code under test: PyJWT verifies the
``statuslist+jwt`` against the served JWKS, and the bits are read with the
``token-status-list`` package (an independent implementation of the draft's encoding).
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from sqlalchemy import event
from sqlalchemy import text
from token_status_list import BitArray

from authserver import container
from authserver.audit.model import AuditEvent
from authserver.clock import FixedClock
from authserver.container import Services
from authserver.settings import Settings
from authserver.storage.sql.audit import SqlAuditStore
from authserver.tokens.statuslist import BLOCK_SIZE
from authserver.tokens.statuslist import LEASE_WINDOW
from authserver.web.app import create_app
from tests.conftest import db_independent
from tests.conftest import make_services
from tests.factories import issue_token
from tests.helpers import ServerProcess
from tests.helpers import cli_json_here
from tests.helpers import on_every_worker
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

AUD = "https://sync.example"
ISSUER = "http://localhost:8000"
ADMIN_TOKEN = "a" * 40

Register = Callable[..., tuple[str, str]]


def land_issued(
    services: Services, client_id: str, sub: str, *tokens: tuple[Any, float, float]
) -> None:
    """Write the ``token.issued`` audit records of *tokens*, each ``(status entry, issued at,
    expires at)``, as a worker's late batch lands."""
    events = [
        AuditEvent(
            at=at,
            actor=f"client:{client_id}",
            action="token.issued",
            client_id=client_id,
            sub=sub,
            jti=f"j{entry.idx}",
            detail={"status_list": entry.list_id, "status_idx": entry.idx, "exp": exp},
        )
        for entry, at, exp in tokens
    ]
    with services.unit_of_work():
        SqlAuditStore(services.db).add_many(events)


def status_ref(token: str) -> tuple[str, int]:
    claims = jwt.decode(token, options={"verify_signature": False})
    ref = claims["status"]["status_list"]
    assert set(ref) == {"idx", "uri"}
    return ref["uri"], ref["idx"]


def fetch_list(http: Any, uri: str) -> tuple[dict[str, Any], Any]:
    """GET the list at *uri*; verify it with PyJWT against the JWKS; return its claims."""
    assert uri.startswith(ISSUER + "/statuslists/")
    response = http.get(uri[len(ISSUER) :], headers={"Accept": "application/statuslist+jwt"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/statuslist+jwt"
    token = response.get_data(as_text=True)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "statuslist+jwt"
    assert header["alg"] == "RS256"
    jwks = jwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").get_json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        options={"require": ["sub", "iat", "exp"], "verify_aud": False},
    )
    # §5.1: sub is the list's own URI, the one the token names.
    assert claims["sub"] == uri
    assert claims["iss"] == ISSUER
    assert isinstance(claims["ttl"], int)
    assert claims["ttl"] > 0
    assert set(claims["status_list"]) == {"bits", "lst"}
    assert claims["status_list"]["bits"] == 1
    return claims, response


def bit(claims: dict[str, Any], idx: int) -> int:
    return int(BitArray.load(claims["status_list"]).get(idx))


def status_of(http: Any, token: str) -> int:
    uri, idx = status_ref(token)
    claims, _ = fetch_list(http, uri)
    return bit(claims, idx)


def test_every_token_names_a_distinct_entry_and_starts_valid(http: Any, register: Register) -> None:
    client_id, secret = register(audiences=[AUD])
    tokens = [issue_token(http, (client_id, secret), sub=f"user-{i}") for i in range(5)]
    refs = [status_ref(t) for t in tokens]
    assert len(set(refs)) == 5
    uri = refs[0][0]
    assert uri == f"{ISSUER}/statuslists/1"
    claims, response = fetch_list(http, uri)
    assert all(bit(claims, idx) == 0 for _, idx in refs)
    # Consistent with the ttl: a cache may keep it no longer than the ttl says.
    cache_control = response.headers["Cache-Control"]
    assert cache_control.startswith("public, max-age=")
    assert int(cache_control.split("=")[1]) <= claims["ttl"]
    assert claims["exp"] > claims["iat"] + claims["ttl"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_revoke_sets_the_bit_of_that_token_only(http: Any, register: Register) -> None:
    client_id, secret = register(audiences=[AUD])
    kept, revoked = (
        issue_token(http, (client_id, secret), sub="alice"),
        issue_token(http, (client_id, secret), sub="alice"),
    )
    response = http.post("/revoke", data={"token": revoked}, auth=(client_id, secret))
    assert response.status_code == 200
    assert status_of(http, revoked) == 1
    assert status_of(http, kept) == 0


@db_independent
def test_the_bit_and_the_revocation_record_commit_together(
    http: Any, register: Register, db_url: str
) -> None:
    """The bit is set with the jti record, in the request's unit of work: when it cannot
    be written, the jti record is not kept either (introspection and offline
    verifiers never disagree), and a retry revokes for both."""
    client_id, secret = register(audiences=[AUD])
    token = issue_token(http, (client_id, secret), sub="alice")
    database = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    try:
        database.execute("ALTER TABLE status_revocations RENAME TO hidden_revocations")
        database.commit()
        failed = http.post("/revoke", data={"token": token}, auth=(client_id, secret))
        assert failed.status_code == 503
        database.execute("ALTER TABLE hidden_revocations RENAME TO status_revocations")
        database.commit()
    finally:
        database.close()
    introspected = http.post("/introspect", data={"token": token}, auth=(client_id, secret))
    assert introspected.get_json()["active"] is True
    assert status_of(http, token) == 0
    assert http.post("/revoke", data={"token": token}, auth=(client_id, secret)).status_code == 200
    assert status_of(http, token) == 1
    introspected = http.post("/introspect", data={"token": token}, auth=(client_id, secret))
    assert introspected.get_json() == {"active": False}


def test_conditional_get_and_a_new_etag_after_a_revocation(http: Any, register: Register) -> None:
    client_id, secret = register(audiences=[AUD])
    token = issue_token(http, (client_id, secret), sub="alice")
    uri, _ = status_ref(token)
    path = uri[len(ISSUER) :]
    first = http.get(path)
    etag = first.headers["ETag"]
    again = http.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    assert http.post("/revoke", data={"token": token}, auth=(client_id, secret)).status_code == 200
    after = http.get(path, headers={"If-None-Match": etag})
    assert after.status_code == 200  # the revocation is in the next list served, at once
    assert after.headers["ETag"] != etag


def test_disabling_or_deleting_a_client_revokes_all_its_tokens(
    http: Any, register: Register, services: Services
) -> None:
    a_id, a_secret = register(audiences=[AUD])
    b_id, b_secret = register(audiences=[AUD])
    c_id, c_secret = register(audiences=[AUD])
    a_tokens = [issue_token(http, (a_id, a_secret), sub=f"u{i}") for i in range(3)]
    b_token = issue_token(http, (b_id, b_secret), sub="alice")
    c_token = issue_token(http, (c_id, c_secret), sub="alice")
    with services.unit_of_work():
        services.clients.set_enabled(a_id, False)
        services.clients.delete(c_id)
    assert [status_of(http, t) for t in a_tokens] == [1, 1, 1]
    assert status_of(http, c_token) == 1
    assert status_of(http, b_token) == 0
    introspected = http.post("/introspect", data={"token": b_token}, auth=(b_id, b_secret))
    assert introspected.get_json()["active"] is True
    # Enabling the client again brings none of its tokens back, as its help says.
    with services.unit_of_work():
        services.clients.set_enabled(a_id, True)
    assert [status_of(http, t) for t in a_tokens] == [1, 1, 1]
    introspected = http.post("/introspect", data={"token": a_tokens[0]}, auth=(a_id, a_secret))
    assert introspected.get_json()["active"] is False
    help_text = " ".join(run_cli_here({}, "clients", "disable", "--help").stdout.split())
    assert "revoke every live token it was issued" in help_text, help_text
    assert "does not bring those back" in help_text, help_text


def test_status_claim_cannot_be_forged_through_claims(http: Any, register: Register) -> None:
    client_id, secret = register(audiences=[AUD], allowed_claims=["libraryId"])
    response = http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "claims": json.dumps({"status": {"status_list": {"idx": 0, "uri": "https://x"}}}),
        },
        auth=(client_id, secret),
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_unknown_lists_are_404_and_the_metadata_names_the_aggregation(
    http: Any, register: Register
) -> None:
    client_id, secret = register(audiences=[AUD])
    issue_token(http, (client_id, secret), sub="alice")
    assert http.get("/statuslists/2").status_code == 404
    assert http.get("/statuslists/99999999999999999999").status_code == 404
    assert http.get("/statuslists/abc").status_code == 404
    metadata = http.get("/.well-known/oauth-authorization-server").get_json()
    assert metadata["status_list_aggregation_endpoint"] == f"{ISSUER}/statuslists"
    aggregation = http.get("/statuslists")
    assert aggregation.mimetype == "application/json"
    assert aggregation.get_json() == {"status_lists": [f"{ISSUER}/statuslists/1"]}


def test_historical_resolution_is_answered_501(http: Any, register: Register) -> None:
    """§8.4: "If the Server does not support the additional query parameter, it SHOULD
    return a status code of 501 (Not Implemented)", never the current list for a past time."""
    client_id, secret = register(audiences=[AUD])
    uri, _ = status_ref(issue_token(http, (client_id, secret), sub="alice"))
    path = uri[len(ISSUER) :]
    for query in ("time=1686925000", "x=1&time=", "time=1686925000&time=1"):
        response = http.get(f"{path}?{query}", headers={"Accept": "application/statuslist+jwt"})
        assert response.status_code == 501, query
        assert response.mimetype == "application/json"
        assert response.get_json()["error"] == "not_implemented"
        assert response.headers["Cache-Control"] == "no-store"
    assert http.head(f"{path}?time=1686925000").status_code == 501
    # A parameter the draft does not define is ignored, as HTTP does; the aggregation has no
    # historical form.
    assert http.get(f"{path}?x=1").status_code == 200
    assert http.get("/statuslists?time=1686925000").status_code == 200


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "application/statuslist+jwt",
        "application/*",
        "application/statuslist+cwt, application/statuslist+jwt;q=0.5",
        "Application/StatusList+JWT",
    ],
)
def test_the_jwt_list_is_served_to_whoever_accepts_it(
    http: Any, register: Register, accept: str | None
) -> None:
    client_id, secret = register(audiences=[AUD])
    uri, _ = status_ref(issue_token(http, (client_id, secret), sub="alice"))
    path = uri[len(ISSUER) :]
    headers = {"Accept": accept} if accept is not None else {}
    served = http.get(path, headers=headers)
    assert served.status_code == 200, served.get_data(as_text=True)
    assert served.mimetype == "application/statuslist+jwt"
    assert served.headers["Vary"] == "Accept, Accept-Encoding"
    # The conditional GET is answered as before, and says what it varies on.
    again = http.get(path, headers={**headers, "If-None-Match": served.headers["ETag"]})
    assert again.status_code == 304
    assert again.headers["Vary"] == "Accept, Accept-Encoding"


@pytest.mark.parametrize(
    ("accept_encoding", "coded"),
    [
        (None, False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("br", False),
    ],
)
def test_a_list_is_sent_gzip_coded_to_whoever_takes_it(
    http: Any, register: Register, accept_encoding: str | None, coded: bool
) -> None:
    """draft-ietf-oauth-status-list §8.2: the response SHOULD use a content coding. The
    coded body is a representation of its own (RFC 9110 §8.8.3: its own strong ETag), and
    decodes to the very token the identity answer carries."""
    client_id, secret = register(audiences=[AUD])
    uri, _ = status_ref(issue_token(http, (client_id, secret), sub="alice"))
    path = uri[len(ISSUER) :]
    plain = http.get(path)
    assert "Content-Encoding" not in plain.headers
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding is not None else {}
    served = http.get(path, headers=headers)
    assert served.status_code == 200
    assert served.headers["Vary"] == "Accept, Accept-Encoding"
    assert served.mimetype == "application/statuslist+jwt"
    if coded:
        assert served.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(served.get_data()) == plain.get_data()
        assert served.headers["ETag"] != plain.headers["ETag"]
    else:
        assert "Content-Encoding" not in served.headers
        assert served.get_data() == plain.get_data()
        assert served.headers["ETag"] == plain.headers["ETag"]
    again = http.get(path, headers={**headers, "If-None-Match": served.headers["ETag"]})
    assert again.status_code == 304
    assert again.headers["ETag"] == served.headers["ETag"]
    held = http.get(path, headers={**headers, "If-Match": served.headers["ETag"]})
    assert held.status_code == 200


@pytest.mark.parametrize(
    "accept",
    [
        "application/statuslist+cwt",
        "application/statuslist+jwt;q=0, */*",
        "application/statuslist+cwt, */*;q=0",
        "application/jwt",
        "text/html",
    ],
)
def test_a_client_asking_only_for_another_format_is_answered_406(
    http: Any, register: Register, accept: str
) -> None:
    """The draft's Status List Request uses HTTP content negotiation (RFC 9110): a client
    that accepts only the CWT form (or nothing this server serves) gets 406 Not
    Acceptable, not the JWT list in a type it did not ask for (it was served 200)."""
    client_id, secret = register(audiences=[AUD])
    uri, _ = status_ref(issue_token(http, (client_id, secret), sub="alice"))
    path = uri[len(ISSUER) :]
    etag = http.get(path).headers["ETag"]
    for headers in ({"Accept": accept}, {"Accept": accept, "If-None-Match": etag}):
        refused = http.get(path, headers=headers)
        assert refused.status_code == 406, refused.get_data(as_text=True)
        assert refused.mimetype == "application/json"
        assert refused.get_json()["error"] == "not_acceptable"
        assert "application/statuslist+jwt" in refused.get_json()["error_description"]
        assert refused.headers["Vary"] == "Accept"
        assert refused.headers["Cache-Control"] == "no-store"
    assert http.head(path, headers={"Accept": accept}).status_code == 406


def test_the_aggregation_answers_accept_as_the_lists_do(http: Any, register: Register) -> None:
    """The aggregation is ``application/json`` (§9.3), negotiated as the lists are: an
    ``Accept`` that takes no ``application/json`` (a status list type, asked of the
    aggregation URL as if it were a list's) is 406 ``not_acceptable``, and every answer
    says ``Vary: Accept``. It ignored ``Accept``: 200 JSON to a client that asked for a
    ``statuslist+jwt``, with no ``Vary``."""
    client_id, secret = register(audiences=[AUD])
    issue_token(http, (client_id, secret), sub="alice")
    etag = http.get("/statuslists").headers["ETag"]
    for accept in (
        None,
        "*/*",
        "application/*",
        "application/json",
        "application/statuslist+jwt, application/json;q=0.1",
    ):
        headers = {"Accept": accept} if accept is not None else {}
        served = http.get("/statuslists", headers=headers)
        assert served.status_code == 200, (accept, served.get_data(as_text=True))
        assert served.get_json() == {"status_lists": [f"{ISSUER}/statuslists/1"]}
        assert served.headers["Vary"] == "Accept"
        again = http.get("/statuslists", headers={**headers, "If-None-Match": etag})
        assert again.status_code == 304
        assert again.headers["Vary"] == "Accept"
    for accept in (
        "application/statuslist+jwt",
        "application/statuslist+cwt",
        "application/json;q=0, */*",
        "text/html",
    ):
        for headers in ({"Accept": accept}, {"Accept": accept, "If-None-Match": etag}):
            refused = http.get("/statuslists", headers=headers)
            assert refused.status_code == 406, (accept, refused.get_data(as_text=True))
            assert refused.get_json()["error"] == "not_acceptable"
            assert "application/json" in refused.get_json()["error_description"]
            assert refused.headers["Vary"] == "Accept"
            assert refused.headers["Cache-Control"] == "no-store"
        assert http.head("/statuslists", headers={"Accept": accept}).status_code == 406


@pytest.fixture
def admin_services(db_url: str, tmp_path: Any) -> Any:
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": db_url,
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": ISSUER,
            "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
        }
    )
    svc = make_services(settings)
    yield svc
    svc.close()


def test_admin_api_revokes_every_live_token_of_a_user(admin_services: Services) -> None:
    http = create_app(services=admin_services).test_client()
    with admin_services.unit_of_work():
        one, one_secret = admin_services.clients.create(name="one", audiences=[AUD])
        two, two_secret = admin_services.clients.create(name="two", audiences=[AUD])
    assert one_secret
    assert two_secret
    alice_one = issue_token(http, (one.client_id, one_secret), sub="alice")
    alice_two = issue_token(http, (two.client_id, two_secret), sub="alice")
    bob_one = issue_token(http, (one.client_id, one_secret), sub="bob")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    only_one = http.post(
        "/admin/tokens/revoke", json={"sub": "alice", "client_id": one.client_id}, headers=auth
    )
    assert only_one.status_code == 200, only_one.get_data(as_text=True)
    assert only_one.get_json()["revoked"] == 1
    assert (status_of(http, alice_one), status_of(http, alice_two)) == (1, 0)

    everywhere = http.post("/admin/tokens/revoke", json={"sub": "alice"}, headers=auth)
    assert everywhere.get_json()["revoked"] == 1  # the one left
    assert status_of(http, alice_two) == 1
    assert status_of(http, bob_one) == 0
    # Introspection agrees at once.
    answer = http.post("/introspect", data={"token": alice_two}, auth=(two.client_id, two_secret))
    assert answer.get_json() == {"active": False}

    for body, status in [
        ({}, 400),
        ({"sub": ""}, 400),
        ({"sub": "\u200b"}, 400),
        ({"sub": 5}, 400),
        ({"sub": None}, 400),
        ({"sub": "alice", "client_id": "nope"}, 404),
        ({"sub": "alice", "extra": 1}, 400),
    ]:
        response = http.post("/admin/tokens/revoke", json=body, headers=auth)
        assert response.status_code == status, body
        assert "error" in response.get_json()
    assert http.post("/admin/tokens/revoke", json={"sub": "alice"}).status_code == 401
    events = http.get("/admin/audit?action=tokens.revoked", headers=auth).get_json()["events"]
    assert len(events) == 2


def test_revocations_survive_a_restart_and_are_seen_by_another_instance(
    settings: Settings, register: Register, services: Services
) -> None:
    http = create_app(services=services).test_client()
    client_id, secret = register(audiences=[AUD])
    token = issue_token(http, (client_id, secret), sub="alice")
    other = make_services(settings)  # a second instance (or this one restarted)
    try:
        other_http = create_app(services=other).test_client()
        assert status_of(other_http, token) == 0
        assert http.post("/revoke", data={"token": token}, auth=(client_id, secret)).status_code
        assert status_of(other_http, token) == 1
    finally:
        other.close()


def test_indices_are_reused_only_after_their_tokens_expired(settings: Settings) -> None:
    """A process leases a block; another process never gets it while a token from it may
    live; once the lease window ended and every token from it expired (plus the skew
    leeway), the block is leased again, with its revoked bits cleared."""
    clock = FixedClock(time.time())
    short = settings.replace(default_token_ttl=60, max_token_ttl=60)
    svc = make_services(short, clock)
    other = make_services(short, clock)  # a second worker or instance
    try:
        lists = svc.status_lists
        first = lists.allocate(clock.now() + 60)
        assert lists.allocate(clock.now() + 60).idx == first.idx + 1
        with svc.unit_of_work():
            assert lists.revoke_token({"status": lists.claim(first), "exp": first.expires_at})
        assert other.status_lists.allocate(clock.now() + 60).idx // BLOCK_SIZE != (
            first.idx // BLOCK_SIZE
        )
        clock.advance(120)  # the tokens expired, but not the leeway: still held
        third = other.status_lists.allocate(clock.now() + 60)
        assert third.idx // BLOCK_SIZE != first.idx // BLOCK_SIZE
        clock.advance(LEASE_WINDOW)
        # The first lease's window is over: moving on releases it to its last exp + leeway
        # + the lists' expiry (a copy built before may show the revoked bit that long)...
        assert lists.allocate(clock.now() + 60).idx // BLOCK_SIZE != first.idx // BLOCK_SIZE
        clock.advance(short.status_list_expiry)
        # ... which has passed, so the lowest free block is the first one again.
        reused = lists.allocate(clock.now() + 60)
        assert reused.idx == first.idx
        with svc.unit_of_work():
            published = lists.published(first.list_id)
        assert published is not None
        claims = jwt.decode(published.token, options={"verify_signature": False})
        assert bit(claims, first.idx) == 0  # the new holder starts VALID
    finally:
        svc.close()
        other.close()


def test_a_used_up_lease_hands_out_no_index_of_another_block(settings: Settings) -> None:
    """Every index of a lease is handed out once, and the one after its last is the first
    of a newly leased block: never ``first + BLOCK_SIZE``, which is the first index of the
    next block, leased by another process (two live tokens on one bit: revoking one
    revokes the other)."""
    clock = FixedClock(time.time())
    svc = make_services(settings, clock)
    other = make_services(settings, clock)
    try:
        lists = svc.status_lists
        first = lists.allocate(clock.now() + 60)
        assert first.idx % BLOCK_SIZE == 0
        neighbour = other.status_lists.allocate(clock.now() + 60)  # the next block
        assert neighbour.idx == first.idx + BLOCK_SIZE
        handed = [first.idx] + [lists.allocate(clock.now() + 60).idx for _ in range(BLOCK_SIZE)]
        assert handed[:BLOCK_SIZE] == list(range(first.idx, first.idx + BLOCK_SIZE))
        assert handed[BLOCK_SIZE] // BLOCK_SIZE not in (
            first.idx // BLOCK_SIZE,
            neighbour.idx // BLOCK_SIZE,
        )
    finally:
        svc.close()
        other.close()


def test_an_abandoned_lease_is_held_while_a_list_showing_its_bits_may_be_relied_on(
    settings: Settings,
) -> None:
    """A process that leased a block and never moved on (it was killed) released
    nothing: the block stays held for the lease window, the longest token lifetime, the
    leeway and the lists' expiry (a copy built while its revoked tokens lived may be
    relied on until its own exp), and only then goes to another process."""
    clock = FixedClock(time.time())
    gone = make_services(settings, clock)
    other = make_services(settings, clock)
    try:
        first = gone.status_lists.allocate(clock.now() + settings.max_token_ttl)
        gone.close()
        held = LEASE_WINDOW + settings.max_token_ttl + settings.key_retention_leeway
        clock.advance(held + settings.status_list_expiry - 1)
        assert other.status_lists.allocate(clock.now() + 60).idx // BLOCK_SIZE != (
            first.idx // BLOCK_SIZE
        )
        clock.advance(LEASE_WINDOW + 2)  # other's lease window ends: it leases again
        assert other.status_lists.allocate(clock.now() + 60).idx == first.idx
    finally:
        other.close()


def test_a_revoked_bit_is_published_until_the_leeway_after_the_tokens_exp(
    settings: Settings,
) -> None:
    """Verifiers accept a token up to their leeway past ``exp``: the lists built in that
    time still show it revoked; only after it do its bits go back to 0."""
    clock = FixedClock(time.time())
    svc = make_services(settings, clock)
    try:
        lists = svc.status_lists
        leeway = settings.key_retention_leeway
        assert leeway >= 2
        entry = lists.allocate(clock.now() + 60)
        with svc.unit_of_work():
            assert lists.revoke_token({"status": lists.claim(entry), "exp": entry.expires_at})

        def published_bit() -> int:
            with svc.unit_of_work():
                published = lists.published(entry.list_id)
            assert published is not None
            return bit(jwt.decode(published.token, options={"verify_signature": False}), entry.idx)

        clock.advance(60 + leeway - 1)  # expired, but within the leeway
        assert published_bit() == 1
        other = lists.allocate(clock.now() + 60)
        with svc.unit_of_work():
            lists.purge()  # the scheduler's purge keeps the bit as long
            # Another revocation: the list is built again at once.
            assert lists.revoke_token({"status": lists.claim(other), "exp": other.expires_at})
        assert published_bit() == 1
        clock.advance(settings.status_list_ttl + 2)  # beyond the leeway, past the copy's ttl
        assert published_bit() == 0
    finally:
        svc.close()


def test_revoking_a_users_tokens_reaches_one_expired_within_the_leeway(
    settings: Settings,
) -> None:
    """A verifier accepts a token up to its leeway past ``exp``: a user's withdrawal in
    that time still sets its bit (and forgets a token expired beyond the leeway)."""
    clock = FixedClock(time.time())
    svc = make_services(settings, clock)
    try:
        lists = svc.status_lists
        leeway = settings.key_retention_leeway
        assert leeway >= 2
        now = clock.now()
        recent = lists.allocate(now + 60)
        old = lists.allocate(now + 60 - leeway - 1)
        land_issued(
            svc, "c1", "erin", (recent, now - 1, now + 60), (old, now - 1, now + 59 - leeway)
        )
        clock.advance(60 + leeway / 2)  # recent expired, within the leeway; old beyond it
        with svc.unit_of_work():
            assert lists.revoke_user("erin") == 1
            assert lists.is_revoked({"status": lists.claim(recent), "exp": recent.expires_at})
            assert not lists.is_revoked({"status": lists.claim(old), "exp": old.expires_at})
    finally:
        svc.close()


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_reused_index_is_never_shown_revoked_by_a_list_a_verifier_holds(
    db_url: str, env_for: Callable[..., dict[str, str]]
) -> None:
    """A real server: a revoked token expires, and its block is leased again. No copy of
    the list served after the token expired, and so none a verifier may still rely on
    when the index is given to a new token, shows the old bit: the new token reads VALID.
    (The bits used to stay until the block was leased again, and the served copy, cached
    for its ttl, showed the new token revoked while introspection said active.)"""
    env = env_for(
        db_url,
        AUTHSERVER_DEFAULT_TOKEN_TTL="2s",
        AUTHSERVER_MAX_TOKEN_TTL="2s",
        AUTHSERVER_KEY_RETENTION_LEEWAY="1s",
        AUTHSERVER_STATUS_LIST_TTL="2s",
        AUTHSERVER_STATUS_LIST_EXPIRY="3s",
        AUTHSERVER_AUDIT_RETENTION="1h",
    )
    env.pop("AUTHSERVER_ISSUER")  # ServerProcess: the issuer is its base URL
    with ServerProcess(env) as server:
        client = cli_json_here(server.env, "clients", "create", "--name", "sync")
        auth = (client["client_id"], client["client_secret"])
        session = requests.Session()

        def issue() -> tuple[str, str, int, int]:
            response = session.post(
                server.base_url + "/token", data={"grant_type": "client_credentials"}, auth=auth
            )
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            claims = jwt.decode(token, options={"verify_signature": False})
            ref = claims["status"]["status_list"]
            return token, ref["uri"], ref["idx"], claims["exp"]

        def served_bit(uri: str, idx: int) -> int:
            response = session.get(uri, headers={"Accept": "application/statuslist+jwt"})
            assert response.status_code == 200, response.text
            claims = jwt.decode(response.text, options={"verify_signature": False})
            return int(BitArray.load(claims["status_list"]).get(idx))

        revoked, uri, first, _ = issue()
        assert session.post(server.base_url + "/revoke", data={"token": revoked}, auth=auth).ok
        assert served_bit(uri, first) == 1
        last_exp = 0
        while True:  # use up the block: the worker moves on and releases it
            _, _, idx, exp = issue()
            if idx // BLOCK_SIZE != first // BLOCK_SIZE:
                break
            last_exp = max(last_exp, exp)
        time.sleep(max(0.0, last_exp + 1.5 - time.time()))
        # The revoked token has expired (and the leeway with it): a verifier fetching now
        # holds a copy without its bit.
        assert served_bit(uri, first) == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            token, new_uri, idx, _ = issue()
            if (new_uri, idx) == (uri, first):
                break
        else:
            pytest.fail("the block was never leased again")
        introspected = session.post(
            server.base_url + "/introspect", data={"token": token}, auth=auth
        ).json()
        assert introspected["active"] is True
        assert served_bit(uri, first) == 0


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_revokes_every_live_token_of_a_user(
    settings: Settings, services: Services, env_for: Callable[..., dict[str, str]], db_url: str
) -> None:
    """``authserver tokens revoke --sub SUB [--client ID]`` in its own process."""
    env = env_for(db_url)
    assert env["AUTHSERVER_ISSUER"] == ISSUER
    http = create_app(services=services).test_client()
    with services.unit_of_work():
        one, one_secret = services.clients.create(name="one", audiences=[AUD])
        two, two_secret = services.clients.create(name="two", audiences=[AUD])
    assert one_secret
    assert two_secret
    alice = [issue_token(http, (one.client_id, one_secret), sub="alice") for _ in range(2)]
    alice_two = issue_token(http, (two.client_id, two_secret), sub="alice")
    bob = issue_token(http, (one.client_id, one_secret), sub="bob")

    result = run_cli_here(
        env, "tokens", "revoke", "--sub", "alice", "--client", one.client_id, "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sub": "alice", "client_id": one.client_id, "revoked": 2}
    assert [status_of(http, t) for t in (*alice, alice_two, bob)] == [1, 1, 0, 0]

    result = run_cli_here(env, "tokens", "revoke", "--sub", "alice")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "revoked 1 live token(s) of alice"
    assert [status_of(http, t) for t in (alice_two, bob)] == [1, 0]

    missing = run_cli_here(env, "tokens", "revoke", "--sub", "alice", "--client", "as_client_nope")
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1
    assert "nope" in missing.stderr
    # Refused as the token request refuses such a sub (one rule: revocable_sub), naming
    # the option: empty, only whitespace, invisible (a zero width space), bidi controls.
    for sub in (" ", "\u200b", "user-1\u202e"):
        refused = run_cli_here(env, "tokens", "revoke", "--sub", sub)
        assert refused.returncode != 0, sub
        assert refused.stderr.startswith("authserver: error: --sub must not"), refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr


def test_a_withdrawal_reaches_tokens_whose_audit_record_arrived_late(
    settings: Settings, register: Register, services: Services
) -> None:
    """serve writes token.issued records in batches: a token issued just before
    ``tokens revoke --sub`` may be recorded after it. The scheduler's reconcile sets its
    bit then; a token issued after the withdrawal is left alone."""
    from authserver.scheduler import run_once

    http = create_app(services=services).test_client()
    client_id, _secret = register(audiences=[AUD])
    lists = services.status_lists
    now = services.clock.now()
    late = lists.allocate(now + 3600)
    after = lists.allocate(now + 3600)
    with services.unit_of_work():
        assert lists.revoke_user("carol") == 0  # nothing on record yet

    # The late batch lands: one token issued before the withdrawal, one after it.
    land_issued(
        services, client_id, "carol", (late, now - 0.1, now + 3600), (after, now + 5, now + 3600)
    )
    run_once(services)
    claims, _ = fetch_list(http, lists.uri(late.list_id))
    assert bit(claims, late.idx) == 1
    assert bit(claims, after.idx) == 0


def test_a_clients_withdrawal_reaches_a_token_issued_while_workers_learned_of_it(
    settings: Settings, register: Register, services: Services
) -> None:
    """A worker may issue a disabled client a token for up to a second after the disable
    (until its cache sees the change): the scheduler's reconcile sets that token's bit
    too. A token issued well after it (the client enabled again) is left alone."""
    from authserver.scheduler import run_once

    http = create_app(services=services).test_client()
    client_id, _secret = register(audiences=[AUD])
    lists = services.status_lists
    now = services.clock.now()
    racing = lists.allocate(now + 3600)
    later = lists.allocate(now + 3600)
    with services.unit_of_work():
        services.clients.set_enabled(client_id, False)  # client.disabled, at now

    land_issued(
        services, client_id, "dana", (racing, now + 0.8, now + 3600), (later, now + 30, now + 3600)
    )
    run_once(services)
    claims, _ = fetch_list(http, lists.uri(racing.list_id))
    assert bit(claims, racing.idx) == 1
    assert bit(claims, later.idx) == 0


ADMIN_TOKEN = "admin-token-for-status-list-tests-5d0c2e7f9a"


def test_a_token_issued_a_moment_before_a_revocation_is_revoked_at_once(
    env_for: Callable[..., dict[str, str]], db_url: str
) -> None:
    """A real serve writes its token.issued records in batches (every 0.25 s), and
    revoking every live token of a user reads those records: a token issued just before
    `tokens revoke --sub` (or the admin API's revoke) was not counted and stayed active
    until a worker's schedule caught it, about a minute later. The revocation now waits
    for the batches first: counted, and inactive at introspection at once."""
    import requests

    from tests.helpers import ServerProcess
    from tests.helpers import cli_json_here

    env = env_for(db_url, AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN)
    created = cli_json_here(env, "clients", "create", "--name", "b", "--json")
    credentials = (created["client_id"], created["client_secret"])
    with ServerProcess(env, workers=2) as server:
        cli_env = {**env, "AUTHSERVER_ISSUER": server.base_url}

        def active(token: str) -> bool:
            answer = requests.post(
                server.base_url + "/introspect", data={"token": token}, auth=credentials, timeout=10
            )
            assert answer.status_code == 200, answer.text
            return bool(answer.json()["active"])

        for via in ("cli", "admin"):
            sub = f"user-revoked-by-{via}"
            token = issue_token(server, credentials, sub=sub)
            if via == "cli":
                revoked = cli_json_here(cli_env, "tokens", "revoke", "--sub", sub, "--json")
            else:
                answer = requests.post(
                    server.base_url + "/admin/tokens/revoke",
                    json={"sub": sub},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                revoked = answer.json()
            assert revoked["revoked"] == 1, (via, revoked)
            assert not active(token), via


def test_a_token_issued_a_moment_before_its_client_is_withdrawn_is_revoked_at_once(
    env_for: Callable[..., dict[str, str]], db_url: str
) -> None:
    """The same for a client's withdrawal: `clients disable`/`delete` and the admin API's
    disable/delete revoke every live token of the client, and a token issued a moment
    before was missed (its bit set only by a worker's schedule, up to a minute later). Its
    bit is set when the command or request returns."""
    import requests

    from tests.helpers import ServerProcess

    env = env_for(db_url, AUTHSERVER_ADMIN_TOKEN=ADMIN_TOKEN)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with ServerProcess(env, workers=2) as server:
        cli_env = {**env, "AUTHSERVER_ISSUER": server.base_url}

        def revoked(token: str) -> int:
            uri, idx = status_ref(token)
            path = uri.split("/statuslists/", 1)[1]  # the issuer's host is not this server's
            answer = requests.get(f"{server.base_url}/statuslists/{path}", timeout=10)
            assert answer.status_code == 200, answer.text
            claims = jwt.decode(answer.text, options={"verify_signature": False})
            return bit(claims, idx)

        for via in ("cli disable", "cli delete", "admin disable", "admin delete"):
            created = cli_json_here(cli_env, "clients", "create", "--name", via)
            client_id = created["client_id"]
            token = issue_token(server, (client_id, created["client_secret"]), sub="u")
            if via == "cli disable":
                run_cli_here(cli_env, "clients", "disable", client_id).check_returncode()
            elif via == "cli delete":
                run_cli_here(cli_env, "clients", "delete", client_id, "--yes").check_returncode()
            else:
                action = via.split()[1]
                answer = (
                    requests.post(
                        f"{server.base_url}/admin/clients/{client_id}/disable",
                        headers=admin,
                        timeout=10,
                    )
                    if action == "disable"
                    else requests.delete(
                        f"{server.base_url}/admin/clients/{client_id}", headers=admin, timeout=10
                    )
                )
                assert answer.status_code in (200, 204), answer.text
            assert revoked(token) == 1, via


def test_a_revocation_reaches_tokens_of_servers_with_a_longer_lifetime(
    settings: Settings, services: Services
) -> None:
    """The servers sign with AUTHSERVER_MAX_TOKEN_TTL of a week and record it with their
    keys; ``tokens revoke --sub`` run with the default (shorter) one still revokes a token
    they issued two days ago, which is live for five more."""
    import dataclasses

    week = 7 * 86400
    assert settings.max_token_ttl < 2 * 86400
    servers = container.build(dataclasses.replace(settings, max_token_ttl=week))
    try:
        with servers.unit_of_work():
            servers.keys.tick()  # records the week with the keys that sign
    finally:
        servers.close()
    now = services.clock.now()
    lists = services.status_lists
    entry = lists.allocate(now + 5 * 86400)
    land_issued(services, "c1", "dave", (entry, now - 2 * 86400, now + 5 * 86400))
    with services.unit_of_work():
        assert lists.revoke_user("dave") == 1


@pytest.mark.parametrize("keys", ["none on record", "a store this account cannot read"])
def test_withdrawals_need_no_key_with_a_recorded_lifetime(
    env_for: Callable[..., dict[str, str]], db_url: str, tmp_path: Path, keys: str
) -> None:
    """Before any server has started (no key records a lifetime), or from an operator
    account kept away from the private keys, the command's own lifetime applies:
    ``tokens revoke`` and ``clients disable`` work as before (they failed with a TypeError
    and a key store error)."""
    env = env_for(db_url, AUTHSERVER_KEYS_DIR=str(tmp_path / "keys"))
    assert run_cli_here(env, "db", "upgrade").returncode == 0
    client = cli_json_here(env, "clients", "create", "--name", "c", "--audience", AUD)
    if keys != "none on record":
        (tmp_path / "not-a-directory").write_text("")
        env["AUTHSERVER_KEYS_DIR"] = str(tmp_path / "not-a-directory")
    assert cli_json_here(env, "tokens", "revoke", "--sub", "alice")["revoked"] == 0
    assert cli_json_here(env, "clients", "disable", client["client_id"])["enabled"] is False


def test_a_revoked_token_stays_inactive_after_the_clock_is_stepped_back_past_a_new_lease(
    settings: Settings,
) -> None:
    """A block leased again at a later time (this host before NTP stepped it back, or an
    instance ahead of this one) clears the revoked bits of the tokens that held it,
    expired by that clock. Back at the earlier time such a token's ``exp`` lies ahead
    again: a token revoked only in its status list (a user's tokens revoked at once) must
    not introspect as active because its bit was cleared."""
    clock = FixedClock(time.time())
    short = settings.replace(default_token_ttl=60, max_token_ttl=60)
    svc = make_services(short, clock)
    try:
        http = create_app(services=svc).test_client()
        with svc.unit_of_work():
            client, secret = svc.clients.create(name="stepped", audiences=[AUD])
        assert secret is not None
        creds = (client.client_id, secret)
        start = clock.now()
        token = issue_token(http, creds, sub="alice")
        with svc.unit_of_work():
            assert svc.status_lists.revoke_user("alice") == 1
        introspected = http.post("/introspect", data={"token": token}, auth=creds)
        assert introspected.get_json() == {"active": False}
        # The lease window ends: the next token moves on to another block, and once the
        # first one's hold has passed, a later one leases it again, clearing its bits.
        clock.advance(LEASE_WINDOW + 1)
        later = issue_token(http, creds)
        assert status_ref(later)[1] // BLOCK_SIZE != status_ref(token)[1] // BLOCK_SIZE
        clock.advance(LEASE_WINDOW + short.status_list_expiry + short.key_retention_leeway)
        again = issue_token(http, creds)
        assert status_ref(again)[1] == status_ref(token)[1]
        clock.set(start + 10)
        introspected = http.post("/introspect", data={"token": token}, auth=creds)
        assert introspected.get_json() == {"active": False}
    finally:
        svc.close()


def test_revoking_thousands_of_tokens_sets_each_bit_once_in_few_statements(
    admin_services: Services,
) -> None:
    """ "Every live token" of a user, and of a disabled client, may be thousands: each
    is refused and its bit alone set, written a batch of rows per statement (one
    statement per token made a user's 1,200 tokens 1,200 round trips)."""
    services = admin_services
    http = create_app(services=services).test_client()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with services.unit_of_work():
        client, secret = services.clients.create(name="busy", audiences=[AUD])
        other, other_secret = services.clients.create(name="other", audiences=[AUD])
    assert secret
    assert other_secret
    cid = str(client.client_id)
    real = [issue_token(http, (cid, secret), sub="zoe") for _ in range(20)]
    bystander = issue_token(http, (str(other.client_id), other_secret), sub="zoe")
    now = services.clock.now()
    lists = services.status_lists
    landed = [lists.allocate(now + 3600) for _ in range(1200)]
    land_issued(services, cid, "zoe", *((e, now - 1, now + 3600) for e in landed))
    by_client = [lists.allocate(now + 3600) for _ in range(700)]
    land_issued(services, cid, "yann", *((e, now - 1, now + 3600) for e in by_client))

    inserts: list[str] = []

    def count(_c: Any, _cur: Any, sql: str, *_: Any) -> None:
        if sql.lstrip().upper().startswith("INSERT INTO STATUS_REVOCATIONS"):
            inserts.append(sql)

    event.listen(services.db.engine, "before_cursor_execute", count)
    try:
        answer = http.post(
            "/admin/tokens/revoke", json={"sub": "zoe", "client_id": cid}, headers=auth
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.get_json()["revoked"] == len(real) + len(landed)
        assert len(inserts) <= 3, len(inserts)
        for token in real:
            answer = http.post("/introspect", data={"token": token}, auth=(cid, secret))
            assert answer.get_json() == {"active": False}
        inserts.clear()
        assert http.post(f"/admin/clients/{cid}/disable", headers=auth).status_code == 200
        # All 1,920 of the client's tokens, the 1,220 revoked already among them.
        assert len(inserts) <= 4, len(inserts)
    finally:
        event.remove(services.db.engine, "before_cursor_execute", count)

    expected: dict[str, set[int]] = {}
    for token in real:
        uri, idx = status_ref(token)
        expected.setdefault(uri, set()).add(idx)
    for entry in (*landed, *by_client):
        expected.setdefault(lists.uri(entry.list_id), set()).add(entry.idx)
    for uri, indices in expected.items():
        claims, _ = fetch_list(http, uri)
        bits = BitArray.load(claims["status_list"])
        assert {i for i in range(len(bits)) if bits.get(i)} == indices
    assert status_of(http, bystander) == 0
    with services.unit_of_work():
        revoked_rows = services.db.connection().execute(
            text("SELECT count(*) FROM status_revocations")
        )
        assert revoked_rows.scalar() == len(real) + len(landed) + len(by_client)
    events = http.get("/admin/audit?action=tokens.revoked", headers=auth).get_json()["events"]
    assert [e["detail"]["revoked"] for e in events] == [len(real) + len(landed)]


@pytest.mark.slow
def test_every_worker_serves_one_copy_so_a_conditional_get_is_304_on_each(
    db_url: str, env_for: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """Each worker signed its own copy with its own iat: two ETags at once, and a
    verifier's If-None-Match got 200 from every worker but the one it had fetched from.
    Now every process signs the same bytes in a ttl window (iat its start, bits as of it),
    before and after a revocation."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = env_for(
        db_url,
        AUTHSERVER_STATUS_LIST_TTL="3600",
        AUTHSERVER_STATUS_LIST_EXPIRY="7200",
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
    )
    env.pop("AUTHSERVER_ISSUER")
    endpoint = "/statuslists/<int:list_id>"
    with ServerProcess(env, workers=2) as server:
        client = cli_json_here(server.env, "clients", "create", "--name", "sync")
        auth = (client["client_id"], client["client_secret"])
        grant = {"grant_type": "client_credentials"}
        tokens = [
            requests.post(f"{server.base_url}/token", data=grant, auth=auth, timeout=10).json()[
                "access_token"
            ]
            for _ in range(3)
        ]
        uri, _ = status_ref(tokens[0])

        def fetch(headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
            with requests.Session() as session:  # a new connection: any worker may answer
                r = session.get(uri, headers=headers or {}, timeout=10)
            return r.status_code, r.headers["ETag"], r.content

        for revoke in (None, tokens[1]):
            if revoke is not None:
                assert requests.post(
                    f"{server.base_url}/revoke", data={"token": revoke}, auth=auth, timeout=10
                ).ok
            for _ in range(3):  # a ttl window may end between two fetches: once more
                # One worker signs its copy now, the other a second later at the earliest
                # (each signs at its first request after a change).
                fetch()
                time.sleep(1.1)
                answers = on_every_worker(fetch, metrics, workers=2, endpoint=endpoint)
                iats = {
                    jwt.decode(a[2], options={"verify_signature": False})["iat"] for a in answers
                }
                if len(iats) == 1:
                    break
            assert {a[:2] for a in answers} == {(200, answers[0][1])}
            assert len({a[2] for a in answers}) == 1
            etag = answers[0][1]
            again = on_every_worker(
                lambda etag=etag: fetch({"If-None-Match": etag}),
                metrics,
                workers=2,
                endpoint=endpoint,
            )
            assert {(status, tag) for status, tag, _ in again} == {(304, etag)}
