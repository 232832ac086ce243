"""max_bytes with both when_full modes, fsync modes, and reading batches back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import orjson

from agent.buffer import segment
from agent.buffer.reader import Batch, BufferReader
from agent.config import BufferConfig
from tests.buffer.harness import assert_chain, pending, start, stored
from tests.support import eventually

SMALL = BufferConfig(segment_bytes=4096, max_bytes=3 * 4096)


async def read_all(reader: BufferReader, upto: int) -> list[Batch]:
    batches: list[Batch] = []
    while reader.position < upto:
        batch = await reader.next_batch(100, 1 << 20, linger=0)
        assert batch is not None
        batches.append(batch)
    return batches


async def test_block_mode_stops_committing_until_sinks_ack(tmp_path: Path) -> None:
    run = await start(tmp_path, SMALL)
    buf = run.buffer

    async def produce() -> None:  # a source: ~4.5 KB per 20 records, far past 12 KB
        for i in range(40):
            await buf.emit(pending(20, start=i * 20, size=100))

    producer = asyncio.create_task(produce())
    await eventually(lambda: buf.blocked, timeout=10, what="the writer to block")
    assert buf.last_seq < 800
    assert buf.total_bytes() >= SMALL.max_bytes
    # Backpressure reaches the producer: once the queue is full, emit waits.
    full = SMALL.queue_batches
    await eventually(lambda: buf.queued() == full, timeout=10, what="the queue to fill")
    assert not producer.done()
    # Play the sink: ack what is committed whenever the writer waits, until all is in.
    rounds = 0
    while buf.last_seq < 800:
        await run.ack_all()
        rounds += 1
        await eventually(
            lambda: buf.blocked or buf.last_seq == 800, timeout=10, what="progress after ack"
        )
        assert buf.total_bytes() <= SMALL.max_bytes + SMALL.segment_bytes
    assert rounds > 1
    await producer
    assert buf.stats.dropped_records == 0
    await run.ack_all()
    await run.close()
    msgs = [orjson.loads(f.record)["msg"] for f in stored(tmp_path)]
    assert msgs[-1].startswith("stream sealed")
    reader_frames = stored(tmp_path)
    assert_chain(reader_frames, buf.stream_id, first=reader_frames[0].seq)


async def test_block_mode_commits_queued_records_and_seal_on_close(tmp_path: Path) -> None:
    run = await start(tmp_path, msgspec.structs.replace(SMALL, queue_batches=32))
    buf = run.buffer
    for i in range(20):
        await buf.emit(pending(20, start=i * 20, size=100))
    await eventually(lambda: buf.blocked, timeout=10, what="the writer to block")
    # Shutdown with the collector unreachable: nothing may be left behind in memory.
    await asyncio.wait_for(run.close(), timeout=10)
    frames = stored(tmp_path)
    assert len(frames) == 401
    assert_chain(frames, buf.stream_id)


async def test_drop_oldest_drops_whole_segments_and_writes_a_gap(tmp_path: Path) -> None:
    config = BufferConfig(segment_bytes=4096, max_bytes=3 * 4096, when_full="drop_oldest")
    run = await start(tmp_path, config)
    buf = run.buffer
    for i in range(40):
        await run.commit(pending(20, start=i * 20, size=100))
    assert buf.stats.dropped_records > 0
    assert buf.total_bytes() < config.max_bytes + config.segment_bytes
    frames = stored(tmp_path)
    gaps = [orjson.loads(f.record) for f in frames if b'"type":"gap"' in f.record]
    assert gaps, "no gap record accounts for the dropped records"
    assert all(g["reason"] == "buffer_full" for g in gaps)
    assert all(g["gap"]["records"] == g["gap"]["to_seq"] - g["gap"]["from_seq"] + 1 for g in gaps)
    # Every record ever committed is either still held or inside a gap's seq range.
    held = {f.seq for f in frames}
    ranges = [(g["gap"]["from_seq"], g["gap"]["to_seq"]) for g in gaps]
    for seq in range(1, buf.last_seq + 1):
        assert seq in held or any(a <= seq <= b for a, b in ranges), seq
    # A sink that acked nothing resumes after the dropped range and learns of it.
    reader = BufferReader(buf, "a")
    first = await reader.next_batch(10, 1 << 20, linger=0)
    reader.close()
    assert first is not None
    assert first.gap is not None
    assert first.gap[0] == 1
    assert first.first_seq == first.gap[1] + 1
    await run.close()


async def test_fsync_interval_gathers_records_into_few_commits(tmp_path: Path) -> None:
    run = await start(tmp_path, BufferConfig(fsync="interval", fsync_interval=0.2))
    for i in range(10):
        await run.buffer.emit(pending(10, start=i * 10))
    await eventually(lambda: run.buffer.last_seq == 100, timeout=10, what="100 committed")
    await run.close()
    frames = stored(tmp_path)
    assert len(frames) == 101
    assert_chain(frames, run.buffer.stream_id)
    assert len(segment.list_segments(tmp_path / "buffer")) == 1


async def test_a_read_that_meets_segments_dropped_meanwhile_goes_on_after_them(
    tmp_path: Path,
) -> None:
    """drop_oldest deletes segments a lagging sink has not read, without waiting for it. The
    reader's thread can meet that after ``next_batch`` checked (a read already under way): it
    goes on after the dropped range and declares it, instead of raising StateError out of the
    sink's task."""
    config = BufferConfig(segment_bytes=4096, max_bytes=3 * 4096, when_full="drop_oldest")
    run = await start(tmp_path, config)
    buf = run.buffer
    await run.commit(pending(10, size=100))
    reader = BufferReader(buf, "a")
    first = await reader.next_batch(5, 1 << 20, linger=0)
    assert first is not None
    assert (first.last_seq, first.gap) == (5, None)
    for i in range(20):  # far past max_bytes: the segment the reader is in goes, unread
        await run.commit(pending(20, start=10 + i * 20, size=100))
    base, base_h = buf.base_seq, buf.base_h
    assert base > 5
    # As the reader's thread runs it once next_batch has looked for dropped records.
    batch = await asyncio.to_thread(reader._read, 1000, 1 << 20)
    reader.close()
    assert batch.gap == (6, base)
    assert (batch.first_seq, batch.prev_h) == (base + 1, base_h)
    assert batch.records
    assert [orjson.loads(r)["seq"] for r in batch.records] == list(
        range(base + 1, batch.last_seq + 1)
    )
    await run.close()
