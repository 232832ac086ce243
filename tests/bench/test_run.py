"""The benchmark harness runs end to end on a small input and reports every figure.

Figures are not asserted (performance is reported by ``python -m bench.run``, never by timed
tests); this holds the harness itself working: real agent and collector processes, every line
acknowledged, and the JSON and table it promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench_run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_run_reports_every_figure_for_a_small_input(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ["--scenario", "auth", "--lines", "3000", "--repeat", "2", "--latency-seconds", "1"]
    args += ["--idle-seconds", "1", "--drain-lines", "3000", "--json", str(out)]
    args += ["--cpu-affinity", "auto"]  # the agent's setting, passed on to every run
    args += ["--source", "read_chunk_bytes = 8192", "--buffer", 'fsync = "always"']
    proc = bench_run(args, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    (row,) = results["throughput"]
    assert row["scenario"] == "auth"
    assert row["lines"] == 3000
    assert row["lines_per_s"] > 0
    assert row["agent_cpu_s_per_million"] > 0
    assert row["agent_peak_rss_mb"] > 10
    assert row["baseline_lines_per_s"] > row["lines_per_s"]
    # Each record's frame went to the buffer (fsync = "always": a page per record, at least
    # its bytes), and each line to the collector's store.
    assert row["agent_disk_bytes_per_line"] > 100
    assert row["collector_disk_bytes_per_line"] > 100
    assert row["write_probe_cpu_s_per_gb"] > 0
    assert "probe s/GB" in proc.stdout
    runs = row["runs"]  # the row holds medians of the runs (the peak RSS: the largest)
    assert len(runs) == 2
    assert row["lines_per_s"] == (runs[0]["lines_per_s"] + runs[1]["lines_per_s"]) / 2
    assert row["agent_peak_rss_mb"] == max(run["agent_peak_rss_mb"] for run in runs)
    assert results["latency"]["p99_ms"] >= results["latency"]["p50_ms"] > 0
    assert results["idle"]["rss_mb"] > 10
    assert results["drain"]["lines"] == 3000
    assert results["drain"]["mb_per_s"] > 0
    assert results["cpu_affinity"] == "auto"
    assert results["source"] == ["read_chunk_bytes = 8192"]
    assert results["buffer"] == ['fsync = "always"']
    assert "auth" in proc.stdout
    assert "latency at" in proc.stdout


@pytest.mark.timeout(120)
def test_bench_run_stops_with_the_agents_error_when_a_setting_is_refused(tmp_path: Path) -> None:
    """A setting the agent refuses ends the run with its words, instead of waiting forever for
    an agent that exited."""
    args = ["--scenario", "raw", "--lines", "10", "--repeat", "1", "--latency-seconds", "0"]
    args += ["--idle-seconds", "0", "--drain-lines", "0", "--json", str(tmp_path / "r.json")]
    args += ["--buffer", 'fsync = "never"']
    proc = bench_run(args, timeout=100)
    assert proc.returncode == 1
    assert "the agent exited (78)" in proc.stderr
    assert "buffer.fsync" in proc.stderr
    assert not (tmp_path / "r.json").exists()
