"""A Hypothesis state machine: append / ack / restart (clean or crash) / corrupt, against a model.

Invariant, checked after every step: reading from each sink's cursor yields exactly the data
records committed after it and not yet acknowledged, in order, unless a ``gap`` record that the
sink also reads says from which seq records were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.buffer import segment
from agent.buffer.reader import BufferReader
from agent.buffer.wal import Buffer
from agent.config import BufferConfig
from agent.sources import Checkpoint, Pending

CONFIG = BufferConfig(segment_bytes=4096, max_bytes=1 << 30)
SINKS = ["a", "b"]


class BufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="tailseal-model-"))
        self.next_msg = 0
        self.model: dict[int, str] = {}  # seq -> msg of data records still expected
        self.lost_from: int | None = None  # seqs >= this were lost to corruption
        self.buffer, self.writer = self._open()

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _open(self) -> tuple[Buffer, asyncio.Task[None]]:
        buffer = Buffer.open(self.dir, CONFIG, SINKS)
        writer = self.loop.create_task(buffer.run())
        if buffer.recovery.lost_from_seq:  # the writer first commits the recovery gap record
            before = buffer.last_seq

            async def gap_committed() -> None:
                async with buffer.changed:
                    await buffer.changed.wait_for(lambda: buffer.last_seq > before)

            self._run(gap_committed())
        return buffer, writer

    @rule(n=st.integers(min_value=1, max_value=60))
    def append(self, n: int) -> None:
        batch = []
        for _ in range(n):
            self.next_msg += 1
            msg = f"m{self.next_msg}" + "x" * (self.next_msg % 97)
            batch.append(Pending({"msg": msg}, Checkpoint("src", "k", self.next_msg)))
        target = self.buffer.last_seq + n

        async def commit() -> None:
            await self.buffer.emit(batch)
            async with self.buffer.changed:
                await self.buffer.changed.wait_for(lambda: self.buffer.last_seq >= target)

        self._run(commit())
        for i, pending in enumerate(batch):
            self.model[target - n + 1 + i] = pending.record["msg"]

    @rule(sink=st.sampled_from(SINKS), fraction=st.floats(min_value=0, max_value=1))
    def ack(self, sink: str, fraction: float) -> None:
        cursor = self.buffer.cursors[sink][0]
        seq = cursor + int((self.buffer.last_seq - cursor) * fraction)
        reader = BufferReader(self.buffer, sink)
        try:
            if seq > cursor and reader.rewind(seq):
                self._run(self.buffer.ack(sink, seq, reader.position_h))
        finally:
            reader.close()

    @rule(clean=st.booleans())
    def restart(self, clean: bool) -> None:
        self._stop(clean)
        self.buffer, self.writer = self._open()

    @precondition(lambda self: len(self.model) > 3)
    @rule(pick=st.integers(min_value=0, max_value=10_000), offset=st.integers(0, 30))
    def corrupt(self, pick: int, offset: int) -> None:
        """Flip a byte inside a committed frame that is not the last one, then crash."""
        self._stop(clean=False)
        frames = [
            (path, frame)
            for _, path in segment.list_segments(self.dir / "buffer")
            for frame in segment.scan(path).frames
        ]
        candidates = frames[:-1]
        if candidates:
            path, frame = candidates[pick % len(candidates)]
            data = bytearray(path.read_bytes())
            data[frame.end - 1 - offset % 30] ^= 0x5A
            path.write_bytes(bytes(data))
            self.lost_from = min(self.lost_from or frame.seq, frame.seq)
            for seq in [s for s in self.model if s >= frame.seq]:
                del self.model[seq]
        self.buffer, self.writer = self._open()

    def _stop(self, clean: bool) -> None:
        if clean:
            self._run(self.buffer.close("model"))
            self._run(self.writer)
        else:  # a crash: the writer dies between commits, no seal
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                self._run(self.writer)
        self.buffer.stop()

    @invariant()
    def every_sink_reads_what_it_has_not_acked(self) -> None:
        for sink in SINKS:
            cursor = self.buffer.cursors[sink][0]
            expected = [msg for seq, msg in sorted(self.model.items()) if seq > cursor]
            records = self._read_after(sink)
            data = [r["msg"] for r in records if "type" not in r]
            assert data == expected
            if self.lost_from is not None and cursor < self.lost_from:
                gaps = [r for r in records if r.get("type") == "gap"]
                assert any(g["gap"]["from_seq"] <= self.lost_from for g in gaps)

    def _read_after(self, sink: str) -> list[dict[str, Any]]:
        reader = BufferReader(self.buffer, sink)
        out: list[dict[str, Any]] = []
        try:
            while reader.position < self.buffer.last_seq:
                batch = self._run(reader.next_batch(500, 1 << 20, linger=0))
                assert batch is not None
                out.extend(orjson.loads(r) for r in batch.records)
        finally:
            reader.close()
        return out

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self._stop(clean=False)
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


BufferMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_buffer_model = BufferMachine.TestCase
