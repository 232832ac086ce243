"""TokenBucket: burst, refill, Retry-After, unlimited (with a fake clock)."""

from __future__ import annotations

from agent.collector.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_allowed_then_refused_until_a_permit_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=0.5, burst=3, clock=clock)

    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == 2
    clock.now += 1.0
    assert not bucket.take()
    assert bucket.retry_after() == 1
    clock.now += 1.0
    assert bucket.take()


def test_refill_never_exceeds_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    clock.now += 3600

    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_default_burst_is_one_seconds_worth() -> None:
    bucket = TokenBucket(rate=5, clock=FakeClock())

    assert sum(bucket.take() for _ in range(10)) == 5


def test_zero_rate_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, clock=FakeClock())

    assert all(bucket.take() for _ in range(10_000))
    assert bucket.retry_after() == 0
