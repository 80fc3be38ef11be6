"""Per-key request limits: a token bucket per API key, the fleet's budget shared out.

The mirrored API documents 600 requests per minute per key, across every process and
replica. No database write per request: each process holds buckets for its share, the
limit divided by the number of live server processes (heartbeat rows, refreshed at each
beat), so N processes admit the limit in total, not N times it. A key whose calls all
land on one process gets that process's share."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    # Seconds until the bucket is full again (RateLimit-Reset), and until one more
    # request would be admitted (Retry-After; 0 when allowed).
    reset_seconds: int
    retry_after: int


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    MAX_BUCKETS = 100_000

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, *, shares: int = 1
    ) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, _Bucket] = {}
        self._clock = clock
        self.set_shares(shares)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def set_shares(self, shares: int) -> None:
        """How many live processes split the limit; this process takes one share. Buckets
        holding more than the new capacity are cut to it."""
        self.shares = max(1, shares)
        self.capacity = self.per_minute / self.shares
        self._rate = self.capacity / 60.0
        for bucket in self._buckets.values():
            bucket.tokens = min(bucket.tokens, self.capacity)

    def take(self, key: str) -> Decision:
        now = self._clock()
        capacity = self.capacity
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        missing = capacity - bucket.tokens
        return Decision(
            allowed=allowed,
            limit=self.per_minute,
            remaining=int(bucket.tokens),  # what this process will still admit
            reset_seconds=math.ceil(missing / self._rate) if self._rate else 0,
            retry_after=0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / self._rate)),
        )

    def _forget_full(self, now: float) -> None:
        """Buckets that have refilled carry no state worth keeping."""
        for key in [
            k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self._rate >= self.capacity
        ]:
            del self._buckets[key]
