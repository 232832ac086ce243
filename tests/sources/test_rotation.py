"""The file source across rotation, truncation, deletion, inode reuse and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from agent.config import FileSourceConfig
from agent.sources import Checkpoint, Checkpoints, Item
from agent.sources.file import FileSource
from agent.sources.identity import make_key
from tests.sources.tailing import (
    DEADLINE,
    Tail,
    append,
    ident_of,
    identity,
    key_of,
    make_config,
    numbered,
    open_fds_to,
    tailing,
)
from tests.support import eventually


async def test_reused_inode_with_other_first_bytes_is_read_from_zero(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a new file on a reused inode\nsecond\n")
    # The checkpoint of the inode's previous file: same device and inode, other first bytes.
    old_key = make_key(identity(log), b"the old file had this first line\n")
    checkpoints = {"old": Checkpoint("app", old_key, 20, str(log))}
    async with tailing(make_config(tmp_path), checkpoints) as tail:
        await tail.wait_records(2)
    assert tail.msgs == ["a new file on a reused inode", "second"]
    assert "tags" not in tail.records[0]
    assert ident_of(tail.checkpoints()[0].key) == identity(log)
    assert tail.checkpoints()[0].key != old_key


async def test_small_file_keeps_its_key_until_it_reaches_the_fingerprint_length(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\n")
    config = make_config(tmp_path, fingerprint_bytes=16)
    async with tailing(config) as tail:
        await tail.wait_records(1)
        append(log, b"bb\n")
        await tail.wait_records(2)
        append(log, b"cccccccccccccccccccc\n")
        await tail.wait_records(3)
    keys = [cp.key for cp in tail.checkpoints()]
    assert keys[0] == keys[1] == make_key(identity(log), b"a\n")
    assert keys[2] == key_of(log, 16)


async def test_short_fingerprint_checkpoint_resumes_a_file_that_grew(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\n" + b"grown while the agent was down\n")
    checkpoints = {"k": Checkpoint("app", make_key(identity(log), b"a\n"), 2, str(log))}
    async with tailing(make_config(tmp_path, fingerprint_bytes=16), checkpoints) as tail:
        await tail.wait_records(1)
    assert tail.msgs == ["grown while the agent was down"]
    assert tail.checkpoints()[0].key == key_of(log, 16)  # upgraded to the full fingerprint


@pytest.mark.parametrize(
    "new",
    [["new 1"], [f"next {i:04d}" for i in range(5)]],
    ids=["short", "regrown past our offset"],
)
async def test_copytruncate_reads_the_unread_rest_from_the_copy(
    tmp_path: Path, new: list[str]
) -> None:
    # Regrown past our offset: found by the state machine (test_stateful). A copytruncate and a
    # write landed between the look at the file's size and the read of its bytes, and the bytes
    # of the new generation at our offset were shipped as the old one's, then again from 0 once
    # the truncation was seen. Here the window is held open between two chunks of one drain (the
    # emit of the first one waits), where the file's size is not checked against its first bytes
    # either.
    log = tmp_path / "app.log"
    log.write_bytes(numbered(0, 10))
    config = make_config(tmp_path, read_chunk_bytes=20)
    async with tailing(config, gate_open=False) as tail:
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)  # read 2 lines, saw 10
        shutil.copyfile(log, tmp_path / "app.log.1")
        os.truncate(log, 0)
        append(log, b"".join(f"{line}\n".encode() for line in new))
        tail.gate.set()
        await tail.wait_records(10 + len(new))
    assert sorted(tail.msgs) == sorted([f"line {i:04d}" for i in range(10)] + new)
    assert not [r for r in tail.records if r.get("type") == "gap"]
    copied = [r for r in tail.records if r["log"]["file"]["path"] == str(tmp_path / "app.log.1")]
    assert [r["log"]["offset"] for r in copied] == list(range(20, 100, 10))
    assert next(r for r in tail.records if r["msg"] == new[0])["tags"] == ["truncated"]


@pytest.mark.parametrize(
    "new",
    [["new 1"], [f"next {i:04d}" for i in range(15)]],
    ids=["short", "regrown past our offset"],
)
async def test_copytruncate_without_a_copy_accounts_the_bytes_seen_but_unread(
    tmp_path: Path, new: list[str]
) -> None:
    # Regrown past our offset between two chunks (as above): the gap covers what the old
    # generation held past our offset (20..100), not the new generation's size (150).
    log = tmp_path / "app.log"
    log.write_bytes(numbered(0, 10))
    config = make_config(tmp_path, read_chunk_bytes=20)
    async with tailing(config, gate_open=False) as tail:
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)
        os.truncate(log, 0)
        append(log, b"".join(f"{line}\n".encode() for line in new))
        tail.gate.set()
        await tail.wait_for(lambda: new[-1] in tail.msgs, "the new generation's last line")
    assert [r["msg"] for r in tail.records if "type" not in r] == ["line 0000", "line 0001", *new]
    [gap] = [r for r in tail.records if r.get("type") == "gap"]
    assert gap["reason"] == "copytruncate"
    assert gap["gap"] == {"path": str(log), "from_offset": 20, "to_offset": 100, "bytes": 80}
    assert gap["src"] == "app"


async def test_truncated_file_that_regrew_past_our_offset_is_read_from_zero(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(numbered(0, 2))
    async with tailing(make_config(tmp_path), gate_open=False) as tail:
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)  # read both lines
        log.write_bytes(numbered(0, 5, prefix="next"))  # shorter, then longer: same inode
        tail.gate.set()
        await tail.wait_records(7)
    assert tail.msgs == ["line 0000", "line 0001"] + [f"next {i:04d}" for i in range(5)]
    assert tail.records[2]["tags"] == ["truncated"]
    assert tail.checkpoints()[2].key == key_of(log, 50)


async def test_writes_to_a_renamed_file_after_the_new_one_appeared_are_read(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    with log.open("ab", buffering=0) as old_writer:
        old_writer.write(b"old 1\n")
        async with tailing(make_config(tmp_path, "*.log*", rotate_wait=1.0)) as tail:
            await tail.wait_records(1)
            log.rename(tmp_path / "app.log.1")  # excluded as a rotated name from now on
            log.write_bytes(b"new 1\n")
            await tail.wait_records(2)
            old_writer.write(b"old 2, before the writer reopened\n")  # as daemons do
            await tail.wait_records(3)
            await eventually(
                # Only the writer's own descriptor is left.
                lambda: len(open_fds_to(tmp_path / "app.log.1")) == 1,
                timeout=DEADLINE,
                what="the rotated file closed after rotate_wait",
            )
    assert sorted(tail.msgs) == ["new 1", "old 1", "old 2, before the writer reopened"]


async def test_a_file_deleted_while_open_is_read_while_its_writer_still_writes(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    with log.open("ab", buffering=0) as writer:
        writer.write(b"before\n")
        async with tailing(make_config(tmp_path, rotate_wait=1.0)) as tail:
            await tail.wait_records(1)
            log.unlink()
            writer.write(b"after the unlink\n")
            await tail.wait_records(2)
    assert tail.msgs == ["before", "after the unlink"]


async def test_rotated_siblings_are_excluded_unless_named_literally(tmp_path: Path) -> None:
    for name in ("app.log.1", "app.log.2.gz", "app.log-20240101", "app.log.3.zst"):
        (tmp_path / name).write_bytes(b"rotated " + name.encode() + b"\n")
        os.utime(tmp_path / name, (1_000_000, 1_000_000))  # rotated long before the start
    (tmp_path / "app.log").write_bytes(b"live\n")
    async with tailing(make_config(tmp_path, "app.log*", "app.log.1")) as tail:
        await tail.wait_records(2)
    assert sorted(tail.msgs) == ["live", "rotated app.log.1"]


async def test_rotated_siblings_are_tailed_when_exclude_rotated_is_off(tmp_path: Path) -> None:
    (tmp_path / "app.log.1").write_bytes(b"old\n")
    (tmp_path / "app.log").write_bytes(b"live\n")
    async with tailing(make_config(tmp_path, "app.log*", exclude_rotated=False)) as tail:
        await tail.wait_records(2)
    assert sorted(tail.msgs) == ["live", "old"]


async def test_symlinked_log_path_is_tailed_and_followed_when_repointed(tmp_path: Path) -> None:
    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir()
    logs.mkdir()
    first, second = data / "app-1.log", data / "app-2.log"
    first.write_bytes(b"one\n")
    link = logs / "app.log"
    link.symlink_to(first)
    async with tailing(make_config(logs, "*.log")) as tail:
        await tail.wait_records(1)
        append(first, b"two\n")
        await tail.wait_records(2)
        second.write_bytes(b"three\n")
        tmp_link = logs / "tmp.lnk"
        tmp_link.symlink_to(second)
        tmp_link.rename(link)  # atomic repoint, as deploy tools do
        await tail.wait_records(3)
    assert tail.msgs == ["one", "two", "three"]
    assert {r["log"]["file"]["path"] for r in tail.records} == {str(link)}
    assert ident_of(tail.checkpoints()[2].key) == identity(second)


# With max_open_files = 1 the live file holds the only descriptor: each planned generation's
# open failed, and the plan dropped it (no retry, no gap), its lines lost. They now wait.
@pytest.mark.parametrize("max_open_files", [1024, 1])
async def test_restart_reads_generations_rotated_away_while_the_agent_was_down(
    tmp_path: Path, max_open_files: int
) -> None:
    log = tmp_path / "app.log"
    history = tmp_path / "app.log-00000000"
    history.write_bytes(b"history from before the first start\n")
    os.utime(history, (1_000_000, 1_000_000))
    log.write_bytes(numbered(0, 3))
    checkpoint = Checkpoint("app", key_of(log), 10, str(log))  # shipped 1 line of 3
    log.rename(tmp_path / "app.log-00000001")
    log.write_bytes(numbered(3, 2))
    log.rename(tmp_path / "app.log-00000002")
    log.write_bytes(numbered(5, 2))
    config = make_config(tmp_path, max_open_files=max_open_files)
    async with tailing(config, {"k": checkpoint}) as tail:
        await tail.wait_records(6)
        assert len(open_fds_to(tmp_path)) <= max_open_files
    assert sorted(tail.msgs) == [f"line {i:04d}" for i in range(1, 7)]


# With one descriptor, held by app.log-1 until it retires, app.log-2 (found by the sweep)
# found none and was dropped from the plan, its lines lost. It now waits for the descriptor.
@pytest.mark.parametrize("max_open_files", [1024, 1])
async def test_generation_created_and_rotated_between_two_scans_is_read(
    tmp_path: Path, max_open_files: int
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(numbered(0, 1))
    config = make_config(tmp_path, max_open_files=max_open_files)
    async with tailing(config, gate_open=False) as tail:
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)
        log.rename(tmp_path / "app.log-1")
        log.write_bytes(numbered(1, 2))
        log.rename(tmp_path / "app.log-2")  # never seen under a name in the glob set
        log.write_bytes(numbered(3, 1))
        tail.gate.set()
        await tail.wait_records(4)
        assert len(open_fds_to(tmp_path)) <= max_open_files
    assert sorted(tail.msgs) == [f"line {i:04d}" for i in range(4)]


# With multi-line grouping, every file that shipped keeps its grouper: taken for one holding
# lines, no file was ever closed for another, which waited until close_idle_after.
@pytest.mark.parametrize(
    "options",
    [{}, {"multiline_start": "(first|second) ", "multiline_timeout": 0.1}],
    ids=["lines", "multiline"],
)
async def test_open_files_stay_within_max_open_files(
    tmp_path: Path, options: dict[str, object]
) -> None:
    logs = [tmp_path / f"app{i}.log" for i in range(4)]
    for i, log in enumerate(logs):
        log.write_bytes(f"first {i}\n".encode())
    config = make_config(tmp_path, max_open_files=2, **options)
    async with tailing(config) as tail:
        await tail.wait_records(4)
        assert len(open_fds_to(tmp_path)) <= 2
        for i, log in enumerate(logs):
            append(log, f"second {i}\n".encode())
        await tail.wait_records(8)
        assert len(open_fds_to(tmp_path)) <= 2
    assert sorted(tail.msgs) == sorted(
        [f"first {i}" for i in range(4)] + [f"second {i}" for i in range(4)]
    )


async def test_idle_file_is_closed_and_reopened_when_it_grows(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"one\n")
    async with tailing(make_config(tmp_path, close_idle_after=0.2)) as tail:
        await tail.wait_records(1)
        await eventually(lambda: not open_fds_to(log), timeout=DEADLINE, what="idle close")
        append(log, b"two\n")
        await tail.wait_records(2)
    assert tail.msgs == ["one", "two"]
    assert [r["log"]["offset"] for r in tail.records] == [0, 4]


async def test_multiline_groups_lines_by_start_pattern_and_flushes_on_timeout(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(
        b"2024 first\n  at a()\n  at b()\n2024 second\nTraceback:\n  at c()\n2024 third\n"
    )
    config = make_config(tmp_path, multiline_start=r"\d{4} ", multiline_timeout=0.2)
    async with tailing(config) as tail:
        await tail.wait_records(3)
    assert tail.msgs == [
        "2024 first\n  at a()\n  at b()",
        "2024 second\nTraceback:\n  at c()",
        "2024 third",
    ]
    assert [r["log"].get("lines") for r in tail.records] == [3, 3, None]
    assert [cp.offset for cp in tail.checkpoints()] == [29, 61, 72]


async def test_multiline_group_is_cut_before_it_passes_max_line_bytes(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"S" + b"x" * 40 + b"\n" + b"y" * 40 + b"\n" + b"z" * 10 + b"\nS end\n")
    config = make_config(tmp_path, multiline_start="S", max_line_bytes=64)
    async with tailing(config) as tail:
        await tail.wait_records(3)
    assert [len(m) for m in tail.msgs] == [41, 51, 5]


async def test_a_copy_found_at_a_restart_beside_its_original_is_not_read_twice(
    tmp_path: Path,
) -> None:
    # Found by the state machine (test_stateful): a restart with a checkpoint after line 3,
    # then line 4 is written and app.log copied to app.log.1 (copytruncate, before its
    # truncate) before the new source looks. The copy holds the checkpointed content, but so
    # does the original, read on from the checkpoint: the copy is read only for what the
    # original loses when it is truncated. Both were read from the checkpoint: line 4 twice.
    log = tmp_path / "app.log"
    log.write_bytes(numbered(0, 4))
    checkpoints = {"k": Checkpoint("app", key_of(log), 40, str(log))}
    append(log, numbered(4, 1))
    shutil.copyfile(log, tmp_path / "app.log.1")
    async with tailing(make_config(tmp_path), checkpoints) as tail:
        await tail.wait_records(1)
        os.truncate(log, 0)
        append(log, b"new 1\n")
        await tail.wait_for(lambda: "new 1" in tail.msgs, "the line after the truncation")
    assert sorted(tail.msgs) == ["line 0004", "new 1"]


@contextlib.asynccontextmanager
async def killed_after(
    line: str, config: FileSourceConfig, checkpoints: Checkpoints, *, gate_open: bool = True
) -> AsyncIterator[Tail]:
    """A running source whose emit shuts for good after the batch holding ``line`` (the next
    batch waits, as for a full buffer); on exit, once ``line`` shipped, the source is killed
    there: cancelled, without the final sweep (SIGKILL). What it emitted is what was committed."""
    tail = Tail()
    if not gate_open:
        tail.gate.clear()

    async def emit(batch: Sequence[Item]) -> None:
        await tail.emit(batch)
        if line in tail.msgs:
            tail.gate.clear()

    tail.task = asyncio.create_task(FileSource("app", config, checkpoints, emit, tail.stop).run())
    try:
        yield tail
        await tail.wait_for(lambda: line in tail.msgs, f"{line} shipped")
    finally:
        tail.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(tail.task, DEADLINE)


def committed(checkpoints: Checkpoints, tail: Tail) -> Checkpoints:
    """The checkpoints a restart after ``tail`` is handed: the last one of every key."""
    return {**checkpoints, **{cp.key: cp for cp in tail.checkpoints()}}


def assert_each_once(msgs: list[str], expected: list[str]) -> None:
    assert sorted(msgs) == expected, f"never emitted: {sorted(set(expected) - set(msgs))}"


def set_ages(*paths: Path) -> None:
    """Modification times in the order given, oldest first, a second apart."""
    for age, path in enumerate(paths):
        os.utime(path, (1_000_000 + age, 1_000_000 + age))


MULTILINE = {"multiline_start": "line ", "multiline_timeout": 0.2}


@pytest.mark.parametrize(
    ("unread", "options", "unread_msgs"),
    [
        (numbered(3, 3), {}, ["line 0003", "line 0004", "line 0005"]),
        (b"line 0003", {}, ["line 0003"]),
        (b"line 0003\n  at a()\n", MULTILINE, ["line 0003\n  at a()"]),
    ],
    ids=["lines", "unterminated", "group"],
)
async def test_a_generation_planned_at_a_restart_ships_before_the_live_file(
    tmp_path: Path, unread: bytes, options: dict[str, object], unread_msgs: list[str]
) -> None:
    # Found by the state machine (test_stateful): a restart planned app.log.2, never read, but
    # read the live file first. Killed after the live file's lines shipped and before
    # app.log.2's did, and app.log rotated again before the next start: app.log.2 was older
    # than the newest checkpointed sibling (app.log.3), so history, and its lines were lost.
    # A generation that ships nothing until its timeout or retirement (one unterminated line,
    # one multi-line group) holds the newer files back until then.
    log, first, second = (tmp_path / n for n in ("app.log", "app.log.1", "app.log.2"))
    log.write_bytes(numbered(0, 3))
    checkpoints = {"k": Checkpoint("app", key_of(log), 30, str(log))}  # shipped to its end
    log.rename(first)
    log.write_bytes(unread)  # written and rotated while the agent was down
    log.rename(second)
    log.write_bytes(numbered(6, 3))
    set_ages(first, second, log)
    config = make_config(tmp_path, **options)
    async with killed_after("line 0006", config, checkpoints) as killed:
        pass
    log.rename(tmp_path / "app.log.3")  # rotated again while the agent was down
    log.write_bytes(numbered(9, 1))
    async with tailing(config, committed(checkpoints, killed)) as tail:
        await tail.wait_for(lambda: "line 0009" in tail.msgs, "the live file")
    expected = unread_msgs + [f"line {i:04d}" for i in range(6, 10)]
    assert_each_once(killed.msgs + tail.msgs, expected)


@pytest.mark.parametrize("rotated", ["app.log.{}", "app.log-{}"], ids=["sweep", "on_leave"])
async def test_a_generation_rotated_between_two_scans_ships_before_the_new_live_file(
    tmp_path: Path, rotated: str
) -> None:
    # As above, for a generation created and rotated away between two scans: found by the
    # sweep (a rotated name) or when the file it follows leaves the glob set (any longer name).
    log = tmp_path / "app.log"
    first, unseen, third = (tmp_path / rotated.format(n) for n in (1, 2, 3))
    log.write_bytes(numbered(0, 1))
    async with killed_after("line 0003", make_config(tmp_path), {}, gate_open=False) as killed:
        await asyncio.wait_for(killed.blocked.wait(), DEADLINE)
        log.rename(first)
        log.write_bytes(numbered(1, 2))
        log.rename(unseen)  # never seen under a name in the glob set
        log.write_bytes(numbered(3, 1))
        killed.gate.set()
    log.rename(third)  # rotated again while the agent was down
    log.write_bytes(numbered(4, 1))
    set_ages(first, unseen, third, log)
    async with tailing(make_config(tmp_path), committed({}, killed)) as tail:
        await tail.wait_for(lambda: "line 0004" in tail.msgs, "the live file")
    assert_each_once(killed.msgs + tail.msgs, [f"line {i:04d}" for i in range(5)])


async def test_a_file_held_back_unread_is_not_closed_as_idle_and_lost_when_rotated(
    tmp_path: Path,
) -> None:
    # While a planned generation holds the round back (app.log.1: one unterminated line), the
    # files after it are not read; closed as idle all the same, the live file was forgotten when
    # rotated while closed ("closed while idle: read to its end already") and its lines lost.
    log = tmp_path / "app.log"
    first, older, newer = (tmp_path / n for n in ("app.log.3", "app.log.2", "app.log.1"))
    log.write_bytes(numbered(0, 3))
    checkpoints = {"k": Checkpoint("app", key_of(log), 30, str(log))}  # shipped to its end
    log.rename(first)
    log.write_bytes(numbered(3, 2))  # written and rotated while the agent was down: planned
    log.rename(older)
    log.write_bytes(b"line 0005")  # planned too, and holds the live file back
    log.rename(newer)
    log.write_bytes(numbered(6, 2))
    set_ages(first, older, newer, log)
    config = make_config(
        tmp_path, close_idle_after=1e-6, partial_line_timeout=60.0, rotate_wait=60.0
    )
    async with tailing(config, checkpoints, gate_open=False) as tail:
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)  # app.log.2's lines, mid-round
        log.rename(tmp_path / "app.log.0")  # rotated after the round's scan
    assert_each_once(tail.msgs, [f"line {i:04d}" for i in range(3, 8)])


async def test_the_final_sweep_reads_every_file_past_a_planned_one_that_holds_back(
    tmp_path: Path,
) -> None:
    # A planned generation holding one unterminated line holds the files after it back, but not
    # in the final sweep: renamed back into the glob set it is never retired, and the sweep
    # stopped at it, leaving the live file's lines unshipped at a clean stop.
    log, older, newer = (tmp_path / n for n in ("app.log", "app.log.2", "app.log.1"))
    log.write_bytes(numbered(0, 2))
    checkpoints = {"k": Checkpoint("app", key_of(log), 10, str(log))}  # line 0001 not shipped
    log.rename(older)
    log.write_bytes(b"line 0003")  # written and rotated while the agent was down: unknown
    log.rename(newer)
    log.write_bytes(numbered(6, 3))
    set_ages(older, newer, log)
    config = make_config(tmp_path, partial_line_timeout=3600, rotate_wait=3600)
    async with tailing(config, checkpoints, gate_open=False) as tail:
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)  # in app.log.2's emit: both planned
        newer.rename(tmp_path / "back.log")  # back into the glob set (*.log)
        tail.gate.set()
    assert_each_once(tail.msgs, ["line 0001", "line 0006", "line 0007", "line 0008"])


async def test_a_file_with_unread_bytes_is_not_closed_for_room_and_lost_when_rotated(
    tmp_path: Path,
) -> None:
    # max_open_files reached: a new file's open closed the least recently grown idle file even
    # when it held bytes written since its last read. Rotated before it was reopened, it was
    # forgotten ("closed while idle: read to its end already") and those lines lost.
    a, b, c = (tmp_path / n for n in ("a.log", "b.log", "c.log"))
    a.write_bytes(b"a 0\n")
    b.write_bytes(b"b 0\n")
    at_c, release = asyncio.Event(), asyncio.Event()
    tail = Tail()

    async def emit(batch: Sequence[Item]) -> None:
        await tail.emit(batch)
        if "c 0" in tail.msgs and not release.is_set():
            at_c.set()  # c.log was opened in this round's scan, after a.log grew
            await release.wait()

    config = make_config(tmp_path, max_open_files=2, close_idle_after=60.0)
    source = FileSource("app", config, {}, emit, tail.stop)
    tail.task = asyncio.create_task(source.run())
    try:
        await tail.wait_records(2)
        tail.gate.clear()
        append(b, b"b 1\n")  # b.log grows after a.log: a.log is the least recently grown
        await asyncio.wait_for(tail.blocked.wait(), DEADLINE)
        append(a, b"a 1\n")  # after a.log's read in this round: unread at the next scan
        c.write_bytes(b"c 0\n")
        tail.gate.set()
        await asyncio.wait_for(at_c.wait(), DEADLINE)
        a.rename(tmp_path / "a.log.1")  # rotated after the scan that opened c.log
        release.set()
        await tail.wait_for(lambda: "a 1" in tail.msgs, "a.log's unread line")
    finally:
        release.set()
        await tail.finish()
    assert_each_once(tail.msgs, ["a 0", "a 1", "b 0", "b 1", "c 0"])


@pytest.mark.parametrize(
    ("unread", "options", "unread_msgs"),
    [
        (b"line 0003", {}, ["line 0003"]),
        (b"line 0003\n  at a()\n", MULTILINE, ["line 0003\n  at a()"]),
    ],
    ids=["unterminated", "group"],
)
async def test_files_held_back_are_read_as_soon_as_the_hold_is_flushed(
    tmp_path: Path, unread: bytes, options: dict[str, object], unread_msgs: list[str]
) -> None:
    # A planned generation's unterminated line (or group) holds the live file back until it
    # is flushed at its timeout; the live file was then read only at the next round, up to a
    # poll interval later (here a minute: no event comes, the files do not change).
    log, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    log.write_bytes(numbered(0, 3))
    checkpoints = {"k": Checkpoint("app", key_of(log), 30, str(log))}  # shipped to its end
    log.rename(rotated)
    log.write_bytes(unread)  # written and rotated while the agent was down: planned
    log.rename(tmp_path / "app.log.2")
    log.write_bytes(numbered(6, 2))
    set_ages(rotated, tmp_path / "app.log.2", log)
    config = make_config(
        tmp_path,
        poll_interval=60.0,
        rotate_wait=60.0,
        **{"partial_line_timeout": 0.2, "multiline_timeout": 0.2, **options},
    )
    async with tailing(config, checkpoints) as tail:
        await tail.wait_for(lambda: "line 0007" in tail.msgs, "the live file")
    assert_each_once(tail.msgs, [*unread_msgs, "line 0006", "line 0007"])
    assert tail.msgs.index(unread_msgs[0]) < tail.msgs.index("line 0006")


async def test_a_planned_generation_still_growing_holds_the_files_after_it_back_only_so_long(
    tmp_path: Path,
) -> None:
    # A writer still appending to a rotated generation, one unterminated line: each growth
    # restarted the partial line's timeout, so it held the live file back until the line
    # reached max_line_bytes. The hold now ends at the longest timeout since it was planned:
    # the line ships as it stands (its rest later), then the live file.
    log, rotated = tmp_path / "app.log", tmp_path / "app.log.1"
    log.write_bytes(numbered(0, 3))
    checkpoints = {"k": Checkpoint("app", key_of(log), 30, str(log))}  # shipped to its end
    log.rename(rotated)
    log.write_bytes(b"line 0003")  # the writer goes on appending to it after the rotation
    log.rename(tmp_path / "app.log.2")
    log.write_bytes(numbered(6, 2))
    set_ages(rotated, tmp_path / "app.log.2", log)
    config = make_config(tmp_path, partial_line_timeout=0.2, rotate_wait=60.0)
    done = asyncio.Event()

    async def writer() -> None:  # a slow writer: a byte every 20 ms, 10x the timeout
        while not done.is_set():
            append(tmp_path / "app.log.2", b"+")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.02)

    async with tailing(config, checkpoints) as tail:
        writing = asyncio.create_task(writer())
        try:
            await tail.wait_for(lambda: "line 0007" in tail.msgs, "the live file")
        finally:
            done.set()
            await writing
    assert tail.msgs[0].startswith("line 0003")
    assert sorted(m for m in tail.msgs if not m.startswith("+")) == [
        tail.msgs[0],
        "line 0006",
        "line 0007",
    ]
