"""The write-ahead log: the group-commit writer, sink cursors, acks and deletion.

See ``agent/buffer/__init__.py`` for the on-disk layout and the rules. Ownership: the writer
task (``Buffer.run``) is the only code that appends; it does the blocking part (chain hashing,
encoding, write, fsync) in a worker thread, one commit at a time. Segment metadata, the chain
head and the checkpoint map are shared with reader and ack paths under
``self.lock``; they are updated only after the fsync that makes them true. Deleting segments
(acks, ``drop_oldest``) is serialized by ``self._delete_lock``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import cast

import orjson

from agent.buffer import chain, segment, special
from agent.buffer.directory import CURSORS, cp_dict, load_cursor, lock, save_cursor, stream_id
from agent.buffer.recovery import SUMMARY, RecoveryReport, recover, truncate
from agent.buffer.segment import SegmentInfo
from agent.config import BufferConfig
from agent.record import Record
from agent.retry import Backoff
from agent.sources import Checkpoint, EncodedRun, Item, Pending, PlainRun, record_count
from agent.statefile import fsync_dir, make_private_dir, write_all, write_json

log = logging.getLogger(__name__)
_SOURCE_KEY = itemgetter(0, 1)  # a Checkpoint's (source, key): the checkpoint map's key
_FIRST = itemgetter(0)  # a commit time's last seq: what committed_at looks it up by
# The frames buffer kept from commit to commit (chain.link's ``out``) is dropped after a commit
# that grew it past this: one huge commit must not pin its size for the agent's life.
_KEEP_FRAMES_BUFFER = 4 * 1024 * 1024
# Commits whose time is kept for ``committed_at`` (lingering sinks ask it), ~110 bytes each:
# at a few hundred commits a second under load, seconds of them, far more than a linger. A
# reader further behind is told the oldest one's time, later than its own: at worst it waits a
# whole linger it need not have, never more.
_COMMIT_TIMES = 1024


class SegmentIO:
    """The writer's I/O seam: tests inject failures (EIO, ENOSPC) by overriding it."""

    def write(self, fd: int, data: bytes | memoryview) -> None:
        write_all(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


@dataclass
class BufferStats:
    records: int = 0  # committed by this process
    bytes: int = 0
    dropped_records: int = 0  # when_full = "drop_oldest"
    write_errors: int = 0
    gaps: int = 0
    unencodable: int = 0  # records shipped as special.unencodable stand-ins


class _WriteFailedError(Exception):
    def __init__(self, done: int, cause: OSError) -> None:
        super().__init__(str(cause))
        self.done = done  # items of the commit that are durable despite the failure
        self.cause = cause


class Buffer:
    """The agent's durable buffer. Create with :meth:`open` (blocking: use a thread)."""

    def __init__(
        self, directory: Path, config: BufferConfig, stream_id: str, io: SegmentIO | None = None
    ) -> None:
        self.directory = directory
        self.config = config
        self.stream_id = stream_id
        self.io = io or SegmentIO()
        self.lock = threading.Lock()
        self._delete_lock = threading.Lock()
        state = recover(directory, stream_id)
        self.segments: list[SegmentInfo] = state.segments
        self.last_seq, self.last_h = state.last_seq, state.last_h
        self.base_seq, self.base_h = state.base_seq, state.base_h
        self.checkpoints: dict[tuple[str, str], Checkpoint] = state.checkpoints
        self.recovery: RecoveryReport = state.report
        self.cursors: dict[str, tuple[int, bytes]] = {}
        self.stats = BufferStats()
        self.closed = False
        self.blocked = False  # waiting for acks because the buffer is full
        self.write_error = ""
        self._frames = bytearray()  # chain.link's out: writer thread only
        self._fd = -1
        self._lock_fd = -1
        self._closing = False
        self._backoff = Backoff(config.retry_initial, config.retry_max)
        # asyncio primitives bind to the running loop on first use, not here (Python >= 3.10).
        self._queue: asyncio.Queue[list[Item] | None] = asyncio.Queue(config.queue_batches)
        self.changed = asyncio.Condition()
        self._seal_reason = ""
        self._emitted = self._taken = self._committed = 0  # batches, for barrier()
        self._drop_gaps: list[Record] = []  # drop gap records not yet dropped themselves
        # (last seq, clock) of recent commits, oldest first, under ``lock``; what every sink
        # acked is taken off. ``clock`` is a seam for tests.
        self.clock: Callable[[], float] = time.monotonic
        self._commit_times: deque[tuple[int, float]] = deque(maxlen=_COMMIT_TIMES)

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, state_dir: Path, config: BufferConfig, sinks: list[str], io: SegmentIO | None = None
    ) -> Buffer:
        directory = state_dir / "buffer"
        make_private_dir(directory)
        make_private_dir(directory / CURSORS)
        lock_fd = lock(directory)
        try:
            buf = cls(directory, config, stream_id(directory), io)
            buf._lock_fd = lock_fd
            for sink in sinks:
                buf.cursors[sink] = load_cursor(directory, sink, buf.base_seq, buf.base_h)
            # A cursor beyond the log means records the collector holds were lost here (a
            # corrupt tail was cut off). Continuing the chain from it keeps seqs unique.
            ahead = max(buf.cursors.values(), default=(0, b""), key=lambda c: c[0])
            if ahead[0] > buf.last_seq:
                buf.recovery.lost_from_seq = buf.recovery.lost_from_seq or buf.last_seq + 1
                buf.recovery.lost_to_seq = ahead[0]
                buf.last_seq, buf.last_h = ahead
            buf._open_active()
        except BaseException:
            os.close(lock_fd)
            raise
        return buf

    def _open_active(self) -> None:
        if not self.segments:
            self._new_segment()
            return
        self._fd = os.open(self.segments[-1].path, os.O_WRONLY | os.O_APPEND)

    def _new_segment(self) -> None:
        path = self.directory / segment.segment_name(self.last_seq + 1)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            path.unlink()
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        info = SegmentInfo(self.last_seq + 1, path, self.last_seq, self.last_h, 0, time.time())
        with self.lock:
            self.segments.append(info)

    def checkpoints_for(self, source: str) -> dict[str, Checkpoint]:
        with self.lock:
            return {key: cp for (src, key), cp in self.checkpoints.items() if src == source}

    def forget_checkpoints(self, source: str, keys: Collection[str]) -> int:
        """Drop ``source``'s checkpoints ``keys`` (of files gone, ``sources/forget.py``) from the
        map; ``checkpoints.json`` loses them when segments are next deleted. A record of one
        still on its way in puts it back. Returns how many were held."""
        with self.lock:
            dropped = [self.checkpoints.pop((source, key), None) for key in keys]
        return sum(cp is not None for cp in dropped)

    # --- the writer task ----------------------------------------------------------------------

    async def emit(self, batch: Sequence[Item]) -> None:
        """Hand records to the writer; blocks while the queue is full (backpressure)."""
        if batch:
            self._emitted += 1
            await self._queue.put(list(batch))  # the writer's own: a commit extends it

    async def barrier(self) -> None:
        """Return once every batch emitted before this call is committed (or the buffer closed):
        a stopped source's checkpoints are then in the buffer, ready for its successor."""
        target = self._emitted
        async with self.changed:
            await self.changed.wait_for(lambda: self._committed >= target or self.closed)

    async def add_sink(self, sink: str) -> None:
        """A sink added by a config reload: it starts at its saved cursor, or the oldest record."""
        if sink not in self.cursors:
            self.cursors[sink] = await asyncio.to_thread(
                load_cursor, self.directory, sink, self.base_seq, self.base_h
            )

    async def remove_sink(self, sink: str) -> None:
        """A sink removed by a config reload: its cursor no longer holds segments back."""
        await asyncio.to_thread(self._remove_sink, sink)
        async with self.changed:
            self.changed.notify_all()

    def _remove_sink(self, sink: str) -> None:
        (self.directory / CURSORS / f"{sink}.json").unlink(missing_ok=True)
        with self._delete_lock:
            with self.lock:
                self.cursors.pop(sink, None)
                floor = min((s for s, _ in self.cursors.values()), default=self.last_seq)
                done = [s for s in self.segments[:-1] if s.last_seq <= floor]
            if done:
                self._delete(done)

    @property
    def closing(self) -> bool:
        """close() was called: the seal is (about to be) written, and nothing emitted now is
        committed."""
        return self._closing

    async def close(self, seal_reason: str) -> None:
        """Ask the writer to commit what is queued, append the seal and stop."""
        self._seal_reason = seal_reason
        self._closing = True
        async with self.changed:
            self.changed.notify_all()  # a writer blocked on a full buffer commits anyway
        await self._queue.put(None)

    async def run(self) -> None:
        """The single writer task: group-commits queued batches until closed."""
        if self.recovery.lost_from_seq:
            self.stats.gaps += 1
            await self._commit([Pending(special.recovery_gap(self.recovery), None)])
        closing = False
        while not closing:
            first = await self._queue.get()
            if first is None:
                break
            self._taken += 1
            items, closing = await self._collect(first)
            while items:
                items = [*await self._make_room(), *items]
                items = await self._commit(items, bounded=True)
            self._committed = self._taken
            async with self.changed:
                self.changed.notify_all()
        seal = special.seal(self._seal_reason, self.stats.records, self.last_seq)
        await self._commit([Pending(seal, None)])
        async with self.changed:
            self.closed = True
            self.changed.notify_all()

    async def _collect(self, items: list[Item]) -> tuple[list[Item], bool]:
        """Gather queued batches into one commit (up to ``max_commit_records`` records, a run
        counting as its lines); with fsync = "interval", wait for more."""
        limit = self.config.max_commit_records
        count = record_count(items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (
            self.config.fsync_interval if self.config.fsync == "interval" else 0
        )
        while count < limit:
            if not self._queue.empty():
                more = self._queue.get_nowait()
            elif loop.time() < deadline and not self._closing:
                try:
                    more = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                except TimeoutError:
                    break
            else:
                break
            if more is None:
                return items, True
            self._taken += 1
            items.extend(more)
            count += record_count(more)
        return items, False

    async def _make_room(self) -> list[Pending]:
        """Apply ``when_full``: wait for acks ("block") or drop oldest segments with a gap."""
        if self.total_bytes() < self.config.max_bytes:
            return []
        if self.config.when_full == "block":
            self.blocked = True  # backpressure: the queue fills, sources stop reading
            log.warning("buffer full (max_bytes %d): waiting for acks", self.config.max_bytes)
            async with self.changed:
                await self.changed.wait_for(
                    lambda: self.total_bytes() < self.config.max_bytes or self._closing
                )
            self.blocked = False
            return []
        dropped = await asyncio.to_thread(self._drop_oldest)
        if dropped is None:
            return []
        return [Pending(self._drop_gap(*dropped), None)]

    async def _commit(self, items: list[Item], *, bounded: bool = False) -> list[Item]:
        """Make ``items`` durable; on a write error pause (backoff) and retry the rest.

        ``bounded``: stop at ``max_bytes`` and return what is left for after ``_make_room``
        (special records and everything at shutdown are committed regardless).
        """
        rest: list[Item] = []
        while items:
            failed, done = await self._try_write(items, bounded and not self._closing)
            if failed is None:
                rest = items[done:]
                break
            items = items[failed.done :]
            self.stats.write_errors += 1
            self.write_error = f"{failed.cause.strerror or failed.cause}"
            delay = self._backoff.next()
            log.error(
                "buffer write failed (%s); %d records wait; retrying in %.1fs",
                self.write_error,
                len(items),
                delay,
            )
            async with self.changed:
                self.changed.notify_all()
            await asyncio.sleep(delay)
            await asyncio.to_thread(self._repair)
        if self.write_error:
            log.warning("buffer writes recovered after %s", self.write_error)
            self.write_error = ""
            self._backoff.reset()
        async with self.changed:
            self.changed.notify_all()
        return rest

    async def _try_write(
        self, items: list[Item], bounded: bool
    ) -> tuple[_WriteFailedError | None, int]:
        try:
            done = await asyncio.to_thread(self._write, items, bounded)
        except _WriteFailedError as failed:
            return failed, failed.done
        return None, done

    # --- blocking write path (writer thread) ---------------------------------------------------

    def _write(self, items: list[Item], bounded: bool = False) -> int:
        """Chain, encode, write and fsync ``items`` (``bounded``: until ``max_bytes``).

        Returns how many were committed; raises _WriteFailedError(done, cause) on I/O errors.
        A run committed in part is replaced in ``items`` by what is left of it, once the part is
        durable: ``items[done:]`` is always what is left. The per-record work is ``chain.link``
        (compiled when built): one call per segment the commit touches, or per record with
        fsync = "always".
        """
        done = 0
        room = self.config.max_bytes - self.total_bytes() if bounded else 1 << 62
        limit, always = self.config.segment_bytes, self.config.fsync == "always"
        link, dumps, sort = chain.link, orjson.dumps, orjson.OPT_SORT_KEYS
        index = 0
        frames = self._frames
        try:
            while index < len(items) and room > 0:
                index, at, size, count, head, cps, segment_full = link(
                    items,
                    index,
                    self.last_seq,
                    self.last_h,
                    room,
                    self.segments[-1].size,
                    limit,
                    always,
                    dumps,
                    sort,
                    segment.checkpoint_prefix,
                    self._unencodable,
                    frames,
                    PlainRun,
                    EncodedRun,
                )
                if count:
                    with memoryview(frames) as view:  # released before the next link grows it
                        self._flush(view[:size], count, head, cps)
                    room -= size
                if at:  # stopped inside a run, whose lines before ``at`` are now durable
                    items[index] = cast(PlainRun | EncodedRun, items[index]).after(at)
                done = index
                if segment_full:
                    self._new_segment()
        except OSError as exc:
            # The error's traceback holds the views _flush and write_all made of ``frames``,
            # which stays exported while it lives: _commit keeps it across its retry, whose
            # link would get BufferError growing it. The retry takes a fresh buffer.
            self._frames = bytearray()
            raise _WriteFailedError(done, exc) from exc
        finally:
            if len(frames) > _KEEP_FRAMES_BUFFER:
                self._frames = bytearray()
        return done

    def _unencodable(self, record: Record, exc: TypeError) -> bytes:
        """The canonical encoding of ``special.unencodable``'s stand-in for ``record``."""
        self.stats.unencodable += 1
        log.error(
            "record from source %r cannot be encoded (%s): its line ships without parsed fields",
            record.get("src"),
            exc,
        )
        stand_in = special.unencodable(record, str(exc))
        return orjson.dumps(stand_in, option=orjson.OPT_SORT_KEYS)

    def _flush(self, data: memoryview, count: int, head: bytes, cps: list[Checkpoint]) -> None:
        """Write and fsync ``count`` records' frames, then publish them (the new chain head
        ``head``) and their checkpoints."""
        self.io.write(self._fd, data)
        self.io.fsync(self._fd)
        last_seq, last_h = self.last_seq + count, head
        with self.lock:
            active = self.segments[-1]
            active.size += len(data)
            active.last_seq, active.last_h = last_seq, last_h
            self.stats.records += count
            self.stats.bytes += len(data)
            self.last_seq, self.last_h = last_seq, last_h
            self._commit_times.append((last_seq, self.clock()))
            # In commit order: the last checkpoint per (source, key) wins.
            self.checkpoints.update(zip(map(_SOURCE_KEY, cps), cps, strict=True))

    def _repair(self) -> None:
        """After a failed write: cut the active segment back to its committed size."""
        active = self.segments[-1]
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        problem: OSError | None = None
        try:
            truncate(active.path, active.size)
        except OSError as exc:
            problem = exc  # the next write fails again and retries; nothing is lost
        if problem is not None:
            log.error("buffer repair of %s failed: %s", active.path, problem)
        self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)

    # --- special records -----------------------------------------------------------------------

    def _drop_gap(self, first: int, last: int, count: int) -> Record:
        """The gap record for dropped seqs ``first..last``. If the drop swallowed the gap record
        of an earlier drop, this one extends back over that range so no loss goes unstated."""
        swallowed = [g for g in self._drop_gaps if g.get("seq", last + 1) <= last]
        for gap in swallowed:
            first = min(first, gap["gap"]["from_seq"])
            self._drop_gaps.remove(gap)
        self.stats.gaps += 1
        record = special.drop_gap(first, last, self.config.max_bytes)
        self._drop_gaps.append(record)  # its seq is set when it is committed
        return record

    # --- cursors, acks and deletion ------------------------------------------------------------

    async def ack(self, sink: str, seq: int, h: bytes) -> None:
        """Record that ``sink``'s collector holds everything up to ``seq``; delete what all hold.

        A cursor that cannot be written (disk full, EIO) is retried with backoff: until it is
        durable the sink waits, and a crash meanwhile only means re-sending, never a skip.
        """
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        while True:
            try:
                await asyncio.to_thread(self._ack, sink, seq, h)
                break
            except OSError as exc:
                problem = exc
            self.stats.write_errors += 1
            delay = backoff.next()
            log.error("cursor of sink %s not saved (%s); retrying in %.1fs", sink, problem, delay)
            await asyncio.sleep(delay)
        async with self.changed:
            self.changed.notify_all()  # a writer blocked on a full buffer may go on

    def _ack(self, sink: str, seq: int, h: bytes) -> None:
        save_cursor(self.directory, sink, seq, h)
        with self._delete_lock:
            with self.lock:
                self.cursors[sink] = (seq, h)
                floor = min(s for s, _ in self.cursors.values())
                done = [s for s in self.segments[:-1] if s.last_seq <= floor]
                times = self._commit_times
                while times and times[0][0] <= floor:
                    times.popleft()
            if done:
                self._delete(done)

    def _drop_oldest(self) -> tuple[int, int, int] | None:
        """Delete whole oldest segments, acked or not, until under ``max_bytes``."""
        with self._delete_lock:
            with self.lock:
                total = sum(s.size for s in self.segments)
                done: list[SegmentInfo] = []
                for info in self.segments[:-1]:
                    if total < self.config.max_bytes:
                        break
                    done.append(info)
                    total -= info.size
            if not done:
                return None
            first = max(done[0].first_seq, self.base_seq + 1)
            self._delete(done)
        count = done[-1].last_seq - first + 1
        self.stats.dropped_records += count
        log.error("buffer full: dropped seq %d-%d (%d records)", first, done[-1].last_seq, count)
        return first, done[-1].last_seq, count

    def _delete(self, done: list[SegmentInfo]) -> None:
        """Delete leading segments ``done`` (caller holds ``_delete_lock``)."""
        with self.lock:
            summary = {
                "base_seq": done[-1].last_seq,
                "base_h": done[-1].last_h.hex(),
                "checkpoints": [cp_dict(cp) for cp in self.checkpoints.values()],
            }
        # The summary must be durable before the frames that carried its checkpoints vanish.
        write_json(self.directory / SUMMARY, summary)
        for info in done:
            info.path.unlink()
        fsync_dir(self.directory)
        with self.lock:
            del self.segments[: len(done)]
            self.base_seq, self.base_h = done[-1].last_seq, done[-1].last_h

    # --- observation ---------------------------------------------------------------------------

    @property
    def deleting(self) -> threading.Lock:
        """Held while segments are deleted (their files unlinked, then taken off ``segments``):
        a reader takes it to never meet a deletion half done."""
        return self._delete_lock

    def committed_at(self, seq: int) -> float | None:
        """When (``clock``) the commit holding ``seq`` was made, or a later one's time where
        that commit is no longer remembered: never earlier. None when no commit at or after it
        is remembered (not committed yet, or acked by every sink since and read again)."""
        with self.lock:
            times = self._commit_times
            index = bisect.bisect_left(times, seq, key=_FIRST)
            return times[index][1] if index < len(times) else None

    def queued(self) -> int:
        """Batches waiting for the writer (``queue_batches`` when backpressure holds sources)."""
        return self._queue.qsize()

    def total_bytes(self) -> int:
        with self.lock:
            return sum(s.size for s in self.segments)

    def backlog(self, sink: str) -> int:
        with self.lock:
            return self.last_seq - self.cursors.get(sink, (self.base_seq, b""))[0]

    def oldest_unacked_age(self) -> float:
        """Seconds since the segment holding the oldest unacked record was started (approx.)."""
        with self.lock:
            floor = min((s for s, _ in self.cursors.values()), default=self.last_seq)
            if floor >= self.last_seq:
                return 0.0
            info = next((s for s in self.segments if s.last_seq > floor), None)
            return 0.0 if info is None else max(0.0, time.time() - info.created)

    def stop(self) -> None:
        """Release file descriptors and the directory lock (blocking)."""
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1
