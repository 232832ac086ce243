"""The write-ahead log: commit, chain, checkpoints, acks, deletion and every recovery rule."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.buffer import segment
from agent.buffer.reader import Batch, BufferReader
from agent.buffer.wal import Buffer
from agent.config import BufferConfig
from agent.errors import StateError
from agent.record import expected_h, genesis
from agent.sources import Checkpoint
from tests.buffer.harness import SINKS, Running, assert_chain, pending, start, stored
from tests.support import eventually


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    run = await start(tmp_path)
    yield run
    if not run.task.done():
        await run.close()


async def test_committed_records_are_chained_and_survive_reopen(tmp_path: Path) -> None:
    run = await start(tmp_path)
    await run.commit(pending(100))
    stream = run.buffer.stream_id
    await run.close()
    run = await start(tmp_path)
    assert run.buffer.stream_id == stream
    await run.commit(pending(5, start=100))
    await run.close()
    frames = stored(tmp_path)
    # 100 records, seal, 5 records, seal: one chain across the restart.
    assert len(frames) == 107
    assert_chain(frames, stream)
    kinds = [orjson.loads(f.record).get("type") for f in frames]
    assert kinds[100] == "seal"
    assert kinds[-1] == "seal"


async def test_checkpoints_are_recovered_from_frames(tmp_path: Path) -> None:
    run = await start(tmp_path)
    await run.commit(pending(7))
    await run.close()
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.checkpoints_for("s") == {"1:2": Checkpoint("s", "1:2", 70, "/var/log/x")}
        assert buffer.checkpoints_for("other") == {}
    finally:
        buffer.stop()


async def test_torn_tail_frame_is_truncated_on_open(tmp_path: Path) -> None:
    run = await start(tmp_path)
    await run.commit(pending(10))
    await run.close()
    (_, path), *_ = segment.list_segments(tmp_path / "buffer")
    size = path.stat().st_size
    before_seal = segment.scan(path).frames[-2].end
    os.truncate(path, size - 5)  # cut into the seal frame
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.last_seq == 10
        assert buffer.recovery.truncated_bytes == size - 5 - before_seal
        assert path.stat().st_size == before_seal
        assert not buffer.recovery.quarantined
    finally:
        buffer.stop()


async def test_flipped_byte_in_committed_frame_is_quarantined_as_gap(tmp_path: Path) -> None:
    run = await start(tmp_path)
    await run.commit(pending(10))
    await run.close()
    (_, path), *_ = segment.list_segments(tmp_path / "buffer")
    frames = segment.scan(path).frames
    data = bytearray(path.read_bytes())
    data[frames[4].end + 20] ^= 0xFF  # inside frame seq 6
    path.write_bytes(bytes(data))
    run = await start(tmp_path)
    assert run.buffer.recovery.quarantined == [path.name + ".bad"]
    assert (path.parent / (path.name + ".bad")).exists()
    await run.close()
    records = [orjson.loads(f.record) for f in stored(tmp_path)]
    assert [r["seq"] for r in records[:5]] == [1, 2, 3, 4, 5]
    gap = records[5]
    assert gap["type"] == "gap"
    assert gap["reason"] == "buffer_corrupt"
    assert gap["gap"]["bytes"] > 0
    assert_chain(stored(tmp_path), run.buffer.stream_id)


WHOLE_CP = segment.encode_checkpoint(Checkpoint("s", "1:2", 10, "/var/log/x"))


@pytest.mark.parametrize(
    ("frames", "lost_from", "offset"),
    [
        # A compact checkpoint takes source, key and path from the whole one before it...
        ([(WHOLE_CP, False), (b"20", True), (b"30", True), (WHOLE_CP, False)], 0, 10),
        ([(WHOLE_CP, False), (b"20", True), (b"", False), (b"40", True)], 0, 40),
        # ...and is corruption without one, or when it is no offset.
        ([(WHOLE_CP, False), (b"20", True), (b"3x", True), (WHOLE_CP, False)], 3, 20),
        ([(WHOLE_CP, False), (b"", True), (WHOLE_CP, False)], 2, 10),
        ([(b"10", True), (WHOLE_CP, False)], 1, None),
        # A whole one without an offset is corruption too.
        ([(WHOLE_CP, False), (b'{"s":"s","k":"1:2"}', False), (WHOLE_CP, False)], 2, 10),
        # Checkpoints that do not read (hostile or damaged bytes whose frame checksum holds):
        # corruption, quarantined; not an error that stops the agent.
        *(
            ([(WHOLE_CP, False), (bad, compact), (WHOLE_CP, False)], 2, 10)
            for bad, compact in [
                (b"007", True),
                (b"-", True),
                (b"9" * 32_767, True),
                (b"1" * 21, True),
                (b"18446744073709551616", True),  # past what JSON reads as an int
                (b'{"s":"s","k":"1:2","p":"/x","o":1', False),
                (b'{"s":"\xff","k":"1:2","p":"/x","o":1}', False),
                (b'{"k":"1:2","p":"/x","o":1}', False),
                (b'["s","1:2","/x","o":1]', False),
                (b'{"s":"s","k":"1:2","p":"/x","o":"1"}', False),
                (b'{"s":"s","k":"1:2","p":"/x","o":true}', False),
                (b'{"s":"s","k":"1:2","p":"/x","o":1.5}', False),
                (b'{"s":"s","k":2,"p":"/x","o":1}', False),
            ]
        ),
        # ...also in the last frame: its checksum held, so it is no torn write to cut off.
        ([(WHOLE_CP, False), (b"", True)], 2, 10),
        ([(WHOLE_CP, False), (b'{"o":1}', False)], 2, 10),
    ],
)
def test_compact_checkpoints_are_read_from_the_whole_one_before_them(
    tmp_path: Path, frames: list[tuple[bytes, bool]], lost_from: int, offset: int | None
) -> None:
    directory = tmp_path / "buffer"
    directory.mkdir()
    path = directory / segment.segment_name(1)
    path.write_bytes(
        b"".join(
            segment.encode(seq, bytes(32), cp, b'{"seq":%d}' % seq, compact=compact)
            for seq, (cp, compact) in enumerate(frames, 1)
        )
    )
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.recovery.lost_from_seq == lost_from
        assert buffer.recovery.quarantined == ([path.name + ".bad"] if lost_from else [])
        assert buffer.last_seq == (lost_from - 1 if lost_from else len(frames))
        held = buffer.checkpoints_for("s")
        want = {} if offset is None else {"1:2": Checkpoint("s", "1:2", offset, "/var/log/x")}
        assert held == want
    finally:
        buffer.stop()


def _bare(seq: int, record: bytes) -> bytes:
    return segment.encode(seq, bytes([seq]) * 32, b"", record, bare=True)


def _overrun(seq: int) -> bytes:
    """A frame whose checkpoint length passes its body, its checksum right."""
    body = segment.BODY_HEAD.pack(seq, bytes(32), 500) + b'{"seq":%d}' % seq
    return segment.HEADER.pack(len(body), zlib.crc32(body)) + body


@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize(
    "bad",
    [
        *(_bare(2, record) for record in [b"", b"}", b"{}", b"x}", b'{"seq":2', b'{"seq":2}\n']),
        _overrun(2),
    ],
)
def test_a_frame_that_does_not_read_is_corruption_even_last(
    tmp_path: Path, bad: bytes, last: bool
) -> None:
    """A bare frame's record must be a JSON object other than ``{}`` to take its h back
    (``segment.dress``), and a checkpoint must lie within its frame. A frame whose checksum
    holds yet does not read is what was written (damaged or hostile state): recovery
    quarantines from it and declares the loss, also when it is the last frame, which is no
    torn write to cut off (its seq would be reused, with no gap). Every reader refuses it."""
    directory = tmp_path / "buffer"
    directory.mkdir()
    path = directory / segment.segment_name(1)
    good = _bare(1, b'{"seq":1}')
    path.write_bytes(good + bad + (b"" if last else _bare(3, b'{"seq":3}')))
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.recovery.lost_from_seq == 2
        assert buffer.recovery.quarantined == [path.name + ".bad"]
        assert buffer.last_seq == 1
    finally:
        buffer.stop()
    reason = "checkpoint overruns frame" if bad == _overrun(2) else "bare record is not"
    data = good + bad
    copy = tmp_path / "frames"
    copy.write_bytes(data)

    def iterated() -> None:
        fd = os.open(copy, os.O_RDONLY)
        try:
            list(segment.iter_frames(fd, 0, len(data)))
        finally:
            os.close(fd)

    readers: list[Callable[[], object]] = [
        lambda: segment.parse_run(data, 10),
        lambda: segment.parse_run_py(data, 10),
        *(
            functools.partial(
                gather, data, 0, bytearray(), bytearray(), want=9, max_bytes=1 << 20, strict=False
            )
            for gather in (segment.gather_run, segment.gather_run_py)
        ),
        iterated,
    ]
    for read in readers:
        with pytest.raises(segment.CorruptFrameError, match=reason) as caught:
            read()
        assert (caught.value.offset, caught.value.intact) == (len(good), True)


async def test_frames_written_before_bare_records_read_on_and_bare_ones_follow(
    tmp_path: Path,
) -> None:
    """A buffer an older agent wrote (each record stored in its wire form, the seq word
    unflagged) opens as it did; the writer appends bare frames after them, in the same
    segment, and one chain runs through both, read back alike by scan and a sink's reader."""
    run = await start(tmp_path)
    await run.commit(pending(5))
    await run.close()
    (_, path), *_ = segment.list_segments(tmp_path / "buffer")
    older = b""  # the same frames as an older agent made them
    scanned = segment.scan(path)
    assert scanned.corrupt is None
    assert not scanned.torn
    data, start_at = path.read_bytes(), 0
    for _ in scanned.frames[:-1]:  # the last is the close's seal: cut, as if never written
        frame = segment.parse_frame(data, start_at)
        assert frame is not None
        cp, compact = frame.checkpoint, frame.compact
        older += segment.encode(frame.seq, frame.h, cp, frame.record, compact=compact)
        start_at = frame.end
    path.write_bytes(older)
    run = await start(tmp_path)
    await run.commit(pending(5, start=5))
    reader = BufferReader(run.buffer, "a")
    batch = await reader.next_batch(100, 1 << 20, linger=0)
    reader.close()
    await run.close()
    frames = stored(tmp_path)
    assert_chain(frames, run.buffer.stream_id)
    records = [orjson.loads(f.record) for f in frames]
    lines = [r["msg"] for r in records if "type" not in r]  # not the seal, nor a notice
    assert lines == [f"line {i}" for i in range(10)]
    assert [r["msg"] for r in records[:5]] == lines[:5]
    words = []
    data, start_at = path.read_bytes(), 0
    while start_at < len(data):
        words.append(segment.BODY_HEAD.unpack_from(data, start_at + segment.HEADER.size)[0])
        start_at += segment.HEADER.size + segment.HEADER.unpack_from(data, start_at)[0]
    assert [w & segment.BARE for w in words[:5]] == [0] * 5
    assert all(w & segment.BARE for w in words[5:])
    assert batch is not None
    assert bytes(batch.body[batch.head_room :]) == b"".join(
        f.record + b"\n" for f in frames[: batch.last_seq]
    )


async def test_segments_are_deleted_only_when_every_sink_acked(tmp_path: Path) -> None:
    config = BufferConfig(segment_bytes=4096)
    run = await start(tmp_path, config)
    for i in range(10):
        await run.commit(pending(20, start=i * 20))
    segments = segment.list_segments(tmp_path / "buffer")
    assert len(segments) > 3
    buf = run.buffer
    second_last = buf.segments[-2]
    await buf.ack("a", buf.last_seq, buf.last_h)
    assert len(segment.list_segments(tmp_path / "buffer")) == len(segments)
    await buf.ack("b", second_last.last_seq, second_last.last_h)
    left = segment.list_segments(tmp_path / "buffer")
    assert [p for _, p in left] == [buf.segments[-1].path]
    assert buf.base_seq == second_last.last_seq
    await run.close()
    # The checkpoint of deleted frames survives in the summary.
    reopened = Buffer.open(tmp_path, config, SINKS)
    try:
        assert reopened.checkpoints_for("s")["1:2"].offset == 2000
        assert reopened.cursors["b"][0] == second_last.last_seq
    finally:
        reopened.stop()


async def test_missing_cursor_file_resends_from_oldest_record_held(tmp_path: Path) -> None:
    run = await start(tmp_path)
    await run.commit(pending(10))
    await run.buffer.ack("a", 4, stored(tmp_path)[3].h)
    await run.close()
    (tmp_path / "buffer" / "cursors" / "a.json").unlink()
    (tmp_path / "buffer" / "cursors" / "b.json").write_bytes(b"{not json")
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.cursors["a"] == (0, genesis(buffer.stream_id))
        assert buffer.cursors["b"] == (0, genesis(buffer.stream_id))
    finally:
        buffer.stop()


@pytest.mark.parametrize(
    "acked",
    ["9223372036854775808", "100000000000000000000000000000", "2.5", "true", '"3"'],
    ids=["past the protocol", "a float orjson made", "a fraction", "a bool", "a string"],
)
async def test_a_cursor_whose_seq_is_not_one_resends_from_the_oldest(
    tmp_path: Path, acked: str
) -> None:
    # 2**63 was taken: the chain jumped there and the writer died on its first record
    # (OverflowError), on every start.
    run = await start(tmp_path)
    await run.commit(pending(3))
    h = stored(tmp_path)[1].h
    await run.close()
    cursor = tmp_path / "buffer" / "cursors" / "a.json"
    cursor.write_text(f'{{"acked": {acked}, "h": "{h.hex()}"}}')
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.cursors["a"] == (0, genesis(buffer.stream_id))
        assert buffer.last_seq == 4  # 3 records and the seal: the chain goes on from there
    finally:
        buffer.stop()


CP = {"source": "app", "key": "1:2:ab", "offset": 10, "path": "/var/log/app.log"}


@pytest.mark.parametrize(
    "summary",
    [
        {"base_seq": 2**63, "base_h": "00" * 32, "checkpoints": []},
        {"base_seq": -1, "base_h": "00" * 32, "checkpoints": []},
        {"base_seq": 3, "base_h": "00", "checkpoints": []},
        *(
            {"base_seq": 3, "base_h": "00" * 32, "checkpoints": [{**CP, field: value}]}
            for field, value in (("key", None), ("offset", -7), ("offset", 1.5))
        ),
    ],
    ids=[
        "seq past the protocol",
        "negative seq",
        "short chain hash",
        "key null",
        "offset negative",
        "offset a fraction",
    ],
)
async def test_a_checkpoint_summary_out_of_range_is_a_state_error(
    tmp_path: Path, summary: dict[str, object]
) -> None:
    run = await start(tmp_path)
    await run.close()
    (tmp_path / "buffer" / "checkpoints.json").write_bytes(orjson.dumps(summary))
    with pytest.raises(StateError, match=r"checkpoints\.json is malformed"):
        Buffer.open(tmp_path, BufferConfig(), SINKS)


async def test_stale_tmp_state_file_is_ignored(tmp_path: Path) -> None:
    run = await start(tmp_path)
    await run.commit(pending(3))
    await run.buffer.ack("a", 2, stored(tmp_path)[1].h)
    await run.close()
    cursors = tmp_path / "buffer" / "cursors"
    (cursors / "a.json.tmp").write_bytes(b'{"acked": 999, "h": "zz"}')
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.cursors["a"][0] == 2
        assert not (cursors / "a.json.tmp").exists()
    finally:
        buffer.stop()


async def test_second_agent_on_same_state_dir_is_refused(running: Running, tmp_path: Path) -> None:
    with pytest.raises(StateError, match="in use"):
        Buffer.open(tmp_path, BufferConfig(), SINKS)


async def test_buffer_directory_is_private(running: Running, tmp_path: Path) -> None:
    assert (tmp_path / "buffer").stat().st_mode & 0o777 == 0o700
    for _, path in segment.list_segments(tmp_path / "buffer"):
        assert path.stat().st_mode & 0o777 == 0o600


async def test_reader_batches_are_consecutive_and_linked(running: Running) -> None:
    buf = running.buffer
    await running.commit(pending(250))
    reader = BufferReader(buf, "a")
    batches: list[Batch] = []
    while reader.position < buf.last_seq:
        batch = await reader.next_batch(100, 1 << 20, linger=0)
        assert batch is not None
        batches.append(batch)
    reader.close()
    assert [(b.first_seq, b.last_seq) for b in batches] == [(1, 100), (101, 200), (201, 250)]
    prev = genesis(buf.stream_id)
    for batch in batches:
        assert batch.size == sum(map(len, batch.records))  # counted by the reader as it reads
        assert batch.ndjson == b"".join(record + b"\n" for record in batch.records)
        assert batch.count == len(batch.records) == batch.last_seq - batch.first_seq + 1
        assert batch.prev_h == prev
        for raw, h in zip(batch.records, batch.hashes, strict=True):
            assert expected_h(prev, orjson.loads(raw)) == h
            prev = h
        assert batch.last_h == prev


def bytes_read() -> int:
    """What this process has read from files and sockets so far (the kernel's count)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


async def test_reader_reads_each_frame_from_the_file_once(running: Running) -> None:
    """Batches that end inside a read window: the next batch starts from the frames the last
    read holds, not from a read of them again (a batch of 30 KB from a window that holds them all
    read the rest again each time). The batches are the same as ever, with every record once."""
    await running.commit(pending(3000))
    reader = BufferReader(running.buffer, "a")
    before = bytes_read()
    batches = []
    for more in (1000, 0):  # records committed after a read: after what it holds
        while reader.position < running.buffer.last_seq:
            batch = await reader.next_batch(10_000, 30_000, linger=0)
            assert batch is not None
            batches.append(batch)
            if len(batches) == 3 and more:
                await running.commit(pending(more, 3000))
    read = bytes_read() - before
    reader.close()
    size = sum(info.size for info in running.buffer.segments)
    assert len(batches) > 10
    assert [b.first_seq for b in batches] == [1] + [b.last_seq + 1 for b in batches[:-1]]
    assert [r for b in batches for r in b.records] == [
        frame.record for frame in stored(running.buffer.directory.parent)
    ]
    assert size <= read < 1.5 * size


async def test_a_failed_read_leaves_no_window_to_take_frames_from(running: Running) -> None:
    """A frame bigger than the read window: the reader reads the window, finds no complete
    frame and reads again into a bigger one. When that read fails (EIO), the bytes it held
    are gone with the old window: the next batch reads the file again, and the frame comes
    whole (it was taken from the new, zeroed window: a corrupt frame of length 0)."""
    await running.commit(pending(1) + pending(1, 1, size=1_500_000))
    reader = BufferReader(running.buffer, "a")
    first = await reader.next_batch(1, 1 << 30, linger=0)
    assert first is not None
    assert first.count == 1
    calls = []

    def failing(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
        calls.append(offset)
        if len(calls) == 2:  # the read into the grown window
            raise OSError(errno.EIO, "injected")
        return os.preadv(fd, buffers, offset, flags)

    reader.preadv = failing
    with pytest.raises(OSError, match="injected"):
        await reader.next_batch(10, 1 << 30, linger=0)
    reader.preadv = os.preadv
    big = await reader.next_batch(10, 1 << 30, linger=0)
    reader.close()
    assert big is not None
    assert (big.first_seq, big.count) == (2, 1)
    assert orjson.loads(big.records[0])["msg"] == "line 1" + "x" * 1_500_000


async def test_reader_crosses_segments_and_split_halves_link(tmp_path: Path) -> None:
    run = await start(tmp_path, BufferConfig(segment_bytes=4096))
    await run.commit(pending(300))
    reader = BufferReader(run.buffer, "a")
    batch = await reader.next_batch(1000, 1 << 20, linger=0)
    reader.close()
    assert batch is not None
    assert (batch.first_seq, batch.last_seq) == (1, 300)
    left, right = batch.split()
    assert (left.first_seq, left.last_seq, right.first_seq, right.last_seq) == (1, 150, 151, 300)
    assert right.prev_h == left.last_h == batch.hashes[149]
    assert left.records + right.records == batch.records
    assert bytes(left.ndjson) + right.ndjson == batch.ndjson  # a newline after each record
    assert (left.count, right.count, left.size + right.size) == (150, 150, batch.size)
    assert left.hash_blob + right.hash_blob == batch.hash_blob == b"".join(batch.hashes)
    await run.close()


async def test_reader_rewinds_to_an_earlier_seq(running: Running) -> None:
    await running.commit(pending(20))
    reader = BufferReader(running.buffer, "a")
    first = await reader.next_batch(20, 1 << 20, linger=0)
    assert first is not None
    assert await asyncio.to_thread(reader.rewind, 9)
    again = await reader.next_batch(5, 1 << 20, linger=0)
    reader.close()
    assert again is not None
    assert again.first_seq == 10
    assert again.prev_h == first.hashes[8]


async def test_a_batch_full_by_bytes_does_not_linger_for_more_records(running: Running) -> None:
    """A sink asks for up to 10,000 records or 4 KiB. Once a batch showed how big records are,
    as many as fill 4 KiB make a full batch, and next_batch takes them at once. (It waited for
    10,000 records: with this linger of an hour, the test would time out.)"""
    await running.commit(pending(100, size=100))
    reader = BufferReader(running.buffer, "a")
    first = await reader.next_batch(10_000, 4096, linger=0)
    assert first is not None
    assert 0 < first.count < 50  # cut by bytes
    wait = reader.next_batch(10_000, 4096, linger=3600)
    batch = await asyncio.wait_for(wait, timeout=60)
    reader.close()
    assert batch is not None
    assert batch.first_seq == first.last_seq + 1
    assert batch.size >= 4096


class FakeClock:
    """The buffer's clock, set by the test; counts the reads made on the test's loop (the
    reader's: the writer reads it in a worker thread)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.loop_reads = 0
        self._loop_thread = threading.get_ident()

    def __call__(self) -> float:
        self.loop_reads += threading.get_ident() == self._loop_thread
        return self.now


async def test_records_committed_a_linger_ago_ship_without_waiting(running: Running) -> None:
    """``linger`` bounds how long a record waits for a fuller batch, from its commit: the last
    records of a backlog, committed longer ago, ship at once. (They waited a whole linger once
    the reader reached them: with this one of an hour, the test would time out.)"""
    clock = running.buffer.clock = FakeClock()
    await running.commit(pending(3))
    clock.now += 3601
    reader = BufferReader(running.buffer, "a")
    batch = await asyncio.wait_for(reader.next_batch(100, 1 << 20, linger=3600), timeout=60)
    reader.close()
    assert batch is not None
    assert (batch.first_seq, batch.count) == (1, 3)


async def test_records_just_committed_wait_for_a_fuller_batch(running: Running) -> None:
    clock = running.buffer.clock = FakeClock()
    await running.commit(pending(3))
    clock.now += 3599  # a second of the linger is left: more records come meanwhile
    reader = BufferReader(running.buffer, "a")
    task = asyncio.create_task(reader.next_batch(100, 1 << 20, linger=3600))
    await eventually(lambda: clock.loop_reads > 0, timeout=30, what="the reader to linger")
    await running.commit(pending(97, start=3))
    batch = await asyncio.wait_for(task, timeout=60)
    reader.close()
    assert batch is not None
    assert (batch.first_seq, batch.count) == (1, 100)


async def test_commit_times_are_never_earlier_than_the_commit(running: Running) -> None:
    """What a lingering reader asks: the time of the commit holding a seq; once every sink
    acked it, a later commit's time (a later time only shortens no wait)."""
    clock = running.buffer.clock = FakeClock()
    for at in (1.0, 2.0, 3.0):
        clock.now = at
        await running.commit(pending(10))
    buffer = running.buffer
    assert [buffer.committed_at(seq) for seq in (1, 10, 11, 20, 21, 30)] == [1, 1, 2, 2, 3, 3]
    assert buffer.committed_at(31) is None
    await running.ack_all(15)
    assert [buffer.committed_at(seq) for seq in (1, 15, 16, 21)] == [2, 2, 2, 3]
    await running.ack_all(30)
    assert buffer.committed_at(30) is None


async def test_reader_returns_none_once_closed_and_read(tmp_path: Path) -> None:
    run = await start(tmp_path)
    await run.commit(pending(3))
    await run.buffer.close("test")
    await run.task
    reader = BufferReader(run.buffer, "a")
    batch = await reader.next_batch(100, 1 << 20, linger=0)
    assert batch is not None
    assert batch.last_seq == 4
    assert await reader.next_batch(100, 1 << 20, linger=0) is None
    reader.close()
    await asyncio.to_thread(run.buffer.stop)


async def test_fsync_always_commits_every_record(tmp_path: Path) -> None:
    run = await start(tmp_path, BufferConfig(fsync="always"))
    await run.commit(pending(5))
    await run.close()
    assert_chain(stored(tmp_path), run.buffer.stream_id)
    assert len(stored(tmp_path)) == 6


async def test_record_the_encoder_refuses_ships_as_a_stand_in(tmp_path: Path) -> None:
    # A transform bug (here: nesting past orjson's 255 levels) must not stop the writer: the
    # line ships without the parsed fields, tagged, and the chain and checkpoints go on.
    deep: dict[str, object] = {}
    for _ in range(300):
        deep = {"a": deep}
    items = pending(3)
    bad = items[1].record
    bad.update({"ts": "2026-01-01T00:00:00.000000Z", "json": deep, "tags": ["x", 7]})
    bad["log"] = {"file": {"path": "/var/log/x"}, "offset": 10}
    run = await start(tmp_path)
    await run.commit(items)
    assert run.buffer.stats.unencodable == 1
    stream = run.buffer.stream_id
    await run.close()
    frames = stored(tmp_path)
    assert_chain(frames, stream)
    record = orjson.loads(frames[1].record)
    assert record["msg"] == "line 1"
    assert record["ts"] == "2026-01-01T00:00:00.000000Z"
    assert record["log"] == {"file": {"path": "/var/log/x"}, "offset": 10}
    assert record["tags"] == ["x", "unencodable"]
    assert "Recursion limit" in record["error"]["message"]
    assert "json" not in record
    buffer = Buffer.open(tmp_path, BufferConfig(), SINKS)
    try:
        assert buffer.checkpoints_for("s")["1:2"].offset == 30  # past the bad line's
    finally:
        buffer.stop()
