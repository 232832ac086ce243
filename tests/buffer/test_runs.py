"""Runs of plain lines (``PlainRun``) through the writer: the compiled ``link`` encodes their
lines without making records, and what it writes must be byte for byte what the records the run
stands for would have given, wherever a commit stops inside a run and resumes."""

from __future__ import annotations

import copy
import errno
import os
import random
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.buffer import segment
from agent.buffer.chain import Link, link_py
from agent.buffer.wal import SegmentIO
from agent.config import BufferConfig
from agent.sources import Checkpoint, EncodedRun, Item, Pending, PlainRun, materialize, record_count
from agent.sources.tailed import cut_plain_py
from agent.statefile import write_all
from tests.buffer.harness import assert_chain, start, stored
from tests.buffer.test_chain import COMPILED, PREV, SORT, needs_compiled, stand_in
from tests.support import eventually

TS = "2026-12-07T02:04:31.123456Z"
LINKS = [pytest.param(COMPILED, marks=needs_compiled, id="compiled"), pytest.param(link_py)]

# Every ASCII byte but the newline: control characters, quotes and backslashes are escaped.
lines = st.lists(st.binary(max_size=60).map(lambda b: bytes(c & 0x7F for c in b if c != 10)))
names = st.text(st.characters(codec="utf-8"), max_size=20)  # source and path: any encodable
runs = st.builds(
    lambda ls, lead, rest, offset, source, key, path: PlainRun(
        lead + b"".join(line + b"\n" for line in ls) + rest,
        len(lead),
        len(lead) + sum(len(line) + 1 for line in ls),
        offset,
        TS,
        source,
        key,
        path,
    ),
    lines.filter(bool),
    st.sampled_from([b"", b"before\n"]),
    st.sampled_from([b"", b"unterminated rest"]),
    st.integers(0, 2**40),
    names,
    names,
    names,
)
items = st.lists(
    runs | st.builds(Pending, st.fixed_dictionaries({"msg": names}), st.none()), max_size=4
)


def linked(link: Link, items: list[Item], **kw: Any) -> tuple[Any, ...]:
    """``link`` over a copy of ``items``: what it returns, with the frames in place of the size
    and each checkpoint as a tuple."""
    mine = copy.deepcopy(items)
    out = bytearray(b"\xa5" * 64)
    args = {"start": 0, "seq": 0, "room": 1 << 40, "used": 0, "limit": 1 << 40, "one": False}
    args.update(kw)
    end, at, size, count, head, cps, full = link(
        mine, args["start"], args["seq"], PREV, args["room"], args["used"], args["limit"],
        bool(args["one"]), orjson.dumps, SORT, segment.checkpoint_prefix, stand_in, out, PlainRun,
        EncodedRun,
    )  # fmt: skip
    return end, at, bytes(out[:size]), count, head, [tuple(cp) for cp in cps], full


def whole(link: Link, items: list[Item], **kw: Any) -> tuple[bytes, int, bytes, list[Any]]:
    """Frames, record count, chain head and checkpoints of ``items`` linked call after call as
    the writer does: a run stopped inside goes on as ``run.after(at)``, a full segment starts a
    new one."""
    items = copy.deepcopy(items)
    frames, cps = b"", []
    index, seq, prev, used = 0, 0, PREV, 0
    limit = kw.get("limit", 1 << 40)
    while index < len(items):
        out = bytearray()
        index, at, size, made, prev, more, full = link(
            items, index, seq, prev, kw.get("room", 1 << 40), used, limit, kw.get("one", False),
            orjson.dumps, SORT, segment.checkpoint_prefix, stand_in, out, PlainRun, EncodedRun,
        )  # fmt: skip
        frames += bytes(out[:size])
        seq += made
        cps += [tuple(cp) for cp in more]
        used = 0 if full else used + size
        if at:
            run = items[index]
            assert isinstance(run, PlainRun | EncodedRun)
            items[index] = run.after(at)
    return frames, seq, prev, cps


def last_per_key(cps: list[Any]) -> dict[tuple[str, str], Any]:
    return {(cp[0], cp[1]): cp for cp in cps}


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(items=items, room=st.integers(1, 3000), limit=st.integers(1, 3000), one=st.booleans())
@example(items=[PlainRun(b'"\\\x00\x1f\x7f\t\x08\x0c\x0b\n', 0, 10, 0, TS, "s", "k", "/p")],
         room=1 << 20, limit=1 << 20, one=False)  # fmt: skip
def test_compiled_link_of_runs_equals_the_reference(
    items: list[Item], room: int, limit: int, one: bool
) -> None:
    assert COMPILED is not None
    kw = {"room": room, "limit": limit, "one": one}
    assert linked(COMPILED, items, **kw) == linked(link_py, items, **kw)
    assert whole(COMPILED, items, limit=limit, one=one) == whole(
        link_py, items, limit=limit, one=one
    )


@pytest.mark.parametrize("link", LINKS)
@settings(max_examples=150, deadline=None)
@given(items=items, limit=st.integers(1, 3000), one=st.booleans())
def test_a_run_frames_exactly_as_the_records_it_stands_for(
    link: Link | None, items: list[Item], limit: int, one: bool
) -> None:
    """Wherever the calls stop (segment ends, one record per call), the frames, their count and
    the chain head are those of the records; checkpoints are one per run, its last line's, so
    the checkpoint map ends the same."""
    assert link is not None
    frames, count, head, cps = whole(link, items, limit=limit, one=one)
    records = materialize(items)
    r_frames, r_count, r_head, r_cps = whole(link_py, list(records), limit=limit, one=one)
    assert (frames, count, head) == (r_frames, r_count, r_head)
    assert last_per_key(cps) == last_per_key(r_cps)
    assert count == record_count(items) == len(segment.parse_run(frames, 1 << 30).seqs)


def test_run_records_are_the_file_sources_cut() -> None:
    data = b'one\n\ttwo "q" \\\n\x01\nrest'
    run = PlainRun(data, 0, data.rindex(b"\n") + 1, 100, TS, "app", "k:1", "/var/log/app.log")
    cut: list[Pending] = []
    after = cut_plain_py(data, TS, "app", "k:1", "/var/log/app.log", 100, Pending, Checkpoint,
                         cut, 1 << 20)  # fmt: skip
    assert [(p.record, p.checkpoint) for p in run.records()] == [
        (p.record, p.checkpoint) for p in cut
    ]
    assert run.count == 3
    assert run.checkpoint_at(run.end) == Checkpoint("app", "k:1", after or 0, "/var/log/app.log")
    two = run.after(4)
    assert [p.record["msg"] for p in two.records()] == ['\ttwo "q" \\', "\x01"]
    assert two.records()[0].record["log"]["offset"] == 104
    assert run.line(4, data.index(b"\x01")).record == two.records()[0].record
    with pytest.raises(ValueError, match="whole lines"):
        PlainRun(data, 0, 2, 0, TS, "app", "k", "/p")  # not at a newline
    with pytest.raises(ValueError, match="whole lines"):
        PlainRun(data, 4, 4, 0, TS, "app", "k", "/p")  # empty
    with pytest.raises(TypeError):
        PlainRun(data, 0, 4, 0, TS, "app", "k", "/p\ud800")  # a path JSON cannot hold


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("at", [0, 3, 15, 16, 17, 31, 32, 40])
def test_a_run_with_a_non_ascii_line_is_refused(link: Link | None, at: int) -> None:
    # ``at``: where the byte falls in the compiled scan's 16-byte blocks (and the tail after).
    assert link is not None
    line = b"x" * at + b"\xc3\xa9" + b"y" * 7
    data = b"fine\n" + line + b"\n"
    with pytest.raises(ValueError, match="ASCII"):
        linked(link, [PlainRun(data, 0, len(data), 0, TS, "s", "k", "/p")])


@needs_compiled
@pytest.mark.parametrize("special", [b'"', b"\\", b"\x00", b"\t", b"\x1f", b"\x7f", b" "])
def test_a_byte_to_escape_anywhere_in_a_long_line_frames_as_the_reference(special: bytes) -> None:
    """The compiled loop finds the bytes to escape 16 at a time: one at every place of lines
    up to three blocks long, lines with one at each end, and lines with none."""
    assert COMPILED is not None
    body = [b"a" * n for n in (15, 16, 17, 48)]
    body += [b"a" * at + special + b"b" * (40 - at) for at in range(41)]
    body += [special + b"c" * 30 + special]
    data = b"".join(line + b"\n" for line in body)
    items: list[Item] = [PlainRun(data, 0, len(data), 7, TS, "s", "k", "/p")]
    assert linked(COMPILED, items) == linked(link_py, items)


@needs_compiled
def test_a_long_run_grows_out_midway_and_frames_as_the_reference() -> None:
    """The compiled loop grows ``out`` as it frames a run's lines: a run of ~1 MiB of frames
    grows it several times from 64 bytes, mid-line-loop."""
    assert COMPILED is not None
    data = b"".join(b'line %d "quoted" \\ \x01%s\n' % (i, b"x" * (i % 300)) for i in range(5000))
    run: list[Item] = [PlainRun(data, 0, len(data), 7, TS, "s", "k", "/var/log/x")]
    compiled = linked(COMPILED, run)
    assert compiled == linked(link_py, run)
    assert compiled[3] == 5000
    assert len(compiled[2]) > 1 << 20


@pytest.mark.parametrize("link", LINKS)
def test_errors_met_while_framing_a_run_are_raised_as_the_references(link: Link | None) -> None:
    """Errors the compiled loop meets with the GIL released are raised once it is held again
    (the reference's encoder refuses the seq past the u64 instead), and nothing is made."""
    assert link is not None
    data = b"a\nb\nc\n"
    with pytest.raises((OverflowError, struct.error, TypeError)):
        linked(link, [PlainRun(data, 0, len(data), 0, TS, "s", "k", "/p")], seq=2**64 - 3)
    # cp_len's top bit marks a compact checkpoint: a whole one must fit in the 15 bits left.
    with pytest.raises(ValueError, match="32767"):
        linked(link, [PlainRun(data, 0, len(data), 0, TS, "s", "k", "/" + "p" * 40_000)])
    assert linked(link, [PlainRun(data, 0, len(data), 0, TS, "s", "k", "/p")])[3] == 3


@needs_compiled
def test_the_compiled_loop_refuses_a_run_whose_fields_are_not_what_it_reads() -> None:
    assert COMPILED is not None
    bad = PlainRun(b"a\n", 0, 2, 0, TS, "s", "k", "/p")
    bad.head = "not bytes"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="head must be bytes"):
        linked(COMPILED, [bad])
    short = PlainRun(b"a\nb\n", 0, 4, 0, TS, "s", "k", "/p")
    short.end = 9
    with pytest.raises(ValueError, match="whole lines"):
        linked(COMPILED, [short])


# --- through the buffer -------------------------------------------------------------------------


def run_of(first: int, count: int, size: int = 0) -> PlainRun:
    data = b"".join(b"line %d%s\n" % (i, b"x" * size) for i in range(first, first + count))
    return PlainRun(data, 0, len(data), first * 1000, TS, "s", "1:2", "/var/log/x")


@pytest.mark.parametrize("fsync", ["batch", "always"])
async def test_runs_commit_across_segments_as_records(tmp_path: Path, fsync: str) -> None:
    config = BufferConfig(segment_bytes=4096, fsync=fsync)  # type: ignore[arg-type]
    run = await start(tmp_path, config)
    buf = run.buffer
    await buf.emit([run_of(0, 40, size=120), Pending({"msg": "between"}, None), run_of(40, 3)])
    await eventually(lambda: buf.last_seq == 44, timeout=10, what="the commit")
    await run.close()
    frames = stored(tmp_path)
    msgs = [orjson.loads(f.record)["msg"] for f in frames[:44]]
    assert msgs == [f"line {i}{'x' * 120}" for i in range(40)] + ["between"] + [
        f"line {i}" for i in range(40, 43)
    ]
    assert len(segment.list_segments(tmp_path / "buffer")) > 3
    assert_chain(frames, buf.stream_id)
    assert buf.checkpoints[("s", "1:2")].offset == 40 * 1000 + len(run_of(40, 3).data)


class FailingFsync(SegmentIO):
    """Fails the fsyncs numbered ``failing`` (from 1)."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.calls = 0

    def fsync(self, fd: int) -> None:
        self.calls += 1
        if self.calls in self.failing:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)


async def test_a_run_cut_by_a_failed_write_is_retried_from_where_it_stood(tmp_path: Path) -> None:
    """A commit that ends a segment inside a run, then fails in the next segment: the part
    already durable is not written again, the rest is, once."""
    io = FailingFsync({2, 3})  # the first segment's part is durable, the next fails twice
    run = await start(tmp_path, BufferConfig(segment_bytes=2048, retry_initial=0.01), io)
    buf = run.buffer
    await buf.emit([run_of(0, 30, size=40)])
    await eventually(lambda: buf.last_seq == 30, timeout=10, what="the retried commit")
    assert buf.stats.write_errors == 2
    await run.close()
    frames = stored(tmp_path)
    assert [orjson.loads(f.record)["msg"] for f in frames[:30]] == [
        f"line {i}{'x' * 40}" for i in range(30)
    ]
    assert_chain(frames, buf.stream_id)


class FlakyIO(SegmentIO):
    """Writes and fsyncs that fail now and then, a write after part of its bytes reached the
    file (the writer cuts the segment back and retries)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        draw = self.random.random()
        if draw < 0.15:
            raise OSError(errno.ENOSPC, "No space left on device")
        if draw < 0.25 and len(data) > 1:
            write_all(fd, data[: len(data) // 2])
            raise OSError(errno.EIO, "Input/output error")
        write_all(fd, data)

    def fsync(self, fd: int) -> None:
        if self.random.random() < 0.15:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)


def hostile_runs(seed: int) -> list[Item]:
    """Runs of lines of any ASCII bytes, after a lead and before an unterminated rest, with a
    source and path that JSON must escape."""
    draw = random.Random(seed)
    made: list[Item] = []
    for n in range(4):
        lines = [
            bytes(draw.randrange(128) for _ in range(draw.randint(0, 60))).replace(b"\n", b" ")
            for _ in range(draw.randint(1, 40))
        ]
        lead = b"lead\n" if n % 2 else b""
        data = lead + b"".join(line + b"\n" for line in lines) + b"rest"
        path = '/var/log/we\u00efrd "path\\\n.log'
        made.append(
            PlainRun(data, len(lead), len(data) - 4, n * 10_000, TS, 'src\u00e9"', "1:2", path)
        )
    return made


async def committed(
    state: Path, items: list[Item], config: BufferConfig, seed: int
) -> tuple[list[tuple[int, bytes, bytes]], dict[tuple[str, str], Checkpoint]]:
    run = await start(state, config, FlakyIO(seed))
    await run.buffer.emit(items)
    total = record_count(items)
    await eventually(lambda: run.buffer.last_seq >= total, timeout=60, what="the commit")
    checkpoints = dict(run.buffer.checkpoints)
    await run.close()
    frames = [(f.seq, f.record[: f.record.rindex(b',"h":"')], f.checkpoint) for f in stored(state)]
    return frames[:total], checkpoints


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fsync", ["batch", "always"])
async def test_runs_store_as_their_records_through_failing_writes(
    tmp_path: Path, seed: int, fsync: str
) -> None:
    """The same failures (by seed) for runs and for their records: the same frames, records
    and checkpoints in them, and the same checkpoint map (a review's test, kept)."""
    config = BufferConfig(segment_bytes=3000, fsync=fsync, retry_initial=0.001, retry_max=0.002)  # type: ignore[arg-type]
    items = hostile_runs(seed)
    got = await committed(tmp_path / "runs", list(items), config, seed)
    want = await committed(tmp_path / "records", list(materialize(items)), config, seed)
    assert len(got[0]) == record_count(items)
    assert got == want
