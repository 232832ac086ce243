"""The seq index of one stored stream: where in ``records.ndjson`` a given seq starts.

Role: lets the collector (and any reader of its storage) seek to seq n instead of scanning the
stream from seq 1. It is derived data: everything in it can be rebuilt from ``records.ndjson``,
so losing or tearing it costs a rescan, never a record.

Format of ``<stream>/index.bin``: fixed 16-byte entries, big-endian ``(seq: u64, offset: u64)``,
one for each seq ``1, 1 + EVERY, 1 + 2 * EVERY, …`` that is stored; ``offset`` is where that
seq's line starts. Entry k therefore always describes seq ``1 + k * EVERY``: the file is an
array, not a log, and its valid prefix is easy to recognize.

A stream with a declared gap (``skips.ndjson``: seqs the agent no longer had) holds fewer lines
than seqs; entries, counted by lines, are then off after it. A reader checks the seq of the line
an entry points at and scans from the start when it is not the one claimed
(:meth:`~agent.collector.storage.FileStreamStore.read_records`), and picks lines by their own
seq: slower for such streams, never wrong.

Crash safety: entries are appended after the records they describe are fsynced and before the
head moves, without an fsync of their own. :func:`load` keeps the longest valid prefix (right
seq for its position, increasing offsets, inside the bytes the head covers), checks that its
last entry really starts that seq, rebuilds whatever is missing by scanning the records after
it, and rewrites the file if anything changed. The functions here block (worker threads only)
and hold no state; :class:`~agent.collector.storage.FileStreamStore` caches the entries.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import orjson

from agent.collector.lines import BodyLines
from agent.statefile import write_all, write_atomic

INDEX_FILE = "index.bin"
EVERY = 1024  # records between entries: a lookup scans at most this many lines
ENTRY = struct.Struct(">QQ")
SCAN_CHUNK = 1024 * 1024

Entry = tuple[int, int]  # (seq, byte offset of its line)


def entries_for(first_seq: int, start: int, lines: Sequence[bytes], every: int) -> list[Entry]:
    """The entries for ``lines`` (seqs ``first_seq``…) written at byte ``start`` of the data."""
    seqs = range(first_seq + (1 - first_seq) % every, first_seq + len(lines), every)
    if isinstance(lines, BodyLines):  # where each line starts is known
        return [(seq, start + lines.offset(seq - first_seq)) for seq in seqs]
    entries = []
    offset, done = start, 0  # ``offset`` is where line ``done`` starts
    for seq in seqs:
        at = seq - first_seq
        offset += sum(map(len, lines[done:at])) + at - done  # summed in C, not line by line
        done = at
        entries.append((seq, offset))
    return entries


def append(directory: Path, entries: Sequence[Entry]) -> None:
    """Add entries after the ones on disk (no fsync: the index is rebuildable)."""
    if not entries:
        return
    fd = os.open(directory / INDEX_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        write_all(fd, b"".join(ENTRY.pack(seq, offset) for seq, offset in entries))
    finally:
        os.close(fd)


def locate(entries: Sequence[Entry], seq: int) -> Entry:
    """The closest entry at or before ``seq`` (``(1, 0)`` when there is none)."""
    at = bisect.bisect_right(entries, (seq, 2**64)) - 1
    return entries[at] if at >= 0 else (1, 0)


def load(directory: Path, records: Path, size: int, every: int = EVERY) -> list[Entry]:
    """The index covering the first ``size`` bytes of ``records``, repaired (see module doc)."""
    path = directory / INDEX_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    on_disk = [ENTRY.unpack_from(raw, i) for i in range(0, len(raw) - len(raw) % 16, 16)]
    entries = _valid_prefix(on_disk, size, every)
    if entries and _seq_at(records, entries[-1][1]) != entries[-1][0]:
        entries = []
    entries = _catch_up(records, entries, size, every)
    if entries != on_disk or len(raw) % 16:
        write_atomic(path, b"".join(ENTRY.pack(*entry) for entry in entries), 0o640)
    return entries


def _valid_prefix(entries: list[Entry], size: int, every: int) -> list[Entry]:
    kept: list[Entry] = []
    for k, (seq, offset) in enumerate(entries):
        if seq != 1 + k * every or offset >= size or (kept and offset <= kept[-1][1]):
            break
        kept.append((seq, offset))
    return kept


def _seq_at(records: Path, offset: int) -> int | None:
    """The seq of the line starting at ``offset``, if it is a record."""
    with records.open("rb") as file:
        file.seek(offset)
        try:
            record = orjson.loads(file.readline())
        except orjson.JSONDecodeError:
            return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if type(seq) is int else None


def _catch_up(records: Path, entries: list[Entry], size: int, every: int) -> list[Entry]:
    """Add the entries for lines after the last one, up to byte ``size``, by counting lines."""
    seq, offset = entries[-1] if entries else (1, 0)
    if offset >= size:
        return entries
    out = list(entries) if entries else [(1, 0)]
    with records.open("rb") as file:
        file.seek(offset)
        while offset < size:
            chunk = file.read(min(SCAN_CHUNK, size - offset))
            if not chunk:
                break
            at = chunk.find(b"\n")
            while at >= 0 and offset + at + 1 < size:
                seq += 1
                if (seq - 1) % every == 0:
                    out.append((seq, offset + at + 1))
                at = chunk.find(b"\n", at + 1)
            offset += len(chunk)
    return out
