"""The reader's gathering of frames into a batch and the frame codec against plain reference
implementations."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.buffer import segment
from agent.compiled import MODULE
from agent.sources import Checkpoint


def frames(seqs: list[int], sizes: list[int]) -> bytes:
    """Frames for ``seqs``, records of ``sizes`` bytes, checkpoints on every other one; every
    third bare (``{`` + the record + ``}`` stored, the wire form 71 bytes longer when read)."""
    data = b""
    for seq, size in zip(seqs, sizes, strict=False):
        cp = b"" if seq % 2 else segment.encode_checkpoint(Checkpoint("s", "k", seq, "/p"))
        h, bare = bytes([seq % 256]) * 32, seq % 3 == 0
        record = b"{" + b"r" * size + b"}" if bare else b"r" * size
        data += segment.encode(seq, h, cp, record, bare=bare)
    return data


def reference_gather(
    data: bytes, position: int, want: int, max_bytes: int, strict: bool
) -> tuple[segment.Gathered, bytes, bytes]:
    """The obvious way, from every frame parse_run finds: skip those at or before the position,
    then consecutive records from the first, until a limit (at least one)."""
    run = segment.parse_run_py(data, 1 << 30)
    skip = sum(1 for seq in run.seqs if seq <= position)
    skipped_end = run.ends[skip - 1] if skip else 0
    rest = run.seqs[skip:]
    if not rest or (strict and rest[0] != position + 1) or want < 1 or max_bytes < 1:
        first = rest[0] if rest else 0
        return segment.Gathered(skipped_end, 0, first, 0, None, 0, skipped_end), b"", b""
    take, size = 1, len(run.records[skip])
    while take < min(len(rest), want) and size < max_bytes and rest[take] == rest[take - 1] + 1:
        size += len(run.records[skip + take])
        take += 1
    last = skip + take - 1
    body = b"".join(record + b"\n" for record in run.records[skip : last + 1])
    got = segment.Gathered(
        skipped_end, take, rest[0], run.seqs[last], run.hashes[last], size, run.ends[last]
    )
    return got, body, b"".join(run.hashes[skip : last + 1])


def gathered(
    data: bytes,
    position: int,
    want: int,
    max_bytes: int,
    strict: bool,
    *,
    compiled: bool,
    reserve: int = 0,
) -> object:
    """gather_run's result and what it appended (to buffers that held something already), or
    the error it raised (type, offset, reason)."""
    body, hashes = bytearray(b"before\n"), bytearray(b"h" * 32)
    gather = segment.gather_run if compiled else segment.gather_run_py
    try:
        got = gather(
            data,
            position,
            body,
            hashes,
            want=want,
            max_bytes=max_bytes,
            strict=strict,
            reserve=reserve,
        )
    except segment.CorruptFrameError as exc:
        return ("corrupt", exc.offset, exc.reason)
    assert body.startswith(b"before\n")
    assert hashes.startswith(b"h" * 32)
    return got, bytes(body[7:]), bytes(hashes[32:])


GATHER = {
    "first": st.integers(1, 50),
    "steps": st.lists(st.sampled_from([1, 1, 1, 1, 2, 5]), min_size=1, max_size=40),
    "sizes": st.lists(st.integers(1, 40), min_size=40, max_size=40),
    "back": st.integers(-3, 45),
    "want": st.integers(0, 50),  # the reader asks for one at least: 0 takes none
    "max_bytes": st.integers(0, 400),
    "strict": st.booleans(),
    "cut": st.integers(0, 60),
}


def gather_case(
    first: int, steps: list[int], sizes: list[int], back: int, cut: int
) -> tuple[bytes, int]:
    """Frames of seqs with holes (as after recovery), the last ``cut`` bytes torn off, and a
    position ``back`` records before the last seq (before the first, or past the last)."""
    seqs = [first]
    for step in steps[1:]:
        seqs.append(seqs[-1] + step)
    data = frames(seqs, sizes)
    return data[: len(data) - cut], max(seqs[-1] - back, 0)


@settings(max_examples=600, deadline=None)
@given(
    **GATHER,
    flips=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 255)), max_size=3),
    reserve=st.integers(0, 3000),
)
@example(  # no room at all: nothing is taken, not one record
    first=1,
    steps=[1, 1],
    sizes=[5] * 40,
    back=3,
    want=5,
    max_bytes=0,
    strict=False,
    cut=0,
    flips=[],
    reserve=0,
)
def test_gather_run_matches_the_plain_loop(
    *,
    first: int,
    steps: list[int],
    sizes: list[int],
    back: int,
    want: int,
    max_bytes: int,
    strict: bool,
    cut: int,
    flips: list[tuple[int, int]],
    reserve: int,
) -> None:
    """Every position, limit and torn end: the reference gives the same frames, bytes and
    offsets as the obvious loop over parse_run's frames. With bytes flipped anywhere (lengths,
    crcs, checkpoint lengths, records), the compiled one takes the same frames as the
    reference, or raises the same error at the same offset for the same reason, whatever room
    it is told to reserve (less than it appends, or more)."""
    data, position = gather_case(first, steps, sizes, back, cut)
    damaged = bytearray(data)
    for at, xor in flips:
        if at < len(damaged):
            damaged[at] ^= xor
    args = (bytes(damaged), position, want, max_bytes, strict)
    reference = gathered(*args, compiled=False)
    if damaged == data:
        assert reference == reference_gather(*args)
    if MODULE is not None:  # compiled where built: the same frames, or the same error
        assert gathered(*args, compiled=True, reserve=reserve) == reference


@pytest.mark.skipif(MODULE is None, reason="the compiled reader is not built")
def test_gather_run_grows_the_body_once_for_what_it_reserves() -> None:
    """A batch gathered over several windows: the first growth allocates the reserved room,
    and the windows after it append within it (each used to reallocate the body, copying
    the records gathered so far); the bytes are those appended, and a body reserved for less
    than comes still takes it all."""
    data = frames(list(range(1, 31)), [100] * 30)
    run = segment.parse_run_py(data, 100)
    windows = [data[: run.ends[9]], data[run.ends[9] : run.ends[19]], data[run.ends[19] :]]
    expected = b"".join(record + b"\n" for record in run.records)
    for reserve, growths in ((len(expected), 1), (0, 3)):
        body, hashes, allocations = bytearray(), bytearray(), set()
        position = 0
        for window in windows:
            got = segment.gather_run(
                window,
                position,
                body,
                hashes,
                want=100,
                max_bytes=1 << 20,
                strict=True,
                reserve=reserve - len(body) if reserve else 0,
            )
            assert got.taken == 10
            position = got.last_seq
            allocations.add(body.__alloc__())
        assert bytes(body) == expected
        assert hashes == b"".join(run.hashes)
        assert len(allocations) == growths
        assert body.__alloc__() > len(expected)


@pytest.mark.skipif(MODULE is None, reason="the compiled reader is not built")
def test_gather_run_appends_to_a_body_whose_start_was_cut() -> None:
    """A bytearray whose first bytes were deleted keeps them allocated before its start, so
    its allocation is not all room: such a body is reallocated the ordinary way (an append
    within its old allocation wrote past its end), and holds what it held and the records."""
    data = frames([1, 2], [50, 50])
    body = bytearray(b"xy" * 500)
    del body[:400]  # bytearray moves its start instead of the bytes
    assert body.__alloc__() == 1001
    got = segment.gather_run(
        data, 0, body, bytearray(), want=10, max_bytes=1000, strict=False, reserve=200
    )
    assert got.taken == 2
    assert body == b"xy" * 300 + b"r" * 50 + b"\n" + b"r" * 50 + b"\n"
    assert body.__alloc__() != 1001


@pytest.mark.skipif(MODULE is None, reason="the compiled reader is not built")
def test_gather_run_refuses_a_body_with_a_view_on_it() -> None:
    """A body some view still holds is not resized under it, even within its allocation: the
    error is bytearray's own, and nothing is appended."""
    data = frames([1, 2], [50, 50])
    body = bytearray(b"x" * 1000)
    del body[600:]  # room left in its allocation: an append would fit without growing
    assert body.__alloc__() > 700
    with memoryview(body), pytest.raises(BufferError):
        segment.gather_run(
            data, 0, body, bytearray(), want=10, max_bytes=1000, strict=False, reserve=500
        )
    assert body == b"x" * 600


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
