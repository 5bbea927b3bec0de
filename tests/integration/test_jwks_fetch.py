"""The ``jwks_uri`` fetcher (``authserver.clients.jwks_fetch``) against real HTTP and HTTPS
servers on loopback: redirects, slow drips, garbage, oversize answers, private key
material, production-mode address rules, the failure cache and single flight.

No database: these run once. The same fetcher behind a real ``authserver serve`` is in
``tests/e2e/test_jwks_uri.py``.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authserver.clients.jwks_fetch import FetchPolicy
from authserver.clients.jwks_fetch import JwksFetcher
from authserver.clients.jwks_fetch import JwksUnavailable
from authserver.clients.jwks_fetch import address_allowed
from authserver.clock import FixedClock
from authserver.settings import Settings
from authserver.web.app import create_app
from tests.conftest import make_services
from tests.jwks_servers import KeyServer
from tests.jwks_servers import chunked
from tests.jwks_servers import drip
from tests.jwks_servers import drip_headers
from tests.jwks_servers import redirect
from tests.jwks_servers import self_signed_cert
from tests.jwks_servers import send_json
from tests.jwks_servers import server_tls
from tests.jwks_servers import slow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jwks(rsa_private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_private_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    return {"keys": [jwk]}


@pytest.fixture(scope="module")
def private_jwks(rsa_private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(rsa_private_key))
    jwk.update(kid="k1")
    return {"keys": [jwk]}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def fetcher(clock: FixedClock | None = None, **policy: Any) -> JwksFetcher:
    policy.setdefault("timeout", 2.0)
    return JwksFetcher(FetchPolicy(**policy), clock=clock or FixedClock())


@pytest.fixture
def server(jwks: dict[str, Any]) -> Iterator[KeyServer]:
    with KeyServer(send_json(jwks)) as s:
        yield s


def refused(f: JwksFetcher, uri: str, match: str | None = None) -> str:
    with pytest.raises(JwksUnavailable, match=match) as info:
        f.get(uri)
    return str(info.value)


# -- what is fetched -------------------------------------------------------------------------


def test_a_public_set_is_fetched_and_cached(server: KeyServer, jwks: dict[str, Any]) -> None:
    clock = FixedClock()
    f = fetcher(clock)
    assert f.get(server.url()) == jwks
    assert f.get(server.url()) == jwks
    assert server.requests == ["/jwks.json"]
    clock.advance(f.policy.ttl)
    assert f.get(server.url()) == jwks
    assert len(server.requests) == 2


def test_a_redirect_is_not_followed(server: KeyServer) -> None:
    with KeyServer(redirect(server.url())) as redirector:
        for status in (301, 302, 303, 307, 308):
            redirector.behaviour = redirect(server.url(), status)
            message = refused(fetcher(), redirector.url(), "redirects are not followed")
            assert str(status) in message
    assert server.requests == []


def test_a_slow_drip_body_is_cut_at_the_overall_deadline(jwks: dict[str, Any]) -> None:
    body = json.dumps(jwks).encode()
    # Each byte arrives well within any per-read timeout; the whole body would take
    # len(body) * 0.05 s (over 20 s). One deadline for the whole fetch cuts it.
    with KeyServer(drip(body, every=0.05)) as dripping:
        started = time.monotonic()
        refused(fetcher(timeout=1.0), dripping.url(), "within 1 s")
        assert time.monotonic() - started < 5


def test_slow_drip_headers_are_cut_at_the_overall_deadline() -> None:
    with KeyServer(drip_headers(every=0.05)) as dripping:
        started = time.monotonic()
        refused(fetcher(timeout=1.0), dripping.url(), "within 1 s")
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>not json</html>", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"", "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper"),
        (b'{"keys": [{"kty": "RSA", "n": NaN, "e": "AQAB"}]}', "finite"),
        (b'{"keys": [{"kty": "RSA", "n": "\\ud800", "e": "AQAB"}]}', "Unicode"),
        (b'{"keys": []}', "non-empty"),
        (b'{"keys": [{"kty": "RSA", "n": "AQAB"}]}', 'an RSA key needs "e"'),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "public keys only"),
        (b'"just a string"', "JSON object"),
    ],
    ids=[
        "html",
        "bytes",
        "empty",
        "deeply nested",
        "NaN",
        "lone surrogate",
        "no keys",
        "incomplete key",
        "symmetric key",
        "not an object",
    ],
)
def test_garbage_is_refused(body: bytes, match: str) -> None:
    with KeyServer(send_json(body)) as garbage:
        refused(fetcher(), garbage.url(), match)


def test_private_key_material_is_refused(private_jwks: dict[str, Any]) -> None:
    with KeyServer(send_json(private_jwks)) as leaky:
        message = refused(fetcher(), leaky.url(), "public keys only")
    assert private_jwks["keys"][0]["d"] not in message


def test_a_key_with_a_costly_exponent_is_refused(jwks: dict[str, Any]) -> None:
    """The registration rules hold for a fetched set too: a key server may not publish an
    RSA key whose e makes each assertion check cost a hundred times a normal one."""
    key = dict(jwks["keys"][0])
    key["e"] = pyjwt.utils.to_base64url_uint((1 << 2046) + 1).decode()
    with KeyServer(send_json({"keys": [key]})) as costly:
        refused(fetcher(), costly.url(), '"e" must be at most 32 bits')


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_an_oversize_answer_is_refused(jwks: dict[str, Any], with_length: bool) -> None:
    big = json.dumps({**jwks, "padding": "x" * 200_000}).encode()
    behaviour = send_json(big) if with_length else chunked(big)
    with KeyServer(behaviour) as large:
        refused(fetcher(), large.url(), "larger than 65536 bytes")


@pytest.mark.parametrize("status", [404, 500, 204])
def test_an_answer_other_than_200_is_refused(jwks: dict[str, Any], status: int) -> None:
    with KeyServer(send_json(jwks, status=status)) as odd:
        refused(fetcher(), odd.url(), str(status))


def test_nothing_listening_is_refused() -> None:
    with KeyServer(send_json({})) as gone:
        url = gone.url()
    refused(fetcher(), url, "failed")


# -- which URLs and addresses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://sync.example.com/jwks.json",
        "ftp://127.0.0.1/jwks.json",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1/jwks.json",
        "https:///jwks.json",
    ],
)
def test_urls_that_are_never_fetched(uri: str) -> None:
    refused(fetcher(), uri, "jwks_uri must be an https:// URL")


def test_production_mode_refuses_plain_http_even_on_loopback(server: KeyServer) -> None:
    refused(fetcher(production=True), server.url(), "https")
    assert server.connections == 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address to refuse, not one to bind
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_production_mode_refuses_non_global_addresses(address: str) -> None:
    assert not address_allowed(address, FetchPolicy(production=True))
    assert address_allowed(address, FetchPolicy(production=True, allow_private=True))
    assert address_allowed(address, FetchPolicy(production=False))


def test_production_mode_accepts_global_addresses() -> None:
    for address in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"):
        assert address_allowed(address, FetchPolicy(production=True))


def test_cloud_metadata_is_refused_before_connecting() -> None:
    # No connection is attempted: the address check comes before connect.
    started = time.monotonic()
    refused(fetcher(production=True), "https://169.254.169.254/latest/meta-data/", "private")
    assert time.monotonic() - started < 1


def test_a_name_resolving_to_a_private_address_is_refused(server: KeyServer) -> None:
    calls: list[str] = []

    def resolve(host: str, port: int, *args: Any) -> list[Any]:
        calls.append(host)
        return [(2, 1, 6, "", ("127.0.0.1", server.port))]

    f = JwksFetcher(FetchPolicy(production=True), clock=FixedClock(), resolve=resolve)
    refused(f, "https://keys.example.com/jwks.json", "private")
    assert calls == ["keys.example.com"]
    assert server.connections == 0


def test_https_with_a_trusted_certificate(
    tls_files: tuple[Path, Path], jwks: dict[str, Any]
) -> None:
    cert, key = tls_files
    client_tls = ssl.create_default_context(cafile=str(cert))
    with KeyServer(send_json(jwks), tls=server_tls(cert, key)) as secure:
        # Production mode refuses the loopback address unless the operator allows it.
        strict = JwksFetcher(FetchPolicy(production=True), clock=FixedClock(), tls=client_tls)
        refused(strict, secure.url(), "private")
        assert secure.connections == 0
        allowed = JwksFetcher(
            FetchPolicy(production=True, allow_private=True), clock=FixedClock(), tls=client_tls
        )
        assert allowed.get(secure.url()) == jwks
        # A certificate nobody vouched for is a failure, not a fallback.
        refused(fetcher(allow_private=True), secure.url(), "TLS")


def test_https_slow_drip_is_cut_at_the_deadline(
    tls_files: tuple[Path, Path], jwks: dict[str, Any]
) -> None:
    cert, key = tls_files
    client_tls = ssl.create_default_context(cafile=str(cert))
    body = json.dumps(jwks).encode()
    with KeyServer(drip(body, every=0.05), tls=server_tls(cert, key)) as dripping:
        f = JwksFetcher(FetchPolicy(timeout=1.0), clock=FixedClock(), tls=client_tls)
        started = time.monotonic()
        refused(f, dripping.url(), "within 1 s")
        assert time.monotonic() - started < 5


# -- cache and single flight -------------------------------------------------------------------


def test_a_failure_is_cached_for_a_bounded_time(jwks: dict[str, Any]) -> None:
    clock = FixedClock()
    with KeyServer(send_json({"error": "down"}, status=503)) as flaky:
        f = fetcher(clock)
        for _ in range(20):
            refused(f, flaky.url(), "503")
        assert len(flaky.requests) == 1
        flaky.behaviour = send_json(jwks)
        clock.advance(f.policy.failure_ttl - 1)
        refused(f, flaky.url(), "503")
        assert len(flaky.requests) == 1
        clock.advance(1)
        assert f.get(flaky.url()) == jwks
        assert len(flaky.requests) == 2


def test_one_fetch_in_flight_per_uri(jwks: dict[str, Any]) -> None:
    with KeyServer(slow(send_json(jwks), 0.5)) as sluggish:
        f = fetcher()
        results: list[Any] = []

        def get() -> None:
            try:
                results.append(f.get(sluggish.url()))
            except JwksUnavailable as exc:
                results.append(exc)

        threads = [threading.Thread(target=get) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == [jwks] * 12
    assert len(sluggish.requests) == 1
    assert f.fetches == 1


def test_concurrent_callers_share_a_failure(jwks: dict[str, Any]) -> None:
    with KeyServer(slow(send_json(b"garbage"), 0.5)) as sluggish:
        f = fetcher()
        errors: list[Exception] = []

        def get() -> None:
            try:
                f.get(sluggish.url())
            except JwksUnavailable as exc:
                errors.append(exc)

        threads = [threading.Thread(target=get) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert len(errors) == 8
    assert len(sluggish.requests) == 1


def test_the_cache_is_bounded(jwks: dict[str, Any]) -> None:
    clock = FixedClock()
    with KeyServer(send_json(jwks)) as keys:
        f = fetcher(clock, max_entries=3)
        for i in range(10):
            f.get(keys.url(f"/k{i}"))
        assert len(f._cache) == 3
        # The most recent ones are kept; the first was evicted and is fetched again.
        f.get(keys.url("/k9"))
        assert len(keys.requests) == 10
        f.get(keys.url("/k0"))
        assert len(keys.requests) == 11


def test_a_stranger_cycling_through_every_client_forces_no_fetch(jwks: dict[str, Any]) -> None:
    """Anyone can send assertions naming any client. With more ``jwks_uri`` clients than
    the fetcher remembered (1,024), assertions naming them in turn found each set
    forgotten (least recently used first) and fetched it again: a fetch per request,
    whatever the refresh period, and every client's next assertion waited on a fetch of
    its own. The fetcher remembers as many sets as a process caches clients."""
    clock = FixedClock()
    with KeyServer(send_json(jwks)) as keys:
        f = JwksFetcher(FetchPolicy(timeout=2.0), clock=clock)
        uris = [keys.url(f"/client-{i}") for i in range(1100)]
        for uri in uris:
            f.get(uri, kid="k1")
        assert len(keys.requests) == len(uris)
        for round_ in range(2):
            for uri in uris:
                f.get(uri, kid=f"made-up-{round_}")
        assert len(keys.requests) == len(uris)


def test_an_unknown_kid_refetches_at_most_once_per_refresh_period(
    jwks: dict[str, Any],
) -> None:
    clock = FixedClock()
    with KeyServer(send_json(jwks)) as keys:
        f = fetcher(clock)
        f.get(keys.url(), kid="k1")
        # A kid the set lacks, right after a fetch: no refetch (a stranger sending random
        # kids must not make the server fetch on every request).
        for _ in range(5):
            f.get(keys.url(), kid="rotated")
        assert len(keys.requests) == 1
        clock.advance(f.policy.refresh_after)
        f.get(keys.url(), kid="k1")
        assert len(keys.requests) == 1
        f.get(keys.url(), kid="rotated")
        assert len(keys.requests) == 2
        f.get(keys.url(), kid="rotated")
        assert len(keys.requests) == 2


def test_a_strangers_made_up_kids_hold_back_a_new_key_at_most_ten_seconds(
    jwks: dict[str, Any],
) -> None:
    """Anyone can send assertions naming a client with made-up kids. The client publishes
    a new key right after such an assertion made the server fetch its set: the server
    accepts the new key 10 s later at most (the default policy), however many made-up
    kids arrive meanwhile, and fetches the set no more often than that."""
    clock = FixedClock()
    with KeyServer(send_json(jwks)) as keys:
        f = JwksFetcher(FetchPolicy(timeout=2.0), clock=clock)
        f.get(keys.url(), kid="k1")
        clock.advance(30.0)
        f.get(keys.url(), kid="made-up-0")  # the stranger's fetch
        assert len(keys.requests) == 2
        new_key = {**jwks["keys"][0], "kid": "k2"}
        keys.behaviour = send_json({"keys": [*jwks["keys"], new_key]})
        for second in range(1, 10):
            clock.set(clock.now() + 1.0)
            f.get(keys.url(), kid=f"made-up-{second}")
            assert all(k["kid"] != "k2" for k in f.get(keys.url(), kid="k2")["keys"])
        assert len(keys.requests) == 2
        clock.set(clock.now() + 1.0)
        assert "k2" in [k["kid"] for k in f.get(keys.url(), kid="k2")["keys"]]
        assert len(keys.requests) == 3


def test_a_refetch_a_stranger_caused_never_loses_the_set_in_hand(jwks: dict[str, Any]) -> None:
    """A made-up kid makes the server fetch the client's set again; the key server fails
    just then (a blip). The client keeps getting its set until the set's own ttl, and the
    next made-up kid waits the refresh period again (no fetch per request)."""
    clock = FixedClock()
    with KeyServer(send_json(jwks)) as keys:
        f = fetcher(clock)
        f.get(keys.url(), kid="k1")
        clock.advance(f.policy.refresh_after)
        keys.behaviour = send_json({"error": "blip"}, status=503)
        assert f.get(keys.url(), kid="made-up-1") == jwks  # the stranger's refetch failed
        assert len(keys.requests) == 2
        assert f.get(keys.url(), kid="k1") == jwks
        assert f.get(keys.url(), kid="made-up-2") == jwks
        assert len(keys.requests) == 2
        clock.advance(f.policy.refresh_after)
        assert f.get(keys.url(), kid="made-up-3") == jwks
        assert len(keys.requests) == 3
        # The set's ttl is not extended by failed refetches: past it, the failure counts.
        clock.set(clock.now() + f.policy.ttl)
        refused(f, keys.url(), "503")
        keys.behaviour = send_json(jwks)
        clock.advance(f.policy.failure_ttl)
        assert f.get(keys.url(), kid="k1") == jwks


def test_a_refetch_in_flight_holds_only_its_own_thread(jwks: dict[str, Any]) -> None:
    """While a made-up kid's refetch waits on a slow key server, other callers holding a
    cached set (made-up kids too) are answered at once, not after the fetch."""
    clock = FixedClock()
    with KeyServer(send_json(jwks)) as keys:
        f = fetcher(clock)
        f.get(keys.url(), kid="k1")
        clock.advance(f.policy.refresh_after)
        keys.behaviour = slow(send_json(jwks), 1.5)
        leader = threading.Thread(target=f.get, args=(keys.url(),), kwargs={"kid": "made-up"})
        leader.start()
        deadline = time.monotonic() + 5
        while not keys.requests[1:] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(keys.requests) == 2  # the refetch is in flight
        started = time.monotonic()
        for i in range(4):
            assert f.get(keys.url(), kid=f"made-up-{i}") == jwks
        assert time.monotonic() - started < 0.5
        leader.join(10)
        assert len(keys.requests) == 2


def test_a_refetch_holds_its_own_caller_only_while_it_is_young(jwks: dict[str, Any]) -> None:
    """Made-up kids naming in turn several clients whose key servers hang (an outage of a
    host serving their sets): the caller that makes each refetch is answered from the
    set in hand once the fetch is ``join_within`` old, instead of holding its thread until
    the fetch's deadline. With the refetch on the request's thread, four such clients
    held every thread of a worker (4, the default) for 5 s in every 10, and a client with
    the right secret waited as long (measured against `authserver serve`). What the
    fetch brings later is still cached; a healthy key server answers within the wait."""
    clock = FixedClock()
    release = threading.Event()

    def held(handler: Any) -> None:
        release.wait(20)
        send_json(jwks)(handler)

    with KeyServer(send_json(jwks)) as keys:
        # The default wait (1 s): the margin against a loaded machine for the fetches
        # that must land within it, and still far from the 10 s deadline it replaces.
        f = fetcher(clock, timeout=10.0, join_within=1.0)
        uris = [keys.url(f"/client-{i}") for i in range(4)]
        for uri in uris:
            f.get(uri, kid="k1")
        clock.advance(f.policy.refresh_after)
        keys.behaviour = held
        started = time.monotonic()
        for uri in uris:
            assert f.get(uri, kid="made-up") == jwks
        assert time.monotonic() - started < 8.0  # 4 x 1 s, not 4 x 10 s
        deadline = time.monotonic() + 10
        while len(keys.requests) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(keys.requests) == 8  # the four refetches are in flight
        release.set()
        deadline = time.monotonic() + 10
        while f._flights and time.monotonic() < deadline:
            time.sleep(0.01)
        # Their answers were cached: no fetch within the refresh period.
        for uri in uris:
            assert f.get(uri, kid="made-up-again") == jwks
        assert len(keys.requests) == 8
        # A key server that answers at once answers the caller itself (a new key).
        new_key = {**jwks["keys"][0], "kid": "k2"}
        keys.behaviour = send_json({"keys": [*jwks["keys"], new_key]})
        clock.advance(f.policy.refresh_after)
        assert "k2" in [k["kid"] for k in f.get(uris[0], kid="k2")["keys"]]


def test_a_first_fetch_that_hangs_holds_the_other_callers_only_while_it_is_young(
    jwks: dict[str, Any],
) -> None:
    """Nothing cached yet (a client's first assertion in this process) and a key server
    that does not answer: the callers after the first wait for its fetch only while it is
    young; past ``join_within`` they are refused at once, while the fetch is still in
    flight, instead of each holding its thread until the fetch's deadline. The fetch itself
    goes on, and what it brings is cached for everyone."""
    release = threading.Event()

    def held(handler: Any) -> None:
        release.wait(20)
        send_json(jwks)(handler)

    with KeyServer(held) as hanging:
        f = fetcher(timeout=20.0, join_within=0.2)
        got: list[Any] = []
        leader = threading.Thread(target=lambda: got.append(f.get(hanging.url())))
        leader.start()
        deadline = time.monotonic() + 5
        while not hanging.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hanging.requests == ["/jwks.json"]  # the fetch is in flight
        time.sleep(0.3)  # older than join_within
        refusals: list[str] = []

        def stranger() -> None:
            try:
                f.get(hanging.url())
            except JwksUnavailable as exc:
                refusals.append(str(exc))

        strangers = [threading.Thread(target=stranger) for _ in range(8)]
        for t in strangers:
            t.start()
        for t in strangers:
            t.join(10)
        # All eight answered while the key server still held its answer back.
        assert not release.is_set()
        assert leader.is_alive()
        assert len(refusals) == 8
        assert all("in flight" in r for r in refusals)
        release.set()
        leader.join(10)
        assert got == [jwks]
        assert f.get(hanging.url()) == jwks
        assert len(hanging.requests) == 1


def test_a_host_whose_lookup_hangs_holds_back_no_other_host(
    server: KeyServer, jwks: dict[str, Any]
) -> None:
    """A client's domain whose name servers never answer holds its lookup for as long as
    the system resolver tries, past any deadline. The lookups shared four threads, so a
    few such hosts, asked again at each refetch, left every other client's lookup queued
    until its deadline: its set could not be fetched. Each host now has its own lookup,
    one at a time: asked again while it hangs, it waits for the one in flight."""
    silent = threading.Event()
    lookups: list[str] = []

    def resolve(host: str, port: int, *args: Any) -> list[Any]:
        lookups.append(host)
        if host.endswith(".silent.example"):
            silent.wait(30)  # no answer: the system resolver's own retries and timeouts
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return socket.getaddrinfo(host, port, *args)

    clock = FixedClock()
    f = JwksFetcher(FetchPolicy(timeout=0.3), clock=clock, resolve=resolve)
    hosts = [f"keys{i}.silent.example" for i in range(5)]
    try:
        for _ in range(2):  # a failure is remembered for failure_ttl, then asked again
            threads = [
                threading.Thread(target=refused, args=(f, f"https://{host}/jwks.json", "within"))
                for host in hosts
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(5)
            clock.advance(f.policy.failure_ttl)
        assert f.get(server.url()) == jwks
        assert sorted(lookups) == sorted([*hosts, server.url().split("/")[2].split(":")[0]])
    finally:
        silent.set()


# -- through the app: a failed fetch is a failed authentication ------------------------------------


def test_a_failed_fetch_is_invalid_client_and_counts_as_a_failed_authentication(
    tmp_path: Path, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """Each refusal is 401 invalid_client, counted like a wrong secret: past the budget
    the failures are 429 slow_down (and the key server is still asked only once)."""
    settings = Settings.from_env(
        {
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
            "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_ISSUER": "http://localhost",
            "AUTHSERVER_AUTH_FAILURES_PER_CLIENT": "3/minute",
            "AUTHSERVER_AUTH_FAILURES_PER_ADDRESS": "off",
        }
    )
    services = make_services(settings)
    pem = rsa_private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        with KeyServer(send_json({"error": "down"}, status=500)) as keys:
            with services.unit_of_work():
                client, _ = services.clients.create(name="j", jwks_uri=keys.url())
            http = create_app(services=services).test_client()
            statuses = []
            for _ in range(5):
                now = int(time.time())
                assertion = pyjwt.encode(
                    {
                        "iss": client.client_id,
                        "sub": client.client_id,
                        "aud": "http://localhost/token",
                        "exp": now + 60,
                        "jti": str(now) + str(len(statuses)),
                    },
                    pem,
                    algorithm="RS256",
                    headers={"kid": "k1"},
                )
                response = http.post(
                    "/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_assertion_type": (
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                        ),
                        "client_assertion": assertion,
                    },
                )
                statuses.append((response.status_code, response.get_json()["error"]))
            assert statuses[:3] == [(401, "invalid_client")] * 3
            assert statuses[3:] == [(429, "slow_down")] * 2
            assert len(keys.requests) == 1
    finally:
        services.close()
