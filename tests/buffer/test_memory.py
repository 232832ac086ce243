"""The hot tail and the frame codec against plain reference implementations."""

from __future__ import annotations

import hashlib
import os
import zlib
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.buffer import segment
from agent.buffer.memory import Entry, HotTail
from agent.sources import Checkpoint


def reference_after(
    entries: list[Entry], after_seq: int, max_records: int, max_bytes: int
) -> list[Entry] | None:
    """The obvious loop: consecutive entries from after_seq + 1, until a limit."""
    start = next((i for i, e in enumerate(entries) if e[0] == after_seq + 1), None)
    if start is None:
        return None
    out: list[Entry] = []
    size = 0
    for entry in entries[start : start + max_records]:
        if out and (size >= max_bytes or entry[0] != out[-1][0] + 1):
            break
        out.append(entry)
        size += len(entry[2])
    return out


@settings(max_examples=300, deadline=None)
@given(
    first=st.integers(1, 50),
    steps=st.lists(st.sampled_from([1, 1, 1, 1, 2, 5]), min_size=1, max_size=60),
    sizes=st.lists(st.integers(1, 40), min_size=60, max_size=60),
    after=st.integers(0, 200),
    max_records=st.integers(1, 70),
    max_bytes=st.integers(1, 400),
)
def test_hot_tail_after_matches_the_plain_loop(  # noqa: PLR0917 - Hypothesis arguments
    first: int,
    steps: list[int],
    sizes: list[int],
    after: int,
    max_records: int,
    max_bytes: int,
) -> None:
    """Seqs with holes (as after recovery), every limit: the sliced version answers the same."""
    seqs = [first]
    for step in steps[1:]:
        seqs.append(seqs[-1] + step)
    entries = [(s, b"h", b"x" * n) for s, n in zip(seqs, sizes, strict=False)]
    tail = HotTail(1 << 30)
    tail.extend(entries)
    want = reference_after(entries, after, max_records, max_bytes)
    got = tail.after(after, max_records, max_bytes)
    if got is None:
        # Allowed only when there is nothing to give, or a hole lies before the seq asked for
        # (the tail indexes by seq - first, so it leaves that case to the file reader).
        holes_before = any(b[0] != a[0] + 1 for a, b in pairwise(entries) if b[0] <= after + 1)
        assert want is None or holes_before
    else:
        assert got == want


class ReferenceTail:
    """The hot tail's trimming as a plain loop: drop from the front until half is left."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.entries, self.bytes = max_bytes, list[Entry](), 0

    def extend(self, entries: list[Entry]) -> None:
        self.entries += entries
        self.bytes += sum(len(e[2]) for e in entries)
        if self.bytes > self.max_bytes:
            while self.bytes > self.max_bytes // 2 and self.entries:
                self.bytes -= len(self.entries.pop(0)[2])

    def forget_through(self, seq: int) -> None:
        while self.entries and self.entries[0][0] <= seq:
            self.bytes -= len(self.entries.pop(0)[2])


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(0, 50), max_size=12), min_size=1, max_size=12),
    max_bytes=st.integers(0, 300),
    forget=st.lists(st.integers(-3, 8), min_size=12, max_size=12),
)
def test_hot_tail_trims_and_forgets_as_the_plain_loop(
    batches: list[list[int]], max_bytes: int, forget: list[int]
) -> None:
    """Also forget_through (segments deleted) between batches: the running sizes the trim
    bisects stay those of the entries held."""
    tail, reference = HotTail(max_bytes), ReferenceTail(max_bytes)
    seq = 0
    for sizes, back in zip(batches, forget, strict=False):
        entries = [(seq + i, b"h", b"x" * n) for i, n in enumerate(sizes, start=1)]
        seq += len(sizes)
        tail.extend(entries)
        reference.extend(entries)
        assert tail._entries == reference.entries
        assert tail._bytes == reference.bytes
        tail.forget_through(seq - back)
        reference.forget_through(seq - back)
        assert tail._entries == reference.entries
        assert tail._bytes == reference.bytes


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(st.binary(min_size=2, max_size=300), min_size=1, max_size=40),
    chunk=st.integers(1, 400),
)
def test_frames_read_back_in_any_chunking(
    tmp_path_factory: pytest.TempPathFactory, records: list[bytes], chunk: int
) -> None:
    """iter_frames with a read chunk smaller than a frame still yields every frame once, with
    absolute end offsets."""
    path: Path = tmp_path_factory.mktemp("frames") / "seg"
    data = b""
    ends = []
    for seq, record in enumerate(records, 1):
        cp = segment.encode_checkpoint(Checkpoint("s", "k", seq * 10, "/p"))
        h = hashlib.sha256(record).digest()
        data += segment.encode(seq, h, cp, record)
        ends.append(len(data))
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        frames = list(segment.iter_frames(fd, 0, len(data), chunk))
    finally:
        os.close(fd)
    assert [f.record for f in frames] == records
    assert [f.end for f in frames] == ends
    assert [segment.decode_checkpoint(f.checkpoint).offset for f in frames] == [
        10 * i for i in range(1, len(records) + 1)
    ]
    assert zlib.crc32(data) == zlib.crc32(path.read_bytes())


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.binary(min_size=2, max_size=200), min_size=1, max_size=30),
    cut=st.floats(0, 1),
    limit=st.integers(1, 40),
    flip=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_parse_run_decodes_what_parse_frame_decodes(
    records: list[bytes], cut: float, limit: int, flip: int | None
) -> None:
    """The sinks' window decoder agrees with the one-frame decoder: same frames, an incomplete
    last frame left alone, the record limit honoured, a flipped byte reported as corruption."""
    data = b"".join(
        segment.encode(seq, hashlib.sha256(r).digest(), b'{"o":1}', r)
        for seq, r in enumerate(records, 1)
    )
    data = data[: int(len(data) * cut)] if cut < 1 else data
    if flip is not None and data:
        at = flip % len(data)
        data = data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]
    want: list[segment.Frame] = []
    problem: segment.CorruptFrameError | None = None
    pos = 0
    try:
        while len(want) < limit and (frame := segment.parse_frame(data, pos)) is not None:
            want.append(frame)
            pos = frame.end
    except segment.CorruptFrameError as exc:
        problem = exc
    if problem is not None:
        with pytest.raises(segment.CorruptFrameError) as raised:
            segment.parse_run(data, limit)
        assert raised.value.offset == problem.offset
        return
    run = segment.parse_run(data, limit)
    assert run.seqs == [f.seq for f in want]
    assert run.hashes == [f.h for f in want]
    assert run.records == [f.record for f in want]
    assert run.ends == [f.end for f in want]
