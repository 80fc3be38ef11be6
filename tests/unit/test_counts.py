"""The list-total cache: fresh for its TTL, dropped at once by a write, bounded in size."""

from __future__ import annotations

from service.recordings.counts import CountCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ttl_invalidation_and_bound() -> None:
    clock = Clock()
    cache = CountCache(ttl=5, size=2, clock=clock)
    cache.put("b1", "all", 10)
    assert cache.get("b1", "all") == (10, True)
    assert cache.get("b2", "all") == (None, False)  # businesses never share totals
    clock.now += 5.1
    assert cache.get("b1", "all") == (10, False)  # expired: still an answer, to be recounted

    cache.put("b1", "all", 11)
    assert cache.get("b1", "all") == (11, True)
    cache.invalidate("b2")
    assert cache.get("b1", "all") == (11, True)  # another business's write changes nothing here
    cache.invalidate("b1")
    assert cache.get("b1", "all") == (None, False)  # a write in this business drops it at once

    cache.put("b1", "x", 1)
    cache.put("b1", "y", 2)
    cache.put("b1", "z", 3)
    assert cache.get("b1", "x") == (None, False) and cache.get("b1", "z") == (3, True)  # oldest evicted


def test_zero_ttl_caches_nothing() -> None:
    cache = CountCache(ttl=0)
    cache.put("b", "k", 1)
    assert cache.get("b", "k") == (None, False)


def test_a_total_counted_across_a_write_here_is_not_kept() -> None:
    cache = CountCache(ttl=5, clock=Clock())
    before = cache.generation("b1")  # a count starts reading
    cache.invalidate("b1")  # this process writes meanwhile
    cache.put("b1", "in", 10, before)  # the count, from before the write
    assert cache.get("b1", "in") == (None, False)
    cache.put("b1", "in", 11, cache.generation("b1"))
    assert cache.get("b1", "in") == (11, True)
