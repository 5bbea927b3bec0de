"""What belongs to one process, in one place: its id, and what must be redone in a child
after a fork (granian's workers are forked from the main process).

``os.getpid()`` is a system call, and prometheus-client's multiprocess values ask for the
process identity on every increment; the answer changes only at a fork, so it is read
once and refreshed in each forked child (:func:`pid`). State that must not be shared
with a child (a status-list lease, the request-id generator) registers a reset with
:func:`after_fork`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

_pid = os.getpid()


def pid() -> int:
    """The current process's id."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def after_fork(reset: Callable[[], None]) -> None:
    """Call *reset* in every child forked from now on, after :func:`pid` is current."""
    os.register_at_fork(after_in_child=reset)
