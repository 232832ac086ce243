"""The writer's per-record loop: the compiled ``link`` must equal ``link_py`` byte for byte, and
``link_py`` must equal the record and frame formats it inlines (``record.link``,
``segment.encode``)."""

from __future__ import annotations

import contextlib
import copy
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import record as chain_record
from agent.buffer import chain, segment
from agent.buffer.chain import Link, link_py
from agent.compiled import MODULE
from agent.sources import Checkpoint, EncodedRun, Item, Pending, PlainRun

try:  # the module itself, even where TAILSEAL_PURE_PYTHON keeps the agent from using it
    from agent import _speedups as SPEEDUPS  # type: ignore[attr-defined]  # noqa: N812

    COMPILED: Link | None = SPEEDUPS.link
except ImportError:  # built without a compiler: the fallback is all there is to test
    SPEEDUPS = None
    COMPILED = None

needs_compiled = pytest.mark.skipif(COMPILED is None, reason="agent._speedups not built")
SORT = orjson.OPT_SORT_KEYS
PREV = bytes(range(32))
# link's arguments between items and cp_prefix for a call that commits everything it is given:
# from the start, seq 0, after PREV, room and segment to spare, not one at a time, orjson.
WHOLE = (0, 0, PREV, 1 << 30, 0, 1 << 30, False, orjson.dumps, SORT)
RUN_TYPES = (PlainRun, EncodedRun)
# What link made: as it returns it, with the frames it wrote into ``out`` in place of their size.
Made = tuple[int, bytes, int, bytes, list[Checkpoint], bool]


def stand_in(record: dict[str, Any], exc: TypeError) -> bytes:
    return orjson.dumps({"msg": "stand-in", "why": str(exc), "seq": record["seq"]}, option=SORT)


def run(
    link: Link,
    items: list[Pending],
    *,
    start: int = 0,
    seq: int = 0,
    room: int = 1 << 62,
    used: int = 0,
    limit: int = 1 << 62,
    one: bool = False,
) -> tuple[Made, list[dict[str, Any]]]:
    """``link`` on a deep copy of ``items``, into an ``out`` holding stale bytes; also returns
    the records as it left them."""
    mine = copy.deepcopy(items)
    out = bytearray(b"\xa5" * 100)
    end, at, size, count, head, cps, full = link(
        mine, start, seq, PREV, room, used, limit, one, orjson.dumps, SORT,
        segment.checkpoint_prefix, stand_in, out, PlainRun, EncodedRun,
    )  # fmt: skip
    assert at == 0  # no run in items
    return (end, bytes(out[:size]), count, head, cps, full), [item.record for item in mine]


texts = st.text(st.characters(codec="utf-8"), max_size=40)  # no lone surrogates: encodable
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
records = st.dictionaries(texts.filter(lambda k: k not in ("seq", "h")), values, max_size=5)
# Offsets past a long long and negative ones too (the compiled loop formats those that fit).
offsets = st.integers(0, 2**62) | st.integers(-(2**70), 2**70)
checkpoints = st.none() | st.builds(Checkpoint, texts, texts, offsets, texts)
pendings = st.lists(st.builds(Pending, records, checkpoints), max_size=12)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(
    items=pendings,
    start=st.integers(0, 3),
    seq=st.integers(0, 2**40),
    room=st.integers(-5, 4000),
    used=st.integers(0, 3000),
    limit=st.integers(1, 3000),
    one=st.booleans(),
)
def test_compiled_link_equals_the_reference(
    *, items: list[Pending], start: int, seq: int, room: int, used: int, limit: int, one: bool
) -> None:
    assert COMPILED is not None
    start = min(start, len(items))
    args: dict[str, Any] = {
        "start": start, "seq": seq, "room": room, "used": used, "limit": limit, "one": one
    }  # fmt: skip
    assert run(COMPILED, items, **args) == run(link_py, items, **args)


@needs_compiled
def test_unencodable_records_take_the_stand_in_in_both() -> None:
    assert COMPILED is not None
    items = [
        Pending({"msg": "fine"}, None),
        Pending({"msg": "lone \ud800 surrogate"}, Checkpoint("s", "k", 9, "/p")),
        Pending({"deep": orjson.loads("[" * 300 + "]" * 300)}, None),  # orjson writes <= 255
        Pending({"msg": "after"}, None),
    ]
    compiled, reference = run(COMPILED, items), run(link_py, items)
    assert compiled == reference
    wires = [orjson.loads(wire) for wire in segment.parse_run(compiled[0][1], 10).records]
    assert [w["msg"] for w in wires] == ["fine", "stand-in", "stand-in", "after"]
    assert [w["seq"] for w in wires] == [1, 2, 3, 4]


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_errors_propagate_and_nothing_is_half_made(link: Link | None) -> None:
    assert link is not None

    def refuse(record: dict[str, Any], exc: TypeError) -> bytes:
        raise RuntimeError("no stand-in")

    def broken(record: object, option: int) -> bytes:
        raise ValueError("encoder broke")

    bad = [Pending({"msg": "\ud800"}, None)]
    with pytest.raises(RuntimeError, match="no stand-in"):
        link(bad, *WHOLE, segment.checkpoint_prefix, refuse, bytearray(), *RUN_TYPES)
    with pytest.raises(ValueError, match="encoder broke"):
        link([Pending({"msg": "x"}, None)], 0, 0, PREV, 1 << 30, 0, 1 << 30, False, broken,
             SORT, segment.checkpoint_prefix, stand_in, bytearray(), *RUN_TYPES)  # fmt: skip
    with pytest.raises(ValueError, match="32 bytes"):
        link([], 0, 0, b"short", 1, 0, 1, False, orjson.dumps, SORT,
             segment.checkpoint_prefix, stand_in, bytearray(), *RUN_TYPES)  # fmt: skip
    with pytest.raises(TypeError, match="bytearray"):
        link([], 0, 0, PREV, 1, 0, 1, False, orjson.dumps, SORT,
             segment.checkpoint_prefix, stand_in, memoryview(bytearray(8)), PlainRun, EncodedRun)  # type: ignore[arg-type]  # fmt: skip


def test_the_reference_matches_the_record_and_frame_formats(tmp_path: Path) -> None:
    """``link_py`` inlines ``record.link`` and ``segment.encode``: it must give their bytes,
    bare frames (the canonical JSON, without ``h``), whose records every reader gives back as
    ``record.link``'s wire forms. A checkpoint with the source, key and path of the one framed
    before it is compact (its offset's digits); a segment's scan gives every checkpoint whole."""
    paths = ["/var/log/x", "/var/log/x", "/var/log/x", "/var/log/y", "/var/log/x"]
    items = [
        Pending({"msg": f"line {i}", "ts": "t"}, Checkpoint("src", "key", 10 * i, path))
        for i, path in enumerate(paths)
    ] + [Pending({"type": "seal"}, None)]
    (end, data, count, head, cps, full), _ = run(link_py, items, seq=41)
    assert (end, count, full) == (6, 6, False)
    assert cps == [item.checkpoint for item in items[:5]]
    prev, frames, wires = PREV, b"", []
    compact = [False, True, True, False, False, False]
    for seq, item, short in zip(range(42, 48), items, compact, strict=True):
        expected = dict(item.record, seq=seq)
        digest, wire = chain_record.link(prev, expected)
        cp = b"" if item.checkpoint is None else segment.encode_checkpoint(item.checkpoint)
        if short:
            assert item.checkpoint is not None
            cp = str(item.checkpoint.offset).encode()
        canonical = chain_record.canonical(expected)
        frames += segment.encode(seq, digest, cp, canonical, compact=short, bare=True)
        prev = digest
        wires.append(wire)
    assert data == frames
    assert head == prev
    parsed = segment.parse_run(data, 100)
    assert parsed.seqs == list(range(42, 48))
    assert parsed.records == segment.parse_run_py(data, 100).records == wires
    body, hashes = bytearray(), bytearray()
    segment.gather_run(data, 0, body, hashes, want=100, max_bytes=1 << 20, strict=False)
    assert bytes(body) == b"".join(wire + b"\n" for wire in wires)
    path = tmp_path / segment.segment_name(42)
    path.write_bytes(data)
    scanned = segment.scan(path)
    assert scanned.corrupt is None
    assert [frame.record for frame in scanned.frames] == wires
    assert [segment.decode_checkpoint(f.checkpoint) for f in scanned.frames[:5]] == cps
    assert scanned.frames[5].checkpoint == b""


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_stops_at_room_segment_end_and_after_one(link: Link | None) -> None:
    assert link is not None
    items = [Pending({"msg": "x" * 50}, None) for _ in range(10)]
    (_, one_frame, _, _, _, _), _ = run(link, items[:1])
    size = len(one_frame)
    # room: a record is taken while room is left before it, so the last may overshoot
    (end, data, count, _, _, full), _ = run(link, items, room=2 * size + 1)
    assert (end, len(data), count, full) == (3, 3 * size, 3, False)
    # segment: stop before the frame that would pass the limit, and say so
    (end, data, count, _, _, full), _ = run(link, items, used=10, limit=10 + 4 * size)
    assert (end, len(data), count, full) == (4, 4 * size, 4, True)
    # an empty segment takes a frame even if it alone passes the limit
    (end, _, count, _, _, full), _ = run(link, items, used=0, limit=1)
    assert (end, count, full) == (1, 1, True)
    (end, _, count, head, _, full), _ = run(link, items, used=1, limit=1)
    assert (end, count, head, full) == (0, 0, PREV, True)  # nothing made: the head stays
    (end, data, count, _, _, full), _ = run(link, items, start=4, seq=7, one=True)
    assert (end, full, count, segment.parse_run(data, 10).seqs) == (5, False, 1, [8])


def test_link_is_the_compiled_one_where_it_is_loaded() -> None:
    assert (chain.link is link_py) == (MODULE is None)


def frames_of(seqs: list[int]) -> bytes:
    """Frames for ``seqs``, checkpoints on every other one, every other of those compact (the
    readers skip a checkpoint either way); every third bare, as the writer makes them (the
    record without its h), the others as older writers did (the wire form)."""
    data = b""
    for seq in seqs:
        cp = b"" if seq % 2 else segment.encode_checkpoint(Checkpoint("s", "k", seq, "/p"))
        compact = seq % 4 == 2
        if compact:
            cp = str(seq).encode()
        h, bare = bytes([seq % 256]) * 32, seq % 3 == 0
        record = b'{"msg":"%d"}' % seq if bare else wire_of(seq)
        data += segment.encode(seq, h, cp, record, compact=compact, bare=bare)
    return data


def wire_of(seq: int) -> bytes:
    """The record of ``frames_of``'s frame ``seq`` as readers give it (bare or not)."""
    return b'{"msg":"%d","h":"%s"}' % (seq, bytes([seq % 256]).hex().encode() * 32)


def parsed(data: bytes, limit: int, compiled: bool) -> object:
    """parse_run's result, or the error it raised (type, offset, reason)."""
    try:
        if compiled:
            assert SPEEDUPS is not None
            raw = SPEEDUPS.parse_run(
                data, limit, segment.MAX_FRAME_BYTES, segment.CorruptFrameError
            )
            return segment.Run(*raw)
        return segment.parse_run_py(data, limit)
    except segment.CorruptFrameError as exc:
        return ("corrupt", exc.offset, exc.reason)


@needs_compiled
@settings(max_examples=400, deadline=None)
@given(
    seqs=st.lists(st.integers(0, 2**63 - 1), max_size=8),
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=3),
    limit=st.integers(0, 10),
)
def test_compiled_parse_run_equals_the_reference(
    seqs: list[int], cut: int, flips: list[tuple[int, int]], limit: int
) -> None:
    """Whole, torn (cut short) and corrupted (bytes flipped: lengths, crcs, cp lengths) runs
    give the same frames or the same error, at the same offset, for the same reason."""
    data = bytearray(frames_of(seqs)[: max(cut, 0) or None])
    for at, xor in flips:
        if at < len(data):
            data[at] ^= xor
    blob = bytes(data)
    assert parsed(blob, limit, compiled=True) == parsed(blob, limit, compiled=False)


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=needs_compiled), False])
def test_parse_run_reads_a_view_of_the_readers_window_and_copies_the_records(
    compiled: bool,
) -> None:
    """The reader parses a view of the bytearray it reads into and then reuses: the same frames
    as from bytes, and records that are ``bytes`` of their own, unchanged when the window is."""
    data = frames_of([5, 6, 7])
    window = bytearray(data + b"\x00" * 100)
    with memoryview(window) as view:
        run_ = parsed(view[: len(data)], 10, compiled)  # type: ignore[arg-type]
    assert run_ == parsed(data, 10, compiled)
    assert isinstance(run_, segment.Run)
    assert all(type(record) is bytes for record in run_.records)
    window[:] = b"\xff" * len(window)  # the next read overwrites the window
    assert run_.records == [wire_of(5), wire_of(6), wire_of(7)]


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=needs_compiled), False])
def test_parse_run_reads_what_the_writer_wrote(compiled: bool) -> None:
    data = frames_of([5, 6, 7])
    run_ = parsed(data + data[:20], 10, compiled)  # a torn fourth frame is left for later
    assert isinstance(run_, segment.Run)
    assert run_.seqs == [5, 6, 7]
    assert run_.records == [wire_of(5), wire_of(6), wire_of(7)]
    assert run_.hashes == [bytes([5]) * 32, bytes([6]) * 32, bytes([7]) * 32]
    assert run_.ends[-1] == len(data)
    head = segment.HEADER.pack(10**9, 0)  # a length no frame may have
    assert parsed(data + head + bytes(50), 10, compiled) == (
        "corrupt",
        len(data),
        "impossible length 1000000000",
    )
    body = segment.BODY_HEAD.pack(1, bytes(32), 500) + b"{}"  # cp_len past the body, crc right
    overrun = segment.HEADER.pack(len(body), zlib.crc32(body)) + body
    assert parsed(data + overrun, 10, compiled) == (
        "corrupt",
        len(data),
        "checkpoint overruns frame",
    )


def outcome(data: object, compiled: bool) -> object:
    """``parsed``, or the type and message of any other error it raised."""
    try:
        return parsed(data, 10, compiled)  # type: ignore[arg-type]
    except (BufferError, TypeError, ValueError) as exc:
        return (type(exc), str(exc))


@needs_compiled
@pytest.mark.parametrize(
    "view",
    [
        lambda data: memoryview(data).cast("I"),
        lambda data: memoryview(data).cast("B", (4, len(data) // 4)),
        lambda data: memoryview(data)[::2],
        lambda data: memoryview(data)[:12:2],
        lambda data: memoryview(data)[::-1],
    ],
    ids=["items-of-4-bytes", "rows", "non-contiguous", "short-non-contiguous", "reversed"],
)
def test_parse_run_takes_any_views_bytes_as_the_reference_does(view: Any) -> None:
    """The compiled loop parses a buffer's bytes, whatever the view's format and shape, and
    refuses a non-contiguous one: so must the reference (``len()`` of such a view counts its
    items or rows, which lost every frame, and a short non-contiguous one was parsed)."""
    data = frames_of([5, 6, 7])
    data += bytes(-len(data) % 8)  # whole items and rows
    whole = parsed(data, 10, compiled=False)
    assert isinstance(whole, segment.Run)
    assert whole.seqs == [5, 6, 7]
    expected = outcome(view(data), compiled=True)
    assert outcome(view(data), compiled=False) == expected
    if not isinstance(expected, tuple):
        assert expected == whole


@needs_compiled
@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=2100), skip=st.integers(0, 15))
def test_compiled_crc32_is_zlibs(data: bytes, skip: int) -> None:
    """The frames' checksum (folded with carry-less multiplies where the CPU has them) equals
    zlib.crc32 at every length (the fold takes 64 bytes and more) and alignment."""
    assert SPEEDUPS is not None
    view = memoryview(data)[skip:]
    assert SPEEDUPS.crc32(view) == zlib.crc32(view)


@needs_compiled
def test_compiled_crc32_on_long_and_edge_lengths() -> None:
    """Every length to 300 (the table alone under 64 bytes, then the fold and a tail of 0-15),
    and long ones."""
    assert SPEEDUPS is not None
    for size in (*range(301), 1 << 16, (1 << 20) + 7):
        for fill in (b"\x00", b"\xff", bytes(range(256))):
            data = (fill * (size // len(fill) + 1))[:size]
            assert SPEEDUPS.crc32(data) == zlib.crc32(data), (size, fill[:2])


# --- hostile arguments: the same answer as the reference, never a crash ---------------------------


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_an_item_taken_out_of_items_midway_is_still_linked(link: Link | None) -> None:
    """on_error runs Python code, which may drop the list's hold on the item being linked (here
    the only one): its checkpoint is still read from it (the compiled loop used a freed one)."""
    assert link is not None
    cp = Checkpoint("s", "k", 9, "/p")
    items = [Pending({"msg": "lone \ud800 surrogate"}, cp)]

    def clearing(record: dict[str, Any], exc: TypeError) -> bytes:
        items.clear()
        return stand_in(record, exc)

    end, _, _, count, _, cps, full = link(
        items, *WHOLE, segment.checkpoint_prefix, clearing, bytearray(), PlainRun, EncodedRun
    )
    assert (end, count, cps, full) == (1, 1, [cp], False)


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_a_negative_start_is_refused(link: Link | None) -> None:
    """Not an index from the end (the compiled loop read before the list's items)."""
    assert link is not None
    items = [Pending({"msg": "x"}, None), Pending({"msg": "y"}, None)]
    with pytest.raises(ValueError, match="start"):
        run(link, items, start=-1)


@needs_compiled
def test_seqs_up_to_2_63_minus_1_are_framed_as_in_the_reference() -> None:
    """The seq word holds seqs up to 2**63 - 1 (the protocol's signed 64-bit range); its top
    bit is ``segment.BARE``."""
    assert COMPILED is not None
    seq = 2**63 - 3
    items = [Pending({"msg": "x"}, None), Pending({"msg": "y"}, None)]
    compiled = run(COMPILED, items, seq=seq)
    assert compiled == run(link_py, items, seq=seq)
    assert compiled[0][2] == 2
    assert segment.parse_run(compiled[0][1], 10).seqs == [2**63 - 2, 2**63 - 1]


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
@pytest.mark.parametrize("seq", [2**63 - 2, 2**63 - 1, 2**63, 2**64 - 3])
@pytest.mark.parametrize("kind", ["pending", "run"])
def test_a_seq_past_2_63_minus_1_makes_no_frame(link: Link | None, seq: int, kind: str) -> None:
    """Seq 2**63 would set the seq word's flag (``segment.BARE``): the call raises, whatever
    it framed before, rather than write a frame whose seq reads back as another."""
    assert link is not None
    items: list[Item] = [Pending({"msg": "x"}, None), Pending({"msg": "y"}, None)]
    if kind == "run":
        data = b"x\ny\n"
        items = [PlainRun(data, 0, len(data), 0, "t", "s", "k", "/p")]
    with pytest.raises(OverflowError, match="2\\*\\*63 - 1"):
        link(
            items, 0, seq, PREV, 1 << 62, 0, 1 << 62, False, orjson.dumps, SORT,
            segment.checkpoint_prefix, stand_in, bytearray(), PlainRun, EncodedRun,
        )  # fmt: skip


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
@pytest.mark.parametrize("made", [b"{}", b"x}", b"}", b'{"a":1', b""])
def test_a_stand_in_no_reader_could_dress_is_refused(link: Link | None, made: bytes) -> None:
    """A frame is bare: its readers put h in before the record's closing brace. So what
    ``on_error`` gives for a record orjson refuses must be a JSON object other than ``{}``:
    both loops raise rather than write a frame every reader would take for corruption."""
    assert link is not None
    with pytest.raises(ValueError, match="not a JSON object other than"):
        link(
            [Pending({"msg": "x", "bad": object()}, None)], 0, 0, PREV, 1 << 62, 0, 1 << 62,
            False, orjson.dumps, SORT, segment.checkpoint_prefix, lambda *_: made, bytearray(),
            PlainRun, EncodedRun,
        )  # fmt: skip


@pytest.mark.parametrize("seq", [-1, 2**63, 2**64 - 1])
def test_encode_refuses_a_seq_the_seq_word_cannot_hold(seq: int) -> None:
    """Seqs 2**63 and up would read back as bare frames of another seq."""
    with pytest.raises(OverflowError, match="outside"):
        segment.encode(seq, bytes(32), b"", b'{"a":1}')
    top = segment.encode(2**63 - 1, bytes(32), b"", b'{"a":1}')
    assert segment.parse_run(top, 1) == segment.Run(
        [2**63 - 1], [bytes(32)], [b'{"a":1}'], [len(top)]
    )


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_a_negative_seq_makes_no_frame(link: Link | None) -> None:
    """A frame holds seq as a u64: the compiled loop wrote -4 as 2**64 - 4."""
    assert link is not None
    with pytest.raises((struct.error, OverflowError)):
        run(link, [Pending({"msg": "x"}, None)], seq=-5)


@needs_compiled
@pytest.mark.parametrize(
    ("used", "limit"), [(2**63 - 1, 2**63 - 1), (2**63 - 60, 2**63 - 1), (10, -(2**63))]
)
def test_the_segment_limit_check_does_not_overflow(used: int, limit: int) -> None:
    """used + made + frame past 2**63 is past any limit (the compiled sum wrapped negative)."""
    assert COMPILED is not None
    items = [Pending({"msg": "x"}, None)]
    compiled = run(COMPILED, items, used=used, limit=limit)
    assert compiled == run(link_py, items, used=used, limit=limit)
    assert compiled[0][0::5] == (0, True)


# --- out: the frames buffer the writer keeps from commit to commit ------------------------------


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_out_is_grown_reused_and_only_its_start_is_written(link: Link | None) -> None:
    """The frames land at the start of ``out``; what lies past them is left as it was, and a
    buffer big enough already is not resized (the writer's pages stay mapped)."""
    assert link is not None
    items = [Pending({"msg": f"line {i}"}, Checkpoint("s", "k", i, "/p")) for i in range(300)]
    (_, expected, *_), _ = run(link_py, items)
    out = bytearray()
    args = (*WHOLE, segment.checkpoint_prefix)
    end, _, size, *_ = link(copy.deepcopy(items), *args, stand_in, out, PlainRun, EncodedRun)
    assert (end, bytes(out[:size])) == (300, expected)
    big = bytearray(b"\x5a" * (4 * len(expected)))
    end, _, size, *_ = link(copy.deepcopy(items[:10]), *args, stand_in, big, PlainRun, EncodedRun)
    (_, ten, *_), _ = run(link_py, items[:10])
    assert (end, len(big)) == (10, 4 * len(expected))  # not shrunk to the frames
    assert bytes(big[:size]) == ten
    assert big[size:] == b"\x5a" * (len(big) - size)


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_a_callback_cannot_resize_out_under_either_loop(link: Link | None) -> None:
    """``out`` is exported while link runs: code it calls back (here on_error) gets BufferError
    instead of freeing the memory the compiled loop writes into, from the reference loop too
    (it is what the tests hold the compiled one to), and ``out`` is usable again after."""
    assert link is not None
    out = bytearray(16)

    def shrinking(record: dict[str, Any], exc: TypeError) -> bytes:
        out.clear()
        return stand_in(record, exc)

    items = [Pending({"msg": "x"}, None), Pending({"msg": "\ud800"}, None)]
    args = (*WHOLE, segment.checkpoint_prefix)
    with pytest.raises(BufferError):
        link(copy.deepcopy(items), *args, shrinking, out, PlainRun, EncodedRun)
    end, _, size, *_ = link(copy.deepcopy(items), *args, stand_in, out, PlainRun, EncodedRun)
    (_, expected, *_), _ = run(link_py, items)
    assert (end, bytes(out[:size])) == (2, expected)
    out.clear()  # released: resizable again


class OtherBuffer(bytearray):
    """A bytearray whose buffer is another, smaller one (``__buffer__`` is used from 3.12 on)."""

    small = bytearray(16)

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(self.small)


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
@pytest.mark.parametrize("out", [OtherBuffer(), OtherBuffer(64)], ids=["empty", "64 bytes"])
def test_out_must_be_a_bytearray_not_a_subclass(link: Link | None, out: bytearray) -> None:
    """Both loops refuse a bytearray subclass before making anything: its buffer need not be its
    bytes nor grow with them (on 3.12 the compiled loop wrote a 200 KB frame past the end of
    ``OtherBuffer.small`` and crashed)."""
    assert link is not None
    items = [Pending({"msg": "x" * 200_000}, None)]
    args = (*WHOLE, segment.checkpoint_prefix)
    with pytest.raises(TypeError, match="bytearray"):
        link(items, *args, stand_in, out, PlainRun, EncodedRun)
    assert "seq" not in items[0].record
    assert OtherBuffer.small == bytearray(16)


# --- checkpoint prefixes: made once per run of records sharing source, key and path objects ----


@needs_compiled
@pytest.mark.parametrize("offset", [-(2**63), -(2**63) + 1, -10, -1, 0, 9, 10, 2**63 - 1])
def test_offsets_at_the_ends_of_a_long_long_are_written_as_str_writes_them(offset: int) -> None:
    """The compiled loop writes the digits of an offset that fits a long long itself."""
    assert COMPILED is not None
    items = [Pending({"msg": "x"}, Checkpoint("app", "1:2:aa", offset, "/var/log/a.log"))]
    assert run(COMPILED, items) == run(link_py, items)
    (_, data, *_), _ = run(COMPILED, items)
    frame = segment.parse_frame(data, 0)
    assert frame is not None
    assert frame.checkpoint.endswith(b'"o":' + str(offset).encode() + b"}")


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_checkpoints_of_interleaved_files_get_their_own_prefix(
    link: Link | None, tmp_path: Path
) -> None:
    """Records of two files, in runs and alternating (the compiled loop keeps the last prefix,
    by the identity of source, key and path): each frame has its own file's checkpoint, and
    offsets past a long long are written as str() writes them."""
    assert link is not None
    a = Checkpoint("app", "1:2:aa", 0, "/var/log/a.log")
    b = Checkpoint("app", "1:3:bb", 0, "/var/log/b.log")
    b_again = b._replace(key="".join(["1:3:", "bb"]))  # an equal key, another object
    order = [a, a, a, b, a, b, b, a, None, a, b_again, b]
    items = [
        Pending({"msg": f"{i}"}, None if cp is None else cp._replace(offset=10 * i))
        for i, cp in enumerate(order)
    ] + [Pending({"msg": "far"}, a._replace(offset=2**63 + 3))]
    (_, data, *_), _ = run(link, items)
    (_, expected, *_), _ = run(link_py, items)
    assert data == expected
    path = tmp_path / segment.segment_name(1)
    path.write_bytes(data)
    frames = segment.scan(path).frames
    got = [segment.decode_checkpoint(f.checkpoint) if f.checkpoint else None for f in frames]
    assert got == [item.checkpoint for item in items]
    # Whole where the file changes (and first), compact after the same file's, a frame with
    # none between or not.
    at, compact = 0, []
    while at < len(data):
        frame = segment.parse_frame(data, at)
        assert frame is not None
        compact.append(frame.compact)
        at = frame.end
    # a  a  a  b  a  b  b  a  -  a  b  b  a
    assert compact == [bool(int(c)) for c in "0110001001010"]


@needs_compiled
def test_the_compiled_loop_asks_for_a_prefix_only_when_the_file_changes() -> None:
    assert COMPILED is not None
    calls: list[tuple[str, str, str]] = []

    def counted(source: str, key: str, path: str) -> bytes:
        calls.append((source, key, path))
        return segment.checkpoint_prefix(source, key, path)

    a = Checkpoint("app", "1:2:aa", 0, "/var/log/a.log")
    b = Checkpoint("app", "1:3:bb", 0, "/var/log/b.log")
    items = [Pending({"msg": "x"}, cp._replace(offset=i)) for i, cp in enumerate([a, a, b, b, a])]
    COMPILED(items, *WHOLE, counted, stand_in, bytearray(), *RUN_TYPES)
    assert calls == [("app", "1:2:aa", "/var/log/a.log"), ("app", "1:3:bb", "/var/log/b.log"),
                     ("app", "1:2:aa", "/var/log/a.log")]  # fmt: skip


@pytest.mark.parametrize("link", [pytest.param(COMPILED, marks=needs_compiled), link_py])
def test_a_failing_or_wrong_checkpoint_prefix_raises(link: Link | None) -> None:
    assert link is not None
    items = [Pending({"msg": "x"}, Checkpoint("s", "k", 1, "/p"))]

    def broken(source: str, key: str, path: str) -> bytes:
        raise RuntimeError("no prefix")

    def text(source: str, key: str, path: str) -> Any:
        return "not bytes"

    with pytest.raises(RuntimeError, match="no prefix"):
        link(copy.deepcopy(items), *WHOLE, broken, stand_in, bytearray(), *RUN_TYPES)
    with pytest.raises(TypeError):
        link(copy.deepcopy(items), *WHOLE, text, stand_in, bytearray(), *RUN_TYPES)


@needs_compiled
def test_the_compiled_loop_leaks_no_references_to_checkpoint_parts() -> None:
    """The prefix cache holds source, key and path only while link runs, also when it fails."""
    assert COMPILED is not None
    source, key, path = (f"{name}-{id(object())}" for name in ("src", "key", "path"))
    held = (source, key, path)

    def once(on_error: Any) -> None:
        assert COMPILED is not None
        items = [Pending({"msg": m}, Checkpoint(source, key, i, path))
                 for i, m in enumerate(["a", "b", "\ud800", "c"])]  # fmt: skip
        with contextlib.suppress(RuntimeError):
            COMPILED(
                items,
                *WHOLE,
                segment.checkpoint_prefix,
                on_error,
                bytearray(),
                PlainRun,
                EncodedRun,
            )

    def refuse(record: dict[str, Any], exc: TypeError) -> bytes:
        raise RuntimeError("refused")

    for on_error in (stand_in, refuse):
        once(on_error)  # warm up: checkpoint_prefix's lru_cache keeps the first call's arguments
        before = [sys.getrefcount(obj) for obj in held]
        for _ in range(3):
            once(on_error)
        assert [sys.getrefcount(obj) for obj in held] == before


@needs_compiled
@pytest.mark.parametrize(
    ("limit", "max_frame", "error"),
    [("10", 5, TypeError), (10, "5", TypeError), (2**70, 5, OverflowError),
     (10, 2**70, OverflowError), ("10", 2**70, TypeError)],
)  # fmt: skip
def test_compiled_parse_run_refuses_bad_limits_with_the_first_error(
    limit: Any, max_frame: Any, error: type[Exception]
) -> None:
    """Each conversion is checked before the next runs (no C call with an exception set)."""
    assert SPEEDUPS is not None
    with pytest.raises(error):
        SPEEDUPS.parse_run(frames_of([1]), limit, max_frame, segment.CorruptFrameError)
