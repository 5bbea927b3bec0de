"""The one cache shape (authserver/cache.py): bounded, least recently used out, and never
a value from an older version."""

from __future__ import annotations

import threading

import pytest

from authserver.cache import BoundedCache


def test_holds_at_most_size_entries_least_recently_used_out() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)  # version None: the cache takes it on first get
    assert cache.get("a") == (False, None)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)  # a is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") == (False, None)
    assert cache.get("a") == (True, 1)
    assert cache.get("c") == (True, 3)
    assert len(cache) == 2


def test_a_new_version_empties_it() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10)
    assert cache.get("k", 1) == (False, None)
    cache.put("k", "old", 1)
    assert cache.get("k", 1) == (True, "old")
    assert cache.get("k", 2) == (False, None)
    assert len(cache) == 0


def test_a_value_read_under_an_older_version_is_not_stored() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10)
    assert cache.get("k", 1) == (False, None)
    # Another caller moved the version on while this one read its value.
    assert cache.get("other", 2) == (False, None)
    cache.put("k", "read under 1", 1)
    assert cache.get("k", 2) == (False, None)


def test_clear_forgets_the_version_too() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10)
    cache.get("k", 1)
    cache.put("k", "v", 1)
    cache.clear()
    cache.put("k", "late", 1)  # a reader that started before the clear
    assert cache.get("k", 1) == (False, None)


def test_get_or_build_builds_once_per_key() -> None:
    cache: BoundedCache[str, int] = BoundedCache(4)
    built: list[str] = []

    def build(key: str) -> int:
        built.append(key)
        return len(built)

    assert cache.get_or_build("x", lambda: build("x")) == 1
    assert cache.get_or_build("x", lambda: build("x")) == 1
    assert built == ["x"]


def test_concurrent_use_stays_bounded() -> None:
    cache: BoundedCache[int, int] = BoundedCache(50)

    def work(offset: int) -> None:
        for i in range(2000):
            cache.get_or_build((offset + i) % 300, lambda i=i: i)

    threads = [threading.Thread(target=work, args=(n * 37,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 50


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BoundedCache(0)
