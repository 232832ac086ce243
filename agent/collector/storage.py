"""Stream storage behind the collector: the :class:`StreamStore` interface and its file backend.

:class:`FileStreamStore` keeps one directory per stream under ``<storage_dir>/streams/``:
``records.ndjson`` (the record lines exactly as received, append-only) and ``head.json`` (the
chain head and how many bytes of ``records.ndjson`` it covers). An append fsyncs the data, then
replaces ``head.json`` atomically, so after a crash the data file may run past its head but never
the reverse. Opening a stream repairs that: complete lines that continue the chain are adopted
(the data file is fsynced before the head covers them: they may never have been), anything else
(a torn last line, unverifiable bytes) is moved to a ``quarantine-<offset>.bin`` file and cut
off. Fsynced records are never lost and unverified bytes are never served. Each append also adds
entries to the stream's seq index (``index.py``: derived data, repaired on open), which lets
:meth:`FileStreamStore.read_records` seek to a seq range.

Callers verify records before appending; the store trusts them and only checks that ``last_seq``
adds up. Lines given as :class:`~agent.collector.lines.BodyLines` (the collector's: views of
the request body) are written as the body holds them, not joined from copies. All file I/O
runs in worker threads. The store's own event-loop task state (the head cache and one lock per
stream) is owned by whichever task calls it; an append, once started, finishes even if its
caller is cancelled, so the cache always matches the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import msgspec
import orjson

from agent.collector import index
from agent.collector.lines import BodyLines
from agent.errors import StateError
from agent.record import STREAM_ID, genesis, now_rfc3339, verifiable_h
from agent.statefile import fsync_dir, write_all, write_atomic

# Stored: ``sealed`` (the last record is a seal), else ``gap`` (the stream holds a gap record),
# else ``live``. ``silent`` is never stored: the server derives it at listing time.
StreamState = Literal["live", "sealed", "gap", "silent"]

RECORDS_FILE = "records.ndjson"
HEAD_FILE = "head.json"
SKIPS_FILE = "skips.ndjson"  # gaps the agent declared: where the chain restarts, and from what
FILE_MODE = 0o640

log = logging.getLogger("tailseal.collector")


def is_stream_id(value: str) -> bool:
    """True if ``value`` is a valid stream id (which also makes it a safe directory name)."""
    return STREAM_ID.fullmatch(value) is not None


class StreamHead(msgspec.Struct, frozen=True, kw_only=True):
    """What the collector holds of one stream; serialized as ``head.json``."""

    stream: str
    host: dict[str, Any]
    last_seq: int
    head: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]  # hex h(last_seq)
    size: int = msgspec.field(name="bytes")  # length of records.ndjson covered by this head
    state: StreamState
    updated: str
    gaps: int = 0  # gap records held (accounted loss)
    # Gaps declared in batch headers (skips.ndjson). Before this field, ``gaps`` counted them.
    skips: int = 0
    client: dict[str, Any] | None = None  # mTLS client certificate {cn, san} of the last append


class Skip(msgspec.Struct, frozen=True):
    """Seqs ``from_seq..to_seq`` the agent declared lost; the chain resumes from ``prev_h``."""

    from_seq: int
    to_seq: int
    prev_h: str


def stream_state(*, sealed: bool, gaps: int) -> StreamState:
    """The stored state of a stream (see :data:`StreamState`)."""
    if sealed:
        return "sealed"
    return "gap" if gaps else "live"


def parse_ts(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC timestamp as written by ``now_rfc3339``."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class StreamStore(Protocol):
    """Durable, append-only storage of verified streams (files today, a WORM store later)."""

    async def head(self, stream_id: str) -> StreamHead | None:
        """The stream's head, or None if nothing of it is stored."""

    async def append(
        self,
        stream_id: str,
        host: Mapping[str, Any],
        lines: Sequence[bytes],
        *,
        last_seq: int,
        head: str,
        state: StreamState,
        gaps: int = 0,
        client: Mapping[str, Any] | None = None,
        skip: Skip | None = None,
    ) -> StreamHead:
        """Durably store verified record lines that continue the stream; returns the new head.

        ``gaps`` is how many of ``lines`` are gap records; ``client`` the mTLS identity, if any;
        ``skip`` a gap the agent declared just before ``lines`` (recorded durably first).
        """

    async def list_streams(self) -> list[StreamHead]:
        """Heads of every stored stream, ordered by stream id."""

    async def read_records(
        self, stream_id: str, first_seq: int = 1, last_seq: int | None = None
    ) -> list[bytes]:
        """Stored record lines ``first_seq..last_seq`` (default: all), exactly as received."""

    async def close(self) -> None:
        """Wait for appends in progress."""


class FileStreamStore:
    """:class:`StreamStore` on a local file system (see the module docstring for the layout)."""

    def __init__(self, storage_dir: Path | str, index_every: int = index.EVERY) -> None:
        self._streams_dir = Path(storage_dir) / "streams"
        self._index_every = index_every
        self._heads: dict[str, StreamHead] = {}
        self._indexes: dict[str, list[index.Entry]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._appends: set[asyncio.Task[StreamHead]] = set()

    def stream_dir(self, stream_id: str) -> Path:
        if not is_stream_id(stream_id):
            raise ValueError(f"invalid stream id {stream_id!r}")
        return self._streams_dir / stream_id

    async def head(self, stream_id: str) -> StreamHead | None:
        async with self._lock(stream_id):
            return await self._load(stream_id)

    async def append(
        self,
        stream_id: str,
        host: Mapping[str, Any],
        lines: Sequence[bytes],
        *,
        last_seq: int,
        head: str,
        state: StreamState,
        gaps: int = 0,
        client: Mapping[str, Any] | None = None,
        skip: Skip | None = None,
    ) -> StreamHead:
        work = self._append(
            stream_id,
            dict(host),
            lines if isinstance(lines, BodyLines) else list(lines),
            last_seq=last_seq,
            head=head,
            state=state,
            gaps=gaps,
            client=dict(client) if client is not None else None,
            skip=skip,
        )
        task = asyncio.ensure_future(work)
        self._appends.add(task)
        task.add_done_callback(self._forget)
        # Shielded: a cancelled caller must not leave a write running outside the stream lock.
        return await asyncio.shield(task)

    async def list_streams(self) -> list[StreamHead]:
        names = await asyncio.to_thread(_list_dirs, self._streams_dir)
        heads = []
        for name in sorted(names):
            if not is_stream_id(name):
                continue
            try:
                head = await self.head(name)
            except StateError:
                # One damaged stream must not hide all the others; appends to it still fail.
                log.exception("stream unreadable", extra={"fields": {"stream": name}})
                continue
            if head is not None:
                heads.append(head)
        return heads

    async def read_records(
        self, stream_id: str, first_seq: int = 1, last_seq: int | None = None
    ) -> list[bytes]:
        async with self._lock(stream_id):
            held = await self._load(stream_id)
            if held is None:
                return []
            last = held.last_seq if last_seq is None else min(last_seq, held.last_seq)
            if first_seq > last:
                return []
            start_seq, offset = index.locate(self._indexes.get(stream_id, []), first_seq)
            path = self.stream_dir(stream_id) / RECORDS_FILE
            lines = await asyncio.to_thread(_read_lines, path, offset, held.size)
            if offset and _seq_of(lines[0]) != start_seq:
                # A plausible but wrong index entry (or one a declared gap shifted: the index
                # counts lines, see index.py): never serve the wrong records.
                log.warning("index entry is wrong", extra={"fields": {"stream": stream_id}})
                lines = await asyncio.to_thread(_read_lines, path, 0, held.size)
            # Picked by their own seq, not by position: a declared gap (skips.ndjson) leaves
            # seqs out, so the n-th line after an entry is not always its seq + n.
            return await asyncio.to_thread(_in_range, lines, first_seq, last)

    async def close(self) -> None:
        await asyncio.gather(*self._appends, return_exceptions=True)

    def _lock(self, stream_id: str) -> asyncio.Lock:
        self.stream_dir(stream_id)  # validates the id
        return self._locks.setdefault(stream_id, asyncio.Lock())

    def _forget(self, task: asyncio.Task[StreamHead]) -> None:
        self._appends.discard(task)
        if not task.cancelled():
            task.exception()  # the caller may be gone; the failure was logged by the server

    async def _load(self, stream_id: str) -> StreamHead | None:
        """The cached head, recovering the stream from disk on first access (lock held)."""
        held = self._heads.get(stream_id)
        if held is None:
            directory = self.stream_dir(stream_id)
            held = await asyncio.to_thread(_recover, directory, stream_id)
            if held is not None:
                self._indexes[stream_id] = await asyncio.to_thread(
                    index.load, directory, directory / RECORDS_FILE, held.size, self._index_every
                )
                self._heads[stream_id] = held
        return held

    async def _append(
        self,
        stream_id: str,
        host: dict[str, Any],
        lines: Sequence[bytes],
        *,
        last_seq: int,
        head: str,
        state: StreamState,
        gaps: int,
        client: dict[str, Any] | None,
        skip: Skip | None,
    ) -> StreamHead:
        async with self._lock(stream_id):
            held = await self._load(stream_id)
            held_seq, held_size = (held.last_seq, held.size) if held else (0, 0)
            first = held_seq + 1
            if skip is not None:
                if skip.from_seq != first or skip.to_seq < skip.from_seq:
                    raise ValueError(f"skip {skip} does not start after seq {held_seq}")
                first = skip.to_seq + 1  # ``gaps`` counts the gap record accounting for it
            if not lines or last_seq != first - 1 + len(lines):
                raise ValueError(f"{len(lines)} lines from seq {first} do not end at {last_seq}")
            stored = lines.stored if isinstance(lines, BodyLines) else None
            data = stored if stored is not None else b"\n".join([*lines, b""])
            new = StreamHead(
                stream=stream_id,
                host=host,
                last_seq=last_seq,
                head=head,
                size=held_size + len(data),
                state=state,
                updated=now_rfc3339(),
                gaps=(held.gaps if held else 0) + gaps,
                skips=(held.skips if held else 0) + (skip is not None),
                client=client if client is not None else (held.client if held else None),
            )
            directory = self.stream_dir(stream_id)
            entries = index.entries_for(first, held_size, lines, self._index_every)
            try:
                await asyncio.to_thread(_write_append, directory, data, entries, new, skip)
            except BaseException:
                # The disk may hold part of the append: recover from it on next access.
                self._heads.pop(stream_id, None)
                self._indexes.pop(stream_id, None)
                raise
            self._heads[stream_id] = new
            self._indexes.setdefault(stream_id, []).extend(entries)
            return new


# --- blocking file work (worker threads only) -----------------------------------------------------


def _list_dirs(directory: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(directory) if entry.is_dir()]
    except FileNotFoundError:
        return []


def _read_lines(path: Path, offset: int, size: int) -> list[bytes]:
    with path.open("rb") as file:
        file.seek(offset)
        data = file.read(size - offset)
    return data.split(b"\n")[:-1]


def _write_append(
    directory: Path,
    data: bytes | memoryview,
    entries: Sequence[index.Entry],
    new: StreamHead,
    skip: Skip | None = None,
) -> None:
    _ensure_dir(directory)
    if skip is not None:
        # Durable before the records it explains. A crash before the head moves leaves a marker
        # for records never acknowledged: the agent re-sends the same declared gap.
        _append_line(directory / SKIPS_FILE, msgspec.json.encode(skip) + b"\n")
    fd = os.open(directory / RECORDS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        view = memoryview(data)
        while view:  # a regular file may take a short write
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    index.append(directory, entries)  # between data and head: see index.py, crash safety
    _write_head(directory, new)


def _append_line(path: Path, line: bytes) -> None:
    existed = path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        fsync_dir(path.parent)


def read_skips(directory: Path) -> dict[int, Skip]:
    """Declared gaps of a stream, keyed by the first seq after each (repeats collapse)."""
    skips: dict[int, Skip] = {}
    try:
        raw = (directory / SKIPS_FILE).read_bytes()
    except FileNotFoundError:
        return skips
    for line in raw.splitlines():
        try:
            skip = msgspec.json.decode(line, type=Skip)
        except msgspec.DecodeError:
            continue  # a torn last line: its records were never acknowledged
        skips[skip.to_seq + 1] = skip
    return skips


def _ensure_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) durably: each new entry's parent is fsynced."""
    if directory.is_dir():
        return
    _ensure_dir(directory.parent)
    directory.mkdir(exist_ok=True)
    fsync_dir(directory.parent)


def _write_head(directory: Path, head: StreamHead) -> None:
    write_atomic(directory / HEAD_FILE, msgspec.json.encode(head) + b"\n", FILE_MODE)


def _read_head(directory: Path, stream_id: str) -> StreamHead | None:
    try:
        raw = (directory / HEAD_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        head = msgspec.json.decode(raw, type=StreamHead)
    except msgspec.DecodeError as exc:
        raise StateError(f"{directory / HEAD_FILE}: unreadable head: {exc}") from exc
    if head.stream != stream_id or head.last_seq < 0 or head.size < 0:
        raise StateError(f"{directory / HEAD_FILE}: head does not describe stream {stream_id}")
    return head


def _recover(directory: Path, stream_id: str) -> StreamHead | None:
    """Load a stream's head, adopting verified records written after it (see module doc)."""
    if not directory.is_dir():
        return None
    held = _read_head(directory, stream_id)
    path = directory / RECORDS_FILE
    size = path.stat().st_size if path.exists() else 0
    base_size = held.size if held else 0
    if size < base_size:
        raise StateError(f"{path}: {size} bytes, but its head covers {base_size}")
    if size == base_size:
        return held
    last_seq = held.last_seq if held else 0
    prev = bytes.fromhex(held.head) if held else genesis(stream_id)
    with path.open("rb") as file:
        file.seek(base_size)
        tail = file.read()
    adopted, used, prev, last, gaps = _adopt(tail, last_seq, prev)
    if used < len(tail):
        _quarantine(directory, base_size + used, tail[used:])
    log.warning(
        "stream recovered past its head",
        extra={"fields": {"stream": stream_id, "adopted": adopted, "cut": len(tail) - used}},
    )
    if not adopted:
        return held
    # Lines past the head need not be durable: the process may have died between an append's
    # write and its fsync, or the fsync failed (503). The head may cover them, and a resend be
    # acked as a repeat, only once they are.
    _fsync_file(path)
    sealed = last is not None and last.get("type") == "seal"
    new = StreamHead(
        stream=stream_id,
        host=held.host if held else {},
        last_seq=last_seq + adopted,
        head=prev.hex(),
        size=base_size + used,
        state=stream_state(sealed=sealed, gaps=(held.gaps + held.skips if held else 0) + gaps),
        updated=now_rfc3339(),
        gaps=(held.gaps if held else 0) + gaps,
        skips=held.skips if held else 0,
        client=held.client if held else None,
    )
    _write_head(directory, new)
    return new


def _adopt(
    tail: bytes, last_seq: int, prev: bytes
) -> tuple[int, int, bytes, dict[str, Any] | None, int]:
    """Walk complete lines of ``tail`` while they continue the chain.

    Returns (records adopted, bytes of ``tail`` they span, the new head digest, the last record,
    gap records among them).
    """
    adopted = used = gaps = 0
    last: dict[str, Any] | None = None
    while (end := tail.find(b"\n", used)) >= 0:
        try:
            record = orjson.loads(tail[used:end])
        except orjson.JSONDecodeError:
            break
        seq = last_seq + adopted + 1
        if not isinstance(record, dict) or not _is_seq(record.get("seq"), seq):
            break
        digest = verifiable_h(prev, record)
        if digest is None or record.get("h") != digest.hex():
            break
        adopted, used, prev, last = adopted + 1, end + 1, digest, record
        gaps += record.get("type") == "gap"
    return adopted, used, prev, last, gaps


def _in_range(lines: list[bytes], first_seq: int, last_seq: int) -> list[bytes]:
    """The lines whose seq is in ``first_seq..last_seq`` (stored seqs only increase)."""
    found = []
    for line in lines:
        seq = _seq_of(line)
        if type(seq) is not int or seq < first_seq:
            continue
        if seq > last_seq:
            break
        found.append(line)
    return found


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seq_of(line: bytes) -> object:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record.get("seq") if isinstance(record, dict) else None


def _is_seq(value: object, seq: int) -> bool:
    return type(value) is int and value == seq


def _quarantine(directory: Path, offset: int, junk: bytes) -> None:
    """Keep the bytes being cut off for forensics, then truncate the data file at ``offset``."""
    target = directory / f"quarantine-{offset}.bin"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        write_all(fd, junk)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)
    fd = os.open(directory / RECORDS_FILE, os.O_WRONLY)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
