"""One batch of the native protocol: bounded decompression, parsing, chain verification, linking.

Pure functions with no I/O and no shared state, so the server can run the CPU-heavy steps
(:func:`decompress`, :func:`parse_records`) in a worker thread. Every rejection is a
:class:`BatchError` carrying the HTTP status and JSON body that docs/protocol.md prescribes.

Invariants:

* Decompression never produces more than ``limit`` bytes (plus one read chunk): a zstd or gzip
  bomb costs what its first ``limit`` bytes cost, then 413.
* Nothing is stored unless every record of the batch verifies from the batch's ``prev_h``
  (:func:`parse_records` checks, :func:`first_new_index` enforces, after the 409 checks).
* A truncated compressed body cannot slip through: it loses records or tears the last one, which
  fails the record count or the chain (python-zstandard does not report a truncated frame).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import orjson
import zstandard

from agent.record import expected_h

ENCODINGS = frozenset({"zstd", "gzip", "identity"})
CHUNK_BYTES = 256 * 1024
STREAM_ID_PATTERN = "^[A-Za-z0-9-]{1,64}$"


class BatchError(Exception):
    """A batch is refused: ``status`` and ``payload`` are the reply."""

    def __init__(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {payload}")
        self.status = status
        self.payload = payload
        self.headers = headers or {}


def rejected(status: int, message: str) -> BatchError:
    return BatchError(status, {"error": message})


class _DeclaredGap(msgspec.Struct, frozen=True):
    """Seqs the agent no longer has (dropped or lost, accounted by a ``gap`` record)."""

    from_seq: Annotated[int, msgspec.Meta(ge=1)]
    to_seq: Annotated[int, msgspec.Meta(ge=1)]


class _Header(msgspec.Struct, frozen=True):
    """The batch header line as the protocol defines it (extra keys are ignored)."""

    v: Literal[1]
    stream: Annotated[str, msgspec.Meta(pattern=STREAM_ID_PATTERN)]
    host: dict[str, Any]
    first_seq: Annotated[int, msgspec.Meta(ge=1)]
    last_seq: Annotated[int, msgspec.Meta(ge=1)]
    prev_h: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    gap: _DeclaredGap | None = None


@dataclass(frozen=True, slots=True)
class BatchHeader:
    stream: str
    host: dict[str, Any]
    host_name: str
    first_seq: int
    last_seq: int
    prev_h: str
    gap: tuple[int, int] | None = None  # declared: from_seq..to_seq, to_seq == first_seq - 1


@dataclass(frozen=True, slots=True)
class Batch:
    """A parsed, self-consistent batch: ``lines[i]`` is seq ``first_seq + i`` as received."""

    header: BatchHeader
    lines: list[bytes]
    hashes: list[str]  # each record's ``h`` as sent
    sealed: bool  # the last record is a seal
    gap_seqs: tuple[int, ...]  # seqs of the batch's ``gap`` records (accounted loss)
    fault: str | None  # the first record whose ``h`` does not verify, if any


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Decode ``body`` per its Content-Encoding, refusing (413) to produce more than ``limit``."""
    if encoding == "zstd":
        data = _unzstd(body, limit)
    elif encoding == "gzip":
        data = _gunzip(body, limit)
    elif encoding == "identity":
        data = body
    else:
        raise rejected(415, f"unsupported Content-Encoding {encoding!r}")
    if len(data) > limit:
        raise rejected(413, f"decompressed body exceeds {limit} bytes")
    return data


def _unzstd(body: bytes, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
        with reader:
            while chunk := reader.read(CHUNK_BYTES):
                total += len(chunk)
                if total > limit:
                    raise rejected(413, f"decompressed body exceeds {limit} bytes")
                parts.append(chunk)
    except zstandard.ZstdError as exc:
        raise rejected(400, f"invalid zstd body: {exc}") from exc
    return b"".join(parts)


def _gunzip(body: bytes, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    pending = body
    try:
        while pending:  # one pass per gzip member (RFC 1952 allows concatenated members)
            inflater = zlib.decompressobj(wbits=31)
            while not inflater.eof:
                chunk = inflater.decompress(pending, CHUNK_BYTES)
                total += len(chunk)
                if total > limit:
                    raise rejected(413, f"decompressed body exceeds {limit} bytes")
                parts.append(chunk)
                pending = inflater.unconsumed_tail
                if not pending and len(chunk) < CHUNK_BYTES and not inflater.eof:
                    raise rejected(400, "truncated gzip body")
            pending = inflater.unused_data
    except zlib.error as exc:
        raise rejected(400, f"invalid gzip body: {exc}") from exc
    return b"".join(parts)


def parse_header(data: bytes) -> tuple[BatchHeader, int]:
    """Parse the header line; returns it and the offset where the records start."""
    end = data.find(b"\n")
    if end < 0:
        end = len(data)
    try:
        raw = msgspec.json.decode(data[:end], type=_Header)
    except msgspec.ValidationError as exc:
        raise rejected(400, f"bad batch header: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise rejected(400, f"batch header is not valid JSON: {exc}") from exc
    name = raw.host.get("name")
    if not isinstance(name, str) or not name:
        raise rejected(400, "bad batch header: host.name must be a non-empty string")
    if raw.last_seq < raw.first_seq:
        raise rejected(400, "bad batch header: last_seq is below first_seq")
    gap = None
    if raw.gap is not None:
        gap = (raw.gap.from_seq, raw.gap.to_seq)
        if not raw.gap.from_seq <= raw.gap.to_seq == raw.first_seq - 1:
            raise rejected(400, "bad batch header: gap must be from_seq..first_seq-1")
    header = BatchHeader(raw.stream, raw.host, name, raw.first_seq, raw.last_seq, raw.prev_h, gap)
    return header, end + 1


def parse_records(header: BatchHeader, data: bytes, offset: int) -> Batch:
    """Split the records after the header and check them against it.

    Structure is required at once (400): one JSON object per line, consecutive seqs matching the
    header, a string ``h``. Whether each ``h`` verifies is only noted in
    ``Batch.fault``, so that :func:`first_new_index` answers 409 to a batch that does not link
    before judging its content.
    """
    lines = data[offset:].split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the body's final newline
    count = header.last_seq - header.first_seq + 1
    if len(lines) != count:
        raise rejected(400, f"header announces {count} records, body holds {len(lines)}")
    prev = bytes.fromhex(header.prev_h)
    hashes: list[str] = []
    fault: str | None = None
    record: dict[str, Any] = {}
    gap_seqs: list[int] = []
    for seq, line in enumerate(lines, start=header.first_seq):
        record = _record(line, seq)
        if record.get("type") == "gap":
            gap_seqs.append(seq)
        if fault is None:
            prev = expected_h(prev, record)
            if prev.hex() != record["h"]:
                fault = f"record {seq}: h does not verify"
        hashes.append(record["h"])
    sealed = record.get("type") == "seal"
    return Batch(header, lines, hashes, sealed=sealed, gap_seqs=tuple(gap_seqs), fault=fault)


def _record(line: bytes, seq: int) -> dict[str, Any]:
    """The record on ``line``, if it is shaped like record ``seq``."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise rejected(400, f"record {seq}: invalid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise rejected(400, f"record {seq}: not a JSON object")
    got = record.get("seq")
    if type(got) is not int or got != seq:
        raise rejected(400, f"record {seq}: seq {got!r} is not consecutive")
    if not isinstance(record.get("h"), str):
        raise rejected(400, f"record {seq}: h is missing")
    return record


def first_new_index(batch: Batch, held_seq: int, held_head: str) -> int:
    """Index in ``batch.lines`` of the first record the collector does not hold.

    A batch that declares a gap (``header.gap`` reaching back to ``held_seq + 1`` or earlier)
    may start beyond ``held_seq + 1``: the caller records the skip with the stream.

    ``held_head`` is h(held_seq) (the genesis value for a new stream). In order: 409 if the batch
    starts beyond ``held_seq + 1`` or its chain value at ``held_seq`` (``prev_h``, or the ``h`` of
    the overlapping record) is not ``held_head``; 400 if a record's ``h`` does not verify; else
    the index, which is ``len(lines)`` when every record is already held (idempotent repeat).
    """
    header = batch.header
    if header.first_seq > held_seq + 1:
        if header.gap is None or header.gap[0] > held_seq + 1:
            raise BatchError(409, {"expected": held_seq + 1})
        # A declared gap covers every seq after what is held: the chain restarts at the
        # agent's prev_h (h of the last lost record), which only the records after it prove.
        if batch.fault is not None:
            raise rejected(400, batch.fault)
        return 0
    if header.last_seq > held_seq:
        if header.first_seq == held_seq + 1:
            at_held = header.prev_h
        else:
            at_held = batch.hashes[held_seq - header.first_seq]
        if at_held != held_head:
            raise BatchError(409, {"expected": held_seq + 1})
    if batch.fault is not None:
        raise rejected(400, batch.fault)
    return min(len(batch.lines), held_seq + 1 - header.first_seq)
