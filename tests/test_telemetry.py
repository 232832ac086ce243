"""The agent's own logs (JSON lines, rate-limited repeats) and the histogram behind /metrics."""

from __future__ import annotations

import json
import logging

from agent.telemetry import Histogram, JsonFormatter, RateLimitFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("agent.sinks.native", level, __file__, 1, msg, args, None)


def test_repeated_errors_pass_once_per_interval_with_a_suppressed_count() -> None:
    clock = Clock()
    limit = RateLimitFilter(interval=10.0, clock=clock)
    first = record("sink %s: cannot reach collector", "central")
    assert limit.filter(first)
    assert all(not limit.filter(record("sink %s: cannot reach collector", "x")) for _ in range(99))
    clock.now += 10.0
    again = record("sink %s: cannot reach collector", "central")
    assert limit.filter(again)
    assert again.suppressed == 99  # type: ignore[attr-defined]
    # A different message, and anything below WARNING, is never held back.
    assert limit.filter(record("buffer write failed (%s)", "EIO"))
    assert all(limit.filter(record("info", level=logging.INFO)) for _ in range(5))


def test_log_lines_are_json_with_fields_and_suppressed_count() -> None:
    entry = record("listening on %d", 8443)
    entry.fields = {"port": 8443}
    entry.suppressed = 3
    line = json.loads(JsonFormatter().format(entry))
    assert line["level"] == "error"
    assert line["msg"] == "listening on 8443"
    assert line["port"] == 8443
    assert line["suppressed"] == 3
    assert line["ts"].endswith("Z")


def test_histogram_buckets_are_cumulative_with_inf() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert histogram.sum == 4.25
