"""The harness every storage contract suite drives its store through."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from typing import Generic
from typing import TypeVar

S = TypeVar("S")


@dataclass
class StoreHarness(Generic[S]):
    """A store and the unit of work its calls need: the SQL unit of work, or a no-op
    (``contextlib.nullcontext``) for stores without transactions. :meth:`run` gives each
    operation its own, so what is read back went through the storage."""

    store: S
    uow: Callable[[], AbstractContextManager[Any]]

    def run(self, fn: Callable[[S], Any]) -> Any:
        with self.uow():
            return fn(self.store)
