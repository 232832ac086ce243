"""The write-ahead log: recovery on open, the group-commit writer, sink cursors and deletion.

See ``agent/buffer/__init__.py`` for the on-disk layout and the rules. Ownership: the writer
task (``Buffer.run``) is the only code that appends; it does the blocking part (chain hashing,
encoding, write, fsync) in a worker thread, one commit at a time. Segment metadata, the chain
head and the checkpoint map are shared with reader and ack paths under ``self.lock``; they are
updated only after the fsync that makes them true.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agent.buffer import segment
from agent.config import BufferConfig
from agent.errors import StateError
from agent.record import Record, genesis, link, now_rfc3339
from agent.sources import Checkpoint, Pending
from agent.statefile import fsync_dir, make_private_dir, read_json, write_all, write_json

log = logging.getLogger(__name__)

SUMMARY = "checkpoints.json"
STREAM = "stream.json"
LOCK = "lock"
CURSORS = "cursors"


@dataclass
class SegmentInfo:
    first_seq: int
    path: Path
    last_seq: int  # first_seq - 1 while empty
    last_h: bytes
    size: int  # committed bytes


@dataclass
class Recovery:
    """What opening the buffer found and repaired, for the gap record and the operator."""

    truncated_bytes: int = 0
    quarantined: list[str] = field(default_factory=list)
    lost_from_seq: int = 0
    lost_bytes: int = 0


class Buffer:
    """The agent's durable buffer. Create with :meth:`open` (blocking: use a thread)."""

    def __init__(self, directory: Path, config: BufferConfig, stream_id: str) -> None:
        self.directory = directory
        self.config = config
        self.stream_id = stream_id
        self.lock = threading.Lock()
        self.segments: list[SegmentInfo] = []
        self.last_seq = 0
        self.last_h = genesis(stream_id)
        self.base_seq = 0  # every seq <= base_seq has been deleted (acked by all sinks)
        self.base_h = self.last_h
        self.checkpoints: dict[tuple[str, str], Checkpoint] = {}
        self.cursors: dict[str, tuple[int, bytes]] = {}
        self.recovery = Recovery()
        self.records_committed = 0
        self.closed = False
        self._fd = -1
        self._lock_fd = -1
        # asyncio primitives bind to the running loop on first use, not here (Python >= 3.10).
        self._queue: asyncio.Queue[list[Pending] | None] = asyncio.Queue(config.queue_batches)
        self.changed = asyncio.Condition()
        self._seal_reason = ""

    # --- opening and recovery ------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, config: BufferConfig, sinks: list[str]) -> Buffer:
        directory = state_dir / "buffer"
        make_private_dir(directory)
        make_private_dir(directory / CURSORS)
        lock_fd = _lock(directory)
        stream = read_json(directory / STREAM)
        if stream is None:
            stream = {"stream_id": str(uuid.uuid4()), "created": now_rfc3339()}
            write_json(directory / STREAM, stream)
        if not isinstance(stream, dict) or not isinstance(stream.get("stream_id"), str):
            raise StateError(f"{directory / STREAM}: no stream_id")
        buf = cls(directory, config, stream["stream_id"])
        buf._lock_fd = lock_fd
        buf._load_summary()
        buf._recover_segments()
        for sink in sinks:
            buf.cursors[sink] = buf._load_cursor(sink)
        # A cursor beyond the log means records the collector holds were lost here (a corrupt
        # tail was cut off). Continuing the chain from the cursor keeps seqs unique downstream.
        ahead = max(buf.cursors.values(), default=(0, b""), key=lambda c: c[0])
        if ahead[0] > buf.last_seq:
            buf.recovery.lost_from_seq = buf.last_seq + 1
            buf.last_seq, buf.last_h = ahead
        buf._open_active()
        return buf

    def _load_summary(self) -> None:
        summary = read_json(self.directory / SUMMARY)
        if summary is None:
            return
        try:
            self.base_seq = int(summary["base_seq"])
            self.base_h = bytes.fromhex(summary["base_h"])
            self.last_seq, self.last_h = self.base_seq, self.base_h
            for cp in summary["checkpoints"]:
                self._remember(Checkpoint(cp["source"], cp["key"], int(cp["offset"]), cp["path"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{self.directory / SUMMARY} is malformed: {exc!r}") from exc

    def _recover_segments(self) -> None:
        found = segment.list_segments(self.directory)
        for index, (first, path) in enumerate(found):
            result = segment.scan(path)
            problem = result.corrupt is not None or (result.torn and index < len(found) - 1)
            if result.torn and not problem:
                self.recovery.truncated_bytes += path.stat().st_size - result.valid_end
                _truncate(path, result.valid_end)
            info = SegmentInfo(first, path, first - 1, self.last_h, result.valid_end)
            for frame in result.frames:
                info.last_seq, info.last_h = frame.seq, frame.h
                self._remember_frame(frame.checkpoint)
            if result.frames:
                self.last_seq, self.last_h = info.last_seq, info.last_h
            self.segments.append(info)
            if problem:
                self._quarantine(path, result.valid_end, [p for _, p in found[index + 1 :]])
                break

    def _quarantine(self, path: Path, keep: int, later: list[Path]) -> None:
        """Move the unreadable rest of the log aside as ``.bad`` files; it becomes a gap."""
        self.recovery.lost_from_seq = self.last_seq + 1
        bad = path.with_name(path.name + ".bad")
        data = path.read_bytes()[keep:]
        bad.write_bytes(data)
        _truncate(path, keep)
        self.recovery.quarantined.append(bad.name)
        self.recovery.lost_bytes += len(data)
        for other in later:
            self.recovery.lost_bytes += other.stat().st_size
            other.rename(other.with_name(other.name + ".bad"))
            self.recovery.quarantined.append(other.name + ".bad")
        fsync_dir(self.directory)
        log.error("buffer corruption: quarantined %s", self.recovery.quarantined)

    def _remember_frame(self, raw: bytes) -> None:
        if raw:
            cp = orjson.loads(raw)
            self._remember(Checkpoint(cp["s"], cp["k"], cp["o"], cp.get("p", "")))

    def _remember(self, cp: Checkpoint) -> None:
        self.checkpoints[(cp.source, cp.key)] = cp

    def _load_cursor(self, sink: str) -> tuple[int, bytes]:
        """A sink's acked position; missing or unusable -> the oldest position still held."""
        path = self.directory / CURSORS / f"{sink}.json"
        try:
            raw = read_json(path)
        except StateError:
            log.warning("cursor %s unreadable; re-sending from the oldest record held", path)
            raw = None
        if isinstance(raw, dict):
            try:
                seq, h = int(raw["acked"]), bytes.fromhex(raw["h"])
            except (KeyError, TypeError, ValueError):
                log.warning("cursor %s malformed; re-sending from the oldest record held", path)
            else:
                if seq >= self.base_seq and len(h) == 32:
                    return seq, h
        return self.base_seq, self.base_h

    def _open_active(self) -> None:
        if not self.segments:
            self._new_segment()
            return
        active = self.segments[-1]
        self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)

    def _new_segment(self) -> None:
        path = self.directory / segment.segment_name(self.last_seq + 1)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fsync_dir(self.directory)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        with self.lock:
            self.segments.append(
                SegmentInfo(self.last_seq + 1, path, self.last_seq, self.last_h, 0)
            )

    def checkpoints_for(self, source: str) -> dict[str, Checkpoint]:
        with self.lock:
            return {key: cp for (src, key), cp in self.checkpoints.items() if src == source}

    # --- the writer ----------------------------------------------------------------------------

    async def emit(self, batch: list[Pending]) -> None:
        """Hand records to the writer; blocks while the queue is full (backpressure)."""
        if batch:
            await self._queue.put(batch)

    async def close(self, seal_reason: str) -> None:
        """Ask the writer to commit what is queued, append the seal and stop."""
        self._seal_reason = seal_reason
        await self._queue.put(None)

    async def run(self) -> None:
        """The single writer task: group-commits queued batches until closed."""
        if self.recovery.lost_from_seq or self.recovery.quarantined:
            await self._commit([Pending(self._gap_record(), None)])
        closing = False
        while not closing:
            items = await self._queue.get()
            if items is None:
                break
            while len(items) < self.config.max_commit_records and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    closing = True
                    break
                items.extend(more)
            await self._commit(items)
        await self._commit([Pending(self._seal_record(), None)])
        async with self.changed:
            self.closed = True
            self.changed.notify_all()

    async def _commit(self, items: list[Pending]) -> None:
        await asyncio.to_thread(self._write, items)
        async with self.changed:
            self.changed.notify_all()

    def _write(self, items: list[Pending]) -> None:
        """Blocking: chain, encode, write and fsync ``items``; then publish them."""
        seq, prev = self.last_seq, self.last_h
        last_h = prev
        chunk: list[bytes] = []
        size = 0
        active = self.segments[-1]
        cps: list[Checkpoint] = []
        for item in items:
            seq += 1
            item.record["seq"] = seq
            prev, wire = link(prev, item.record)
            cp = item.checkpoint
            raw_cp = b"" if cp is None else _encode_cp(cp)
            frame = segment.encode(seq, prev, raw_cp, wire)
            if chunk and active.size + size + len(frame) > self.config.segment_bytes:
                self._flush(chunk, size, seq - 1, last_h, cps)
                chunk, size, cps = [], 0, []
                self._new_segment()
                active = self.segments[-1]
            chunk.append(frame)
            size += len(frame)
            if cp is not None:
                cps.append(cp)
            last_h = prev
            if self.config.fsync == "always":
                self._flush(chunk, size, seq, last_h, cps)
                chunk, size, cps = [], 0, []
        if chunk:
            self._flush(chunk, size, seq, last_h, cps)

    def _flush(
        self, chunk: list[bytes], size: int, last_seq: int, last_h: bytes, cps: list[Checkpoint]
    ) -> None:
        write_all(self._fd, b"".join(chunk))
        os.fsync(self._fd)
        with self.lock:
            active = self.segments[-1]
            active.size += size
            active.last_seq, active.last_h = last_seq, last_h
            self.records_committed += last_seq - self.last_seq
            self.last_seq, self.last_h = last_seq, last_h
            for cp in cps:
                self._remember(cp)

    def _gap_record(self) -> Record:
        rec = self.recovery
        return {
            "type": "gap",
            "ts": now_rfc3339(),
            "src": "tailseal",
            "reason": "buffer_corrupt" if rec.quarantined else "buffer_lost",
            "msg": f"buffer recovery lost {rec.lost_bytes} bytes of records",
            "gap": {"quarantined": rec.quarantined, "bytes": rec.lost_bytes},
        }

    def _seal_record(self) -> Record:
        return {
            "type": "seal",
            "ts": now_rfc3339(),
            "src": "tailseal",
            "reason": self._seal_reason,
            "msg": f"stream sealed: agent stopped ({self._seal_reason})",
            "seal": {"records": self.records_committed, "prev_seq": self.last_seq},
        }

    # --- cursors, acks and deletion -------------------------------------------------------------

    async def ack(self, sink: str, seq: int, h: bytes) -> None:
        """Record that ``sink``'s collector holds everything up to ``seq``; delete what all hold."""
        await asyncio.to_thread(self._ack, sink, seq, h)

    def _ack(self, sink: str, seq: int, h: bytes) -> None:
        write_json(self.directory / CURSORS / f"{sink}.json", {"acked": seq, "h": h.hex()})
        with self.lock:
            self.cursors[sink] = (seq, h)
            floor = min(s for s, _ in self.cursors.values())
            done = [s for s in self.segments[:-1] if s.last_seq <= floor]
            if not done:
                return
            summary = {
                "base_seq": done[-1].last_seq,
                "base_h": done[-1].last_h.hex(),
                "checkpoints": [_cp_dict(cp) for cp in self.checkpoints.values()],
            }
        # The summary must be durable before the frames that carried its checkpoints vanish.
        write_json(self.directory / SUMMARY, summary)
        for info in done:
            info.path.unlink()
        fsync_dir(self.directory)
        with self.lock:
            self.segments = self.segments[len(done) :]
            self.base_seq, self.base_h = done[-1].last_seq, done[-1].last_h

    def stop(self) -> None:
        """Release file descriptors and the directory lock (blocking)."""
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def backlog(self, sink: str) -> int:
        with self.lock:
            return self.last_seq - self.cursors.get(sink, (self.base_seq, b""))[0]


def _encode_cp(cp: Checkpoint) -> bytes:
    return orjson.dumps({"s": cp.source, "k": cp.key, "o": cp.offset, "p": cp.path})


def _cp_dict(cp: Checkpoint) -> dict[str, Any]:
    return {"source": cp.source, "key": cp.key, "offset": cp.offset, "path": cp.path}


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(directory: Path) -> int:
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StateError(f"{directory} is in use by another tailseal agent") from exc
    return fd
