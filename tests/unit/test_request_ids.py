"""Request ids the access log makes: 64 random bits as 16 hex digits, from a generator
seeded per process: a forked worker must not repeat its parent's sequence."""

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


def test_a_forked_worker_does_not_repeat_its_parents_ids() -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    children = [context.Process(target=_child_id, args=(queue,)) for _ in range(3)]
    for child in children:
        child.start()
    got = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(30)
    # Unseeded, each child would draw what the parent draws next.
    parent = accesslog._request_ids.next()
    assert len({parent, *got}) == 4, (parent, got)
