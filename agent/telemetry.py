"""The agent's own logs: JSON lines on stderr, with repeated messages rate-limited.

stderr is what journald and container runtimes capture. The agent never tails its own output:
it has no file of its own to tail, and the journald source (later) excludes its unit.
A message repeated within ``interval`` seconds is logged once; the next one to pass carries a
``suppressed`` count, so an outage of an hour gives a few lines, not a million. The filter's
state is guarded by the logging module's handler lock.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from agent.record import format_ts


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the ``fields`` extra if given
    (``log.info("listening", extra={"fields": {"port": 8443}})``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": format_ts(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            entry["suppressed"] = suppressed
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RateLimitFilter(logging.Filter):
    """Let one instance of each (logger, level, template) through per ``interval`` seconds."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last, suppressed = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._seen[key] = (last, suppressed + 1)
            return False
        self._seen[key] = (now, 0)
        record.suppressed = suppressed
        return True


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# --- metrics ---------------------------------------------------------------------------------


class Histogram:
    """A fixed-bucket histogram owned by one task (no locks): observed on the hot path as a
    few comparisons, exported at scrape time. ``counts[i]`` counts values <= ``buckets[i]``
    (non-cumulative); the last slot is +Inf."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out
