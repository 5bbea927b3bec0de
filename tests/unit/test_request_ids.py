"""Request ids the access log makes: 16 hex digits, unique in a process and across the
worker processes forked from one parent."""

from __future__ import annotations

import multiprocessing
import re

from authserver.web import accesslog


def _child_id(queue: multiprocessing.Queue[str]) -> None:
    queue.put(accesslog._request_ids.next())


def test_ids_are_16_hex_digits_and_never_repeat_in_a_process() -> None:
    ids = [accesslog._request_ids.next() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_worker_draws_its_own_prefix() -> None:
    parent = accesslog._request_ids.next()
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    children = [context.Process(target=_child_id, args=(queue,)) for _ in range(3)]
    for child in children:
        child.start()
    got = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(30)
    prefixes = {i[:8] for i in [parent, *got]}
    assert len(prefixes) == 4, (parent, got)
