"""The public GET documents of the lean WSGI layer (``oauth/wsgi.py`` ``Document``) through a
real ``authserver serve``: the status lists, their aggregation and ``/openapi.json`` answer
conditional GETs with 304 (``If-None-Match``) and 412 (``If-Match``), HEAD and OPTIONS like
the JWKS, and unknown or malformed list ids
with a 404 JSON error (never a 5xx)."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
import requests

from tests.helpers import ServerProcess
from tests.helpers import cli_json_here

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, on SQLite (the documents do not depend on the database):
    the tests only read documents and each registers a client of its own. The issuer is
    the server's base URL (ServerProcess)."""
    tmp = tmp_path_factory.mktemp("documents")
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp / "keys"),
    }
    with ServerProcess(env) as running:
        yield running


def token_status_path(server: ServerProcess) -> str:
    client = cli_json_here(server.env, "clients", "create", "--name", "sync")
    response = requests.post(
        server.base_url + "/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    uri: str = claims["status"]["status_list"]["uri"]
    assert uri.startswith(server.base_url + "/statuslists/")
    return uri[len(server.base_url) :]


def assert_conditional(url: str, content_type: str) -> None:
    first = requests.get(url, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Type"] == content_type
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    for condition in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = requests.get(url, headers={"If-None-Match": condition}, timeout=10)
        assert again.status_code == 304, condition
        assert again.content == b""
        assert again.headers["ETag"] == etag
        assert again.headers["Cache-Control"].startswith("public, max-age=")
    changed = requests.get(url, headers={"If-None-Match": '"not-it"'}, timeout=10)
    assert changed.status_code == 200
    assert changed.content == first.content
    # RFC 9110 §13.1.1: If-Match by strong comparison (a weak tag never matches), evaluated
    # before If-None-Match (§13.2.2); false is 412.
    for condition in (etag, f'"other", {etag}', "*"):
        held = requests.get(url, headers={"If-Match": condition}, timeout=10)
        assert (held.status_code, held.content) == (200, first.content), condition
    for condition in ('"not-it"', f"W/{etag}"):
        failed = requests.get(
            url, headers={"If-Match": condition, "If-None-Match": etag}, timeout=10
        )
        assert failed.status_code == 412, condition
        assert failed.json()["error"] == "precondition_failed"
        assert failed.headers["Cache-Control"] == "no-store"
    head = requests.head(url, timeout=10)
    assert (head.status_code, head.content, head.headers["ETag"]) == (200, b"", etag)
    # RFC 9110 §8.6: the length GET would send, or none (it said 0). That of the coded
    # body when a content coding applies (requests asks for gzip; a status list takes it).
    sent = first.headers.get("Content-Length", str(len(first.content)))
    assert head.headers.get("Content-Length", sent) == sent


def test_conditional_get_of_a_status_list_and_openapi(server: ServerProcess) -> None:
    path = token_status_path(server)
    assert_conditional(server.base_url + path, "application/statuslist+jwt")
    assert_conditional(server.base_url + "/statuslists", "application/json")
    assert_conditional(server.base_url + "/openapi.json", "application/json")
    assert_conditional(server.base_url + "/.well-known/jwks.json", "application/json")
    assert_conditional(
        server.base_url + "/.well-known/oauth-authorization-server", "application/json"
    )
    served = requests.get(server.base_url + "/openapi.json", timeout=10).json()
    assert served["servers"] == [{"url": server.base_url}]


def test_unknown_and_malformed_list_ids_are_404_json(server: ServerProcess) -> None:
    token_status_path(server)  # list 1 exists
    for path in (
        "/statuslists/2",
        "/statuslists/0",
        "/statuslists/01",
        "/statuslists/999999999",
        "/statuslists/99999999999999999999",
        "/statuslists/-1",
        "/statuslists/abc",
        "/statuslists/1.0",
        "/statuslists/%C2%B2",  # a superscript two: a digit to str.isdigit, not an id
        # Non-ASCII digits (wsgi.py checks isascii before isdigit). PATH_INFO is decoded
        # as latin-1, so the raw byte B9 arrives as a superscript one, a digit to
        # str.isdigit that int() refuses (a 500 without the check); an Arabic-Indic one
        # (UTF-8 D9 A1), which int() would take as list 1, arrives as two non-digits.
        "/statuslists/%B9",
        "/statuslists/%D9%A1",
        "/statuslists/",
        "/statuslists/1/x",
    ):
        response = requests.get(server.base_url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"] == "application/json", path
        assert response.json()["error"] == "not_found", path
        assert response.headers["Cache-Control"] == "no-store", path


def test_methods_on_a_status_list(server: ServerProcess) -> None:
    url = server.base_url + token_status_path(server)
    options = requests.options(url, timeout=10)
    assert options.status_code == 200
    assert options.headers["Allow"] == "GET, HEAD, OPTIONS"
    post = requests.post(url, timeout=10)
    assert post.status_code == 405
    assert post.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert post.json()["error"] == "method_not_allowed"
