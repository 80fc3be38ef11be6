"""The retry schedule: capped exponential backoff, full jitter, Retry-After, give-ups."""

from __future__ import annotations

import random

import pytest

from service.connectors.base import AuthenticationFailed, RateLimited, Unreachable
from service.recordings.retry import RetryPolicy, is_retryable, retrying

POLICY = RetryPolicy(attempts=5, base_seconds=0.5, cap_seconds=4.0)


class Recorder:
    """A sleep that only remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Flaky:
    """Fails with the given errors in turn, then answers "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_ceiling_doubles_up_to_the_cap() -> None:
    assert [POLICY.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert POLICY.ceiling(10_000) == 4.0  # no overflow however long it fails


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    rng = random.Random(7).random
    for retry in range(8):
        waits = [POLICY.backoff(retry, rng) for _ in range(500)]
        assert all(0.0 <= w < POLICY.ceiling(retry) for w in waits)
        # Spread over the whole range, not bunched at one end.
        assert min(waits) < 0.1 * POLICY.ceiling(retry) < 0.9 * POLICY.ceiling(retry) < max(waits)


def test_jitter_bounds_are_exact() -> None:
    assert POLICY.backoff(2, lambda: 0.0) == 0.0
    assert POLICY.backoff(2, lambda: 0.999) == pytest.approx(0.999 * 2.0)


async def test_retries_until_success_with_the_jittered_schedule() -> None:
    sleep, op = Recorder(), Flaky(Unreachable(), Unreachable(), Unreachable())
    assert await retrying(op, POLICY, sleep=sleep, rng=lambda: 0.5) == "ok"
    assert op.calls == 4
    assert sleep.waits == [0.25, 0.5, 1.0]


async def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    sleep = Recorder()
    op = Flaky(*(Unreachable() for _ in range(10)))
    with pytest.raises(Unreachable):
        await retrying(op, POLICY, sleep=sleep, rng=lambda: 0.5)
    assert op.calls == POLICY.attempts
    assert len(sleep.waits) == POLICY.attempts - 1


async def test_retry_after_is_honoured_exactly() -> None:
    sleep, op = Recorder(), Flaky(RateLimited(retry_after=3.5), RateLimited(retry_after=0.0))
    assert await retrying(op, POLICY, sleep=sleep, rng=lambda: 0.99) == "ok"
    assert sleep.waits == [3.5, 0.0]


async def test_retry_after_beyond_the_cap_gives_up_instead_of_waiting() -> None:
    sleep, op = Recorder(), Flaky(RateLimited(retry_after=60.0))
    with pytest.raises(RateLimited):
        await retrying(op, POLICY, sleep=sleep)
    assert op.calls == 1 and sleep.waits == []


async def test_rate_limited_without_retry_after_uses_the_backoff() -> None:
    sleep, op = Recorder(), Flaky(RateLimited())
    assert await retrying(op, POLICY, sleep=sleep, rng=lambda: 0.5) == "ok"
    assert sleep.waits == [0.25]


async def test_non_retryable_errors_are_not_retried() -> None:
    sleep, op = Recorder(), Flaky(AuthenticationFailed())
    with pytest.raises(AuthenticationFailed):
        await retrying(op, POLICY, sleep=sleep)
    assert op.calls == 1 and sleep.waits == []


async def test_errors_that_are_not_connector_errors_are_not_retried_by_default() -> None:
    sleep, op = Recorder(), Flaky(ValueError("bug"))
    with pytest.raises(ValueError):
        await retrying(op, POLICY, sleep=sleep)
    assert op.calls == 1


async def test_a_custom_predicate_can_retry_more() -> None:
    sleep, op = Recorder(), Flaky(ValueError("short body"))
    assert await retrying(op, POLICY, retryable=lambda e: isinstance(e, ValueError), sleep=sleep) == "ok"
    assert op.calls == 2


async def test_on_retry_sees_each_retry() -> None:
    seen: list[tuple[str, int, float]] = []
    op = Flaky(Unreachable(), RateLimited(retry_after=1.0))

    def note(error: BaseException, retry: int, wait: float) -> None:
        seen.append((type(error).__name__, retry, wait))

    await retrying(op, POLICY, sleep=Recorder(), rng=lambda: 0.5, on_retry=note)
    assert seen == [("Unreachable", 1, 0.25), ("RateLimited", 2, 1.0)]


async def test_a_single_attempt_policy_never_retries() -> None:
    op = Flaky(Unreachable())
    with pytest.raises(Unreachable):
        await retrying(op, RetryPolicy(1, 0.1, 1.0), sleep=Recorder())
    assert op.calls == 1


def test_is_retryable() -> None:
    assert is_retryable(Unreachable()) and is_retryable(RateLimited())
    assert not is_retryable(AuthenticationFailed()) and not is_retryable(RuntimeError())
