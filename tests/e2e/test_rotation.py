"""Rotation under load, across SIGKILLs: the agent and the collector as real processes.

A writer thread appends numbered lines at a steady high rate while a rotator thread rotates the
file every ~300 ms, either by rename + create (the writer reopens the path shortly after, as a
daemon does on SIGHUP, so some lines land in the renamed file) or by copytruncate (a copy, then a
truncation in place, with the writer never pausing). The agent is SIGKILLed and restarted a few
times meanwhile, then stopped cleanly. At the collector:

* rename + create: every line exactly once, and no gap record;
* copytruncate: no line twice; a line may be missing only if it was written during a copy-to-
  truncate window (there it exists nowhere any more), and the gap records claim no more lines
  than are missing, in whole lines.

Every line is exactly 64 bytes and every write a whole number of lines, so page boundaries are
line boundaries: a reader never sees half a line (which would ship as a ``partial`` part).
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.e2e.harness import AgentProcess, CollectorProcess
from tests.support import eventually_sync

LINE = 64
BATCH = 40  # lines per write
PACE = 0.01  # seconds between writes: ~4,000 lines/s
ROTATE_EVERY = 0.3
RUN_FOR = 9.0
KILL_AT = (2.5, 5.0, 7.0)  # seconds into the run
DELIVERY_TIMEOUT = 90.0


def line(n: int) -> bytes:
    head = f"{n:09d} "
    return (head + "x" * (LINE - len(head) - 1) + "\n").encode()


@dataclass
class Workload:
    """The writer and the rotator; ``written`` counts lines fully written so far."""

    log: Path
    mode: str
    written: int = 0
    windows: list[tuple[int, int]] = field(default_factory=list)  # copytruncate loss windows
    rotations: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    reopen: threading.Event = field(default_factory=threading.Event)

    def write(self) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while not self.done.is_set():
                if self.reopen.is_set():
                    os.close(fd)
                    fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    self.reopen.clear()
                start = self.written
                os.write(fd, b"".join(line(n) for n in range(start, start + BATCH)))
                self.written = start + BATCH
                time.sleep(PACE)  # the workload's pace, not synchronization
        finally:
            os.close(fd)

    def rotate(self) -> None:
        while not self.done.wait(ROTATE_EVERY):
            self.rotations += 1
            rotated = self.log.with_name(f"{self.log.name}-{self.rotations:08d}")
            if self.mode == "rename":
                self.log.rename(rotated)
                time.sleep(PACE * 2)  # the daemon keeps writing to the old file for a moment
                self.reopen.set()
            else:
                before = self.written
                shutil.copyfile(self.log, rotated)
                os.truncate(self.log, 0)
                # The batch being written when we looked may straddle either end.
                self.windows.append((before - BATCH, self.written + BATCH))


def numbers(records: list[dict[str, Any]]) -> Counter[int]:
    found: Counter[int] = Counter()
    for record in records:
        if record.get("src") == "app" and "type" not in record:
            assert "tags" not in record or record["tags"] == ["truncated"], record
            found[int(record["msg"][:9])] += 1
    return found


@pytest.fixture
def agent(tmp_path: Path, collector: CollectorProcess) -> Iterator[AgentProcess]:
    root = tmp_path / "agent"
    root.mkdir()
    (tmp_path / "logs").mkdir()
    process = AgentProcess(
        root,
        collector,
        sources={"app": [str(tmp_path / "logs" / "app.log")]},
        extra="max_batch_records = 2000\nlinger = 0.01\n",
    )
    yield process
    process.cleanup()


def run_workload(workload: Workload, agent: AgentProcess, collector: CollectorProcess) -> None:
    """Write and rotate for ``RUN_FOR`` seconds, SIGKILLing and restarting the agent. Rotation
    starts once the agent delivers: what rotated away before its first start is not its to read.
    """
    writer, rotator = (
        threading.Thread(target=workload.write),
        threading.Thread(target=workload.rotate),
    )
    agent.start()
    writer.start()
    try:
        eventually_sync(lambda: collector.held() > 0, timeout=30, what="the agent delivering")
        rotator.start()
        started = time.monotonic()
        for at in KILL_AT:
            time.sleep(max(0.0, started + at - time.monotonic()))  # the schedule of the kills
            agent.kill()
            agent.start()
        time.sleep(max(0.0, started + RUN_FOR - time.monotonic()))
    finally:
        workload.done.set()
        writer.join()
        if rotator.is_alive():
            rotator.join()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rename", "copytruncate"])
def test_rotation_under_load_with_sigkills_loses_and_duplicates_nothing(
    tmp_path: Path, collector: CollectorProcess, agent: AgentProcess, mode: str
) -> None:
    workload = Workload(tmp_path / "logs" / "app.log", mode)
    run_workload(workload, agent, collector)
    total = workload.written
    in_window = {n for lo, hi in workload.windows for n in range(max(lo, 0), min(hi, total))}
    eventually_sync(
        lambda: collector.held() >= total - len(in_window),
        timeout=DELIVERY_TIMEOUT,
        what=f"{total} lines delivered",
    )
    assert agent.terminate() == 0, agent.log_tail()
    assert agent.exits[:3] == [-9, -9, -9]
    assert workload.rotations >= 15

    records = collector.records()
    found = numbers(records)
    duplicated = sorted(n for n, count in found.items() if count > 1)
    missing = sorted(set(range(total)) - set(found))
    gaps = [r["gap"] for r in records if r.get("type") == "gap"]
    assert not duplicated, f"{len(duplicated)} lines duplicated, e.g. {duplicated[:5]}"
    assert not set(found) - set(range(total)), "lines nobody wrote"
    if mode == "rename":
        assert not missing, f"{len(missing)} of {total} lines missing, e.g. {missing[:5]}"
        assert not gaps
    else:
        outside = [n for n in missing if n not in in_window]
        assert not outside, f"{len(outside)} lines lost outside copytruncate windows: {outside[:5]}"
        assert all(g["bytes"] % LINE == 0 and g["from_offset"] % LINE == 0 for g in gaps), gaps
        assert sum(g["bytes"] for g in gaps) // LINE <= len(missing)


@pytest.mark.parametrize("codec", ["gz", "zst"])
def test_a_generation_rotated_and_compressed_while_the_agent_was_killed_ships_once(
    tmp_path: Path, collector: CollectorProcess, agent: AgentProcess, codec: str
) -> None:
    """kill -9; lines are written, then logrotate's compress (no delaycompress) rotates the file
    and compresses it at once, and a new file starts; the agent comes back. The collector holds
    every line once: the rest of the old generation is read from the compressed file (spooled
    under state_dir/spool, which is left empty), then the new file."""
    log = tmp_path / "logs" / "app.log"
    log.write_bytes(b"".join(line(n) for n in range(1000)))
    agent.start()
    eventually_sync(lambda: collector.held() >= 1000, timeout=30, what="the first 1000 lines")
    agent.kill()
    with log.open("ab") as out:
        out.write(b"".join(line(n) for n in range(1000, 2000)))
    rotated = log.with_name("app.log.1")
    log.rename(rotated)
    packed = rotated.with_name(f"app.log.1.{codec}")
    data = rotated.read_bytes()
    packed.write_bytes(gzip.compress(data) if codec == "gz" else zstandard.compress(data))
    rotated.unlink()
    log.write_bytes(b"".join(line(n) for n in range(2000, 2100)))
    agent.start()
    eventually_sync(lambda: collector.held() >= 2100, timeout=60, what="all 2100 lines")
    assert agent.terminate() == 0, agent.log_tail()
    records = collector.records()
    found = numbers(records)
    assert sorted(found) == list(range(2100))
    assert set(found.values()) == {1}
    paths = {r["log"]["file"]["path"] for r in records if r.get("src") == "app"}
    assert paths == {str(log), str(packed)}
    assert not [r for r in records if r.get("type") == "gap"]
    assert list((agent.root / "state" / "spool").iterdir()) == []
