"""The per-key token bucket, and its share of the fleet's budget."""

from __future__ import annotations

from service.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admitted(limiter: RateLimiter, key: str, tries: int) -> int:
    return sum(limiter.take(key).allowed for _ in range(tries))


def test_one_process_alone_admits_the_whole_budget_then_the_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(600, clock)
    assert admitted(limiter, "k", 1000) == 600
    clock.now += 6
    assert admitted(limiter, "k", 1000) == 60


def test_each_of_n_live_processes_takes_its_share() -> None:
    clock = Clock()
    limiters = [RateLimiter(600, clock, shares=3) for _ in range(3)]
    assert sum(admitted(limiter, "k", 1000) for limiter in limiters) == 600
    clock.now += 6
    assert sum(admitted(limiter, "k", 1000) for limiter in limiters) == 60
    refused = limiters[0].take("k")
    assert not refused.allowed and refused.limit == 600 and refused.retry_after >= 1


def test_a_process_joining_cuts_the_buckets_to_the_new_share() -> None:
    clock = Clock()
    limiter = RateLimiter(600, clock)
    assert admitted(limiter, "k", 100) == 100  # 500 left of one share of 600
    limiter.set_shares(2)
    assert admitted(limiter, "k", 1000) == 300
    assert admitted(limiter, "fresh", 1000) == 300
    limiter.set_shares(1)  # the other left: the budget grows back by refill, not at once
    assert admitted(limiter, "k", 10) == 0
