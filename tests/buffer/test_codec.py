"""The reader's batch cut and the frame codec against plain reference implementations."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.buffer import segment
from agent.buffer.reader import take_run
from agent.sources import Checkpoint


def reference_take(
    seqs: list[int], sizes: list[int], max_records: int, max_bytes: int
) -> tuple[int, int]:
    """The obvious loop: consecutive records from the first, until a limit (at least one)."""
    take, size = 1, sizes[0]
    while (
        take < min(len(seqs), max_records) and size < max_bytes and seqs[take] == seqs[take - 1] + 1
    ):
        size += sizes[take]
        take += 1
    return take, size


@settings(max_examples=300, deadline=None)
@given(
    first=st.integers(1, 50),
    steps=st.lists(st.sampled_from([1, 1, 1, 1, 2, 5]), min_size=1, max_size=60),
    sizes=st.lists(st.integers(1, 40), min_size=60, max_size=60),
    max_records=st.integers(1, 70),
    max_bytes=st.integers(1, 400),
)
def test_take_run_matches_the_plain_loop(
    first: int, steps: list[int], sizes: list[int], max_records: int, max_bytes: int
) -> None:
    """Seqs with holes (as after recovery), every limit: the bisecting version answers the
    same."""
    seqs = [first]
    for step in steps[1:]:
        seqs.append(seqs[-1] + step)
    sizes = sizes[: len(seqs)]
    want = reference_take(seqs, sizes, max_records, max_bytes)
    assert take_run(seqs, iter(sizes), max_records, max_bytes) == want


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
