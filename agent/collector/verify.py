"""Offline re-verification of stored streams: the engine behind ``tailseal verify PATH``.

Role: re-derive, from nothing but the bytes on disk, whether each stored stream is complete and
unmodified (DESIGN.md contract 4). It shares the chain definition with the agent and the
collector (:mod:`agent.record`) and reads the collector's documented layout
(:mod:`agent.collector.storage`), but never its caches: a verifier must not trust the writer.

How one stream is checked (:func:`verify_stream`): ``records.ndjson`` is read line by line (never
whole into memory) and a :class:`ChainWalk` recomputes ``h`` from ``genesis(stream_id)``. Each
break is a :class:`Finding` naming the seq (or seq range) it concerns:

* ``modified``: the record at seq n does not verify from h(n-1), or the line is not a record.
  The walk then continues from the record's stored ``h``, so one edited record is one finding.
* ``missing``: seqs a..b never appear (a deleted record, a cut in the middle).
* ``reordered``: seq n appears after a higher seq (a swap, a move); the misplaced record is
  still chain-checked against its true neighbours.
* ``duplicate``: seq n appears a second time.
* ``truncated``: the data ends before what ``head.json`` says was stored, or its last line is
  torn (no newline).
* ``head``: ``head.json`` is missing, unreadable, or disagrees with the data at its ``last_seq``.
* ``unsealed``: the last record is not a ``seal``. A stream whose agent is still running (or was
  killed) is legitimately unsealed, so this finding is a break only unless ``allow_unsealed``.

A gap the agent declared (``skips.ndjson``: seqs it no longer had, e.g. dropped by a full
buffer) restarts the chain at the declared ``prev_h``. It is the note ``skip`` when ``gap``
records in the stream account for all of its seqs, and a ``missing`` break when they do not (the
agent ships its gap record after the records it kept, so a stream still being written may show
this until that record arrives).

Notes that are not breaks: each ``gap`` record (accounted loss, listed with its seq), records
past ``head.json`` (fsynced by a collector that crashed before updating the head; it adopts them
on its next start) and ``quarantine-*.bin`` files (bytes the collector cut off on recovery).

Invariants: memory is O(1) per stream plus O(number of anomalies); nothing here writes.
All state is local to one call (no shared state; safe to run from any thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson

from agent.collector.storage import (
    HEAD_FILE,
    RECORDS_FILE,
    Skip,
    StreamHead,
    is_stream_id,
    read_skips,
)
from agent.record import genesis, verifiable_h

BREAKS = frozenset({"modified", "missing", "reordered", "duplicate", "truncated", "head"})
NOTES = frozenset({"gap", "skip", "beyond_head", "quarantine"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One result about a stream: ``seq``..``last_seq`` is the range it concerns (0 = none)."""

    kind: str
    seq: int
    last_seq: int
    detail: str

    def is_break(self, *, allow_unsealed: bool) -> bool:
        if self.kind == "unsealed":
            return not allow_unsealed
        return self.kind in BREAKS


@dataclass
class StreamReport:
    """Everything ``verify`` learned about one stream directory."""

    stream: str
    path: str
    records: int = 0  # well-formed record lines read
    last_seq: int = 0  # the highest seq reached in order
    head: str = ""  # stored h of ``last_seq``
    sealed: bool = False
    host: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)

    def breaks(self, *, allow_unsealed: bool) -> list[Finding]:
        return [f for f in self.findings if f.is_break(allow_unsealed=allow_unsealed)]

    def ok(self, *, allow_unsealed: bool) -> bool:
        return not self.breaks(allow_unsealed=allow_unsealed)


@dataclass
class _Hole:
    """Seqs ``first..last`` not seen yet; ``before`` is h(first-1) if known, ``after`` is the
    record seq ``last + 1`` as read (not yet linked: its predecessor is in the hole)."""

    first: int
    last: int
    before: bytes | None
    after: dict[str, Any] | None


class ChainWalk:
    """Feeds record lines in file order; collects findings (see the module docstring)."""

    def __init__(
        self, stream_id: str, watch_seq: int = 0, declared: dict[int, Skip] | None = None
    ) -> None:
        self.declared = declared or {}  # first seq after a declared gap -> the gap
        self.skips: list[Skip] = []  # declared gaps met on the walk
        self.accounted: list[tuple[int, int]] = []  # seq ranges that gap records account for
        self.expected = 1  # the next seq in order
        self.prev: bytes | None = genesis(stream_id)  # h(expected - 1), None when unknown
        self.findings: list[Finding] = []
        self.records = 0
        self.last_type: str | None = None  # ``type`` of the record at ``expected - 1``
        self.watch_seq = watch_seq  # head.json's last_seq: capture its h and end offset
        self.watched: tuple[str, int] | None = None
        self._holes: list[_Hole] = []

    @property
    def last_seq(self) -> int:
        return self.expected - 1

    def feed(self, line: bytes, end: int) -> None:
        """One complete line (without its newline) that ends at byte ``end`` of the file."""
        record = _parse(line)
        if record is None:
            self._add("modified", self.expected, self.expected, "the line is not a record")
            self.expected, self.prev, self.last_type = self.expected + 1, None, None
            return
        self.records += 1
        seq, digest = record["seq"], _digest(record["h"])
        if record.get("type") == "gap":
            self._add("gap", seq, seq, str(record.get("reason", "accounted loss")))
            self._account(record.get("gap"))
        if seq < self.expected:
            self._misplaced(record, digest)
            return
        skip = self.declared.get(seq)
        if seq == self.expected:
            self._check(self.prev, record, digest)
        elif skip is not None and skip.from_seq <= self.expected:
            self.skips.append(skip)
            self._check(_digest(skip.prev_h), record, digest)
        else:
            self._holes.append(_Hole(self.expected, seq - 1, self.prev, record))
        self.expected, self.prev, self.last_type = seq + 1, digest, record.get("type")
        if seq == self.watch_seq:
            self.watched = (record["h"], end)

    def finish(self) -> list[Finding]:
        """Report the seqs that never appeared; returns every finding in order of discovery."""
        for hole in self._holes:
            self._add("missing", hole.first, hole.last, "no record with these seqs")
        self._holes = []
        for skip in self.skips:
            if _covered(skip.from_seq, skip.to_seq, self.accounted):
                self._add("skip", skip.from_seq, skip.to_seq, "declared gap, accounted")
            else:
                detail = "declared by the agent, but no gap record accounts for it"
                self._add("missing", skip.from_seq, skip.to_seq, detail)
        self.skips = []
        return self.findings

    def _account(self, gap: Any) -> None:
        if isinstance(gap, dict):
            first, last = gap.get("from_seq"), gap.get("to_seq")
            if isinstance(first, int) and isinstance(last, int) and first <= last:
                self.accounted.append((first, last))

    def _check(self, prev: bytes | None, record: dict[str, Any], digest: bytes | None) -> None:
        if prev is not None and (digest is None or verifiable_h(prev, record) != digest):
            self._add("modified", record["seq"], record["seq"], "h does not verify")

    def _misplaced(self, record: dict[str, Any], digest: bytes | None) -> None:
        seq = record["seq"]
        at = next((i for i, hole in enumerate(self._holes) if hole.first <= seq <= hole.last), -1)
        if at < 0:
            self._add("duplicate", seq, seq, f"seq {seq} appears again after seq {self.last_seq}")
            return
        hole = self._holes.pop(at)
        previous = self.findings[-1] if self.findings else None
        if previous and previous.kind == "reordered" and previous.last_seq + 1 == seq:
            self.findings[-1] = Finding("reordered", previous.seq, seq, previous.detail)
        else:
            self._add("reordered", seq, seq, f"stored after seq {self.last_seq}")
        split: list[_Hole] = []
        if seq == hole.first:
            self._check(hole.before, record, digest)
        else:
            split.append(_Hole(hole.first, seq - 1, hole.before, record))
        if seq == hole.last:
            if hole.after is not None:
                self._check(digest, hole.after, _digest(hole.after["h"]))
        else:
            split.append(_Hole(seq + 1, hole.last, digest, hole.after))
        self._holes[at:at] = split

    def _add(self, kind: str, seq: int, last_seq: int, detail: str) -> None:
        self.findings.append(Finding(kind, seq, last_seq, detail))


def _covered(first: int, last: int, ranges: list[tuple[int, int]]) -> bool:
    """Whether the union of ``ranges`` covers every seq in ``first..last``."""
    need = first
    for start, end in sorted(ranges):
        if start > need:
            break
        need = max(need, end + 1)
    return need > last


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record on ``line`` if it has the shape every record has (int seq >= 1, str h)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("h"), str):
        return None
    seq = record.get("seq")
    return record if type(seq) is int and seq >= 1 else None


def _digest(value: str) -> bytes | None:
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        return None
    return digest if len(digest) == 32 else None


def verify_stream(directory: Path) -> StreamReport:
    """Check one stream directory (``<storage>/streams/<stream_id>``)."""
    stream_id = directory.name
    report = StreamReport(stream=stream_id, path=str(directory))
    head, problem = _load_head(directory, stream_id)
    if problem:
        report.findings.append(Finding("head", 0, 0, problem))
    if head is not None:
        report.host = head.host
    walk = ChainWalk(
        stream_id, watch_seq=head.last_seq if head else 0, declared=read_skips(directory)
    )
    torn = _walk_file(directory / RECORDS_FILE, walk)
    report.findings.extend(walk.finish())
    if torn is not None:
        report.findings.append(
            Finding("truncated", walk.expected, walk.expected, f"torn last line at byte {torn}")
        )
    report.records, report.last_seq = walk.records, walk.last_seq
    report.head = walk.prev.hex() if walk.prev is not None else ""
    report.sealed = walk.last_type == "seal"
    if head is not None:
        report.findings.extend(_against_head(head, walk))
    if not report.sealed:
        detail = "no records" if not walk.last_seq else "the last record is not a seal"
        report.findings.append(Finding("unsealed", walk.last_seq, walk.last_seq, detail))
    report.findings.extend(
        Finding("quarantine", 0, 0, f"{path.name}: bytes cut off by collector recovery")
        for path in sorted(directory.glob("quarantine-*.bin"))
    )
    return report


def _walk_file(path: Path, walk: ChainWalk) -> int | None:
    """Feed every complete line of ``path``; returns the offset of a torn last line, if any."""
    if not path.exists():
        return None
    offset = 0
    with path.open("rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                return offset
            offset += len(line)
            walk.feed(line[:-1], offset)
    return None


def _load_head(directory: Path, stream_id: str) -> tuple[StreamHead | None, str]:
    try:
        raw = (directory / HEAD_FILE).read_bytes()
    except FileNotFoundError:
        return None, f"{HEAD_FILE} is missing"
    try:
        head = msgspec.json.decode(raw, type=StreamHead)
    except msgspec.DecodeError as exc:
        return None, f"{HEAD_FILE} is unreadable: {exc}"
    if head.stream != stream_id:
        return None, f"{HEAD_FILE} describes stream {head.stream!r}"
    return head, ""


def _against_head(head: StreamHead, walk: ChainWalk) -> Iterator[Finding]:
    """Cross-check ``head.json`` (last_seq, head, bytes) against what the walk found."""
    if walk.last_seq < head.last_seq:
        detail = f"{HEAD_FILE} records seq {head.last_seq}, the data ends at {walk.last_seq}"
        yield Finding("truncated", walk.last_seq + 1, head.last_seq, detail)
        return
    if head.last_seq == 0:
        return
    if walk.watched is None:
        yield Finding("head", head.last_seq, head.last_seq, "seq not found in order")
        return
    h, end = walk.watched
    if h != head.head:
        yield Finding("head", head.last_seq, head.last_seq, f"{HEAD_FILE} holds another h")
    elif end != head.size:
        detail = f"{HEAD_FILE} covers {head.size} bytes, the record ends at byte {end}"
        yield Finding("head", head.last_seq, head.last_seq, detail)
    if walk.last_seq > head.last_seq:
        detail = "records past head.json (a collector crash; adopted on its next start)"
        yield Finding("beyond_head", head.last_seq + 1, walk.last_seq, detail)


def stream_dirs(path: Path) -> list[Path]:
    """The stream directories under ``path``: a storage dir, its ``streams/``, or one stream.

    Raises ``FileNotFoundError`` when ``path`` is none of these.
    """
    if (path / RECORDS_FILE).exists() or (path / HEAD_FILE).exists():
        return [path]
    streams = path / "streams" if (path / "streams").is_dir() else path
    if not streams.is_dir():
        raise FileNotFoundError(f"{path}: not a collector storage or stream directory")
    found = [p for p in sorted(streams.iterdir()) if p.is_dir() and is_stream_id(p.name)]
    if not found and streams == path and path.name != "streams":
        raise FileNotFoundError(f"{path}: not a collector storage or stream directory")
    return found


def verify_path(path: Path) -> list[StreamReport]:
    """Verify every stream under ``path`` (see :func:`stream_dirs`)."""
    return [verify_stream(directory) for directory in stream_dirs(path)]
