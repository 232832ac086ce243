"""Opening the buffer: rebuild its state from the segment files and repair what a crash left.

Rules (the why is in ``agent/buffer/__init__.py``): the summary of deleted segments is loaded
first; every segment is scanned in seq order, a torn tail of the last segment is truncated, and
the first corrupt frame (or a torn frame in an earlier segment) sends the rest of the log to
``.bad`` files, reported as lost from that seq on. Runs once, before any task starts, in a
worker thread; it returns plain data and shares nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.buffer import segment
from agent.buffer.segment import SegmentInfo
from agent.errors import StateError
from agent.record import genesis
from agent.sources import Checkpoint
from agent.statefile import fsync_dir, read_json

log = logging.getLogger(__name__)

SUMMARY = "checkpoints.json"


@dataclass
class RecoveryReport:
    """What opening the buffer found and repaired, for the gap record and the operator."""

    truncated_bytes: int = 0
    quarantined: list[str] = field(default_factory=list)
    lost_from_seq: int = 0  # 0: nothing lost
    lost_to_seq: int = 0  # 0: unknown (the end of the quarantined data)
    lost_bytes: int = 0


@dataclass
class Recovered:
    segments: list[SegmentInfo]
    last_seq: int
    last_h: bytes
    base_seq: int  # every seq <= base_seq was deleted after all sinks acked it (or dropped)
    base_h: bytes
    checkpoints: dict[tuple[str, str], Checkpoint]
    report: RecoveryReport


def recover(directory: Path, stream_id: str) -> Recovered:
    state = Recovered([], 0, genesis(stream_id), 0, genesis(stream_id), {}, RecoveryReport())
    _load_summary(directory, state)
    found = segment.list_segments(directory)
    for index, (first, path) in enumerate(found):
        result = segment.scan(path)
        problem = result.corrupt is not None or (result.torn and index < len(found) - 1)
        if result.torn and not problem:
            state.report.truncated_bytes += path.stat().st_size - result.valid_end
            truncate(path, result.valid_end)
        mtime = path.stat().st_mtime
        info = SegmentInfo(first, path, first - 1, state.last_h, result.valid_end, mtime)
        if result.frames:
            info.last_seq, info.last_h = result.frames[-1].seq, result.frames[-1].h
            state.last_seq, state.last_h = info.last_seq, info.last_h
        state.checkpoints.update(result.checkpoints)
        state.segments.append(info)
        if problem:
            _quarantine(
                directory, state, path, result.valid_end, [p for _, p in found[index + 1 :]]
            )
            break
    return state


def _load_summary(directory: Path, state: Recovered) -> None:
    summary = read_json(directory / SUMMARY)
    if summary is None:
        return
    try:
        state.base_seq = _seq(summary["base_seq"])
        state.base_h = _digest(summary["base_h"])
        state.last_seq, state.last_h = state.base_seq, state.base_h
        for raw in summary["checkpoints"]:
            cp = _checkpoint(raw)
            state.checkpoints[(cp.source, cp.key)] = cp
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{directory / SUMMARY} is malformed: {exc!r}") from exc


def _checkpoint(raw: dict[str, object]) -> Checkpoint:
    """A summarized source position, as the writer wrote it: strings and a byte offset (a key
    of null crashed the file source; an offset of -7 stalled its file, one of 1.5 shipped from
    mid-line)."""
    source, key, path, offset = raw["source"], raw["key"], raw["path"], raw["offset"]
    if not (isinstance(source, str) and isinstance(key, str) and isinstance(path, str)):
        raise TypeError(f"checkpoint {raw!r}: source, key and path must be strings")
    if type(offset) is not int or offset < 0:
        raise ValueError(f"checkpoint {raw!r}: offset must be a whole number of bytes")
    return Checkpoint(source, key, offset, path)


def _seq(value: object) -> int:
    seq: int = int(value)  # type: ignore[call-overload]  # TypeError/ValueError: malformed
    if not 0 <= seq <= segment.SEQ:
        raise ValueError(f"seq {seq} is outside 0..2**63-1")
    return seq


def _digest(value: object) -> bytes:
    digest = bytes.fromhex(value)  # type: ignore[arg-type]  # TypeError/ValueError: malformed
    if len(digest) != segment.DIGEST_SIZE:
        raise ValueError(f"a chain hash of {len(digest)} bytes")
    return digest


def _quarantine(
    directory: Path, state: Recovered, path: Path, keep: int, later: list[Path]
) -> None:
    """Move the unreadable rest of the log aside as ``.bad`` files; it becomes a gap."""
    report = state.report
    report.lost_from_seq = state.last_seq + 1
    bad = path.with_name(path.name + ".bad")
    data = path.read_bytes()[keep:]
    bad.write_bytes(data)
    truncate(path, keep)
    report.quarantined.append(bad.name)
    report.lost_bytes += len(data)
    for other in later:
        report.lost_bytes += other.stat().st_size
        other.rename(other.with_name(other.name + ".bad"))
        report.quarantined.append(other.name + ".bad")
    fsync_dir(directory)
    log.error("buffer corruption: quarantined %s", report.quarantined)


def truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
