"""SIGKILL a real writer process at random points; nothing reported durable may be missing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from agent.buffer.wal import Buffer
from agent.config import BufferConfig
from tests.buffer.harness import assert_chain, stored

ITERATIONS = int(os.environ.get("TAILSEAL_CRASH_ITERATIONS", "50"))
REPO = Path(__file__).resolve().parents[2]


def run_and_kill(state: Path, seed: int, rng: random.Random) -> tuple[int, int]:
    """Start a writer, let it report 1..6 durable commits, SIGKILL it.

    Returns the last durable n and how many bytes of torn tail its recovery truncated."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.buffer.crash_writer", str(state), str(seed)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    durable = 0
    try:
        truncated = int(proc.stdout.readline().split()[1])
        for _ in range(rng.randint(1, 6)):
            line = proc.stdout.readline()
            assert line, f"writer exited early with {proc.poll()}"
            durable = int(line.split()[1])
        # Where in the next commit the kill lands (building, hashing, writing, fsync): a
        # random point of the workload, not a wait for any condition.
        time.sleep(rng.uniform(0, 0.03))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return durable, truncated


@pytest.mark.slow
def test_sigkill_at_random_points_never_loses_a_durable_record(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("TAILSEAL_CRASH_SEED", "20261121")))
    durable = 0
    torn = 0
    for iteration in range(ITERATIONS):
        reported, truncated = run_and_kill(tmp_path, iteration, rng)
        torn += truncated > 0
        assert reported >= durable, "a later run restarted below what was durable"
        durable = max(durable, reported)
    buffer = Buffer.open(tmp_path, BufferConfig(), ["sink"])
    try:
        resumed = buffer.checkpoints_for("crash")["count"].offset
        stream = buffer.stream_id
        assert not buffer.recovery.quarantined
    finally:
        buffer.stop()
    frames = stored(tmp_path)
    msgs = [orjson.loads(f.record)["msg"] for f in frames]
    # Every record ever reported durable is there, once, in order, and nothing else is.
    assert msgs == [f"r{n}" for n in range(1, resumed + 1)]
    assert resumed >= durable
    assert_chain(frames, stream)
    # The kills really landed inside commits: recovery had torn frames to cut off.
    assert torn > 0, f"none of {ITERATIONS} kills tore a frame"
