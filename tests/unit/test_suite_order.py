"""The order the suite's items are queued in for pytest-xdist (``tests/conftest.py``):
every item exactly once, each worker's share as ``worksteal`` cuts it, the tests that wait
on real time spread over half of the shares and first in them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import _queued_for_workers


class FakeItem:
    def __init__(self, name: str, *marks: str, path: str = "test_x.py") -> None:
        self.name = name
        self.marks = set(marks)
        self.path = path

    def get_closest_marker(self, name: str) -> Any:
        return name if name in self.marks else None

    def __repr__(self) -> str:
        return self.name


def _worksteal_shares(queue: list[Any], workers: int) -> list[list[Any]]:
    """What pytest-xdist's ``worksteal`` sends each worker at the start: each idle node in
    turn gets ``len(pending) // nodes remaining`` items from the head of the list."""
    pending, shares = list(queue), []
    for remaining in range(workers, 0, -1):
        count = len(pending) // remaining
        shares.append(pending[:count])
        del pending[:count]
    return shares


@pytest.mark.parametrize("workers", [2, 3, 4, 5])
@pytest.mark.parametrize("total", [7, 40, 101])
def test_each_worker_starts_with_its_waiting_tests_or_cpu_bound_ones(
    workers: int, total: int
) -> None:
    # Files of three tests each (t0-t2 in one file, ...), with any mix of marks.
    items = [
        FakeItem(
            f"t{i}",
            *(["waits", "slow"] if i % 9 == 0 else ["slow"] if i % 4 == 0 else []),
            path=f"test_{i // 3}.py",
        )
        for i in range(total)
    ]
    items.append(FakeItem("waits-not-slow", "waits", path="test_last.py"))
    queued = _queued_for_workers(items, workers)  # type: ignore[arg-type]

    assert sorted(map(id, queued)) == sorted(map(id, items))  # each exactly once
    shares = _worksteal_shares(queued, workers)
    waiting = [item for item in items if "waits" in item.marks]
    holders = [share for share in shares if any("waits" in i.marks for i in share)]
    assert len(holders) == min(len(waiting), (workers + 1) // 2)
    for share in shares:
        marks = ["waits" in i.marks for i in share]
        # The waiting tests first in their share, then the process-starting ones.
        assert marks == sorted(marks, reverse=True), share
        rest = share[marks.count(True) :]
        slow = ["slow" in i.marks for i in rest]
        if share not in holders:
            assert slow == sorted(slow, reverse=True), share
    # A share without waiting tests starts with a process-starting one, when there are
    # enough of those to go round.
    slow_total = sum(1 for i in items if "slow" in i.marks and "waits" not in i.marks)
    if slow_total >= workers:
        # ...and the first files of them go there, not behind the waiting tests.
        slow_items = [i for i in items if "slow" in i.marks and "waits" not in i.marks]
        firsts = list({i.path: i for i in reversed(slow_items)}.values())[::-1]
        heads = [share[0] for share in shares if share not in holders]
        assert heads == firsts[: len(heads)], (heads, firsts)
    # The tests of one file and group share a worker (a module-scoped fixture once),
    # whenever the file fits in what is left of a share.
    if total >= 40:
        groups = {
            "waits": lambda i: "waits" in i.marks,
            "slow": lambda i: "slow" in i.marks and "waits" not in i.marks,
        }
        for group, member in groups.items():
            for path in {i.path for i in items if member(i)}:
                tests = {id(i) for i in items if i.path == path and member(i)}
                holding = [s for s in shares if tests & set(map(id, s))]
                assert len(holding) == 1, (group, path, holding)


def test_one_worker_runs_the_process_starting_tests_first() -> None:
    items = [FakeItem("fast"), FakeItem("slow", "slow"), FakeItem("fast2")]
    assert [i.name for i in _queued_for_workers(items, 1)] == ["slow", "fast", "fast2"]  # type: ignore[arg-type, attr-defined]
