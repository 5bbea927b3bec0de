"""A status-list lease belongs to one process: a forked worker never hands out its
parent's indices (they would name two live tokens with one entry)."""

from __future__ import annotations

import os

import pytest

from authserver.tokens.statuslist import StatusListService


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_forgets_the_parents_lease() -> None:
    svc = StatusListService(
        None,  # type: ignore[arg-type]  # never reached: the test only forks
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        issuer="https://auth.example",
        ttl=60,
        expiry=900,
        max_token_ttl=3600,
        leeway=300,
    )
    svc._lease = object()  # type: ignore[assignment]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        os._exit(0 if svc._lease is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert svc._lease is not None  # the parent keeps its own
