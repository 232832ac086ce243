"""The file source: tails the files matched by globs and turns each line into a record.

Role in the pipeline: the first stage for auth, shell and API logs. Each complete line becomes one
record (``msg`` = the line, ``log`` = path and byte offset) handed to ``emit`` with its checkpoint
``(source, "st_dev:st_ino", offset just after the line)``; one ``emit`` per chunk read.

Invariants:
* Bytes count as consumed only through an emitted record that covers them, so a checkpoint is
  always the end of a record, in file order. An unterminated last line stays in memory,
  uncheckpointed, until its newline arrives, the file stops growing for ``partial_line_timeout``
  (then it ships tagged ``partial``) or the file leaves the glob set. A stop does not ship it:
  the next start re-reads it from the checkpoint.
* Nothing is dropped for its content: lines longer than ``max_line_bytes`` ship as ``split``
  parts, invalid UTF-8 ships replaced and tagged ``invalid_utf8``, NUL bytes ship as they are.
* A file is known by identity ``st_dev:st_ino``, not by name. A rename within the globs keeps
  tailing the same descriptor; a file that leaves the glob set (rotated away, deleted while open)
  is read to its end before its descriptor is closed, and whatever now has its name is a new file
  read from offset 0. A file that shrinks below our offset was truncated: it restarts at 0 and its
  next record is tagged ``truncated``.
* Every filesystem call (glob, stat, open, pread, close) runs in a worker thread; the event loop
  only awaits those threads, ``emit`` and the wake-up event.

State ownership: all mutable state (open files, unterminated lines, resume offsets) belongs to the
``run()`` task. Worker threads touch it only while ``run()`` awaits them, one at a time, and never
after ``run()`` returned: a cancelled await still waits for its thread. The watchdog thread touches
only a coalescing flag and wakes ``run()`` through ``loop.call_soon_threadsafe``.

Not covered yet (later issues): identity is device+inode only, without a fingerprint of the first
bytes, so a reused inode passes for the old file; copytruncate is a plain truncation, without a gap
record for lines lost between copy and truncate, and unnoticed when the file regrows past our
offset before we look; rotated siblings (``*.1``, ``*.gz``, ``*.xz``, ``*.zst``) are not excluded
automatically, so a glob that matches them tails them like any file; no multiline records, no
``max_open_files`` bound; what a writer appends to a file after it left the glob set and we read it
to its end is not read; writes to a file reached through a symlink into an unwatched directory
(Kubernetes ``/var/log/containers``) are seen by polling only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from agent.config import FileSourceConfig
from agent.record import Record, now_rfc3339
from agent.sources import Checkpoint, Checkpoints, Emit, Pending
from agent.sources.watch import Watcher

_log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")
# A round reads at most this many chunks of one file before the other files get their turn; the
# round then leaves the wake event set, so reading resumes at once.
_ROUND_CHUNKS = 16


async def _in_thread(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread`` whose cancellation waits for the thread, so that no worker mutates
    the source's state (or opens a descriptor nobody closes) after ``run()`` has returned."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def _utf8_cut(data: bytes, limit: int) -> int:
    """Where to cut ``data`` (longer than ``limit``) so the first part has at most ``limit``
    bytes: back off up to 3 bytes rather than cut inside a UTF-8 sequence."""
    for cut in range(limit, max(limit - 4, 0), -1):
        if data[cut] & 0xC0 != 0x80:  # not a continuation byte: a sequence starts here
            return cut
    return limit


@dataclass(slots=True)
class _TailedFile:
    """One open file: reading it and cutting its bytes into records. ``pending`` holds the bytes
    read after the last emitted record."""

    source: str
    max_line: int
    path: str
    key: str
    fd: int
    read_pos: int
    grew_at: float  # monotonic time we last read new bytes: the partial-line clock
    pending: bytes = b""
    part: int = 0  # "split" parts of the current line already emitted
    truncated: bool = False  # tag the next record

    @property
    def consumed(self) -> int:
        """The offset just after the last emitted record: where a restart resumes."""
        return self.read_pos - len(self.pending)

    def read(self, chunk: int, end: int | None) -> tuple[list[Pending], int, bool]:
        """Read one chunk (worker thread), up to ``end``: the size when this drain began, or
        ``None`` on its first call. Returns the records, ``end`` and whether more is left."""
        out: list[Pending] = []
        size = os.fstat(self.fd).st_size
        # All records of one read share its read time: one clock call per chunk, not per line.
        ts = now_rfc3339()
        if size < self.read_pos:  # truncated in place
            if self.pending:  # already read: ship it rather than drop it
                out.append(self.flush_partial(ts))
            self.read_pos, self.truncated, end = 0, True, size
        end = size if end is None else end
        want = min(chunk, end - self.read_pos)
        data = os.pread(self.fd, want, self.read_pos) if want > 0 else b""
        if data:
            self.grew_at = time.monotonic()
            self._cut(data, ts, out)
        return out, end, bool(data) and self.read_pos < end

    def flush_partial(self, ts: str) -> Pending:
        """Ship the unterminated line as it is, tagged "partial"."""
        part = self.part or None
        record = self._make(self.pending, self.consumed, self.read_pos, ts, part=part, partial=True)
        self.pending, self.part = b"", 0
        return record

    def _cut(self, data: bytes, ts: str, out: list[Pending]) -> None:
        """Append a record per line that ``data`` completes; keep the unterminated rest as
        ``pending``, minus the parts of it that are already too long."""
        lines = (self.pending + data).split(b"\n")
        offset = self.consumed
        self.read_pos += len(data)
        rest = lines.pop()
        source, key, path = self.source, self.key, self.path
        for raw in lines:
            end = offset + len(raw) + 1
            line = raw[:-1] if raw.endswith(b"\r") else raw
            # The common case is inlined: it runs for every line and sets the source's cost
            # per line. A line to tag or to split takes the general path.
            if self.part or self.truncated or len(line) > self.max_line:
                self._line(line, offset, end, ts, out)
            else:
                try:
                    msg = line.decode()
                except UnicodeDecodeError:
                    self._line(line, offset, end, ts, out)
                else:
                    log = {"file": {"path": path}, "offset": offset}
                    record = {"ts": ts, "src": source, "msg": msg, "log": log}
                    out.append(Pending(record, Checkpoint(source, key, end, path)))
            offset = end
        # max_line + 1: an unterminated line of exactly the limit may still end in "\r\n".
        self.pending, _ = self._split(rest, offset, ts, out, longer_than=self.max_line + 1)

    def _line(self, line: bytes, offset: int, end: int, ts: str, out: list[Pending]) -> None:
        """The records of one complete line (bytes ``offset`` to ``end``), split if too long."""
        line, start = self._split(line, offset, ts, out, longer_than=self.max_line)
        out.append(self._make(line, start, end, ts, part=self.part or None, partial=False))
        self.part = 0

    def _split(
        self, data: bytes, offset: int, ts: str, out: list[Pending], *, longer_than: int
    ) -> tuple[bytes, int]:
        """Emit "split" parts of at most ``max_line`` bytes off the front of ``data`` while it
        is ``longer_than`` bytes; return the rest and its offset."""
        while len(data) > longer_than:
            cut = _utf8_cut(data, self.max_line)
            out.append(
                self._make(data[:cut], offset, offset + cut, ts, part=self.part, partial=False)
            )
            self.part += 1
            data, offset = data[cut:], offset + cut
        return data, offset

    def _make(
        self, raw: bytes, offset: int, end: int, ts: str, *, part: int | None, partial: bool
    ) -> Pending:
        """One record for ``raw``: bytes ``offset`` to ``end`` of the file (newline included)."""
        tags = ["truncated"] if self.truncated else []
        self.truncated = False
        if part is not None:
            tags.append("split")
        if partial:
            tags.append("partial")
        try:
            msg = raw.decode()
        except UnicodeDecodeError:
            msg = raw.decode(errors="replace")
            tags.append("invalid_utf8")
        log: dict[str, object] = {"file": {"path": self.path}, "offset": offset}
        if part is not None:
            log["part"] = part
        record: Record = {"ts": ts, "src": self.source, "msg": msg, "log": log}
        if tags:
            record["tags"] = tags
        return Pending(record, Checkpoint(self.source, self.key, end, self.path))


class FileSource:
    """Tails ``config.paths`` (globs minus ``config.exclude``) until ``stop`` is set."""

    def __init__(
        self,
        name: str,
        config: FileSourceConfig,
        checkpoints: Checkpoints,
        emit: Emit,
        stop: asyncio.Event,
        *,
        observer_factory: Callable[[], BaseObserver] = Observer,
    ) -> None:
        self._name = name
        self._observer_factory = observer_factory  # a seam for the polling-fallback test
        self._config = config
        self._emit = emit
        self._stop = stop
        # Absolute, normalized patterns, as watchdog reports paths. Not resolve(): configured
        # names stay as they are even when they go through symlinks.
        self._patterns = [os.path.abspath(p) for p in config.paths]  # noqa: PTH100
        # identity -> offset to start at when that file is first opened (then forgotten).
        self._resume = {cp.key: cp.offset for cp in checkpoints.values() if cp.source == name}
        self._files: dict[str, _TailedFile] = {}
        self._warned: set[str] = set()  # paths and identities whose error was logged once
        self._wake = asyncio.Event()

    async def run(self) -> None:
        watcher = Watcher(self._name, self._patterns, self._wake, self._observer_factory)
        forward_stop = asyncio.create_task(self._forward_stop())
        try:
            await _in_thread(watcher.start)
            first = True
            while not self._stop.is_set():
                self._wake.clear()
                await self._round(watcher, first=first, final=False)
                first = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_wake()):
                        await self._wake.wait()
            # The final sweep: everything written before the stop ships now.
            await self._round(watcher, first=first, final=True)
        finally:
            forward_stop.cancel()
            for tailed in self._files.values():
                with contextlib.suppress(OSError):
                    os.close(tailed.fd)
            self._files.clear()
            await _in_thread(watcher.stop)

    async def _forward_stop(self) -> None:
        await self._stop.wait()
        self._wake.set()

    def _next_wake(self) -> float:
        """Seconds until the next round: the poll interval, or sooner when a partial line is
        due to be flushed."""
        timeout = self._config.poll_interval
        due = [f.grew_at for f in self._files.values() if f.pending]
        if due:
            left = min(due) + self._config.partial_line_timeout - time.monotonic()
            timeout = min(timeout, max(left, 0.0))
        return timeout

    async def _round(self, watcher: Watcher, *, first: bool, final: bool) -> None:
        """Rescan the globs, read every file (in the final sweep: to its end), retire the files
        that left the glob set, then (except in the final sweep) flush stale partial lines."""
        found = await _in_thread(self._discover, watcher, first)
        for tailed in list(self._files.values()):
            path = found.get(tailed.key)
            if path is None:
                await self._retire(tailed)
            else:
                tailed.path = path
                await self._drain(tailed, to_end=final)
        if not final:
            await self._flush_stale()

    def _discover(self, watcher: Watcher, first: bool) -> dict[str, str]:  # worker thread
        """Map identity -> path of every matching regular file, opening (and registering) the
        ones not tailed yet."""
        watcher.watch_new_roots()
        found: dict[str, str] = {}
        for path in self._match():
            try:
                st = Path(path).stat()
            except OSError:
                continue  # gone between glob and stat: the next round sees what replaced it
            key = f"{st.st_dev}:{st.st_ino}"
            if not stat.S_ISREG(st.st_mode) or key in found:
                continue  # FIFOs and devices would block a read; hard links are one file
            if key not in self._files:
                key = self._open(path, first) or key
            found[key] = path
        # Before any read: a write after this point must wake the next round.
        watcher.paths = frozenset(found.values())
        return found

    def _match(self) -> list[str]:
        paths: dict[str, None] = {}
        for pattern in self._patterns:
            # Path.glob takes no absolute patterns; glob.glob does, and "**" with recursive=True.
            for path in sorted(glob.glob(pattern, recursive=True)):  # noqa: PTH207
                if not any(fnmatch.fnmatchcase(path, ex) for ex in self._config.exclude):
                    paths[path] = None
        return list(paths)

    def _open(self, path: str, first: bool) -> str | None:  # worker thread
        """Open ``path`` and register it under the identity of what was opened (the name may
        have been rotated since it was stat'ed); return that identity."""
        try:
            # O_NONBLOCK: should the name turn into a FIFO after the stat, open must not hang.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            st = os.fstat(fd)
        except OSError as exc:
            self._warn_once(path, "cannot open %s: %s", path, exc)
            return None
        self._warned.discard(path)
        key = f"{st.st_dev}:{st.st_ino}"
        if key in self._files or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return key
        now = time.monotonic()
        tailed = _TailedFile(self._name, self._config.max_line_bytes, path, key, fd, 0, now)
        resume = self._resume.pop(key, None)
        if resume is not None and resume <= st.st_size:
            tailed.read_pos = resume
        elif resume is not None:
            tailed.truncated = True  # shorter than what was shipped: truncated meanwhile
        elif first and self._config.read_from == "end":
            tailed.read_pos = st.st_size
        self._files[key] = tailed
        return key

    async def _drain(self, tailed: _TailedFile, *, to_end: bool) -> bool:
        """Read ``tailed`` up to the size it has now, one ``emit`` per chunk. False when a read
        error made us close it instead."""
        end: int | None = None
        chunks, more = 0, True
        while more:
            if not to_end and chunks == _ROUND_CHUNKS:
                self._wake.set()  # the rest is read next round, after the other files
                return True
            try:
                batch, end, more = await _in_thread(tailed.read, self._config.read_chunk_bytes, end)
            except OSError as exc:
                await self._drop(tailed, exc)
                return False
            chunks += 1
            if batch:
                await self._emit(batch)
        return True

    async def _drop(self, tailed: _TailedFile, exc: OSError) -> None:
        """A read failed (EIO, a vanished network share): close the file but remember where it
        stood, so that the next round reopens it there instead of stopping the pipeline."""
        self._warn_once(tailed.key, "cannot read %s: %s", tailed.path, exc)
        self._resume[tailed.key] = tailed.consumed
        del self._files[tailed.key]
        await _in_thread(os.close, tailed.fd)

    async def _retire(self, tailed: _TailedFile) -> None:
        """``tailed`` left the glob set (rotated away or deleted): read what it still holds,
        ship its unterminated line (its newline can no longer reach us), then close it."""
        if not await self._drain(tailed, to_end=True):
            return
        if tailed.pending:
            await self._emit([tailed.flush_partial(now_rfc3339())])
        del self._files[tailed.key]
        await _in_thread(os.close, tailed.fd)

    async def _flush_stale(self) -> None:
        """Ship unterminated lines whose file has not grown for ``partial_line_timeout``."""
        since = time.monotonic() - self._config.partial_line_timeout
        stale = [f for f in self._files.values() if f.pending and f.grew_at <= since]
        if stale:
            ts = now_rfc3339()
            await self._emit([f.flush_partial(ts) for f in stale])

    def _warn_once(self, subject: str, message: str, *args: object) -> None:
        if subject not in self._warned:
            self._warned.add(subject)
            _log.warning("file source %s: " + message, self._name, *args)
