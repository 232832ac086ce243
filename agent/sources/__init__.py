"""Sources: where records come from.

A source turns external input (a tailed file, the journal) into records plus a
**checkpoint**: the position the record advances. The checkpoint travels into the buffer in the
same frame as its record (DESIGN.md contract 2), so a position counts as consumed exactly when its
record is durable; on start a source is handed the checkpoints the buffer recovered and resumes
from them. A source never writes state files of its own.

Each source instance owns its own mutable state and is driven by its single ``run()`` task. It
hands records to the pipeline with ``await emit(batch)``; ``emit`` blocks when the buffer is full,
which is how backpressure reaches the source (it stops reading; files stay on disk).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from agent.compiled import load
from agent.record import Record


class Checkpoint(NamedTuple):
    """A source position: ``key`` identifies the input (e.g. a file identity), ``offset`` is the
    byte position just after the record it travels with. ``path`` is informational for files;
    for the journal it is the cursor, and ``offset`` counts entries (sources/journal.py).

    A named tuple, not a frozen dataclass: one is made per line, and a frozen dataclass costs
    twice as much to construct (bench/stages.py)."""

    source: str
    key: str
    offset: int
    path: str = ""


@dataclass(slots=True)
class Pending:
    """A record on its way to the buffer, with the checkpoint it advances (if any)."""

    record: Record
    checkpoint: Checkpoint | None


def _count_newlines(data: bytes, begin: int, end: int) -> int:
    return data.count(b"\n", begin, end)


# The newlines of a run's span: bytes.count searches a byte without memchr, ~8x slower.
_MODULE = load("agent.sources._speedups")
_newlines: Callable[[bytes, int, int], int] = (
    _count_newlines if _MODULE is None else _MODULE.newlines
)


class PlainRun:
    """Plain lines of one read chunk on their way to the buffer as one bytes, not a record each.

    A raw source (no parser, no multi-line grouping) hands a chunk of plain lines (ASCII, none
    longer than ``max_line_bytes``, no "\\r") on as one of these. Its records are exactly those
    :meth:`records` makes, the ones the file source's cut makes line by line: the line
    ``data[s:e]`` ("\\n" at ``e``) is ``{"ts": ts, "src": source, "msg": data[s:e].decode(),
    "log": {"file": {"path": path}, "offset": offset + s}}`` with ``Checkpoint(source, key,
    offset + e + 1, path)``. The buffer writer (``buffer/chain.py``) encodes them straight from
    ``data``, and the transform chain makes records only of the lines that may hold a secret: a
    clean line costs no Python object on its way to its frame.

    ``data[begin:end]`` are its lines, each ending in "\\n" (``begin`` < ``end``); ``data[0]``
    is at ``offset`` in the file (``data`` may go on past ``end``: the source's unterminated
    rest). ``head`` and ``tail`` are the canonical JSON (orjson, sorted keys) of its records up
    to the line's offset and after its seq: the same for all of them. Nothing mutates a run once
    made; ``after`` and ``part`` make new ones that share ``data``.
    """

    __slots__ = (
        *("_count", "begin", "data", "end", "head", "key", "offset", "path", "source"),
        *("tail", "ts"),
    )

    def __init__(  # noqa: PLR0917 -- the fields of a record, as cut_plain takes them
        self,
        data: bytes,
        begin: int,
        end: int,
        offset: int,
        ts: str,
        source: str,
        key: str,
        path: str,
        head_tail: tuple[bytes, bytes] | None = None,
        *,
        count: int = -1,
    ) -> None:
        if not 0 <= begin < end <= len(data) or data[end - 1] != 10:  # b"\\n"
            raise ValueError("a run holds whole lines: data[begin:end] must end in a newline")
        self.data, self.begin, self.end, self.offset = data, begin, end, offset
        self.ts, self.source, self.key, self.path = ts, source, key, path
        if head_tail is None:  # raises orjson's TypeError for a str it cannot encode (a surrogate)
            path_json = orjson.dumps(path)
            tail = b',"src":' + orjson.dumps(source) + b',"ts":' + orjson.dumps(ts) + b"}"
            head_tail = (b'{"log":{"file":{"path":' + path_json + b'},"offset":', tail)
        self.head, self.tail = head_tail
        self._count = count  # its lines, if the caller counted them (-1: counted when asked)

    @property
    def count(self) -> int:
        """How many lines (records) it holds."""
        if self._count < 0:
            self._count = _newlines(self.data, self.begin, self.end)
        return self._count

    def part(self, begin: int, end: int) -> PlainRun:
        """The lines ``data[begin:end]`` (whole lines of this run) as a run of their own."""
        return PlainRun(
            self.data, begin, end, self.offset, self.ts, self.source, self.key, self.path,
            (self.head, self.tail),
        )  # fmt: skip

    def after(self, at: int) -> PlainRun:
        """The lines from ``data[at]`` on (``at`` starts one of its lines)."""
        return self.part(at, self.end)

    def checkpoint_at(self, at: int) -> Checkpoint:
        """The checkpoint of the line that ends just before ``data[at]``."""
        return Checkpoint(self.source, self.key, self.offset + at, self.path)

    def line(self, begin: int, end: int) -> Pending:
        """The record of its line ``data[begin:end]`` (``end`` just after its newline)."""
        log = {"file": {"path": self.path}, "offset": self.offset + begin}
        msg = self.data[begin : end - 1].decode("ascii")
        record = {"ts": self.ts, "src": self.source, "msg": msg, "log": log}
        return Pending(record, Checkpoint(self.source, self.key, self.offset + end, self.path))

    def records(self) -> list[Pending]:
        """Its records, as the file source's cut makes them (one "file" dict shared)."""
        file = {"path": self.path}
        out: list[Pending] = []
        source, key, path, ts, offset = self.source, self.key, self.path, self.ts, self.offset
        at = self.begin
        for msg in self.data[self.begin : self.end - 1].decode("ascii").split("\n"):
            end = at + len(msg) + 1
            log = {"file": file, "offset": offset + at}
            record = {"ts": ts, "src": source, "msg": msg, "log": log}
            out.append(Pending(record, Checkpoint(source, key, offset + end, path)))
            at = end
        return out


# An EncodedRun's head per record: JSON bytes before seq, after it; the line's end in the file.
ENCODED_HEAD = struct.Struct("<IIQ")


class EncodedRun:
    """Records a parser made of a run's lines, already in their canonical JSON but for ``seq``.

    The syslog and auth parsers (compiled: ``encode_run`` in ``transforms/_speedups.c``) write
    the records of the lines they parse themselves straight into ``blob``, so that no Python
    object is made per line on its way to its frame. ``blob[begin:end]`` holds, per record, an
    ``ENCODED_HEAD`` (the lengths of its JSON before and after the place of ``"seq":N,``, and
    the file offset just after its line: its checkpoint's) then that JSON: the canonical
    encoding of the record with ``seq`` N is ``before + b'"seq":N,' + after``. Every record is
    of ``source``'s file ``key`` at ``path``. The buffer writer (``buffer/chain.py``) frames
    them; nothing mutates a run once made, ``after`` makes a new one that shares ``blob``.
    """

    __slots__ = ("_count", "begin", "blob", "end", "key", "path", "source")

    def __init__(  # noqa: PLR0917 -- the run's fields, as encode_run's caller has them
        self, blob: bytes, begin: int, end: int, source: str, key: str, path: str, count: int = -1
    ) -> None:
        if not 0 <= begin < end <= len(blob):
            raise ValueError("an encoded run holds at least one record of its blob")
        self.blob, self.begin, self.end = blob, begin, end
        self.source, self.key, self.path = source, key, path
        self._count = count

    def span_at(self, at: int) -> tuple[int, int, int, int]:
        """The record whose head is at ``blob[at]``: (start of its JSON, place of seq, end,
        checkpoint offset); ValueError if the blob does not hold it whole."""
        if self.end - at < ENCODED_HEAD.size:
            raise ValueError("an encoded run's blob ends inside a record's head")
        before, after, cp = ENCODED_HEAD.unpack_from(self.blob, at)
        start = at + ENCODED_HEAD.size
        if start + before + after > self.end:
            raise ValueError("an encoded run's blob ends inside a record")
        return start, start + before, start + before + after, cp

    def spans(self) -> Iterator[tuple[int, int, int, int]]:
        """Each record's ``span_at``, in order."""
        at = self.begin
        while at < self.end:
            span = self.span_at(at)
            yield span
            at = span[2]

    @property
    def count(self) -> int:
        """How many records it holds."""
        if self._count < 0:
            self._count = sum(1 for _ in self.spans())
        return self._count

    def canonical(self, start: int, split: int, end: int, seq: int) -> bytes:
        """The canonical encoding of the record at ``blob[start:end]`` (``spans``) as ``seq``."""
        return b"".join((self.blob[start:split], b'"seq":%d,' % seq, self.blob[split:end]))

    def after(self, at: int) -> EncodedRun:
        """The records from ``blob[at]`` on (``at`` starts one of its records' heads)."""
        return EncodedRun(self.blob, at, self.end, self.source, self.key, self.path)

    def checkpoint(self, offset: int) -> Checkpoint:
        """The checkpoint of its record whose line ends just before ``offset``."""
        return Checkpoint(self.source, self.key, offset, self.path)


# What a batch holds: records, runs of plain lines standing for theirs and, once parsed, runs of
# encoded records (never from a source: the transform chain makes them).
Item = Pending | PlainRun | EncodedRun
Emit = Callable[[Sequence[Item]], Awaitable[None]]
# The checkpoints a source resumes from: key -> last committed Checkpoint.
Checkpoints = Mapping[str, Checkpoint]


def materialize(batch: Sequence[Item]) -> list[Pending]:
    """``batch`` with each run of plain lines replaced by its records (a new list). An encoded
    run cannot be: its records were never made (TypeError)."""
    out: list[Pending] = []
    for item in batch:
        if isinstance(item, PlainRun):
            out.extend(item.records())
        elif isinstance(item, EncodedRun):
            raise TypeError("an encoded run's records cannot be made again")
        else:
            out.append(item)
    return out


def record_count(batch: Sequence[Item]) -> int:
    """How many records ``batch`` stands for."""
    return len(batch) + sum(item.count - 1 for item in batch if not isinstance(item, Pending))
