"""A short-lived cache of list totals. Counting a million rows costs ~70 ms on SQLite
while the page itself costs ~1 ms; totals repeat across the pages of one listing.

Writes in this process invalidate the business at once; other processes' writes show
within `ttl` seconds plus one recount (an expired total is served once more while it is
counted again)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class CountCache:
    def __init__(
        self, ttl: float = 5.0, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[tuple[str, Hashable], tuple[float, int, int]] = OrderedDict()
        self._generation: dict[str, int] = {}

    def get(self, business_id: str, key: Hashable) -> tuple[int | None, bool]:
        """(total, fresh): None when unknown or invalidated by a write here; not fresh when
        older than the TTL (good to answer with while it is counted again)."""
        entry = self._entries.get((business_id, key))
        if entry is None:
            return None, False
        stored_at, generation, total = entry
        if generation != self._generation.get(business_id, 0):
            del self._entries[(business_id, key)]
            return None, False
        return total, self._clock() - stored_at <= self.ttl

    def generation(self, business_id: str) -> int:
        """Taken before counting: a total counted across a write here is not stored."""
        return self._generation.get(business_id, 0)

    def put(self, business_id: str, key: Hashable, total: int, generation: int | None = None) -> None:
        current = self._generation.get(business_id, 0)
        if self.ttl <= 0 or (generation is not None and generation != current):
            return
        self._entries[(business_id, key)] = (self._clock(), current, total)
        self._entries.move_to_end((business_id, key))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def invalidate(self, business_id: str) -> None:
        self._generation[business_id] = self._generation.get(business_id, 0) + 1
