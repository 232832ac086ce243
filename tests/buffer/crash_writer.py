"""A buffer writer process for the crash test: commits forever, reporting durable seqs.

Usage: python -m tests.buffer.crash_writer STATE_DIR SEED

A kill cannot interrupt a single write(2) (SIGKILL is delivered when the call returns), so the
writer goes through ``PiecewiseIO``, which writes each commit in 64-byte calls: a kill then
lands inside a commit, leaving a torn frame on disk as a power cut between pages would.

Each record's msg is ``r<n>`` where n counts records over every run on STATE_DIR; the next n is
recovered from the source checkpoint committed in the buffer, exactly as a real source would.
First it prints ``recovered <bytes truncated>``; after each commit, ``<last_seq> <n>``
(durable: fsync returned).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable
from pathlib import Path

from agent.buffer.wal import Buffer, SegmentIO
from agent.config import BufferConfig
from agent.sources import Checkpoint, Pending

PIECE = 64


class PiecewiseIO(SegmentIO):
    def write(self, fd: int, data: bytes | memoryview) -> None:
        for start in range(0, len(data), PIECE):
            super().write(fd, data[start : start + PIECE])


CONFIG = BufferConfig(segment_bytes=64 * 1024, max_commit_records=500)


def _reached(buffer: Buffer, writer: asyncio.Task[None], target: int) -> Callable[[], bool]:
    return lambda: buffer.last_seq >= target or writer.done()


async def main(state: Path, seed: int) -> None:
    buffer = await asyncio.to_thread(Buffer.open, state, CONFIG, ["sink"], PiecewiseIO())
    cp = buffer.checkpoints_for("crash").get("count")
    n = 0 if cp is None else cp.offset
    # The first line says what recovery cut off: proof that kills land inside writes.
    sys.stdout.write(f"recovered {buffer.recovery.truncated_bytes}\n")
    writer = asyncio.create_task(buffer.run())
    rng = random.Random(seed)
    while True:
        size = rng.randint(1, 400)
        batch = []
        for _ in range(size):
            n += 1
            pad = "p" * rng.randint(0, 300)
            batch.append(Pending({"msg": f"r{n}", "pad": pad}, Checkpoint("crash", "count", n)))
        target = buffer.last_seq + size
        await buffer.emit(batch)
        async with buffer.changed:
            await buffer.changed.wait_for(_reached(buffer, writer, target))
        sys.stdout.write(f"{buffer.last_seq} {n}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
