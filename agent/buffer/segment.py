"""Frames and segment files: the byte-level format of the write-ahead log.

A segment is a file ``<first_seq:020d>.seg`` holding consecutive frames::

    frame  = u32 body_len | u32 crc32(body) | body            (little endian)
    body   = u64 seq | 32-byte h | u16 cp_len | checkpoint (cp_len & 0x7FFF bytes) | record

``record`` is what the sink ships without re-encoding: the record's wire form (its canonical
JSON with ``,"h":"<hex>"`` before the closing brace). Where the top bit of the seq word is set
(``BARE``), the frame holds the canonical JSON alone and readers put ``h`` in from the frame's
head (``dress``): a raw line's frame is then 71 bytes (a seventh) shorter, on disk and through
every write, fsync, read and checksum. The writer writes only bare frames; readers read both.
``h`` is in the frame's head so readers know the chain head without parsing JSON. The
checkpoint is the source position the record advances (contract 2): JSON,
``{"s":source,"k":key,"p":path,"o":offset}``, or, when ``cp_len`` has its top bit set
(``COMPACT``), the offset's digits alone, the rest being that of the checkpoint before it in the
segment. The writer compacts those that follow one with the same source, key and path among the
frames of one write (a commit's, in one segment: of a chunk's lines, the first checkpoint is
written whole and the others compact, ~100 bytes less per frame). A compact checkpoint with none
whole before it in its segment, a checkpoint that does not read, or a bare record that is not a
JSON object (``{}`` or shorter, or not ending in ``}``) is corruption. Agents before these
formats do not know the flags: they would take a compact checkpoint for corruption, misread a
frame over 32 KiB, or carry a bare frame's seq on as 2**63 + seq and ship its record without
``h``; an agent must not be downgraded over a buffer that still holds records.

Everything here is synchronous and stateless beyond the file handles passed in; the buffer's
writer thread and reader threads call it.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import orjson

from agent.compiled import MODULE
from agent.sources import Checkpoint

DIGEST_SIZE = 32  # a record's h
HEADER = struct.Struct("<II")
BODY_HEAD = struct.Struct("<Q32sH")
SUFFIX = ".seg"
COMPACT = 0x8000  # cp_len's flag: the checkpoint is its offset's digits
BARE = 1 << 63  # the seq word's flag: the record is stored without its h (``dress``)
SEQ = BARE - 1  # the seq word's seq
H_OPEN = b',"h":"'
DRESSING = len(H_OPEN) + 2 * DIGEST_SIZE + 1  # what ``dress`` adds: ,"h":"<hex>" and a quote
MAX_CHECKPOINT = COMPACT - 1  # the longest checkpoint (cp_len without the flag)
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a frame claiming more than this is corrupt, not big


class Frame(NamedTuple):  # one per record read: a named tuple is the cheapest to make
    seq: int
    h: bytes
    checkpoint: bytes  # as stored: JSON, or an offset's digits where ``compact`` (``scan``: JSON)
    record: bytes
    end: int  # file offset just after this frame
    compact: bool = False


def encode_checkpoint(cp: Checkpoint) -> bytes:
    # One per record: the JSON around the offset is the same for every line of a file.
    return checkpoint_prefix(cp.source, cp.key, cp.path) + str(cp.offset).encode() + b"}"


@functools.lru_cache(maxsize=4096)
def checkpoint_prefix(source: str, key: str, path: str) -> bytes:
    return orjson.dumps({"s": source, "k": key, "p": path})[:-1] + b',"o":'


def decode_checkpoint(raw: bytes) -> Checkpoint:
    cp = orjson.loads(raw)
    return Checkpoint(cp["s"], cp["k"], cp["o"], cp.get("p", ""))


def encode(
    seq: int,
    h: bytes,
    checkpoint: bytes,
    record: bytes,
    *,
    compact: bool = False,
    bare: bool = False,
) -> bytes:
    """A frame; ``compact``: ``checkpoint`` is an offset's digits; ``bare``: ``record`` is the
    canonical JSON without ``h`` (see the module docstring)."""
    if len(checkpoint) > MAX_CHECKPOINT:
        raise ValueError(f"checkpoint longer than {MAX_CHECKPOINT} bytes")
    if not 0 <= seq <= SEQ:
        raise OverflowError(f"seq {seq} outside 0 .. 2**63 - 1")
    cp_len = len(checkpoint) | (COMPACT if compact else 0)
    body = BODY_HEAD.pack(seq | BARE if bare else seq, h, cp_len) + checkpoint + record
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def segment_first_seq(path: Path) -> int | None:
    stem = path.name.removesuffix(SUFFIX)
    if path.suffix != SUFFIX or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """Segment files in ``directory`` ordered by first seq; other files are ignored."""
    found = []
    for entry in directory.iterdir():
        first = segment_first_seq(entry)
        if first is not None:
            found.append((first, entry))
    return sorted(found)


class CorruptFrameError(Exception):
    """A complete frame whose checksum or structure is wrong, at ``offset``. ``intact``: its
    checksum held, so it is what was written (damaged before it was checksummed, or hostile),
    never a torn write."""

    def __init__(self, offset: int, reason: str, intact: bool = False) -> None:
        super().__init__(f"corrupt frame at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
        self.intact = intact


@dataclass
class ScanResult:
    frames: list[Frame]
    valid_end: int  # offset after the last good frame
    torn: bool  # bytes after valid_end are an incomplete final frame
    corrupt: CorruptFrameError | None
    # The last checkpoint of each (source, key) in the good frames.
    checkpoints: dict[tuple[str, str], Checkpoint] = field(default_factory=dict)


def dress(stored: bytes | bytearray | memoryview, h: bytes, offset: int) -> bytes:
    """A bare frame's record in its wire form: ``stored`` (canonical JSON, never ``{}``) with
    ``,"h":"<hex>"`` before its closing brace. Raises CorruptFrameError (the frame at
    ``offset``) if ``stored`` cannot be one."""
    if len(stored) < 3 or stored[-1] != 0x7D:  # "}"
        raise CorruptFrameError(offset, "bare record is not a JSON object", intact=True)
    return b"".join((stored[:-1], H_OPEN, h.hex().encode(), b'"}'))


def parse_frame(data: bytes | bytearray | memoryview, offset: int, base: int = 0) -> Frame | None:
    """Decode the frame at ``offset``; None if ``data`` ends inside it. Raises CorruptFrameError.
    ``base``: the file offset of ``data[0]``, added to the frame's ``end``."""
    if len(data) - offset < HEADER.size:
        return None
    length, crc = HEADER.unpack_from(data, offset)
    if length < BODY_HEAD.size or length > MAX_FRAME_BYTES:
        raise CorruptFrameError(offset, f"impossible length {length}")
    start = offset + HEADER.size
    end = start + length
    if end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body) != crc:
        raise CorruptFrameError(offset, "checksum mismatch")
    seq, h, cp_len = BODY_HEAD.unpack_from(body, 0)
    cp_end = BODY_HEAD.size + (cp_len & MAX_CHECKPOINT)
    if cp_end > length:
        raise CorruptFrameError(offset, "checkpoint overruns frame", intact=True)
    checkpoint = bytes(body[BODY_HEAD.size : cp_end])
    record = dress(body[cp_end:], h, offset) if seq & BARE else bytes(body[cp_end:])
    return Frame(seq & SEQ, h, checkpoint, record, base + end, cp_len >= COMPACT)


class Run(NamedTuple):
    """Consecutive complete frames decoded at once (``parse_run``), as parallel lists."""

    seqs: list[int]
    hashes: list[bytes]
    records: list[bytes]
    ends: list[int]  # offset just after each frame, relative to the data parsed


def parse_run(data: bytes | memoryview, limit_records: int) -> Run:
    """Decode up to ``limit_records`` complete frames from the start of ``data`` (an incomplete
    last frame is left for the next read; the records are copies: nothing refers to ``data``).
    The sinks' file reader: ``parse_frame`` without a function call and an object per frame.
    Raises CorruptFrameError like it. Compiled where built (``compiled.py``); ``parse_run_py`` is
    the reference and the fallback."""
    if MODULE is None:
        return parse_run_py(data, limit_records)
    return Run(*MODULE.parse_run(data, limit_records, MAX_FRAME_BYTES, CorruptFrameError))


def parse_run_py(data: bytes | memoryview, limit_records: int) -> Run:
    """``parse_run`` in Python: the first ``limit_records`` frames ``_frames_py`` walks (the one
    after them is not looked at)."""
    run = seqs, hashes, records, ends = Run([], [], [], [])
    for seq, h, record, end in itertools.islice(_frames_py(data), max(limit_records, 0)):
        seqs.append(seq)
        hashes.append(h)
        records.append(record)
        ends.append(end)
    return run


class Gathered(NamedTuple):
    """What ``gather_run`` took from a window of frames (offsets relative to it)."""

    skipped_end: int  # just after the frames at or before the position (0: none)
    taken: int
    first_seq: int  # of the first complete frame after the position (0: none)
    last_seq: int  # of the last frame taken (0: none)
    last_h: bytes | None  # its h (None: none)
    taken_bytes: int  # the records' bytes, without the newlines
    end: int  # just after the last frame taken (``skipped_end`` when none)


def gather_run(
    data: bytes | memoryview,
    position: int,
    body: bytearray,
    hashes: bytearray,
    *,
    want: int,
    max_bytes: int,
    strict: bool,
    reserve: int = 0,
) -> Gathered:
    """The sinks' reader: skip the frames of ``data`` at or before seq ``position``, then append
    the records of the consecutive frames after them to ``body`` (each followed by "\n": the
    batch's NDJSON as it ships) and their h to ``hashes``: up to ``want`` of them, and up to the
    first whose record brings their bytes to ``max_bytes``. The first frame taken may come after
    a hole (recovery lost records) unless ``strict`` (a batch that already holds records must
    end before one): then nothing is taken and ``first_seq`` says where it is. An incomplete
    last frame is left for the next read; a corrupt one raises CorruptFrameError where it is
    met (the frame after the last taken is looked at only if one more may be taken).
    ``reserve``: how many bytes ``body`` may still take in this batch, from its current end, at
    most; a body that must grow is given that room at once, so the windows after this one
    append without a reallocation (a hint: no effect on what is taken). Compiled where built;
    ``gather_run_py`` is the reference and the fallback."""
    if MODULE is None:
        return gather_run_py(
            data, position, body, hashes, want=want, max_bytes=max_bytes, strict=strict
        )
    return Gathered(
        *MODULE.gather_run(
            data,
            position,
            want,
            max_bytes,
            strict,
            body,
            hashes,
            MAX_FRAME_BYTES,
            CorruptFrameError,
            reserve,
        )
    )


def gather_run_py(
    data: bytes | memoryview,
    position: int,
    body: bytearray,
    hashes: bytearray,
    *,
    want: int,
    max_bytes: int,
    strict: bool,
    reserve: int = 0,
) -> Gathered:
    """``gather_run`` in Python (``reserve`` is a hint it has no use for)."""
    frames = _frames_py(data)
    skipped_end = taken = taken_bytes = first_seq = last_seq = end = 0
    last_h: bytes | None = None
    frame = next(frames, None)
    while frame is not None and frame[0] <= position:
        skipped_end = end = frame[3]
        frame = next(frames, None)
    if frame is not None:
        first_seq = frame[0]
        if strict and first_seq != position + 1:
            frame = None
    while (
        frame is not None
        and taken < want
        and taken_bytes < max_bytes
        and (taken == 0 or frame[0] == last_seq + 1)
    ):
        seq, h, record, frame_end = frame
        body += record
        body += b"\n"
        hashes += h
        taken, taken_bytes, last_seq, last_h, end = (
            taken + 1,
            taken_bytes + len(record),
            seq,
            h,
            frame_end,
        )
        if taken >= want or taken_bytes >= max_bytes:
            break
        frame = next(frames, None)
    return Gathered(skipped_end, taken, first_seq, last_seq, last_h, taken_bytes, end)


def _frames_py(data: bytes | memoryview) -> Iterator[tuple[int, bytes, bytes, int]]:
    """(seq, h, record in its wire form, end) of each complete frame of ``data``, checked one
    at a time: the readers' walk, as the compiled ``next_frame``. ``data``'s bytes, whatever
    the view's format and shape (len() counts items or rows), as the compiled loops take the
    buffer; a non-contiguous one is refused with their error, at the call."""
    view = memoryview(data)
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return _walk(view.cast("B"))


def _walk(view: memoryview) -> Iterator[tuple[int, bytes, bytes, int]]:
    head, body_head = HEADER.size, BODY_HEAD.size
    size, pos = len(view), 0
    while pos + head <= size:
        length, crc = HEADER.unpack_from(view, pos)
        if length < body_head or length > MAX_FRAME_BYTES:
            raise CorruptFrameError(pos, f"impossible length {length}")
        start = pos + head
        end = start + length
        if end > size:
            return
        if zlib.crc32(view[start:end]) != crc:
            raise CorruptFrameError(pos, "checksum mismatch")
        seq, h, cp_len = BODY_HEAD.unpack_from(view, start)
        cp_len &= MAX_CHECKPOINT
        if body_head + cp_len > length:
            raise CorruptFrameError(pos, "checkpoint overruns frame", intact=True)
        stored = view[start + body_head + cp_len : end]
        yield seq & SEQ, h, dress(stored, h, pos) if seq & BARE else bytes(stored), end
        pos = end


def scan(path: Path) -> ScanResult:
    """Read every frame of a segment, stopping at the first torn or corrupt one. Checkpoints
    are given whole (JSON), compact ones too, and decoded into ``checkpoints``."""
    data = path.read_bytes()
    result = ScanResult([], 0, False, None)
    frames, checkpoints = result.frames, result.checkpoints
    offset = 0
    last: Checkpoint | None = None  # the checkpoint before, and its JSON up to its offset
    prefix = b""
    while offset < len(data):
        try:
            frame = parse_frame(data, offset)
        except CorruptFrameError as exc:
            # A bad checksum on the very last frame is a torn write (pages of one write landed
            # partly); anywhere else, or a frame whose checksum held, it is corruption.
            length = HEADER.unpack_from(data, offset)[0]
            if not exc.intact and offset + HEADER.size + length >= len(data):
                result.torn = True
            else:
                result.corrupt = exc
            break
        if frame is None:
            result.torn = True
            break
        if frame.checkpoint or frame.compact:
            # Its checksum held: a checkpoint that does not read is corruption, even last.
            try:
                frame, last, prefix = _whole(frame, last, prefix)
            except ValueError as exc:
                result.corrupt = CorruptFrameError(offset, str(exc))
                break
            checkpoints[last.source, last.key] = last
        frames.append(frame)
        offset = frame.end
    result.valid_end = offset
    return result


_OFFSET = re.compile(rb"-?(?:0|[1-9][0-9]{0,19})")


def _whole(frame: Frame, last: Checkpoint | None, prefix: bytes) -> tuple[Frame, Checkpoint, bytes]:
    """``frame`` with its checkpoint whole, that checkpoint, and its JSON up to its offset,
    given those of the checkpoint before it in the segment (for a compact one). Raises
    ValueError saying what is wrong."""
    raw = frame.checkpoint
    if not frame.compact:
        at = raw.rfind(b'"o":')  # JSON escapes a quote inside a string: this is the key
        try:
            cp = decode_checkpoint(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"checkpoint does not read: {exc}") from None
        if not (
            at >= 0
            and type(cp.offset) is int
            and all(type(text) is str for text in (cp.source, cp.key, cp.path))
        ):
            raise ValueError("checkpoint does not read: a field of the wrong type")
        return frame, cp, raw[: at + 4]
    if last is None:
        raise ValueError("compact checkpoint with none whole before it")
    if _OFFSET.fullmatch(raw) is None or not -(2**63) <= int(raw) < 2**64:
        raise ValueError("compact checkpoint is not an offset")  # (the range JSON reads as int)
    whole = frame._replace(checkpoint=prefix + raw + b"}", compact=False)
    return whole, last._replace(offset=int(raw)), prefix


def iter_frames(fd: int, offset: int, limit: int, chunk: int = 1 << 20) -> Iterator[Frame]:
    """Frames of an open segment from ``offset`` up to ``limit`` (the committed end)."""
    pending = b""
    base = offset
    while base + len(pending) < limit:
        size = min(chunk, limit - base - len(pending))
        data = os.pread(fd, size, base + len(pending))
        if not data:
            return
        pending += data
        pos = 0
        while True:
            frame = parse_frame(pending, pos, base)
            if frame is None:
                break
            yield frame
            pos = frame.end - base
        pending = pending[pos:]
        base += pos


@dataclass
class SegmentInfo:
    """What the buffer knows of one segment file; mutated only under ``Buffer.lock``."""

    first_seq: int
    path: Path
    last_seq: int  # first_seq - 1 while empty
    last_h: bytes
    size: int  # committed bytes
    created: float  # wall clock of the first commit (or file mtime after recovery)
