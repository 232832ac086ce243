"""The file source against real files under ``tmp_path``."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from watchdog.observers.api import BaseObserver

from agent.sources import Checkpoint, Pending
from agent.sources.file import FileSource
from tests.sources.tailing import (
    DEADLINE,
    Tail,
    append,
    ident_of,
    identity,
    key_of,
    make_config,
    open_fds_to,
    tailing,
)
from tests.support import eventually


async def test_appended_lines_arrive_in_order_with_offsets_and_checkpoints(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nbb\n")
    async with tailing(make_config(tmp_path)) as tail:
        await tail.wait_records(2)
        append(log, b"ccc\r\n")
        await tail.wait_records(3)
    assert tail.msgs == ["a", "bb", "ccc"]
    assert [r["log"] for r in tail.records] == [
        {"file": {"path": str(log)}, "offset": offset} for offset in (0, 2, 5)
    ]
    # The file had 5 bytes when it was opened: its fingerprint covers those.
    assert tail.checkpoints() == [
        Checkpoint("app", key_of(log, 5), offset, str(log)) for offset in (2, 5, 10)
    ]
    assert all(
        r["src"] == "app" and r["ts"].endswith("Z") and "tags" not in r for r in tail.records
    )


# watchdog warns (from its own thread) when a directory tree appears faster than it adds watches;
# the warning is harmless and the test suite turns warnings into errors.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
async def test_new_files_matching_a_recursive_glob_are_discovered(tmp_path: Path) -> None:
    (tmp_path / "seed.log").write_bytes(b"seed\n")
    async with tailing(make_config(tmp_path, "**/*.log")) as tail:
        await tail.wait_records(1)
        deep = tmp_path / "x" / "y"
        deep.mkdir(parents=True)
        (deep / "deep.log").write_bytes(b"deep\n")
        (tmp_path / "top.log").write_bytes(b"top\n")
        await tail.wait_records(3)
    assert sorted(tail.msgs) == ["deep", "seed", "top"]
    paths = {r["msg"]: r["log"]["file"]["path"] for r in tail.records}
    assert paths["deep"] == str(tmp_path / "x" / "y" / "deep.log")


async def test_file_in_a_directory_created_after_start_is_discovered(tmp_path: Path) -> None:
    async with tailing(make_config(tmp_path, "later/*.log")) as tail:
        (tmp_path / "later").mkdir()
        (tmp_path / "later" / "app.log").write_bytes(b"hello\n")
        await tail.wait_records(1)
    assert tail.msgs == ["hello"]


async def test_excluded_files_are_ignored(tmp_path: Path) -> None:
    config = make_config(tmp_path, exclude=["*.debug.log"])
    async with tailing(config) as tail:
        (tmp_path / "noise.debug.log").write_bytes(b"noise\n")
        (tmp_path / "app.log").write_bytes(b"wanted\n")
        await tail.wait_records(1)
    assert tail.msgs == ["wanted"]


async def test_inotify_wakes_the_source_long_before_the_poll_interval(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    async with tailing(make_config(tmp_path, poll_interval=600)) as tail:
        # The first round may or may not see "one"; "two" can only come from an inotify wake-up.
        append(log, b"one\n")
        await tail.wait_records(1)
        append(log, b"two\n")
        await tail.wait_records(2)
    assert tail.msgs == ["one", "two"]


async def test_source_falls_back_to_polling_when_inotify_cannot_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def no_inotify() -> BaseObserver:
        raise OSError(24, "inotify instance limit reached")

    log = tmp_path / "app.log"
    append(log, b"before\n")
    async with tailing(make_config(tmp_path), observer_factory=no_inotify) as tail:
        await tail.wait_records(1)
        append(log, b"after\n")
        append(tmp_path / "new.log", b"new file\n")
        await tail.wait_records(3)
    assert sorted(tail.msgs) == ["after", "before", "new file"]
    assert "polling only" in caplog.text


async def test_partial_line_is_flushed_tagged_after_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with tailing(make_config(tmp_path, partial_line_timeout=0.2)) as tail:
        log.write_bytes(b"whole\nhalf")
        await tail.wait_records(2)
        append(log, b" more\n")
        await tail.wait_records(3)
    assert tail.msgs == ["whole", "half", " more"]
    assert [r.get("tags") for r in tail.records] == [None, ["partial"], None]
    assert [cp.offset for cp in tail.checkpoints()] == [6, 10, 16]
    assert tail.records[2]["log"]["offset"] == 10


async def test_partial_line_is_not_emitted_on_stop(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"done\nunfinished")
    async with tailing(make_config(tmp_path, partial_line_timeout=600)) as tail:
        await tail.wait_records(1)
    assert tail.msgs == ["done"]
    assert tail.checkpoints()[-1].offset == 5


async def test_each_chunk_read_is_emitted_as_one_batch(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_bytes(b"abcd\n" * 5)
    async with tailing(make_config(tmp_path, read_chunk_bytes=10)) as tail:
        await tail.wait_records(5)
    assert [len(batch) for batch in tail.batches] == [2, 2, 1]


async def test_file_renamed_within_the_globs_is_followed_without_rereading(
    tmp_path: Path,
) -> None:
    log, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    with log.open("ab", buffering=0) as writer:
        config = make_config(tmp_path, "app.log*", exclude_rotated=False)
        async with tailing(config) as tail:
            writer.write(b"before\n")
            await tail.wait_records(1)
            log.rename(rotated)
            writer.write(b"after\n")
            await tail.wait_records(2)
    assert tail.msgs == ["before", "after"]
    assert tail.records[1]["log"]["file"]["path"] == str(rotated)
    assert [ident_of(cp.key) for cp in tail.checkpoints()] == [identity(rotated)] * 2


async def test_rename_and_create_rotation_delivers_every_line_of_both_files(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    with log.open("ab", buffering=0) as writer:
        old_key = identity(log)
        async with tailing(make_config(tmp_path, "app.log"), gate_open=False) as tail:
            writer.write(b"old 1\n")
            # The source now waits in emit, so it cannot notice the rotation yet.
            await asyncio.wait_for(tail.blocked.wait(), DEADLINE)
            log.rename(tmp_path / "app.log.1")
            writer.write(b"old 2 after rename\n")
            log.write_bytes(b"new 1\n")
            tail.gate.set()
            await tail.wait_records(3)
            append(log, b"new 2\n")
            await tail.wait_records(4)
    assert tail.msgs == ["old 1", "old 2 after rename", "new 1", "new 2"]
    keys = [ident_of(cp.key) for cp in tail.checkpoints()]
    assert keys[:2] == [old_key, old_key]
    assert keys[2:] == [identity(log)] * 2
    assert [r["log"]["offset"] for r in tail.records] == [0, 6, 0, 6]


async def test_deleted_file_is_read_to_its_end_then_closed(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    async with tailing(make_config(tmp_path), gate_open=False) as tail:
        with log.open("ab", buffering=0) as writer:
            writer.write(b"first\n")
            await asyncio.wait_for(tail.blocked.wait(), DEADLINE)
            writer.write(b"written before delete\n")
            log.unlink()
        tail.gate.set()
        await tail.wait_records(2)
        await eventually(
            lambda: not open_fds_to(log), timeout=DEADLINE, what="the deleted file closed"
        )
    assert tail.msgs == ["first", "written before delete"]


async def test_unterminated_line_of_a_deleted_file_ships_tagged_partial(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"done\nhalf")
    async with tailing(make_config(tmp_path, partial_line_timeout=600)) as tail:
        await tail.wait_records(1)
        log.unlink()
        await tail.wait_records(2)
    assert tail.msgs == ["done", "half"]
    assert tail.records[1]["tags"] == ["partial"]


async def test_truncation_restarts_from_zero_and_tags_the_next_record(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first line\nsecond line\n")
    async with tailing(make_config(tmp_path)) as tail:
        await tail.wait_records(2)
        log.write_bytes(b"x\n")  # truncates in place: same inode, shorter than our offset
        await tail.wait_records(3)
    assert tail.msgs == ["first line", "second line", "x"]
    assert tail.records[2]["tags"] == ["truncated"]
    assert tail.records[2]["log"]["offset"] == 0
    assert tail.checkpoints()[2].offset == 2


async def test_resume_from_a_checkpoint_delivers_only_the_lines_after_it(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\nc\n")
    checkpoints = {identity(log): Checkpoint("app", identity(log), 2, str(log))}
    async with tailing(make_config(tmp_path), checkpoints) as tail:
        await tail.wait_records(2)
        append(log, b"d\n")
        await tail.wait_records(3)
    assert tail.msgs == ["b", "c", "d"]
    assert [r["log"]["offset"] for r in tail.records] == [2, 4, 6]


async def test_checkpoint_beyond_the_file_end_restarts_from_zero(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"short\n")
    checkpoints = {identity(log): Checkpoint("app", identity(log), 1000, str(log))}
    async with tailing(make_config(tmp_path), checkpoints) as tail:
        await tail.wait_records(1)
    assert tail.msgs == ["short"]
    assert tail.records[0]["tags"] == ["truncated"]


async def test_checkpoints_of_other_sources_are_ignored(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\n")
    checkpoints = {identity(log): Checkpoint("other", identity(log), 2, str(log))}
    async with tailing(make_config(tmp_path), checkpoints) as tail:
        await tail.wait_records(2)
    assert tail.msgs == ["a", "b"]


async def test_read_from_end_at_the_first_start_skips_existing_content(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"history\n")
    async with tailing(make_config(tmp_path, read_from="end")) as tail:
        await eventually(lambda: bool(open_fds_to(log)), timeout=DEADLINE, what="app.log open")
        append(log, b"fresh\n")
        await tail.wait_records(1)
        # A file that appears after the first scan is new content: read from its beginning.
        (tmp_path / "later.log").write_bytes(b"later 1\nlater 2\n")
        await tail.wait_records(3)
    assert tail.msgs == ["fresh", "later 1", "later 2"]


async def test_after_a_restart_files_without_checkpoint_are_read_from_the_beginning(
    tmp_path: Path,
) -> None:
    known, unknown = tmp_path / "known.log", tmp_path / "unknown.log"
    known.write_bytes(b"seen\nunseen\n")
    unknown.write_bytes(b"created while the agent was down\n")
    checkpoints = {"k": Checkpoint("app", key_of(known), 5, str(known))}
    async with tailing(make_config(tmp_path, read_from="end"), checkpoints) as tail:
        await tail.wait_records(2)
    assert sorted(tail.msgs) == ["created while the agent was down", "unseen"]


async def test_line_of_three_times_max_line_bytes_ships_as_three_split_parts(
    tmp_path: Path,
) -> None:
    line = bytes(range(48, 48 + 64)) * 3  # ASCII: parts are exactly the limit
    (tmp_path / "app.log").write_bytes(line + b"\nnext\n")
    async with tailing(make_config(tmp_path, max_line_bytes=64, read_chunk_bytes=50)) as tail:
        await tail.wait_records(4)
    parts, following = tail.records[:3], tail.records[3]
    assert "".join(r["msg"] for r in parts) == line.decode()
    assert [r["tags"] for r in parts] == [["split"]] * 3
    assert [r["log"]["part"] for r in parts] == [0, 1, 2]
    assert [r["log"]["offset"] for r in parts] == [0, 64, 128]
    assert [cp.offset for cp in tail.checkpoints()] == [64, 128, 193, 198]
    assert following["msg"] == "next"
    assert "tags" not in following


async def test_split_never_cuts_inside_a_utf8_sequence(tmp_path: Path) -> None:
    line = "é€😀" * 30
    (tmp_path / "app.log").write_bytes(line.encode() + b"\n")
    async with tailing(make_config(tmp_path, max_line_bytes=64)) as tail:
        await eventually(
            lambda: "".join(tail.msgs) == line, timeout=DEADLINE, what="every part of the line"
        )
    assert all("invalid_utf8" not in r["tags"] for r in tail.records)
    assert all(len(r["msg"].encode()) <= 64 for r in tail.records)


async def test_invalid_utf8_and_nul_bytes_ship_as_records(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_bytes(b"bad \xff\xfe here\nnul \x00 byte\n\xc3\n")
    async with tailing(make_config(tmp_path)) as tail:
        await tail.wait_records(3)
    assert tail.msgs == ["bad \ufffd\ufffd here", "nul \x00 byte", "\ufffd"]
    assert [r.get("tags") for r in tail.records] == [["invalid_utf8"], None, ["invalid_utf8"]]
    assert b"\\u0000" in orjson.dumps(tail.records[1])


async def test_final_sweep_on_stop_delivers_lines_written_just_before_stop(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first\n")
    async with tailing(make_config(tmp_path, poll_interval=600), gate_open=False) as tail:
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)
        append(log, b"second\nthird\n")
        # finish() sets stop, opens the gate and requires run() to return within the deadline.
    assert tail.msgs == ["first", "second", "third"]


async def test_stopped_source_returns_promptly_and_closes_its_files(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"line\n")
    async with tailing(make_config(tmp_path, poll_interval=600)) as tail:
        await tail.wait_records(1)
        assert open_fds_to(log)
    assert not open_fds_to(log)


async def test_cancelled_source_closes_its_files(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"line\n")
    tail = Tail()
    task = asyncio.create_task(
        FileSource("app", make_config(tmp_path), {}, tail.emit, tail.stop).run()
    )
    await tail.wait_records(1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)
    assert task.cancelled()
    assert not open_fds_to(log)


# --- properties over arbitrary content -----------------------------------------------------------

_PIECES = st.sampled_from([b"a", b"line", b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3\xa9"])
_CONTENT = st.one_of(st.binary(max_size=400), st.lists(_PIECES, max_size=120).map(b"".join))


def sweep(content: bytes, **overrides: Any) -> list[Pending]:
    """Run a source that is already stopped: its final sweep reads ``content`` and returns."""

    async def main(directory: Path) -> list[Pending]:
        tail = Tail()
        tail.stop.set()
        (directory / "app.log").write_bytes(content)
        config = make_config(directory, **overrides)
        await FileSource("app", config, {}, tail.emit, tail.stop).run()
        return tail.pending

    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(main(Path(directory)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=_CONTENT, chunk=st.integers(1, 64))
def test_every_complete_line_ships_exactly_once_whatever_the_bytes(
    content: bytes, chunk: int
) -> None:
    pending = sweep(content, read_chunk_bytes=chunk)
    complete = content[: content.rfind(b"\n") + 1]
    lines = [line.removesuffix(b"\r") for line in complete.split(b"\n")[:-1]]
    assert [p.record["msg"] for p in pending] == [line.decode(errors="replace") for line in lines]
    for p, line in zip(pending, lines, strict=True):
        invalid = line.decode(errors="replace") != line.decode(errors="ignore")
        assert ("invalid_utf8" in p.record.get("tags", [])) == invalid
    offsets = [p.checkpoint.offset for p in pending if p.checkpoint is not None]
    assert offsets == [i + 1 for i, byte in enumerate(complete) if byte == ord("\n")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200), chunk=st.integers(1, 64), limit=st.integers(4, 16))
def test_split_parts_concatenate_to_the_original_lines(text: str, chunk: int, limit: int) -> None:
    content = text.encode()
    pending = sweep(content, read_chunk_bytes=chunk, max_line_bytes=limit)
    lines: list[str] = []
    for p in pending:
        record = p.record
        assert "invalid_utf8" not in record.get("tags", [])
        assert len(record["msg"].encode()) <= limit
        continues = "split" in record.get("tags", []) and record["log"]["part"] > 0
        if continues:
            lines[-1] += record["msg"]
        else:
            lines.append(record["msg"])
    cut = content.rfind(b"\n") + 1
    complete, unterminated = content[:cut].decode(), content[cut:].decode()
    expected = [line.removesuffix("\r") for line in complete.split("\n")[:-1]]
    assert lines[: len(expected)] == expected
    # Parts of an unterminated line that is already too long ship before its newline.
    assert len(lines) <= len(expected) + 1
    assert unterminated.startswith("".join(lines[len(expected) :]))
