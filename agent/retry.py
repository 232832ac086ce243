"""Capped exponential backoff with jitter, for every component that retries (sinks, buffer)."""

from __future__ import annotations

import random

MAX_RETRY_AFTER = 300.0  # a collector asking for more is treated as asking for this


class Backoff:
    """``next()`` gives the delay before attempt n+1: uniform in [d/2, d], d = min(cap, base*2^n).

    Jitter spreads a fleet of agents that lost the same collector; the cap bounds recovery time.
    ``rng`` is injectable so tests can make delays deterministic.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)

    def next(self, retry_after: float | None = None) -> float:
        delay = min(self.cap, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        jittered = self._rng.uniform(delay / 2, delay)
        if retry_after is not None:
            return min(MAX_RETRY_AFTER, max(retry_after, jittered))
        return jittered

    def reset(self) -> None:
        self.attempt = 0
