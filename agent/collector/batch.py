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
* The fast paths (one-shot zstd for a single frame that declares its size, and
  :func:`_verify_body` for records in exactly the agent's wire form) only ever accept what the
  general path accepts, with the same result; anything else is left to the general path, so
  every refusal and its message is the general path's.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, overload

import msgspec
import orjson
import zstandard

from agent.collector.lines import BodyLines, count_lines
from agent.compiled import MODULE
from agent.record import STREAM_ID, verifiable_h

ENCODINGS = frozenset({"zstd", "gzip", "identity"})
# The shortest line that can hold a record that verifies: {"h":"<64 hex>","seq":1}. A body
# with fewer bytes a line has its lines' structure checked one at a time first.
MIN_RECORD_BYTES = 80
CHUNK_BYTES = 256 * 1024
# msgspec patterns are searched with Python's re: ``$`` would also match before a final "\n".
STREAM_ID_PATTERN = rf"^{STREAM_ID.pattern}\Z"
H_PATTERN = r"^[0-9a-f]{64}\Z"

# The wire form of a record is its canonical JSON with ``,"h":"<64 hex>"}`` in place of the
# closing brace: ``_WIRE_TAIL`` bytes, starting with ``_H_MEMBER``.
_H_MEMBER = b',"h":"'
_WIRE_TAIL = len(_H_MEMBER) + 64 + len(b'"}')


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
    prev_h: Annotated[str, msgspec.Meta(pattern=H_PATTERN)]
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
    """A parsed, self-consistent batch: ``lines[i]`` is seq ``first_seq + i`` as received (the
    collector's: :class:`BodyLines`, views of ``data``)."""

    header: BatchHeader
    lines: Sequence[bytes]
    hashes: Sequence[str]  # each record's ``h`` as sent
    sealed: bool  # the last record is a seal
    gap_seqs: tuple[int, ...]  # seqs of the batch's ``gap`` records (accounted loss)
    fault: str | None  # the first record whose ``h`` does not verify, if any
    data: bytes = b""  # the decompressed body the lines are in


class WireHashes(Sequence[str]):
    """The ``h`` of lines that are all in the agent's wire form, where each line ends with it:
    read from a line only when asked for (a batch needs one or two of them)."""

    __slots__ = ("_lines",)

    def __init__(self, lines: Sequence[bytes]) -> None:
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[at] for at in range(*index.indices(len(self)))]
        return self._lines[index][len(_H_MEMBER) - _WIRE_TAIL : -2].decode("ascii")


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Decode ``body`` per its Content-Encoding, refusing (413) to produce more than ``limit``."""
    if encoding == "zstd":
        data = _unzstd_frame(body, limit)
        if data is None:
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


def _unzstd_frame(body: bytes, limit: int) -> bytes | None:
    """The common case in one step: a single frame that declares its (non-zero) size, at most
    ``limit``. Decoded straight into one buffer of that size, which zstd fills exactly or fails.
    None for anything else (several frames, no declared size, trailing bytes, corrupt data):
    :func:`_unzstd` then decides, with its own bound and its own error messages."""
    try:
        size = zstandard.frame_content_size(body)
        if not 0 < size <= limit:
            return None
        data = zstandard.ZstdDecompressor().decompress(body, allow_extra_data=False)
    except zstandard.ZstdError:
        return None
    return data if len(data) == size else None


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
    except RecursionError as exc:  # nesting deeper than the decoder's recursion limit
        raise rejected(400, "batch header is nested too deeply") from exc
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
    """Take the records after the header and check them against it.

    Structure is required at once (400): one JSON object per line, consecutive seqs matching the
    header, a string ``h``. Whether each ``h`` verifies is only noted in
    ``Batch.fault``, so that :func:`first_new_index` answers 409 to a batch that does not link
    before judging its content.
    """
    count = header.last_seq - header.first_seq + 1
    if count * (MIN_RECORD_BYTES + 1) - 1 > len(data) - offset:
        _check_short(header, data, offset, count)
    verified = _verify_body(header, data, offset, count)
    if verified is not None:  # it holds ``count`` lines, each in wire form
        lines, gap_seqs, sealed = verified
        return Batch(header, lines, WireHashes(lines), sealed, tuple(gap_seqs), None, data)
    held = count_lines(data, offset)
    if held != count:
        raise rejected(400, f"header announces {count} records, body holds {held}")
    split = data[offset:].split(b"\n")
    if split and not split[-1]:
        split.pop()  # the body's final newline
    return _parse_each(header, split, data)


def _check_short(header: BatchHeader, data: bytes, offset: int, count: int) -> None:
    """A body too short for ``count`` records that verify: the count checked, then each line's
    structure (``_record``) in order, one line at a time. The first line shaped wrong is refused
    as the general path would refuse it, before anything holds an object per line: a body of
    bare newlines, a few KB compressed, must not become a list of millions of them. Lines that
    are all shaped right (16 bytes or more each) go on to the general path."""
    held = count_lines(data, offset)
    if held != count:
        raise rejected(400, f"header announces {count} records, body holds {held}")
    begin = offset
    for seq in range(header.first_seq, header.first_seq + count):
        end = _line_end(data, begin)
        _record(data[begin:end], seq)
        begin = end + 1


def _line_end(data: bytes, begin: int) -> int:
    end = data.find(b"\n", begin)
    return len(data) if end < 0 else end


Verified = tuple[list[str], list[int], bool]
_ORJSON_ERRORS = (orjson.JSONDecodeError, orjson.JSONEncodeError)


def _verify_body(
    header: BatchHeader, data: bytes, offset: int, count: int
) -> tuple[BodyLines, list[int], bool] | None:
    """The lines of ``data[offset:]`` if there are ``count`` and every one is in the agent's
    wire form and verifies (``verify_wire_py``), with the seqs of the gap records among them
    and whether the last is a seal; None if not. Compiled where built (``agent/compiled.py``):
    checked where the lines are, with no object per line (and not counted first: a count of
    the body's newlines alone was ~9 % of the collector's CPU)."""
    first = header.first_seq
    if count - 1 > len(data) - offset:
        return None  # more lines than the body has bytes to end them: the header's count is off
    if MODULE is None or first + count >= 1 << 62:
        if count_lines(data, offset) != count:
            return None
        lines = BodyLines.split(data, offset)
        found = verify_wire_py(header, list(lines))
        return None if found is None else (lines, found[1], found[2])
    prev = bytes.fromhex(header.prev_h)
    checked: tuple[bytes, list[int], bool] | None = MODULE.verify_body(
        prev,
        data,
        offset,
        count,
        first,
        orjson.loads,
        orjson.dumps,
        orjson.OPT_SORT_KEYS,
        _ORJSON_ERRORS,
    )
    if checked is None:
        return None
    ends, gap_seqs, sealed = checked
    return BodyLines(data, offset, memoryview(ends).cast("q")), gap_seqs, sealed


def verify_wire_py(header: BatchHeader, lines: list[bytes]) -> Verified | None:
    """Verify records that are exactly in the agent's wire form, cheaply: (hashes, gap seqs,
    sealed), or None as soon as one record is not (malformed, not canonical, wrong seq, wrong h).

    Each line is parsed once, as :func:`_record` parses it, and accepted only if, without ``h``,
    the record is an object with the next ``seq`` whose canonical encoding is the line's own
    bytes up to the wire tail (``line[:-_WIRE_TAIL] + b"}"``), the tail starts with
    ``,"h":"``, and ``h`` is ``sha256(prev || those bytes)`` in lowercase hex. Since ``h``'s
    64 characters need all 64 remaining bytes of the tail, such a line is exactly the wire form
    :func:`agent.record.link` writes, and :func:`_parse_each` would accept it with the same
    ``h``. The received bytes are hashed directly: no copy of the record without ``h``.
    """
    prev = bytes.fromhex(header.prev_h)
    hashes: list[str] = []
    gap_seqs: list[int] = []
    loads, dumps, sort_keys = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
    sha256 = hashlib.sha256
    seq = header.first_seq
    record: Any = None
    for line in lines:
        try:
            record = loads(line)
            if type(record) is not dict:
                return None
            h = record.pop("h", None)
            got = record.get("seq")
            body = line[:-_WIRE_TAIL] + b"}"
            if (
                type(h) is not str
                or type(got) is not int
                or got != seq
                or dumps(record, option=sort_keys) != body  # canonical, and the line is in it
            ):
                return None
        except _ORJSON_ERRORS:
            return None  # not JSON, or deeper than orjson encodes: left to the general path
        prev = sha256(prev + body).digest()
        if h != prev.hex() or line[-_WIRE_TAIL : len(_H_MEMBER) - _WIRE_TAIL] != _H_MEMBER:
            return None  # h does not verify, or is not where the wire form has it
        if record.get("type") == "gap":
            gap_seqs.append(seq)
        hashes.append(h)
        seq += 1
    return hashes, gap_seqs, record is not None and record.get("type") == "seal"


def _parse_each(header: BatchHeader, lines: list[bytes], data: bytes) -> Batch:
    """The general path: every record parsed and checked on its own, structure first."""
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
            digest = verifiable_h(prev, record)
            if digest is None:
                fault = f"record {seq}: h does not verify: no canonical encoding"
            elif digest.hex() != record["h"]:
                fault = f"record {seq}: h does not verify"
            else:
                prev = digest
        hashes.append(record["h"])
    sealed = record.get("type") == "seal"
    return Batch(header, lines, hashes, sealed, tuple(gap_seqs), fault, data)


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


def is_ahead(header: BatchHeader, held_seq: int) -> bool:
    """Whether a batch with ``header`` starts beyond ``held_seq + 1`` with no declared gap that
    reaches back to it: it cannot link yet (a 409, unless the batches before it land first)."""
    return header.first_seq > held_seq + 1 and (header.gap is None or header.gap[0] > held_seq + 1)


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
        if is_ahead(header, held_seq):
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
