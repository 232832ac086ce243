"""The file source's cut of a plain chunk: the compiled ``cut_plain`` (``_speedups.c``) must
give exactly what ``cut_plain_py`` gives, record for record, and ``TailedFile`` must read the
same records through either."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.record import Record
from agent.sources import Checkpoint, Pending, PlainRun, materialize, tailed
from agent.sources.tailed import Cut, TailedFile, cut_plain_py

try:
    from agent.sources import _speedups  # type: ignore[attr-defined]

    COMPILED: Cut | None = _speedups.cut_plain
except ImportError:  # built without a compiler: the fallback is all there is to test
    COMPILED = None

needs_compiled = pytest.mark.skipif(COMPILED is None, reason="agent.sources._speedups not built")
TS = "2026-11-21T10:00:00.000000Z"
SENTINEL = Pending({"msg": "already there"}, None)
NO_LIMIT = 1 << 40  # max_line: no line is too long
MADE = {"pending": 0, "checkpoint": 0}  # by the Counted types below


@dataclass(slots=True)
class CountedPending:
    """Pending's shape, plus a __post_init__: the compiled loop must call it."""

    record: Record
    checkpoint: Checkpoint | None

    def __post_init__(self) -> None:
        MADE["pending"] += 1


class CountedCheckpoint(Checkpoint):
    """Not Checkpoint itself (and a __new__ of its own): the compiled loop must call it."""

    __slots__ = ()

    def __new__(cls, source: str, key: str, offset: int, path: str = "") -> CountedCheckpoint:
        MADE["checkpoint"] += 1
        return super().__new__(cls, source, key, offset, path)


def cut(
    function: Cut,
    data: bytes,
    offset: int = 0,
    pending: type[Pending] = Pending,
    checkpoint: type[Checkpoint] = Checkpoint,
    *,
    max_line: int = NO_LIMIT,
) -> tuple[int | None, list[Pending]]:
    """``function`` over ``data`` into a list that already holds a record (it must append)."""
    out = [SENTINEL]
    end = function(
        data, TS, "app", "key:1", "/var/log/app.log", offset, pending, checkpoint, out, max_line
    )
    assert out[0] is SENTINEL
    return end, out[1:]


def assert_same(
    expected: tuple[int | None, list[Pending]], got: tuple[int | None, list[Pending]]
) -> None:
    """The same offset and records: equal values of the same types, keys in the same order."""
    (end, mine), (their_end, theirs) = expected, got
    assert (type(their_end), their_end) == (type(end), end)
    assert len(theirs) == len(mine)
    for a, b in zip(mine, theirs, strict=True):
        assert type(b) is type(a)
        assert b.record == a.record
        assert list(b.record) == list(a.record) == ["ts", "src", "msg", "log"]
        assert list(b.record["log"]) == list(a.record["log"]) == ["file", "offset"]
        assert list(b.record["log"]["file"]) == ["path"]
        assert [type(v) for v in b.record.values()] == [type(v) for v in a.record.values()]
        assert type(b.record["msg"]) is str
        assert type(b.record["log"]["offset"]) is int
        assert b.checkpoint == a.checkpoint
        assert type(b.checkpoint) is type(a.checkpoint)
        assert [type(v) for v in b.checkpoint or ()] == [type(v) for v in a.checkpoint or ()]
    # One "file" dict for the chunk's records, as in the Python loop.
    assert len({id(p.record["log"]["file"]) for p in theirs}) == min(len(theirs), 1)


def assert_lines(data: bytes, offset: int, got: tuple[int | None, list[Pending]]) -> None:
    """The records are ``data``'s complete lines, at their offsets, checkpointed at their ends."""
    end, records = got
    assert end is not None
    lines = data.split(b"\n")[:-1]
    assert [p.record["msg"] for p in records] == [line.decode() for line in lines]
    at = offset
    for p, line in zip(records, lines, strict=True):
        assert p.record["log"] == {"file": {"path": "/var/log/app.log"}, "offset": at}
        at += len(line) + 1
        assert p.checkpoint == Checkpoint("app", "key:1", at, "/var/log/app.log")
        assert p.record["ts"] == TS
        assert p.record["src"] == "app"
    assert end == at


def compare(data: bytes, offset: int = 0) -> None:
    assert COMPILED is not None
    expected = cut(cut_plain_py, data, offset)
    assert_lines(data, offset, expected)
    assert_same(expected, cut(COMPILED, data, offset))


# --- the compiled loop against the reference ----------------------------------------------------

_LINES = st.lists(st.text(st.characters(max_codepoint=127, exclude_characters="\n"), max_size=30))


@needs_compiled
@given(
    lines=_LINES,
    tail=st.text(st.characters(max_codepoint=127, exclude_characters="\n"), max_size=5),
    offset=st.integers(0, 2**40),
)
def test_compiled_cut_equals_the_python_one(lines: list[str], tail: str, offset: int) -> None:
    assert COMPILED is not None
    # The tail (no newline) is left out by both: the caller keeps it as the pending line.
    data = "".join(line + "\n" for line in lines).encode()
    expected = cut(cut_plain_py, data + tail.encode(), offset)
    assert_lines(data, offset, expected)
    assert_same(expected, cut(COMPILED, data + tail.encode(), offset))


@needs_compiled
@pytest.mark.parametrize(
    ("data", "offset"),
    [
        pytest.param(b"", 0, id="empty"),
        pytest.param(b"no newline", 7, id="only-an-unterminated-line"),
        pytest.param(b"\n", 0, id="one-empty-line"),
        pytest.param(b"\n\n\n", 3, id="empty-lines"),
        pytest.param(b"one line\n", 0, id="one-line"),
        pytest.param(b"a\n\nb\n\n", 2**40, id="empty-lines-between-far-in-the-file"),
        pytest.param(b"\x00\x01\t\x7f \r\n", 10, id="control-bytes-nul-and-cr"),
        pytest.param(b"x" * (1 << 20) + b"\n" + b"y" * (1 << 20) + b"\n", 5, id="max-line-lines"),
        pytest.param(b"".join(b"%d\n" % i for i in range(100_000)), 0, id="many-lines"),
    ],
)
def test_compiled_cut_equals_the_python_one_at_the_edges(data: bytes, offset: int) -> None:
    compare(data, offset)


@needs_compiled
@given(data=st.binary(max_size=40), offset=st.integers(0, 2**40))
def test_compiled_cut_raises_as_the_python_one_on_any_bytes(data: bytes, offset: int) -> None:
    assert COMPILED is not None
    outcomes: list[Any] = []
    for function in (cut_plain_py, COMPILED):
        try:
            outcomes.append(cut(function, data, offset))
        except UnicodeDecodeError as exc:
            outcomes.append(exc)
    expected, got = outcomes
    if isinstance(expected, UnicodeDecodeError):
        assert type(got) is UnicodeDecodeError
        assert (got.encoding, got.object, got.start, got.end, got.reason) == (
            expected.encoding,
            expected.object,
            expected.start,
            expected.end,
            expected.reason,
        )
        assert not data.isascii()
    else:
        assert_same(expected, got)


@needs_compiled
@given(lines=_LINES, max_line=st.integers(0, 35), offset=st.integers(0, 2**40))
def test_a_line_longer_than_max_line_refuses_the_chunk_in_both(
    lines: list[str], max_line: int, offset: int
) -> None:
    """None and nothing appended when a complete line passes ``max_line`` (the caller then
    splits it); the same records as without a limit otherwise."""
    assert COMPILED is not None
    data = "".join(line + "\n" for line in lines).encode() + b"x" * 50  # unterminated: not a line
    expected = cut(cut_plain_py, data, offset, max_line=max_line)
    assert_same(expected, cut(COMPILED, data, offset, max_line=max_line))
    if any(len(line) > max_line for line in lines):
        assert expected == (None, [])
    else:
        assert_same(expected, cut(cut_plain_py, data, offset))


@pytest.mark.parametrize("function", [pytest.param(COMPILED, marks=needs_compiled), cut_plain_py])
def test_a_line_of_exactly_max_line_is_cut(function: Cut | None) -> None:
    assert function is not None
    end, records = cut(function, b"abc\nabcd\n", 0, max_line=4)
    assert (end, [p.record["msg"] for p in records]) == (9, ["abc", "abcd"])
    assert cut(function, b"abc\nabcd\n", 0, max_line=3) == (None, [])


@needs_compiled
def test_a_failing_non_ascii_chunk_leaves_out_as_it_was() -> None:
    assert COMPILED is not None
    out = [SENTINEL]
    with pytest.raises(UnicodeDecodeError, match="position 4"):
        COMPILED(b"abc\n\xc3\xa9\n", TS, "app", "k", "/p", 0, Pending, Checkpoint, out, NO_LIMIT)
    assert out == [SENTINEL]


@needs_compiled
def test_other_types_are_called_as_the_python_loop_calls_them() -> None:
    assert COMPILED is not None
    data = b"a\nbb\n\nccc\n"
    results = []
    for function in (cut_plain_py, COMPILED):
        MADE.update(pending=0, checkpoint=0)
        results.append(cut(function, data, 3, cast(Any, CountedPending), CountedCheckpoint))
        assert MADE == {"pending": 4, "checkpoint": 4}
    expected, got = results
    assert_lines(data, 3, expected)
    assert_same(expected, got)
    assert all(isinstance(p, CountedPending) for p in cast(list[object], got[1]))
    assert all(type(p.checkpoint) is CountedCheckpoint for p in got[1])


class FailingCheckpoint(Checkpoint):
    """Refuses offsets past 5: a failure in the middle of a chunk."""

    __slots__ = ()

    def __new__(cls, source: str, key: str, offset: int, path: str = "") -> FailingCheckpoint:
        if offset > 5:
            raise RuntimeError("refused")
        return super().__new__(cls, source, key, offset, path)


@needs_compiled
def test_a_failure_midway_propagates_and_leaves_out_as_it_was() -> None:
    assert COMPILED is not None
    for function in (cut_plain_py, COMPILED):
        out = [SENTINEL]
        with pytest.raises(RuntimeError, match="refused"):
            function(
                b"a\nb\nc\nd\n", TS, "app", "k", "/p", 0, Pending, FailingCheckpoint, out, NO_LIMIT
            )
        assert out == [SENTINEL]


@needs_compiled
def test_the_compiled_cut_leaks_no_references() -> None:
    assert COMPILED is not None
    # Fresh objects, referenced only here and by what the cut makes of them.
    ts, source, key, path = (f"{name}-{time.monotonic()}" for name in ("ts", "src", "key", "p"))
    offset = 2**40 + int(time.monotonic())
    held = (ts, source, key, path, offset, Pending, Checkpoint, FailingCheckpoint)

    def run() -> None:
        assert COMPILED is not None
        # made, failed midway, and refused for a line longer than max_line
        for checkpoint, max_line, made in ((Checkpoint, 3, 4), (FailingCheckpoint, 3, 0),
                                           (Checkpoint, 2, 0)):  # fmt: skip
            out: list[Pending] = []
            with contextlib.suppress(RuntimeError):
                COMPILED(
                    b"a\nbb\n\nccc\n", ts, source, key, path, offset, Pending, checkpoint, out,
                    max_line,
                )  # fmt: skip
            assert len(out) == made

    run()  # warm up: the interpreter's caches may keep a type
    before = [sys.getrefcount(obj) for obj in held]
    for _ in range(3):
        run()
    assert [sys.getrefcount(obj) for obj in held] == before


@needs_compiled
@pytest.mark.parametrize("max_line", [2**63 - 1, 2**63, 2**70, -1, -(2**63), -(2**70)])
def test_a_max_line_past_a_long_long_compares_as_in_the_python_loop(max_line: int) -> None:
    """``max_line`` is any int to the Python loop: one past a long long limits no line (or every
    chunk, negative), in the compiled loop too (it raised OverflowError, for every chunk)."""
    assert COMPILED is not None
    for data in (b"abc\nde\n", b"abc\nrest", b"", b"no newline"):
        expected = cut(cut_plain_py, data, 5, max_line=max_line)
        assert_same(expected, cut(COMPILED, data, 5, max_line=max_line))
        assert (expected[0] is None) == (max_line < 0)


@needs_compiled
def test_wrong_argument_types_raise_type_errors() -> None:
    assert COMPILED is not None
    call: Any = COMPILED
    with pytest.raises(TypeError, match="10 arguments"):
        call(b"a\n", TS)
    with pytest.raises(TypeError, match="bytes"):
        call("a\n", TS, "app", "k", "/p", 0, Pending, Checkpoint, [], NO_LIMIT)
    with pytest.raises(TypeError, match="list"):
        call(b"a\n", TS, "app", "k", "/p", 0, Pending, Checkpoint, (), NO_LIMIT)
    with pytest.raises(TypeError, match="int"):
        call(b"a\n", TS, "app", "k", "/p", 0.0, Pending, Checkpoint, [], NO_LIMIT)
    with pytest.raises(TypeError, match="integer"):
        call(b"a\n", TS, "app", "k", "/p", 0, Pending, Checkpoint, [], 2.0)


def test_pure_python_setting_selects_the_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILSEAL_PURE_PYTHON", "1")
    assert tailed._compiled() is None
    monkeypatch.delenv("TAILSEAL_PURE_PYTHON")
    assert tailed._compiled() is COMPILED


# --- through TailedFile ---------------------------------------------------------------------------


def read_all(
    path: Path, function: Cut, monkeypatch: pytest.MonkeyPatch, *, runs: bool = False
) -> tuple[list[Pending], int]:
    """Every record ``TailedFile`` cuts from ``path``, in small chunks, with ``function`` as its
    cut of plain chunks; and how many chunks it cut with it."""
    calls = 0

    def counted(*args: Any) -> int | None:
        nonlocal calls
        calls += 1
        return function(*args)

    monkeypatch.setattr(tailed, "cut_plain", counted)
    monkeypatch.setattr(tailed, "now_rfc3339", lambda: TS)
    stat = path.stat()
    fd = os.open(path, os.O_RDONLY)
    try:
        tailed_file = TailedFile(
            "app", 64, 32, str(path), f"{stat.st_dev}:{stat.st_ino}", fd, 0, time.monotonic()
        )
        tailed_file.runs = runs
        records: list[Pending] = []
        end: int | None = None
        more = True
        while more:
            batch, end, more = tailed_file.read(100, end)
            assert runs or not any(isinstance(item, PlainRun) for item in batch)
            for item in batch:  # a run's count is counted as it is cut: it must be its lines
                assert not isinstance(item, PlainRun) or item.count == len(item.records())
            records += materialize(batch)
    finally:
        os.close(fd)
    return records, calls


def test_tailed_file_reads_the_records_the_python_cut_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain chunks (the fast path), lines across chunk ends, a line over max_line (split parts,
    # then a chunk that starts with a part), "\r\n" and UTF-8 (the slow path), an unterminated end.
    lines = [b"%04d plain ascii line" % i for i in range(40)]
    lines[10] = b"x" * 150
    lines[20] += b"\r"
    lines[30] = "caf\u00e9".encode()
    path = tmp_path / "app.log"
    path.write_bytes(b"\n".join(lines) + b"\nunterminated")
    reference, plain_chunks = read_all(path, cut_plain_py, monkeypatch)
    assert plain_chunks >= 5  # most chunks are plain: the loop under test ran
    # The complete lines, in order: the long one in parts of at most 64 bytes.
    msgs = [p.record["msg"] for p in reference]
    assert msgs[:10] == [line.decode() for line in lines[:10]]
    assert msgs[10:13] == ["x" * 64, "x" * 64, "x" * 22]
    assert msgs[13:] == [line.decode().removesuffix("\r") for line in lines[11:]]
    ends = [p.checkpoint.offset for p in reference if p.checkpoint is not None]
    assert ends == sorted(ends)
    assert ends[-1] == path.stat().st_size - len(b"unterminated")
    assert [p.record.get("tags") for p in reference[10:13]] == [["split"]] * 3
    assert all("tags" not in p.record for p in reference[:10] + reference[13:])
    if COMPILED is None:
        pytest.skip("agent.sources._speedups not built: nothing to compare the reference with")
    got, compiled_chunks = read_all(path, COMPILED, monkeypatch)
    assert compiled_chunks == plain_chunks
    assert [p.record for p in got] == [p.record for p in reference]
    assert [list(p.record) for p in got] == [list(p.record) for p in reference]
    assert [p.checkpoint for p in got] == [p.checkpoint for p in reference]


@dataclass(slots=True)
class SwappedPending:
    """Pending's fields in the other order: the record is its second argument's, not its first."""

    checkpoint: Checkpoint | None
    record: Record


class CallingMeta(type):
    """A metaclass with a __call__ of its own: calling the class makes something else."""

    def __call__(cls, *args: Any) -> Any:
        return ("made by the metaclass", *args)


@dataclass(slots=True)
class MetaPending(metaclass=CallingMeta):
    record: Record
    checkpoint: Checkpoint | None


class MetaCheckpoint(tuple, metaclass=CallingMeta):  # type: ignore[type-arg]
    __slots__ = ()
    _fields = ("source", "key", "offset", "path")


@needs_compiled
@pytest.mark.parametrize(
    ("pending", "checkpoint"),
    [(SwappedPending, Checkpoint), (MetaPending, Checkpoint), (Pending, MetaCheckpoint)],
    ids=["fields-swapped", "pending-metaclass", "checkpoint-metaclass"],
)
def test_types_shaped_otherwise_are_called_as_the_python_loop_calls_them(
    pending: Any, checkpoint: Any
) -> None:
    """The compiled loop made these as if they were Pending and Checkpoint."""
    assert COMPILED is not None
    results = []
    for function in (cut_plain_py, COMPILED):
        out: list[Any] = []
        end = function(b"a\nbb\n", TS, "app", "k", "/p", 3, pending, checkpoint, out, NO_LIMIT)
        results.append((end, [(type(p), p) for p in out]))
    assert results[1] == results[0]


RUN_PIECES = [b"plain line", b"\n", b"x" * 70, b"\r\n", b'\t"\\', b"\x01", b"\xc3\xa9", b"\xff"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(
        st.lists(st.sampled_from(RUN_PIECES), max_size=200).map(b"".join),
        st.lists(st.sampled_from(RUN_PIECES[:5]), max_size=200).map(b"".join),  # plain ASCII
    )
)
@example(content=b"short\n" + b"x" * 70 + b"\nend\n")  # a line over max_line in a plain chunk
def test_runs_of_plain_lines_stand_for_the_records_the_cut_gives(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    """A raw source's chunks cut into runs: their records are the cut's, byte for byte, over
    any content (plain, long, "\\r\\n", UTF-8 and invalid lines, chunk ends anywhere)."""
    path = tmp_path_factory.mktemp("runs") / "app.log"
    path.write_bytes(content)
    expected, _ = read_all(path, cut_plain_py, monkeypatch)
    got, _ = read_all(path, cut_plain_py, monkeypatch, runs=True)
    assert [(p.record, p.checkpoint) for p in got] == [(p.record, p.checkpoint) for p in expected]


@needs_compiled
@given(data=st.binary(max_size=300) | st.lists(st.sampled_from(RUN_PIECES)).map(b"".join))
def test_compiled_line_stats_equal_the_reference(data: bytes) -> None:
    compiled = _speedups.line_stats
    assert compiled(data) == tailed.line_stats_py(data) == (data.count(b"\n"), compiled(data)[1])
    with pytest.raises(TypeError, match="bytes"):
        compiled(bytearray(data))


@needs_compiled
@given(data=st.binary(max_size=300), cuts=st.tuples(st.integers(0, 300), st.integers(0, 300)))
def test_compiled_newlines_counts_as_bytes_count(data: bytes, cuts: tuple[int, int]) -> None:
    compiled = _speedups.newlines
    begin, end = sorted(min(cut, len(data)) for cut in cuts)
    assert compiled(data, begin, end) == data.count(b"\n", begin, end)
    with pytest.raises(ValueError, match="begin"):
        compiled(data, end + 1, end)
    with pytest.raises(TypeError, match="bytes"):
        compiled(bytearray(data), begin, end)
