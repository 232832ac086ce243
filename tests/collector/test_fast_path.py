"""The collector's fast paths agree with the general ones on every input.

``parse_records`` hashes lines that are exactly in the agent's wire form as received, and hands
anything else to the record-by-record path; ``decompress`` decodes a single zstd frame that
declares its size in one step, and anything else in the streaming loop; the store writes lines
it is given already joined as they are. Each is checked against a plain reference: the
collector's checks as they were written before the fast paths (``reference_parse``), the
streaming decoder alone, and a plain join and line walk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collector import batch as batch_module
from agent.collector.batch import (
    Batch,
    BatchError,
    BatchHeader,
    decompress,
    first_new_index,
    parse_header,
    parse_records,
    rejected,
)
from agent.collector.index import entries_for
from agent.collector.lines import BodyLines, count_lines
from agent.collector.storage import FileStreamStore
from agent.record import Record, expected_h, genesis, link, verifiable_h
from tests.collector.chains import Chain, make_chain, new_stream_id, tampered
from tests.collector.harness import Running, list_streams, post, stored

try:  # the compiled module itself, even where TAILSEAL_PURE_PYTHON keeps the collector off it
    from agent import _speedups as SPEEDUPS  # type: ignore[attr-defined]  # noqa: N812
except ImportError:
    SPEEDUPS = None

LIMIT = 1024 * 1024


def reference_parse(header: BatchHeader, data: bytes, offset: int) -> Batch:
    """``parse_records`` as it was before its fast path (with ``_record`` inlined): every line
    parsed, checked and re-encoded on its own. The behaviour the fast path must keep — with one
    later change: a record with no canonical encoding is a fault (400), it used to raise (500)."""
    lines = data[offset:].split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    count = header.last_seq - header.first_seq + 1
    if len(lines) != count:
        raise rejected(400, f"header announces {count} records, body holds {len(lines)}")
    prev = bytes.fromhex(header.prev_h)
    hashes: list[str] = []
    fault: str | None = None
    record: dict[str, Any] = {}
    gap_seqs: list[int] = []
    for seq, line in enumerate(lines, start=header.first_seq):
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
    return Batch(header, lines, hashes, sealed=sealed, gap_seqs=tuple(gap_seqs), fault=fault)


def outcome(parse: Any, data: bytes) -> tuple[Any, ...]:
    """What a parser makes of ``data``: its refusal, its exception type, or the batch."""
    header, offset = parse_header(data)
    try:
        batch = parse(header, data, offset)
    except BatchError as exc:
        return ("refused", exc.status, exc.payload)
    except Exception as exc:  # noqa: BLE001 - whatever the reference raises, so must we
        return ("raised", type(exc))
    lines, hashes = list(batch.lines), list(batch.hashes)
    return ("batch", lines, hashes, batch.sealed, batch.gap_seqs, batch.fault)


def assert_same_as_reference(data: bytes) -> None:
    assert outcome(parse_records, data) == outcome(reference_parse, data)


def chain_of(records: list[Record], stream: str | None = None) -> Chain:
    """The records (``seq`` assigned here, 1..n) chained and in wire form."""
    chain = Chain(stream or new_stream_id())
    prev = genesis(chain.stream)
    chain.hashes.append(prev)
    for seq, record in enumerate(records, start=1):
        prev, wire = link(prev, {**record, "seq": seq})
        chain.lines.append(wire)
        chain.hashes.append(prev)
    return chain


def rechained(chain: Chain, seq: int, line: bytes) -> bytes:
    """``line`` with ``h`` set to what it must be at ``seq`` (over the canonical form), written
    with its keys in reverse order and with spaces: valid JSON, not the canonical form."""
    record = orjson.loads(line)
    record["h"] = expected_h(chain.hashes[seq - 1], record).hex()
    return json.dumps(dict(reversed(record.items()))).encode()


def hashed_as_sent(chain: Chain, seq: int, text: bytes) -> bytes:
    """``text`` (a record without h) with an h over exactly these bytes, not the canonical."""
    digest = hashlib.sha256(chain.hashes[seq - 1] + text).hexdigest()
    return text[:-1] + b', "h": "' + digest.encode() + b'"}'


# --- the record path ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chain",
    [make_chain(1), make_chain(40), make_chain(9, seal=True), make_chain(7, gap_at=3)],
    ids=["one", "forty", "sealed", "gap"],
)
def test_wire_form_batches_parse_as_before(chain: Chain) -> None:
    count = len(chain.lines)
    for first, last in [(1, count), (count, count), (max(1, count - 2), count)]:
        assert_same_as_reference(chain.batch(first, last))


@pytest.mark.parametrize("last", [3, 4, 10**8, 10**12, 2**62, 2**63 - 1])
def test_a_count_the_body_cannot_hold_is_refused_as_before(last: int) -> None:
    """A header announcing more records than the body holds (one more, or far more than it
    has bytes for) is refused as the general path refuses it (400, its count), before any
    allocation for that many: one for 10**12 records raised MemoryError, a 500."""
    chain = make_chain(2)
    data = chain.batch(1, last, lines=chain.lines[:2])
    assert outcome(parse_records, data) == (
        "refused",
        400,
        {"error": f"header announces {last} records, body holds 2"},
    )
    assert_same_as_reference(data)


async def test_a_count_the_body_cannot_hold_is_answered_400(collector: Running) -> None:
    chain = make_chain(2)

    reply = await post(collector, chain.batch(1, 10**12, lines=chain.lines[:2]))

    assert reply == (400, {"error": "header announces 1000000000000 records, body holds 2"})


def test_fast_path_result_for_an_honest_batch() -> None:
    chain = make_chain(12, gap_at=4, seal=True)
    data = chain.batch(1, 12)

    header, offset = parse_header(data)
    batch = parse_records(header, data, offset)

    assert batch.fault is None
    assert list(batch.lines) == chain.lines
    assert list(batch.hashes) == [chain.head(seq) for seq in range(1, 13)]
    assert (batch.sealed, batch.gap_seqs) == (True, (4,))


def test_non_canonical_line_is_verified_over_its_canonical_form() -> None:
    # Valid JSON, keys out of order and spaced, h right for the canonical form: accepted as
    # before (the chain is over canonical(record)), and stored exactly as received.
    chain = make_chain(6)
    odd = rechained(chain, 4, chain.line(4))
    assert odd != chain.line(4)
    assert b": " in odd
    lines = [*chain.lines[:3], odd, *chain.lines[4:6]]
    data = chain.batch(1, 6, lines=lines)

    assert_same_as_reference(data)
    header, offset = parse_header(data)
    batch = parse_records(header, data, offset)
    assert batch.fault is None
    assert batch.lines[3] == odd
    assert first_new_index(batch, 0, chain.head(0)) == 0


def test_non_canonical_line_hashed_as_sent_does_not_verify() -> None:
    # The h matches the bytes on the wire, but those are not the canonical form: refused as
    # before, although hashing the received bytes alone would have accepted it.
    chain = make_chain(6)
    record = orjson.loads(chain.line(4))
    del record["h"]
    text = json.dumps(record, sort_keys=True).encode()  # sorted, but with spaces
    lines = [*chain.lines[:3], hashed_as_sent(chain, 4, text), *chain.lines[4:6]]
    data = chain.batch(1, 6, lines=lines)

    assert_same_as_reference(data)
    header, offset = parse_header(data)
    batch = parse_records(header, data, offset)
    with pytest.raises(BatchError) as refused:
        first_new_index(batch, 0, chain.head(0))
    assert (refused.value.status, refused.value.payload) == (
        400,
        {"error": "record 4: h does not verify"},
    )


def test_tampered_middle_record_is_the_fault() -> None:
    chain = make_chain(9)
    lines = list(chain.lines)
    lines[4] = tampered(lines[4], msg="sshd[1005]: Accepted publickey for mallory")
    data = chain.batch(1, 9, lines=lines)

    assert_same_as_reference(data)
    header, offset = parse_header(data)
    batch = parse_records(header, data, offset)
    assert batch.fault == "record 5: h does not verify"
    assert list(batch.hashes[5:]) == [chain.head(seq) for seq in range(6, 10)]


def test_structure_after_a_tampered_record_is_still_checked_first() -> None:
    chain = make_chain(9)
    lines = list(chain.lines)
    lines[2] = tampered(lines[2], msg="changed")
    lines[6] = lines[6][:40]

    data = chain.batch(1, 9, lines=lines)
    header, offset = parse_header(data)
    with pytest.raises(BatchError) as refused:
        parse_records(header, data, offset)

    assert refused.value.status == 400
    assert refused.value.payload["error"].startswith("record 7: invalid JSON")
    assert_same_as_reference(data)


def _variants(chain: Chain, seq: int) -> dict[str, bytes]:
    """Ways to write record ``seq`` other than the agent's wire form."""
    line = chain.line(seq)
    record = orjson.loads(line)
    h = record["h"]
    without = {k: v for k, v in record.items() if k != "h"}
    canonical = orjson.dumps(without, option=orjson.OPT_SORT_KEYS)
    return {
        "h among the sorted keys": orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
        "keys reversed": orjson.dumps(dict(reversed(list(record.items())))),
        "spaces": json.dumps(record).encode(),
        "trailing space": line + b" ",
        "trailing CR": line + b"\r",
        "escaped slash": line.replace(b"/", b"\\/", 1),
        "escaped letter": line.replace(b"a", b"\\u0061", 1),
        "uppercase h": line.replace(h.encode(), h.upper().encode()),
        "h twice, the first wrong": b'{"h":"' + b"0" * 64 + b'",' + line[1:],
        "h twice, the last wrong": line[:-1] + b',"h":"' + b"0" * 64 + b'"}',
        "h short": line.replace(h.encode(), h[:-1].encode()),
        "h not a string": line.replace(b'"' + h.encode() + b'"', b"7"),
        "h missing": canonical,
        "seq a float": line.replace(f'"seq":{seq}'.encode(), f'"seq":{seq}.0'.encode()),
        "seq true": line.replace(f'"seq":{seq}'.encode(), b'"seq":true'),
        "seq a string": line.replace(f'"seq":{seq}'.encode(), f'"seq":"{seq}"'.encode()),
        "seq wrong": line.replace(f'"seq":{seq}'.encode(), f'"seq":{seq + 1}'.encode()),
        "seq negative zero": line.replace(f'"seq":{seq}'.encode(), b'"seq":-0'),
        "not JSON": line[:-3],
        "not an object": b"[" + line + b"]",
        "empty": b"",
        "big integer": line[:-1] + b',"zz":123456789012345678901234567890}',
        "lone surrogate": line.replace(b"alice", b"\\ud800lice", 1),
        "invalid UTF-8": line.replace(b"alice", b"\xffalice", 1),
        "nested deeper than orjson encodes": (
            canonical[:-1] + b',"zz":' + b"[" * 300 + b"]" * 300 + b',"h":"' + h.encode() + b'"}'
        ),
        "seq at its wire position, h first": b'{"h":"' + h.encode() + b'",' + canonical[1:],
    }


VARIANT_NAMES = sorted(_variants(make_chain(3), 2))


@pytest.mark.parametrize("name", VARIANT_NAMES)
@pytest.mark.parametrize("position", [1, 2, 3], ids=["first", "middle", "last"])
def test_other_encodings_of_a_record_are_judged_as_before(name: str, position: int) -> None:
    chain = make_chain(3)
    lines = list(chain.lines)
    lines[position - 1] = _variants(chain, position)[name]

    assert_same_as_reference(chain.batch(1, 3, lines=lines))


def test_other_encodings_with_a_rechained_h_are_judged_as_before() -> None:
    # The same variants, but with h made right for whatever the line parses to.
    chain = make_chain(3)
    for name, line in _variants(chain, 2).items():
        try:
            record = orjson.loads(line)
            good = isinstance(record, dict) and isinstance(record.get("h"), str)
        except orjson.JSONDecodeError:
            good = False
        if not good:
            continue
        try:
            fixed = rechained(chain, 2, line)
        except (TypeError, ValueError):
            continue  # json.dumps cannot write it back: nothing new to try
        data = chain.batch(1, 3, lines=[chain.line(1), fixed, chain.line(3)])
        assert outcome(parse_records, data) == outcome(reference_parse, data), name


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
RECORDS = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in ("h", "seq")), JSON_VALUES, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(RECORDS, min_size=1, max_size=5),
    data=st.data(),
)
def test_any_batch_is_judged_as_before(records: list[Record], data: st.DataObject) -> None:
    chain = chain_of(records)
    lines = list(chain.lines)
    for _ in range(data.draw(st.integers(min_value=0, max_value=2), label="edits")):
        at = data.draw(st.integers(min_value=0, max_value=len(lines) - 1), label="at")
        line = lines[at]
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "rechain"]), label="kind")
        if kind == "rechain":
            with contextlib.suppress(TypeError, ValueError):  # not JSON, or not an object
                lines[at] = rechained(chain, at + 1, line)
            continue
        pos = data.draw(st.integers(min_value=0, max_value=len(line)), label="pos")
        if kind == "flip" and pos < len(line):
            byte = data.draw(st.integers(min_value=0x20, max_value=0x7E), label="byte")
            lines[at] = line[:pos] + bytes([byte]) + line[pos + 1 :]
        elif kind == "cut":
            lines[at] = line[:pos] + line[pos + 1 :]
        else:
            text = data.draw(st.sampled_from([b" ", b",", b"}", b'"', b"\\", b"0"]), label="ins")
            lines[at] = line[:pos] + text + line[pos:]

    assert_same_as_reference(chain.batch(1, len(lines), lines=lines))
    assert_fast_only_for_wire_form(chain, lines)


def fast(header: BatchHeader, lines: list[bytes]) -> batch_module.Verified | None:
    """What the fast path makes of ``lines`` as a body holds them: the lines' hashes, its gap
    seqs and whether it is sealed, as ``verify_wire_py`` answers."""
    data = b"".join(line + b"\n" for line in lines)
    found = batch_module._verify_body(header, data, 0, len(lines))
    if found is None:
        return None
    body_lines, gap_seqs, sealed = found
    assert list(body_lines) == lines
    return list(batch_module.WireHashes(body_lines)), gap_seqs, sealed


def assert_compiled_as_python(header: BatchHeader, lines: list[bytes]) -> None:
    """The compiled check of a body (agent/_speedups.c, where built) answers as
    ``verify_wire_py`` answers for its lines, with or without the body's final newline; the
    offsets where it says they end are theirs."""
    if SPEEDUPS is None or any(b"\n" in line for line in lines):
        return
    expected = batch_module.verify_wire_py(header, lines)
    joined = b"\n".join(lines)
    for data, begin in ((joined + b"\n", 0), (b"head\n" + joined, 5)):
        compiled = SPEEDUPS.verify_body(
            bytes.fromhex(header.prev_h),
            data,
            begin,
            len(lines),
            header.first_seq,
            orjson.loads,
            orjson.dumps,
            orjson.OPT_SORT_KEYS,
            _ORJSON_ERRORS,
        )
        for wrong in (len(lines) - 1, len(lines) + 1):  # a body with more lines, or fewer
            assert SPEEDUPS.verify_body(
                bytes.fromhex(header.prev_h), data, begin, wrong, header.first_seq, orjson.loads,
                orjson.dumps, orjson.OPT_SORT_KEYS, _ORJSON_ERRORS,
            ) is None  # fmt: skip
        if expected is None:
            assert compiled is None
            continue
        ends, gap_seqs, sealed = compiled
        body_lines = BodyLines(data, begin, memoryview(ends).cast("q"))
        assert list(body_lines) == lines
        assert (list(batch_module.WireHashes(body_lines)), gap_seqs, sealed) == expected


def assert_fast_only_for_wire_form(chain: Chain, lines: list[bytes]) -> None:
    """The fast path takes a batch only if every line is what the agent would have written."""
    header, _ = parse_header(chain.batch(1, len(lines), lines=lines))
    assert_compiled_as_python(header, lines)
    if fast(header, lines) is None:
        assert any(line != chain.line(seq) for seq, line in enumerate(lines, start=1))
        return
    prev = genesis(chain.stream)
    for line in lines:
        record = orjson.loads(line)
        del record["h"]
        prev, wire = link(prev, record)
        assert line == wire


def test_fast_path_takes_wire_form_and_nothing_else() -> None:
    chain = make_chain(3)
    header, _ = parse_header(chain.batch(1, 3))
    assert fast(header, chain.lines) is not None
    assert_compiled_as_python(header, chain.lines)
    for name, line in _variants(chain, 2).items():
        lines = [chain.line(1), line, chain.line(3)]
        assert fast(header, lines) is None, name
        assert_compiled_as_python(header, lines)


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
def test_compiled_wire_check_answers_as_python_for_seals_gaps_and_seqs() -> None:
    records: list[Record] = [
        {"msg": "a"},
        {"type": "gap", "reason": "x"},
        {"type": "gap"},
        {"msg": "b"},
        {"type": "seal", "reason": "stop"},
    ]
    chain = chain_of(records)
    header, _ = parse_header(chain.batch(1, 5))
    hashes = [chain.head(seq) for seq in range(1, 6)]
    assert fast(header, chain.lines) == (hashes, [2, 3], True)
    assert_compiled_as_python(header, chain.lines)
    for cut in range(5):  # every prefix, and a batch that starts later in the chain
        header, _ = parse_header(chain.batch(1, cut + 1))
        assert_compiled_as_python(header, chain.lines[: cut + 1])
        header, _ = parse_header(chain.batch(cut + 1, 5))
        assert_compiled_as_python(header, chain.lines[cut:])


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=40).map(lambda b: b.replace(b"x", b"\n")),
    st.integers(0, 45),
    st.data(),
)
def test_body_lines_are_the_lines_split_finds(
    data: bytes, offset: int, draw: st.DataObject
) -> None:
    """Lines as the body holds them are those ``split`` cuts, without the empty one after a
    final newline: counted, found, indexed, sliced and stored (with its newline) alike."""
    expected = data[offset:].split(b"\n")
    if expected and not expected[-1]:
        expected.pop()
    lines = BodyLines.split(data, offset)
    assert count_lines(data, offset) == len(lines) == len(expected)
    assert list(lines) == expected
    assert [lines[at] for at in range(-len(lines), len(lines))] == expected + expected
    lo = draw.draw(st.integers(-3, len(expected) + 3), label="lo")
    hi = draw.draw(st.integers(-3, len(expected) + 3), label="hi")
    part = lines[lo:hi]
    assert list(part) == expected[lo:hi]
    assert [part.offset(at) for at in range(len(part) + 1)] == [
        sum(len(line) + 1 for line in expected[lo:hi][:at]) for at in range(len(part) + 1)
    ]
    taken = list(range(len(expected)))[lo:hi]
    if not taken or (taken[-1] == len(expected) - 1 and not data.endswith(b"\n")):
        assert part.stored is None  # none, or the last has no newline to store
    else:
        assert bytes(part.stored or b"") == b"".join(line + b"\n" for line in expected[lo:hi])
    with pytest.raises(IndexError):
        lines[len(expected)]


def test_body_lines_refuse_steps_and_offsets_out_of_range() -> None:
    lines = BodyLines.split(b"a\nbc\n", 0)
    with pytest.raises(ValueError, match="step"):
        lines[::2]
    with pytest.raises(IndexError):
        lines.offset(3)
    assert lines.offset(2) == 5
    assert BodyLines.split(b"a\nbc", 0).stored is None  # the last line has no newline
    assert bytes(BodyLines.split(b"a\nbc", 0)[:1].stored or b"") == b"a\n"


def test_stored_form_is_the_lines_as_stored() -> None:
    chain = make_chain(5)
    data = chain.batch(1, 5)
    header, offset = parse_header(data)
    batch = parse_records(header, data, offset)

    for start in range(5):
        lines = batch.lines[start:]
        assert isinstance(lines, BodyLines)
        view = lines.stored
        assert view is not None
        assert bytes(view) == b"".join(line + b"\n" for line in chain.lines[start:])


def test_stored_form_needs_the_final_newline() -> None:
    chain = make_chain(3)
    data = chain.batch(1, 3)[:-1]
    header, offset = parse_header(data)

    lines = parse_records(header, data, offset).lines
    assert isinstance(lines, BodyLines)
    assert lines.stored is None


# --- zstd -------------------------------------------------------------------------------------


def reference_decompress(body: bytes, limit: int) -> bytes:
    """``decompress(body, "zstd", limit)`` before the one-step path: the streaming loop only."""
    data = batch_module._unzstd(body, limit)
    if len(data) > limit:
        raise rejected(413, f"decompressed body exceeds {limit} bytes")
    return data


def zstd_outcome(decode: Any, body: bytes, limit: int) -> tuple[Any, ...]:
    try:
        return ("data", decode(body, limit))
    except BatchError as exc:
        return ("refused", exc.status, exc.payload)


def assert_zstd_as_before(body: bytes, limit: int = LIMIT) -> None:
    ours = zstd_outcome(lambda b, n: decompress(b, "zstd", n), body, limit)
    assert ours == zstd_outcome(reference_decompress, body, limit)


FRAME = zstandard.ZstdCompressor(level=1).compress(make_chain(50).batch(1, 50))


@pytest.mark.parametrize(
    "body",
    [
        FRAME,
        FRAME + FRAME,
        FRAME + b"junk",
        FRAME[:-5],
        FRAME[:20],
        FRAME[:4],
        b"",
        zstandard.ZstdCompressor(write_content_size=False).compress(b"records\n" * 100),
        zstandard.ZstdCompressor().compress(b""),
        zstandard.ZstdCompressor().compress(b"") + FRAME,
    ],
    ids=[
        "one frame",
        "two frames",
        "trailing junk",
        "truncated",
        "header and a little",
        "magic only",
        "empty",
        "no declared size",
        "empty frame",
        "empty frame first",
    ],
)
def test_zstd_bodies_decode_as_before(body: bytes) -> None:
    assert_zstd_as_before(body)


def test_zstd_frame_declaring_more_than_the_limit_is_refused_as_before() -> None:
    body = zstandard.ZstdCompressor().compress(b"\0" * (LIMIT + 1))

    assert_zstd_as_before(body)
    with pytest.raises(BatchError) as refused:
        decompress(body, "zstd", LIMIT)
    assert refused.value.status == 413


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(FRAME) - 1), st.integers(0, 255), st.integers(1, len(FRAME)))
def test_damaged_zstd_frames_decode_as_before(at: int, byte: int, limit: int) -> None:
    # Any byte of the frame (its declared size included) changed, under any limit.
    assert_zstd_as_before(FRAME[:at] + bytes([byte]) + FRAME[at + 1 :], limit)


# --- storage ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=6).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    st.integers(1, 40),
    st.integers(0, 500),
    st.integers(1, 7),
)
def test_index_entries_as_a_line_walk_finds_them(
    lines: list[bytes], first_seq: int, start: int, every: int
) -> None:
    walked = []
    offset = start
    for seq, line in enumerate(lines, start=first_seq):
        if (seq - 1) % every == 0:
            walked.append((seq, offset))
        offset += len(line) + 1

    assert entries_for(first_seq, start, lines, every) == walked


async def test_body_lines_are_stored_like_lines(tmp_path: Path) -> None:
    chain = make_chain(2100)
    plain, joined = FileStreamStore(tmp_path / "plain", 1000), FileStreamStore(tmp_path / "j", 1000)
    for first, last in [(1, 1), (2, 1500), (1501, 2100)]:
        lines = chain.lines[first - 1 : last]
        body = b"".join(line + b"\n" for line in lines)
        for store, given_lines in [(plain, lines), (joined, BodyLines.split(body, 0))]:
            await store.append(
                chain.stream,
                {"name": "web-1"},
                given_lines,
                last_seq=last,
                head=chain.head(last),
                state="live",
            )

    for name in ("records.ndjson", "index.bin"):
        assert (tmp_path / "j" / "streams" / chain.stream / name).read_bytes() == (
            tmp_path / "plain" / "streams" / chain.stream / name
        ).read_bytes()
    assert await joined.read_records(chain.stream, 1000, 1030) == chain.lines[999:1030]


# --- end to end -------------------------------------------------------------------------------


async def test_batch_without_final_newline_is_stored_as_lines(collector: Running) -> None:
    chain = make_chain(4)

    reply = await post(collector, chain.batch(1, 4)[:-1])

    assert reply == (200, {"acked": 4, "head": chain.head(4)})
    assert await stored(collector, chain) == chain.lines


async def test_rechained_non_canonical_record_is_stored_as_received(collector: Running) -> None:
    chain = make_chain(5)
    odd = rechained(chain, 3, chain.line(3))
    lines = [*chain.lines[:2], odd, *chain.lines[3:]]

    reply = await post(collector, chain.batch(1, 5, lines=lines))

    assert reply == (200, {"acked": 5, "head": chain.head(5)})
    assert await stored(collector, chain) == lines


async def test_tampered_middle_record_stores_nothing(collector: Running) -> None:
    chain = make_chain(9)
    lines = list(chain.lines)
    lines[4] = tampered(lines[4], msg="changed")

    reply = await post(collector, chain.batch(1, 9, lines=lines))

    assert reply == (400, {"error": "record 5: h does not verify"})
    assert (await list_streams(collector))["streams"] == []


async def test_zstd_batch_in_one_frame_is_stored(collector: Running) -> None:
    chain = make_chain(30)
    body = zstandard.ZstdCompressor(level=1).compress(chain.batch(1, 30))

    reply = await post(collector, body, encoding="zstd")

    assert reply == (200, {"acked": 30, "head": chain.head(30)})
    assert await stored(collector, chain) == chain.lines


_ORJSON_ERRORS = (orjson.JSONDecodeError, orjson.JSONEncodeError)


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
def test_compiled_body_check_parses_only_the_lines_it_is_unsure_of() -> None:
    """A line it cannot judge in place (a float) is parsed and encoded again as a bytes of its
    own, and only that one; the answer is the reference's."""
    chain = chain_of([{"msg": "x"}, {"msg": "y", "took": 1.5}, {"msg": "z"}])
    header, _ = parse_header(chain.batch(1, 3))
    expected = batch_module.verify_wire_py(header, chain.lines)
    assert expected is not None
    calls = []

    def counting(line: bytes) -> Any:
        calls.append(line)
        return orjson.loads(line)

    assert compiled_check(header, chain.lines, counting) == expected
    assert calls == [chain.lines[1]]


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
def test_compiled_wire_check_does_not_wrap_seq_past_2_63() -> None:
    """After seq 2**63 - 1 comes 2**63, not -2**63 (which the compiled loop accepted)."""
    first = 2**63 - 1
    prev = genesis("s")
    lines = []
    digest = prev
    for seq in (first, -(2**63)):  # what a wrapped counter would expect next
        digest, wire = link(digest, {"msg": "x", "seq": seq})
        lines.append(wire)
    header = BatchHeader("s", {"name": "h"}, "h", first, first + 1, prev.hex())
    assert batch_module.verify_wire_py(header, lines) is None
    assert_compiled_as_python(header, lines)


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
@pytest.mark.parametrize("first", [-(10**18) + 1, -3, 1, 9, 99, 10**17 - 1, 10**18 - 4])
def test_compiled_wire_check_reads_seqs_of_any_sign_and_length(first: int) -> None:
    """The seq digits the compiled check expects are the ones orjson writes, negative (not a
    seq the header allows, but the check answers alike) or not, across a change of sign or of
    length, up to the 18 digits it reads in place: read there, never parsed."""
    prev = genesis("s")
    lines = []
    digest = prev
    for seq in range(first, first + 4):
        digest, wire = link(digest, {"msg": "x", "seq": seq})
        lines.append(wire)
    header = BatchHeader("s", {"name": "h"}, "h", first, first + 3, prev.hex())
    expected = batch_module.verify_wire_py(header, lines)
    assert expected is not None
    assert compiled_check(header, lines, never) == expected


# --- the compiled check of a line in place (canonical_record in agent/_speedups.c) ---------------

# Records of the shape the agent ships: ASCII keys and text (with control characters, quotes
# and backslashes), ints, bools, null, nesting. The compiled check reads these without parsing.
ASCII_TEXT = st.text(st.characters(max_codepoint=0x7F), max_size=12)
# Keys that need no escape (the compiled check reads only those in place).
PLAIN_KEYS = ASCII_TEXT.filter(lambda k: k.isprintable() and '"' not in k and "\\" not in k)
PLAIN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**18) + 1, 10**18 - 1) | ASCII_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(PLAIN_KEYS, inner, max_size=3),
    max_leaves=10,
)
PLAIN_RECORDS = st.dictionaries(  # "type" apart: a record's type is a str, drawn as such below
    st.text("abcdefghijklmnopqrstuvwxyz_.", max_size=8).filter(
        lambda k: k not in ("h", "seq", "type")
    ),
    PLAIN_VALUES,
    max_size=6,
)


def compiled_check(header: BatchHeader, lines: list[bytes], loads: Any = orjson.loads) -> Any:
    """The compiled check of ``lines`` as a body, answered as ``verify_wire_py`` answers."""
    data = b"".join(line + b"\n" for line in lines)
    found = SPEEDUPS.verify_body(
        bytes.fromhex(header.prev_h), data, 0, len(lines), header.first_seq, loads, orjson.dumps,
        orjson.OPT_SORT_KEYS, _ORJSON_ERRORS,
    )  # fmt: skip
    if found is None:
        return None
    ends, gap_seqs, sealed = found
    hashes = batch_module.WireHashes(BodyLines(data, 0, memoryview(ends).cast("q")))
    return list(hashes), gap_seqs, sealed


def never(line: bytes) -> Any:
    raise AssertionError(f"parsed: {line!r}")


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
@settings(max_examples=200, deadline=None)
@given(records=st.lists(PLAIN_RECORDS, min_size=1, max_size=6), kinds=st.data())
def test_the_compiled_check_reads_common_records_without_parsing_them(
    records: list[Record], kinds: st.DataObject
) -> None:
    """Nothing of these records needs loads (it would raise): the answer is the reference's."""
    for record in records:
        kind = kinds.draw(st.sampled_from([None, "gap", "seal", "notice"]))
        if kind is not None:
            record["type"] = kind
    chain = chain_of(records)
    header, _ = parse_header(chain.batch(1, len(records)))
    expected = batch_module.verify_wire_py(header, chain.lines)
    assert expected is not None
    assert compiled_check(header, chain.lines, never) == expected


# Ways to write the same JSON other than orjson's canonical bytes, each of which an agent (or
# anyone) could hash as sent: the compiled check must not take any for canonical.
NOT_CANONICAL = [
    (b'":', b'": '),  # a space after a key
    (b",", b", "),
    (b'"seq":', b'"seq": '),
    (b"/", b"\\/"),
    (b"a", b"\\u0061"),
    (b"\\u001f", b"\\u001F"),
    (b"\\n", b"\\u000a"),
    (b"\\t", b"\\u0009"),
    (b":0", b":-0"),
    (b":1", b":01"),
    (b":1", b":1.00"),
    (b":2", b":2e0"),
    (b"true", b"True"),
    (b"null", b"nul"),
    (b"[", b"[ "),
    (b"{", b"{ "),
]


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
@settings(max_examples=400, deadline=None)
@given(record=PLAIN_RECORDS, edit=st.data())
def test_a_line_hashed_as_sent_is_judged_as_the_reference_judges_it(
    record: Record, edit: st.DataObject
) -> None:
    """The record's bytes edited (a non-canonical spelling, a byte changed, keys swapped) and
    hashed as they are, so that only canonicality can tell: the compiled check answers as
    ``verify_wire_py``, which encodes the record again to compare."""
    chain = chain_of([record])
    body = chain.lines[0][: -len(b',"h":"') - 66] + b"}"
    kind = edit.draw(st.sampled_from(["spelling", "byte", "swap", "dup"]))
    if kind == "spelling":
        old, new = edit.draw(st.sampled_from(NOT_CANONICAL))
        if old not in body:
            return
        body = body.replace(old, new, 1)
    elif kind == "byte":
        at = edit.draw(st.integers(1, len(body) - 2))
        body = body[:at] + bytes([edit.draw(st.integers(0x20, 0x7E))]) + body[at + 1 :]
    elif kind == "swap":
        loaded = orjson.loads(body)
        body = orjson.dumps(dict(reversed(list(loaded.items()))))
    else:
        body = body[:-1] + b',"seq":1}'  # a key twice
    digest = hashlib.sha256(chain.hashes[0] + body).hexdigest()
    line = body[:-1] + b',"h":"' + digest.encode() + b'"}'
    header, _ = parse_header(chain.batch(1, 1))
    expected = batch_module.verify_wire_py(header, [line])
    assert compiled_check(header, [line]) == expected
    if expected is not None:  # taken: it is the canonical wire form after all
        assert line == chain.lines[0] or orjson.loads(body) != record | {"seq": 1}


def hashed_line(chain: Chain, body: bytes) -> bytes:
    """``body`` (a record without h, closed by "}") as a wire line hashed over its bytes."""
    digest = hashlib.sha256(chain.hashes[0] + body).hexdigest()
    return body[:-1] + b',"h":"' + digest.encode() + b'"}'


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
@pytest.mark.parametrize(("old", "new"), NOT_CANONICAL)
def test_each_other_spelling_is_refused_as_the_reference_refuses_it(old: bytes, new: bytes) -> None:
    record: Record = {"a": 0, "b": 1, "c": 2, "d": True, "e": None, "f": [1], "g": {"x": 1}}
    record["p"] = "a/b\n\t\x1f"
    chain = chain_of([record])
    body = chain.lines[0][: -len(b',"h":"') - 66] + b"}"
    assert old in body
    line = hashed_line(chain, body.replace(old, new, 1))
    header, _ = parse_header(chain.batch(1, 1))
    assert batch_module.verify_wire_py(header, [line]) is None
    assert compiled_check(header, [line]) is None
    assert compiled_check(header, [hashed_line(chain, body)], never) is not None  # as it was


@pytest.mark.skipif(SPEEDUPS is None, reason="agent._speedups not built")
@pytest.mark.parametrize("special", ['"', "\\", "\x00", "\t", "\x1f", "\x7f", " ", "\u00e9"])
def test_a_character_anywhere_in_a_long_string_is_judged_as_the_reference(special: str) -> None:
    """The compiled check finds what ends a string's plain bytes 16 bytes at a time: the
    character at every place of strings up to three blocks long, at both ends, and none. ASCII
    is read in place (never parsed); a non-ASCII character leaves the line to ``loads``."""
    texts = ["a" * n for n in (0, 15, 16, 17, 48)]
    texts += ["a" * at + special + "b" * (40 - at) for at in range(41)]
    texts += [special + "c" * 30 + special]
    chain = chain_of([{"msg": text} for text in texts])
    header, _ = parse_header(chain.batch(1, len(texts)))
    expected = batch_module.verify_wire_py(header, chain.lines)
    assert expected is not None
    assert compiled_check(header, chain.lines, never if special.isascii() else orjson.loads) == (
        expected
    )
