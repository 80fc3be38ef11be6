"""Per-key request limits: a token bucket per API key, in this process.

The mirrored API documents 600 requests per minute per key. Each process keeps its own
buckets, so N processes or replicas admit up to N times the limit in total (see README)."""

from __future__ import annotations

import math
import time
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

    def __init__(self, per_minute: int, clock: object = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, key: str) -> Decision:
        now: float = self._clock()  # type: ignore[operator]
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        missing = self.per_minute - bucket.tokens
        return Decision(
            allowed=allowed,
            limit=self.per_minute,
            remaining=int(bucket.tokens),
            reset_seconds=math.ceil(missing / self._rate),
            retry_after=0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / self._rate)),
        )

    def _forget_full(self, now: float) -> None:
        """Buckets that have refilled carry no state worth keeping."""
        for key in [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self._rate >= self.per_minute
        ]:
            del self._buckets[key]
