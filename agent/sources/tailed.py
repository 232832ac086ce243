"""One tailed file of the file source: reading its bytes and cutting them into records.

Invariants:
* Bytes count as consumed only through a record that covers them: a checkpoint is always the end
  of a record, in file order. ``pending`` holds the bytes read after the last emitted record (an
  unterminated line); ``consumed`` is where a restart resumes.
* Nothing is dropped for its content: lines longer than ``max_line`` ship as ``split`` parts,
  invalid UTF-8 ships replaced and tagged ``invalid_utf8``, NUL bytes ship as they are.
* ``head`` is the file's first ``min(size, fingerprint_bytes)`` bytes and ``key`` the checkpoint
  key made from it (``identity.py``): set when the file is opened, upgraded once when a short file
  reaches ``fingerprint_bytes``, and made anew after a truncation (new content, new key).
* A truncation in place is noticed when the file is shorter than our read position, or (once per
  drain, and after every read that returned bytes) when its first bytes no longer equal ``head``:
  the file was truncated and regrew past our offset before we looked, or between the look at its
  size and the read. Reading restarts at 0, the next record is tagged ``truncated``, and the old
  generation is described in ``truncation`` for the source to recover from its copy or account
  with a ``gap`` record (``seen_size`` is the largest size we saw it have, counted only once its
  first bytes were found still there after the look: never the next generation's size).

State ownership: the file source's ``run()`` task owns every ``TailedFile``; its methods run in a
worker thread only while ``run()`` awaits them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

from agent.compiled import load
from agent.record import Record, now_rfc3339
from agent.sources import Checkpoint, Item, Pending, PlainRun
from agent.sources.identity import make_key, parse_key

Cut = Callable[
    [bytes, str, str, str, str, int, type[Pending], type[Checkpoint], list[Pending], int],
    int | None,
]


def cut_plain_py(  # noqa: PLR0917 -- positional, as the compiled cut_plain() it stands for
    data: bytes,
    ts: str,
    source: str,
    key: str,
    path: str,
    offset: int,
    pending: type[Pending],
    checkpoint: type[Checkpoint],
    out: list[Pending],
    max_line: int,
) -> int | None:
    """Append a record per line of ``data`` (ASCII; a last piece without a newline is left out),
    the first line at ``offset`` of the file; return the offset after the last line. If a line
    is longer than ``max_line`` (it ships in parts): None, and nothing appended.

    The common chunk's loop: one decode for the chunk, offsets by running sums, the same "file"
    object for all its records (nothing mutates it). ``cut_plain`` is this function compiled from
    ``_speedups.c`` where the package was installed with a C compiler; this one is the reference
    the tests hold it to, record for record, and the fallback where it was not built."""
    msgs = data.decode("ascii").split("\n")
    msgs.pop()  # the empty string after the last newline
    if max(map(len, msgs), default=0) > max_line:
        return None
    starts = list(accumulate([len(m) + 1 for m in msgs], initial=offset))
    file = {"path": path}
    out.extend(
        [
            pending(
                {"ts": ts, "src": source, "msg": msg, "log": {"file": file, "offset": at}},
                checkpoint(source, key, end, path),
            )
            for msg, at, end in zip(msgs, starts[:-1], starts[1:], strict=True)
        ]
    )
    return starts[-1]


def line_stats_py(data: bytes) -> tuple[int, int]:
    """How many lines of ``data`` end in "\\n", and the length of the longest of them (0 if
    none does): the reference for ``line_stats``, compiled as ``cut_plain`` is."""
    lines = data.split(b"\n")
    lines.pop()  # the piece after the last newline
    return len(lines), max(map(len, lines), default=0)


def _compiled() -> Cut | None:
    module = load("agent.sources._speedups")
    if module is None:
        return None
    compiled: Cut = module.cut_plain
    return compiled


_CUT = _compiled()
cut_plain: Cut = _CUT or cut_plain_py
_MODULE = load("agent.sources._speedups")
line_stats: Callable[[bytes], tuple[int, int]] = (
    line_stats_py if _MODULE is None else _MODULE.line_stats
)


def speedups() -> bool:
    """Whether the compiled cut of plain chunks is in use."""
    return _CUT is not None


def _utf8_cut(data: bytes, limit: int) -> int:
    """Where to cut ``data`` (longer than ``limit``) so the first part has at most ``limit``
    bytes: back off up to 3 bytes rather than cut inside a UTF-8 sequence."""
    for cut in range(limit, max(limit - 4, 0), -1):
        if data[cut] & 0xC0 != 0x80:  # not a continuation byte: a sequence starts here
            return cut
    return limit


@dataclass(frozen=True, slots=True)
class Truncation:
    """A generation of a file that was truncated in place: what we had read of it and what we
    know it held."""

    path: str
    key: str
    head: bytes
    read_to: int  # everything before this offset was shipped
    seen_size: int  # the largest size we saw: bytes up to here provably existed


@dataclass(slots=True)
class TailedFile:
    """One file we follow, open (``fd`` >= 0) or closed while idle (``fd`` == -1)."""

    source: str
    max_line: int
    fp_bytes: int
    path: str
    ident: str  # "dev:ino": how the source finds the file again
    fd: int
    read_pos: int
    grew_at: float  # monotonic time we last read new bytes: the partial-line and idle clock
    head: bytes = b""
    key: str = ""
    key_len: int = 0  # bytes of ``head`` that ``key`` covers
    seen_size: int = 0
    pending: bytes = b""
    part: int = 0  # "split" parts of the current line already emitted
    truncated: bool = False  # tag the next record
    truncation: Truncation | None = None  # set by read(), taken by the source
    left_at: float | None = None  # monotonic time it left the glob set; None while in it
    in_set_mtime: int = 0  # mtime (ns) when last seen in the glob set; 0 = never (an orphan)
    runs: bool = False  # cut plain chunks into a PlainRun, not a record per line

    @property
    def consumed(self) -> int:
        """The offset just after the last emitted record: where a restart resumes."""
        return self.read_pos - len(self.pending)

    def set_head(self, head: bytes, key: str = "") -> None:
        """The first bytes as read at open, and the key to resume under (default: a key made
        from them; also when ``head`` is longer than what ``key`` covers and complete)."""
        self.head = head
        parsed = parse_key(key) if key else None
        covered = parsed.length if parsed is not None else 0
        if key and not (len(head) == self.fp_bytes and covered < len(head)):
            self.key, self.key_len = key, covered
        else:
            self.key = make_key(self.ident, head) if head else ""
            self.key_len = len(head)

    def read(self, chunk: int, end: int | None) -> tuple[list[Item], int, bool]:
        """Read one chunk (worker thread), up to ``end``: the size when this drain began, or
        ``None`` on its first call. Returns the records, ``end`` and whether more is left."""
        out: list[Item] = []
        size = os.fstat(self.fd).st_size
        # All records of one read share its read time: one clock call per chunk, not per line.
        ts = now_rfc3339()
        if size < self.read_pos or (end is None and not self._head_intact(size)):
            self._restart(ts, out)
            end = size
        elif end is None and self.head:
            # Its first bytes were still there after the look: ``size`` is this generation's,
            # even if it is truncated before the read below (a loss its gap is to cover).
            self.seen_size = max(self.seen_size, size)
        end = size if end is None else end
        known = bool(self.head)  # none after a restart: nothing tells this generation apart yet
        want = min(chunk, end - self.read_pos)
        data = os.pread(self.fd, want, self.read_pos) if want > 0 else b""
        if data and not self._head_intact(end):
            # Truncated since ``size`` was taken (a copytruncate, then writes past our offset):
            # ``data`` is the next generation's. A fresh look finds the truncation (nothing is
            # in ``out`` yet: after a restart there is no head to differ).
            return self.read(chunk, None)
        # ``size`` is this generation's only if its first bytes were still there after the look;
        # with none known yet, only the bytes read are.
        self.seen_size = max(self.seen_size, size if known else self.read_pos + len(data))
        if data:
            self.grew_at = time.monotonic()
            if self.read_pos == 0 or len(self.head) < self.fp_bytes:
                self._grow_head(data)
            self._cut(data, ts, out)
        return out, end, bool(data) and self.read_pos < end

    def _head_intact(self, size: int) -> bool:
        """Whether the file still starts with the bytes it started with (one small read)."""
        n = len(self.head)
        if n == 0:
            return True
        # Also at offset 0: bytes fingerprinted at open but truncated before we read them
        # are to be recovered from the copy like any others.
        return size >= n and os.pread(self.fd, n, 0) == self.head

    def _restart(self, ts: str, out: list[Item]) -> None:
        """The file was truncated in place: ship what we hold, describe the old generation and
        start over at 0 with a new identity."""
        if self.pending:  # already read: ship it rather than drop it
            out.append(self.flush_partial(ts))
        if self.key:
            self.truncation = Truncation(
                self.path, self.key, self.head, self.read_pos, self.seen_size
            )
        self.read_pos, self.seen_size, self.part = 0, 0, 0
        self.head, self.key, self.key_len = b"", "", 0
        self.truncated = True

    def _grow_head(self, data: bytes) -> None:
        """Extend ``head`` with the bytes of ``data`` that fall in it; set or upgrade ``key``."""
        pos, have = self.read_pos, len(self.head)
        if pos == 0 and not data.startswith(self.head[: len(data)]):
            self.head, self.key, have = b"", "", 0  # rewritten between open and first read
        if pos <= have:
            self.head += data[have - pos : self.fp_bytes - pos]
        if not self.key or self.key_len < len(self.head) == self.fp_bytes:
            self.key = make_key(self.ident, self.head)
            self.key_len = len(self.head)

    def flush_partial(self, ts: str) -> Pending:
        """Ship the unterminated line as it is, tagged "partial"."""
        part = self.part or None
        record = self._make(self.pending, self.consumed, self.read_pos, ts, part=part, partial=True)
        self.pending, self.part = b"", 0
        return record

    def _cut(self, data: bytes, ts: str, out: list[Item]) -> None:
        """Append a record per line that ``data`` completes (or one ``PlainRun`` for them all,
        if ``runs``); keep the unterminated rest as ``pending``, minus the parts of it that are
        already too long."""
        joined = self.pending + data
        offset = self.consumed
        self.read_pos += len(data)
        source, key, path = self.source, self.key, self.path
        complete = joined.rfind(b"\n") + 1  # the bytes of complete lines
        if (
            complete
            and not (self.part or self.truncated)
            and joined.isascii()
            and b"\r" not in joined
        ):
            # (lines, longest): counted here, in the reading thread, not again on the event loop
            stats = line_stats(joined) if self.runs else None
            if stats is not None and stats[1] <= self.max_line:
                with contextlib.suppress(TypeError):  # a path JSON cannot hold: records
                    cut = (joined, 0, complete, offset, ts, source, key, path)
                    out.append(PlainRun(*cut, count=stats[0]))
                    rest = joined[complete:]
                    self.pending, _ = self._split(
                        rest, offset + complete, ts, out, longer_than=self.max_line + 1
                    )
                    return
            # The common chunk: plain lines of ASCII, none longer than max_line (cut_plain_py,
            # compiled where built: no bytes object per line). It leaves out the unterminated
            # rest itself.
            records: list[Pending] = []
            after = cut_plain(
                joined, ts, source, key, path, offset, Pending, Checkpoint, records, self.max_line
            )
            if after is not None:
                out += records
                rest = joined[complete:]
                self.pending, _ = self._split(rest, after, ts, out, longer_than=self.max_line + 1)
                return
        lines = joined.split(b"\n")
        rest = lines.pop()
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

    def _line(self, line: bytes, offset: int, end: int, ts: str, out: list[Item]) -> None:
        """The records of one complete line (bytes ``offset`` to ``end``), split if too long."""
        line, start = self._split(line, offset, ts, out, longer_than=self.max_line)
        out.append(self._make(line, start, end, ts, part=self.part or None, partial=False))
        self.part = 0

    def _split(
        self, data: bytes, offset: int, ts: str, out: list[Item], *, longer_than: int
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


def gap_record(source: str, reason: str, path: str, span: tuple[int, int], ts: str) -> Record:
    """A ``gap`` record: the bytes ``span`` (start, stop) of a generation of ``path`` are lost."""
    start, stop = span
    return {
        "type": "gap",
        "ts": ts,
        "src": source,
        "reason": reason,
        "msg": f"{path}: {stop - start} bytes at offsets {start}..{stop} were lost ({reason})",
        "gap": {"path": path, "from_offset": start, "to_offset": stop, "bytes": stop - start},
    }
