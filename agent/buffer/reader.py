"""A sink's view of the buffer: batches of committed records after the sink's cursor.

Each sink owns one ``BufferReader`` and is its only user, one call at a time (a cancelled
``next_batch`` returns only once its file read ended, so a reposition cannot race it). The
reader keeps its own descriptor and offset into the segment it is reading, so consecutive
batches cost one sequential read; it only ever reads up to the committed size the writer
published after fsync.

Records always come from the segment files: those just written are in the page cache, so a
reader close behind the writer costs a read call per batch. (The writer used to keep its last
4 MiB of records in memory as Python objects: making them cost more CPU than the reads they
saved, and under a backlog, where throughput matters, they were dropped unread.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import cast

from agent.buffer import segment
from agent.buffer.segment import SegmentInfo
from agent.buffer.wal import Buffer
from agent.threads import in_thread

_WINDOW = 1 << 20  # bytes of segment read and decoded at a time
# The window buffer is kept from read to read (a fresh 1 MiB ``bytes`` per read cost a page fault
# per 4 KiB of it); one grown past this for a huge frame is dropped after that read.
_KEEP_WINDOW = 4 * _WINDOW
# Room before a batch's records for the request's header line: a batch header with the host's
# fields is a few hundred bytes; a longer one is joined to the records instead.
HEAD_ROOM = 1024
_OVERSHOOT = 64 * 1024  # bytes a batch's body is sized beyond its room (the record ending it)
_MAX_RESERVE = 8 * _WINDOW  # the most a batch's body is sized for ahead of its records


class _DroppedError(Exception):
    """Records after the reader's position were deleted unread (``drop_oldest``): the buffer
    now starts after ``base``."""

    def __init__(self, base: int, base_h: bytes) -> None:
        super().__init__(f"records up to seq {base} were dropped")
        self.base, self.base_h = base, base_h


def _joined(
    before: tuple[int, int] | None, after: tuple[int, int] | None
) -> tuple[int, int] | None:
    """Two gaps, the second starting where the first ends, as one (either may be None)."""
    if before is None or after is None:
        return after or before
    return before[0], after[1]


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive records ``first_seq..last_seq``; ``prev_h`` is the chain value before them.

    The records are held as they ship: ``body`` is their wire forms, each followed by "\n" (a
    wire form holds no raw newline: it is JSON), and ``hash_blob`` their h, 32 bytes each, so a
    batch can be split without parsing. The reader appends both straight from the segment's
    frames (``segment.gather_run``), with no object per record; ``records`` and ``hashes`` make
    the lists for the rare paths that need one record (a split, a quarantine)."""

    first_seq: int
    last_seq: int
    prev_h: bytes
    last_h: bytes
    # The reader's bytearray: its records do not change once the batch is made; the sink writes
    # its header line into the head room before them (the same bytes each time).
    body: bytes | bytearray
    hash_blob: bytes
    # Seqs (first, last) this buffer dropped or lost just before first_seq: the sink declares
    # them to the collector so it can accept a batch that does not link to what it holds.
    gap: tuple[int, int] | None = None
    # The records' bytes (``body`` without its newlines and head room).
    size: int = -1
    # Bytes at the start of ``body`` before the records: room the sink may write its header
    # line into, right before them, so the request body is a view and not a copy (``native``).
    head_room: int = 0

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", len(self.body) - self.head_room - self.count)

    @classmethod
    def of(
        cls,
        first_seq: int,
        prev_h: bytes,
        records: list[bytes],
        hashes: list[bytes],
        gap: tuple[int, int] | None = None,
    ) -> Batch:
        """A batch of ``records`` (wire forms, at least one) and their ``hashes``."""
        body = b"\n".join([*records, b""])
        last_seq = first_seq + len(records) - 1
        return cls(first_seq, last_seq, prev_h, hashes[-1], body, b"".join(hashes), gap)

    @property
    def count(self) -> int:
        return len(self.hash_blob) // segment.DIGEST_SIZE

    @property
    def records(self) -> list[bytes]:
        return [bytes(record) for record in self.body[self.head_room :].split(b"\n")[:-1]]

    @property
    def ndjson(self) -> memoryview:
        """The records as they ship, each followed by a newline: ``body`` after its head room."""
        return memoryview(self.body)[self.head_room :]

    @property
    def hashes(self) -> list[bytes]:
        blob, size = self.hash_blob, segment.DIGEST_SIZE
        return [blob[at : at + size] for at in range(0, len(blob), size)]

    def split(self, k: int | None = None) -> tuple[Batch, Batch]:
        """Two consecutive parts, the first of ``k`` records (default: halves, for a collector
        that answered 413). A declared gap goes with the first part, which it precedes."""
        count = self.count
        k = count // 2 if k is None else k
        if not 0 < k < count:
            raise ValueError(f"cannot split {count} records after {k}")
        mid = self.first_seq + k - 1
        records, hashes = self.records, self.hashes
        return (
            Batch.of(self.first_seq, self.prev_h, records[:k], hashes[:k], self.gap),
            Batch.of(mid + 1, hashes[k - 1], records[k:], hashes[k:]),
        )


class BufferReader:
    def __init__(self, buffer: Buffer, sink: str) -> None:
        self.buffer = buffer
        self.sink = sink
        self.position, self.position_h = buffer.cursors[sink]
        self._segment: SegmentInfo | None = None
        self._fd = -1
        self._offset = 0
        self._buf = bytearray()  # the window's bytes: reader thread only (in_thread: one at a time)
        # The segment's bytes from _held_at held in _buf (_held of them): the frames a batch did
        # not take are read from there by the next one, not read from the file again.
        self._held_at = self._held = 0
        self.preadv = os.preadv  # reads of the segment (tests inject errors here)
        self._declared: tuple[int, int] | None = None  # a gap to declare with the next batch
        self._record_bytes = 0.0  # the mean record size of the last batch read (0: none yet)

    def seek(self, after_seq: int, after_h: bytes) -> None:
        """Continue after ``after_seq`` (a rewind after a 409, or a skip after an ack)."""
        self.position, self.position_h = after_seq, after_h
        self._close()

    async def next_batch(
        self, max_records: int, max_bytes: int, linger: float, drain: asyncio.Event | None = None
    ) -> Batch | None:
        """The next batch; waits for records. None once the buffer is closed and all read.

        With ``linger`` > 0 a small batch waits for more records (unless draining), trading a
        little latency for fewer, larger requests: until its first record was committed
        ``linger`` ago. A backlog's last records, committed long before, are not held back.
        """
        changed = self.buffer.changed
        gap: tuple[int, int] | None = None
        while True:
            async with changed:
                await changed.wait_for(lambda: self._available() > 0 or self.buffer.closed)
                if self._available() == 0:
                    if gap is not None:  # taken by this call: kept for a later batch, if any
                        self._declared = gap
                    return None
            full = self._full(max_records, max_bytes)
            if linger > 0 and self._available() < full and not self.buffer.closed:
                wait = self._linger_left(linger)
                if wait > 0:
                    await self._linger(full, wait, drain)
            gap = _joined(gap, self._skip_dropped())
            batch = await in_thread(self._read, max_records, max_bytes)
            if batch.count:
                self._record_bytes = batch.size / batch.count
            # The read itself may have gone past records dropped while it ran.
            gap = _joined(gap, batch.gap)
            if batch.count or batch.gap is None:  # else all it found was dropped: wait on
                break
        return batch if gap == batch.gap else dataclasses.replace(batch, gap=gap)

    def _full(self, max_records: int, max_bytes: int) -> int:
        """How many records make a full batch: ``max_records``, or fewer where records the size
        of the last batch's fill ``max_bytes`` first (1.5 MiB holds ~3,800 raw lines of 230
        bytes: a sink that waited for 10,000 records sat out its linger with a full batch)."""
        if self._record_bytes <= 0:
            return max_records
        return max(1, min(max_records, math.ceil(max_bytes / self._record_bytes)))

    def _linger_left(self, linger: float) -> float:
        """How much longer the next record may wait for a fuller batch."""
        committed = self.buffer.committed_at(self.position + 1)
        if committed is None:
            return linger
        return min(linger, committed + linger - self.buffer.clock())

    async def _linger(self, max_records: int, linger: float, drain: asyncio.Event | None) -> None:
        """Wait up to ``linger`` for ``max_records`` records (a full batch); drain mode
        (possibly switched on meanwhile, by a termination notice) ends the wait at once."""
        if drain is not None and drain.is_set():
            return

        async def more() -> None:
            async with self.buffer.changed:
                await self.buffer.changed.wait_for(
                    lambda: self._available() >= max_records or self.buffer.closed
                )

        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(more())]
        if drain is not None:
            waits.append(asyncio.ensure_future(drain.wait()))
        try:
            await asyncio.wait(waits, timeout=linger, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def _skip_dropped(self) -> tuple[int, int] | None:
        """Jump over records deleted before this sink acked them (``drop_oldest``)."""
        if self._declared is not None:
            declared, self._declared = self._declared, None
            return declared
        with self.buffer.lock:
            base, base_h = self.buffer.base_seq, self.buffer.base_h
        if self.position >= base:
            return None
        skipped = (self.position + 1, base)
        self.seek(base, base_h)
        return skipped

    def skip_rejected(self, batch: Batch) -> None:
        """Continue after ``batch``'s first record, which the collector will never take
        (quarantined by the sink): the next batch declares it as a gap, together with the gap
        ``batch`` itself declared (the collector stored nothing of it)."""
        seq = batch.first_seq
        self.seek(seq, batch.hash_blob[: segment.DIGEST_SIZE])
        self._declared = (batch.gap[0] if batch.gap is not None else seq, seq)

    def declare_gap_from(self, first: int) -> bool:
        """The collector lacks seqs from ``first`` on, which this buffer deleted unacknowledged:
        continue after the deleted range and declare ``first..base`` with the next batch."""
        with self.buffer.lock:
            base, base_h = self.buffer.base_seq, self.buffer.base_h
        if not first <= base:
            return False
        self.seek(base, base_h)
        self._declared = (first, base)
        return True

    def rewind(self, after_seq: int) -> bool:
        """Blocking: continue after ``after_seq`` (a 409 answer); False if it is not held."""
        if after_seq == self.buffer.base_seq:
            self.seek(after_seq, self.buffer.base_h)
            return True
        with self.buffer.lock:
            info = next((s for s in self.buffer.segments if s.last_seq >= after_seq), None)
            limit = 0 if info is None else info.size
        if info is None or info.first_seq > after_seq:
            return False
        fd = os.open(info.path, os.O_RDONLY)
        try:
            for frame in segment.iter_frames(fd, 0, limit):
                if frame.seq == after_seq:
                    self.seek(after_seq, frame.h)
                    return True
        finally:
            os.close(fd)
        return False

    def _available(self) -> int:
        return self.buffer.last_seq - self.position

    def _read(self, max_records: int, max_bytes: int) -> Batch:
        """The next batch from segment files: windows of frames, the records after the
        position appended to the batch's body as they are (``segment.gather_run``). Records
        dropped (``drop_oldest``) since ``next_batch`` looked end the batch, or, before any was
        read, are skipped: the batch's ``gap`` then says which."""
        body, hashes = bytearray(HEAD_ROOM), bytearray()
        count = size = 0
        first, prev = self.position + 1, self.position_h
        last_h = prev
        dropped: tuple[int, int] | None = None
        while count < max_records and size < max_bytes:
            try:
                info, limit = self._locate()
            except _DroppedError as gone:
                if count:
                    break  # they ship; the next batch starts after what was dropped
                dropped = _joined(dropped, (self.position + 1, gone.base))
                self.seek(gone.base, gone.base_h)
                first, prev = gone.base + 1, gone.base_h
                last_h = prev
                continue
            if info is None:
                break
            got = self._window(
                limit,
                body,
                hashes,
                want=max_records - count,
                room=max_bytes - size,
                strict=count > 0,
            )
            if not got.taken:
                if got.first_seq:  # a hole in seqs (only after recovery lost records): the
                    self._close()  # batch ends before it; the next read re-finds its place
                    break
                if got.skipped_end:  # all at or before the position (after a seek)
                    self._offset += got.skipped_end
                    continue
                if not self._next_segment(info):
                    break
                continue
            if got.first_seq != self.position + 1:  # after a hole, the batch's first record
                first, prev = got.first_seq, self.position_h
            count += got.taken
            size += got.taken_bytes
            self.position = got.last_seq
            self.position_h = last_h = cast(bytes, got.last_h)
            self._offset += got.end
        # The body is not copied into a bytes: nothing changes its records once they are the
        # batch's (the sink writes only into its head room).
        return Batch(
            first,
            self.position,
            prev,
            last_h,
            body,
            bytes(hashes),
            dropped,
            size=size,
            head_room=HEAD_ROOM,
        )

    def _window(
        self,
        limit: int,
        body: bytearray,
        hashes: bytearray,
        *,
        want: int,
        room: int,
        strict: bool,
    ) -> segment.Gathered:
        """``gather_run`` over the frames from ``_offset`` (up to ``limit``, the committed end):
        those still held from the last read, if they hold a complete frame (a batch ends inside
        a window: on raw lines, the window's rest was a quarter of what the reader read), else
        a window of ``_WINDOW`` bytes read from there, or more when one frame is bigger."""

        def gather(data: memoryview) -> segment.Gathered:
            return segment.gather_run(
                data,
                self.position,
                body,
                hashes,
                want=want,
                max_bytes=room,
                strict=strict,
                # What the batch may still take: no more than the committed frames give (a
                # bare record's wire form and newline are at most 22 bytes longer than its
                # frame, of 53 at least: under 1.5 times), and about its room (the last record
                # may overshoot it; a newline each); a huge batch grows again.
                reserve=min(
                    (limit - self._offset) * 3 // 2, room + want + _OVERSHOOT, _MAX_RESERVE
                ),
            )

        skip = self._offset - self._held_at
        if 0 <= skip < self._held:  # the segment's bytes do not change once committed
            with memoryview(self._buf) as view:
                run = gather(view[skip : self._held])
            if run.taken or run.skipped_end or run.first_seq:
                return run
        window = _WINDOW
        try:
            while True:
                self._held = 0  # until the read into _buf (which may be replaced) is done
                length = max(min(limit - self._offset, window), 0)
                if len(self._buf) < length:
                    self._buf = bytearray(length)
                with memoryview(self._buf) as view:
                    got = self.preadv(self._fd, [view[:length]], self._offset) if length else 0
                    self._held_at, self._held = self._offset, got
                    run = gather(view[:got])
                    if run.skipped_end or run.first_seq or got < window:
                        return run
                    frame = segment.HEADER.unpack_from(view)[0] + segment.HEADER.size
                window = max(window * 2, frame)
        finally:
            if len(self._buf) > _KEEP_WINDOW:
                self._buf = bytearray()
                self._held = 0

    def _locate(self) -> tuple[SegmentInfo | None, int]:
        """The segment holding the first record after ``position`` (opened) and its committed
        size; None when nothing after ``position`` is committed yet. _DroppedError when records
        after ``position`` were deleted. Under the buffer's deletion lock too: a deletion unlinks
        its files before it takes them off ``segments``, and the file of a listed segment must
        still be there to be opened."""
        buffer = self.buffer
        with buffer.deleting, buffer.lock:
            if self.position < buffer.base_seq:
                raise _DroppedError(buffer.base_seq, buffer.base_h)
            if self._segment is not None:
                return self._segment, self._segment.size
            info = next((s for s in buffer.segments if s.last_seq > self.position), None)
            if info is None:
                return None, 0
            self._open(info)
            return info, info.size

    def _next_segment(self, current: SegmentInfo) -> bool:
        """Move to the segment after ``current`` if it has been completed; else stay."""
        with self.buffer.lock:
            later = [s for s in self.buffer.segments if s.first_seq > current.first_seq]
        if not later or self._offset < current.size:
            return False
        self._close()
        return True

    def _open(self, info: SegmentInfo) -> None:
        self._close()
        self._segment = info
        self._fd = os.open(info.path, os.O_RDONLY)
        self._offset = 0

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._segment = None
        self._offset = 0
        self._held = 0  # another segment's bytes come next

    def close(self) -> None:
        self._close()
