"""Per-token request rate limits for the collector: one token bucket per configured token.

A bucket holds up to ``burst`` permits and refills at ``rate`` permits per second; each batch
request takes one permit before its body is read, so a client over its limit costs the collector
no body bytes. An empty bucket means 429 with ``Retry-After`` = the whole seconds until the next
permit (at least 1). ``rate == 0`` disables the limit.

State: the permit count and the last refill time, owned by the collector's event-loop thread (no
locking; never touched from worker threads). Time comes from an injectable monotonic clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """``take()`` is True when a request may proceed; else ``retry_after()`` says when."""

    def __init__(
        self, rate: float, burst: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = float(burst or max(1, math.ceil(rate)))
        self._clock = clock
        self._permits = self.capacity
        self._at = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def take(self) -> bool:
        if self.unlimited:
            return True
        self._refill()
        if self._permits >= 1:
            self._permits -= 1
            return True
        return False

    def retry_after(self) -> int:
        """Whole seconds until a permit is available (the ``Retry-After`` value, at least 1)."""
        if self.unlimited:
            return 0
        self._refill()
        return max(1, math.ceil((1 - self._permits) / self.rate))

    def _refill(self) -> None:
        now = self._clock()
        self._permits = min(self.capacity, self._permits + (now - self._at) * self.rate)
        self._at = now
