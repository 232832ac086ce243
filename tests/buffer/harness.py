"""Shared helpers for buffer tests: a buffer whose writer runs on the test's loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from agent.buffer import segment
from agent.buffer.reader import BufferReader
from agent.buffer.wal import Buffer, SegmentIO
from agent.config import BufferConfig
from agent.record import expected_h, genesis
from agent.sources import Checkpoint, Pending

SINKS = ["a", "b"]


def pending(n: int, start: int = 0, source: str = "s", size: int = 0) -> list[Pending]:
    pad = "x" * size
    return [
        Pending(
            {"msg": f"line {i}{pad}", "src": source},
            Checkpoint(source, "1:2", (i + 1) * 10, "/var/log/x"),
        )
        for i in range(start, start + n)
    ]


class Running:
    """A buffer whose writer task runs on the test's loop."""

    def __init__(self, buffer: Buffer, task: asyncio.Task[None]) -> None:
        self.buffer = buffer
        self.task = task

    async def commit(self, items: list[Pending]) -> None:
        """Emit ``items`` and return once the writer has committed all of them: not once
        ``last_seq`` has grown by their count, which the gap records of segments dropped on the
        way (``drop_oldest``) reach while some of ``items`` are still being written."""
        await self.buffer.emit(items)
        await self.buffer.barrier()

    async def close(self, reason: str = "test") -> None:
        await self.buffer.close(reason)
        await self.task
        await asyncio.to_thread(self.buffer.stop)

    async def ack_all(self, upto: int | None = None) -> None:
        seq = self.buffer.last_seq if upto is None else upto
        h = await asyncio.to_thread(hash_of, self.buffer, seq)
        for sink in self.buffer.cursors:
            await self.buffer.ack(sink, seq, h)


def hash_of(buffer: Buffer, seq: int) -> bytes:
    reader = BufferReader(buffer, "a")
    try:
        assert reader.rewind(seq), f"seq {seq} not held"
        return reader.position_h
    finally:
        reader.close()


async def start(
    state: Path, config: BufferConfig | None = None, io: SegmentIO | None = None
) -> Running:
    buffer = await asyncio.to_thread(Buffer.open, state, config or BufferConfig(), SINKS, io)
    return Running(buffer, asyncio.create_task(buffer.run()))


def stored(state: Path) -> list[segment.Frame]:
    frames: list[segment.Frame] = []
    for _, path in segment.list_segments(state / "buffer"):
        frames.extend(segment.scan(path).frames)
    return frames


def assert_chain(frames: list[segment.Frame], stream_id: str, first: int = 1) -> None:
    """Frames are seqs first.. without holes, each h verifying (from genesis when first=1)."""
    prev = genesis(stream_id) if first == 1 else None
    for expected_seq, frame in enumerate(frames, start=first):
        record = orjson.loads(frame.record)
        assert record["seq"] == frame.seq == expected_seq
        assert bytes.fromhex(record["h"]) == frame.h
        if prev is not None:
            assert frame.h == expected_h(prev, record)
        prev = frame.h
