"""This process's id, kept current across forks without a system call per question.

``os.getpid()`` is a system call; the token path asks "am I still the process that made
this?" several times per request (metrics values, the status-list lease). The answer
changes only at a fork, so it is read once and refreshed in each forked child.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def pid() -> int:
    """The current process's id."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
