"""Encoded runs (``EncodedRun``: records in canonical JSON but for their seq) through ``link``:
both loops frame them exactly as the records they hold, wherever the calls stop (room, segment
ends, one record per call), and refuse a blob that does not hold whole records."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.buffer import segment
from agent.buffer.chain import Link, link_py
from agent.config import BufferConfig
from agent.sources import ENCODED_HEAD, Checkpoint, EncodedRun, Item, Pending, record_count
from agent.sources import materialize as made_of
from tests.buffer.harness import assert_chain, start, stored
from tests.buffer.test_chain import COMPILED, SORT
from tests.buffer.test_runs import LINKS, last_per_key, linked, whole
from tests.support import eventually

SOURCE, KEY, PATH = "auth", "1:2", "/var/log/auth.log"
WHERE = (SOURCE, KEY, PATH)


def encoded_of(records: list[dict[str, Any]], offsets: list[int]) -> EncodedRun:
    """An encoded run of ``records`` (each with a key after "seq": "src"), the line of each
    ending at its offset."""
    blob = b""
    for record, offset in zip(records, offsets, strict=True):
        canonical = orjson.dumps({**record, "seq": 0}, option=SORT)
        before, after = canonical.split(b'"seq":0,')
        blob += ENCODED_HEAD.pack(len(before), len(after), offset) + before + after
    return EncodedRun(blob, 0, len(blob), SOURCE, KEY, PATH)


def pending_of(records: list[dict[str, Any]], offsets: list[int]) -> list[Item]:
    return [
        Pending(dict(record), Checkpoint(SOURCE, KEY, offset, PATH))
        for record, offset in zip(records, offsets, strict=True)
    ]


TEXT = st.text(max_size=20)
RECORDS = st.lists(
    st.fixed_dictionaries(
        {"src": st.just(SOURCE), "msg": TEXT},
        optional={"event": st.fixed_dictionaries({"created": TEXT}), "user": st.just({"n": 1})},
    ),
    min_size=1,
    max_size=8,
)


@pytest.mark.parametrize("link", LINKS)
@settings(max_examples=150, deadline=None)
@given(
    groups=st.lists(RECORDS, min_size=1, max_size=4),
    limit=st.integers(1, 3000),
    room=st.integers(1, 3000),
    one=st.booleans(),
)
def test_an_encoded_run_frames_exactly_as_its_records(
    link: Link | None, groups: list[list[dict[str, Any]]], limit: int, room: int, one: bool
) -> None:
    assert link is not None
    items: list[Item] = []
    reference: list[Item] = []
    offset = 0
    for group in groups:
        offsets = [offset := offset + 10 + i for i in range(len(group))]
        items.append(encoded_of(group, offsets))
        reference += pending_of(group, offsets)
        reference.append(Pending({"msg": "between", "src": "x"}, None))
        items.append(Pending({"msg": "between", "src": "x"}, None))
    frames, count, head, cps = whole(link, items, limit=limit, one=one)
    r_frames, r_count, r_head, r_cps = whole(link_py, reference, limit=limit, one=one)
    assert (frames, count, head) == (r_frames, r_count, r_head)
    assert last_per_key(cps) == last_per_key(r_cps)
    assert count == record_count(items) == len(reference)
    if COMPILED is not None:  # one call, stopped by room: the two loops stop alike
        assert linked(COMPILED, items, room=room) == linked(link_py, items, room=room)


def test_an_encoded_run_counts_and_resumes_where_a_call_stopped() -> None:
    records = [{"msg": f"line {i}", "src": SOURCE} for i in range(5)]
    run = encoded_of(records, [10, 20, 30, 40, 50])
    assert run.count == 5
    starts = [start - ENCODED_HEAD.size for start, *_ in run.spans()]
    rest = run.after(starts[2])
    assert rest.count == 3
    assert [cp for *_, cp in rest.spans()] == [30, 40, 50]
    assert rest.checkpoint(50) == Checkpoint(SOURCE, KEY, 50, PATH)
    with pytest.raises(TypeError, match="cannot be made again"):
        made_of([run])


def hostile_runs() -> list[tuple[str, EncodedRun]]:
    good = encoded_of([{"msg": "x", "src": SOURCE}], [5])
    blob = good.blob
    head = struct.Struct("<IIQ")
    before, after, _ = head.unpack_from(blob)
    not_object = head.pack(before, after, 5) + b"[" + blob[head.size + 1 :]
    return [
        ("inside a record's head", EncodedRun(blob[:10], 0, 10, SOURCE, KEY, PATH)),
        ("inside a record", EncodedRun(blob[:-1], 0, len(blob) - 1, SOURCE, KEY, PATH)),
        ("inside a record", EncodedRun(head.pack(1 << 31, 0, 5) + blob[16:], 0, len(blob), *WHERE)),
        ("not a JSON object", EncodedRun(not_object, 0, len(not_object), SOURCE, KEY, PATH)),
    ]


@pytest.mark.parametrize("link", LINKS)
def test_a_call_out_of_room_stops_before_reading_the_next_head(link: Link | None) -> None:
    # One record fits the room; the blob after it is cut inside a head, which neither loop
    # reads before the next call: both stop after the first record, alike.
    assert link is not None
    good = encoded_of([{"msg": "x" * 40, "src": SOURCE}] * 2, [5, 10])
    cut = EncodedRun(good.blob[:-60], 0, len(good.blob) - 60, *WHERE)
    end, at, _, count, *_ = linked(link, [cut], room=1)
    assert (end, count) == (0, 1)
    assert at == good.span_at(0)[2]


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize(("reason", "run"), hostile_runs())
def test_a_blob_without_whole_records_is_refused(
    link: Link | None, reason: str, run: EncodedRun
) -> None:
    assert link is not None
    with pytest.raises(ValueError, match=reason):
        whole(link, [run])


def test_an_empty_encoded_run_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        EncodedRun(b"", 0, 0, SOURCE, KEY, PATH)
    with pytest.raises(ValueError, match="at least one record"):
        EncodedRun(b"x" * 20, 5, 30, SOURCE, KEY, PATH)


@pytest.mark.parametrize("fsync", ["batch", "always"])
async def test_encoded_runs_commit_across_segments_as_their_records(
    tmp_path: Path, fsync: str
) -> None:
    # The writer commits a run in parts (segment ends, one record per commit), going on from
    # ``after(at)``: the stored records, chain and checkpoint are those of the records.
    config = BufferConfig(segment_bytes=4096, fsync=fsync)  # type: ignore[arg-type]
    run = await start(tmp_path, config)
    buf = run.buffer
    first = [{"msg": f"line {i}" + "x" * 120, "src": SOURCE} for i in range(40)]
    last = [{"msg": f"line {i}", "src": SOURCE} for i in range(40, 43)]
    await buf.emit(
        [
            encoded_of(first, [100 * (i + 1) for i in range(40)]),
            Pending({"msg": "between"}, None),
            encoded_of(last, [5000, 5100, 5200]),
        ]
    )
    await eventually(lambda: buf.last_seq == 44, timeout=10, what="the commit")
    await run.close()
    frames = stored(tmp_path)
    records = [orjson.loads(f.record) for f in frames[:44]]
    assert [r["msg"] for r in records] == [r["msg"] for r in first] + ["between"] + [
        r["msg"] for r in last
    ]
    assert [r["seq"] for r in records] == list(range(1, 45))
    starts = [first_seq for first_seq, _ in segment.list_segments(tmp_path / "buffer")]
    assert len(starts) >= 3
    assert all(1 < seq <= 40 for seq in starts[1:3])  # the first run cut by two segment ends
    assert_chain(frames, buf.stream_id)
    assert buf.checkpoints[(SOURCE, KEY)].offset == 5200
