"""Retrying one provider operation with capped exponential backoff and full jitter.

Full jitter (a uniform wait in [0, min(cap, base * 2**n)]) spreads the retries of many
workers that failed together, so they do not hit a struggling provider in lock-step.
A provider's own Retry-After wins over our schedule: it knows when it will answer again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from service.config import SyncSettings
from service.connectors.base import ConnectorError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Random = Callable[[], float]  # uniform in [0, 1)
OnRetry = Callable[[BaseException, int, float], None]  # error, retry number (1-based), wait


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # tries in all, the first one included
    base_seconds: float
    cap_seconds: float

    @classmethod
    def from_settings(cls, sync: SyncSettings) -> RetryPolicy:
        return cls(sync.retry_attempts, sync.retry_base_seconds, sync.retry_cap_seconds)

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number `retry` (0-based): base * 2**retry, capped."""
        return min(self.cap_seconds, self.base_seconds * 2.0 ** min(retry, 64))

    def backoff(self, retry: int, rng: Random = random.random) -> float:
        """A full-jitter wait in [0, ceiling(retry))."""
        return rng() * self.ceiling(retry)

    def wait_before(self, error: BaseException, retry: int, rng: Random = random.random) -> float | None:
        """How long to wait before retry number `retry` (0-based) after `error`, or None to give up.

        A Retry-After longer than the cap gives up instead of holding a worker that long;
        the provider's next run comes later anyway.
        """
        if retry + 1 >= self.attempts:
            return None
        asked = error.retry_after if isinstance(error, ConnectorError) else None
        if asked is None:
            return self.backoff(retry, rng)
        return asked if asked <= self.cap_seconds else None


def is_retryable(error: BaseException) -> bool:
    """Connector errors say themselves whether trying again can help (a wrong key cannot)."""
    return isinstance(error, ConnectorError) and error.retryable


async def retrying(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BaseException], bool] = is_retryable,
    sleep: Sleep = asyncio.sleep,
    rng: Random = random.random,
    on_retry: OnRetry | None = None,
) -> T:
    """Run `operation` until it succeeds, fails for good, or the policy's attempts run out.

    `operation` is called afresh for each try, so it must start over from scratch (a new
    request, a new listing): nothing half-done is resumed.
    """
    retry = 0
    while True:
        try:
            return await operation()
        except Exception as error:
            wait = policy.wait_before(error, retry, rng) if retryable(error) else None
            if wait is None:
                raise
            retry += 1
            if on_retry is not None:
                on_retry(error, retry, wait)
            await sleep(wait)
