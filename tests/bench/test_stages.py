"""The per-stage harness runs the real hot path over a small input and ships every line.

Figures are not asserted (they depend on the machine); this holds the harness itself working:
each chunk goes through every stage and the sink's reader finds every line committed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.hostile import ARGV_SHAPES, SHAPES
from bench.run import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"source", "transforms", "buffer", "reader", "encode"}


def run_bench(module: str, *args: str) -> list[dict[str, Any]]:
    """Run ``python -m module args`` from the repository; its JSON lines."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.timeout(120)
def test_bench_stages_ships_every_line_through_every_stage() -> None:
    rows = run_bench("bench.stages", "--scenario", "all", "--lines", "3000")
    assert [row["scenario"] for row in rows] == list(SCENARIOS)
    for row in rows:
        assert row["lines"] == row["shipped"] == 3000, row
        assert set(row["cpu_us_per_line"]) == STAGES, row
        assert row["total_cpu_us_per_line"] > 0, row


@pytest.mark.timeout(120)
def test_bench_hostile_times_every_shape() -> None:
    rows = run_bench("bench.hostile", "--bytes", "20000")
    text, audit = rows[: len(SHAPES)], rows[len(SHAPES) :]
    assert [row["shape"] for row in text] == list(SHAPES)
    assert all(row["bytes"] == 20000 and row["cpu_ms"] >= 0 for row in text)
    layouts = ("one record", "7.5 KB records")
    assert [row["shape"] for row in audit] == [f"{n}, {w}" for n in ARGV_SHAPES for w in layouts]
    for row in audit:  # the whole event: every argument's bytes, in one record or in several
        assert row["bytes"] >= 20000, row
        one = row["shape"].endswith("one record")
        assert row["records"] == 1 if one else row["records"] >= 3, row
        assert row["auditd_ms"] >= 0, row
