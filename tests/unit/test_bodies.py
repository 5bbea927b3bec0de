"""BodyDeadline (web/bodies.py) on its own: what reaches the application behind it."""

from __future__ import annotations

import io
import json
from typing import Any

from authserver.web.bodies import BodyDeadline

LIMIT = 1024


class _Inner:
    """The application behind: records the body it read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.bodies.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def _call(app: BodyDeadline, body: bytes, **environ: str) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PORT": "8000",
        "wsgi.input": io.BytesIO(body),
        **environ,
    }
    out = b"".join(app(env, start_response))
    return answer["status"], answer["headers"], out


def test_a_body_shorter_than_its_content_length_is_408_and_never_parsed() -> None:
    inner = _Inner()
    app = BodyDeadline(inner, timeout=10, limit=LIMIT)
    status, headers, out = _call(app, b"grant_type=client_credentials", CONTENT_LENGTH="100")
    assert status.startswith("408 ")
    assert headers["Connection"] == "close"
    assert json.loads(out)["error"] == "invalid_request"
    assert inner.bodies == []


def test_a_whole_body_reaches_the_application_from_memory() -> None:
    inner = _Inner()
    app = BodyDeadline(inner, timeout=10, limit=LIMIT)
    body = b"grant_type=client_credentials"
    status, _, _ = _call(app, body, CONTENT_LENGTH=str(len(body)))
    assert status.startswith("200 ")
    assert inner.bodies == [body]
    # Chunked (no Content-Length) JSON within the limit: read to its end, passed whole.
    chunked = b'{"name": "' + b"a" * (LIMIT - 20) + b'"}'
    status, _, _ = _call(
        app, chunked, HTTP_TRANSFER_ENCODING="chunked", CONTENT_TYPE="application/json"
    )
    assert status.startswith("200 ")
    assert inner.bodies[-1] == chunked


def test_a_chunked_body_past_the_limit_is_413_here_whatever_the_route() -> None:
    """Read one byte past the limit and refused by this layer: an application reading
    what it was handed (the admin API) parsed the first limit + 1 bytes as the body."""
    inner = _Inner()
    app = BodyDeadline(inner, timeout=10, limit=LIMIT)
    for content_type in ("application/json", "application/x-www-form-urlencoded"):
        status, headers, out = _call(
            app,
            b"a" * (LIMIT + 50),
            HTTP_TRANSFER_ENCODING="chunked",
            CONTENT_TYPE=content_type,
        )
        assert status.startswith("413 ")
        assert headers["Connection"] == "close"
        assert json.loads(out) == {
            "error": "invalid_request",
            "error_description": "the request body is too large",
        }
    assert inner.bodies == []


def test_no_body_or_a_length_over_the_limit_is_left_to_the_application() -> None:
    inner = _Inner()
    app = BodyDeadline(inner, timeout=10, limit=LIMIT)
    assert _call(app, b"")[0].startswith("200 ")
    over = b"b" * (LIMIT + 10)
    assert _call(app, over, CONTENT_LENGTH=str(len(over)))[0].startswith("200 ")
    assert inner.bodies == [b"", over]  # read by the application, not before it
