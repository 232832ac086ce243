"""Forgetting the checkpoints of files gone: real files, a real buffer and a real file source."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import orjson
import pytest

from agent.buffer.wal import Buffer
from agent.config import BufferConfig, FileSourceConfig
from agent.sources import Checkpoint, file
from agent.sources.file import FileSource
from agent.sources.forget import gone, prunable
from tests.buffer.harness import start, stored
from tests.sources.tailing import DEADLINE, append, identity, key_of, make_config, open_fds_to
from tests.support import eventually


def cp(path: Path, length: int = 1024) -> Checkpoint:
    return Checkpoint("app", key_of(path, length), path.stat().st_size, str(path))


def test_a_checkpoint_is_kept_while_its_file_or_a_copy_of_its_content_is_there(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    names = ["live", "renamed", "deleted", "truncated", "legacy", "legacy_gone"]
    for name in names:
        (logs / f"{name}.log").write_bytes(f"first line of {name}\n".encode())
    held = {name: cp(logs / f"{name}.log") for name in names}
    held["legacy"] = Checkpoint("app", identity(logs / "legacy.log"), 5, str(logs / "legacy.log"))
    held["legacy_gone"] = Checkpoint(
        "app", identity(logs / "legacy_gone.log"), 5, str(logs / "legacy_gone.log")
    )
    (logs / "renamed.log").rename(logs / "renamed.log.1")
    (logs / "deleted.log").unlink()
    (logs / "legacy_gone.log").unlink()
    # copytruncate: the copy holds what the checkpoint covers; the file starts over.
    shutil.copyfile(logs / "truncated.log", logs / "truncated.log.1")
    (logs / "truncated.log").write_bytes(b"a new generation\n")
    # Not a file's key (a journald cursor), and no path: never judged.
    held["journal"] = Checkpoint("app", "boot-1", 10, str(logs / "x"))
    held["pathless"] = Checkpoint("app", key_of(logs / "live.log"), 1, "")
    # A whole directory gone (a Kubernetes pod's), and a "directory" that is now a file.
    pod = tmp_path / "pods" / "ns_pod_uid" / "app"
    pod.mkdir(parents=True)
    (pod / "0.log").write_bytes(b"pod line\n")
    held["pod"] = cp(pod / "0.log")
    shutil.rmtree(tmp_path / "pods")
    (tmp_path / "flat").write_bytes(b"")
    held["not_a_dir"] = Checkpoint("app", "1:2:5:abcd", 5, str(tmp_path / "flat" / "x.log"))

    dead = gone(held.values(), 1024)

    assert dead == {held[n].key for n in ("deleted", "legacy_gone", "pod", "not_a_dir")}
    (logs / "truncated.log.1").unlink()  # the copy rotated away: its content is gone now
    assert held["truncated"].key in gone(held.values(), 1024)


def test_a_checkpoint_of_a_symlinked_file_follows_the_target(tmp_path: Path) -> None:
    """/var/log/containers/*.log are symlinks into /var/log/pods: the link's path is what the
    checkpoint holds; the target's content is what keeps it."""
    target = tmp_path / "pods" / "0.log"
    target.parent.mkdir()
    target.write_bytes(b"container line\n")
    links = tmp_path / "containers"
    links.mkdir()
    (links / "app.log").symlink_to(target)
    held = Checkpoint("app", key_of(links / "app.log"), 15, str(links / "app.log"))
    assert gone([held], 1024) == set()
    target.unlink()  # a dangling link
    assert gone([held], 1024) == {held.key}


def test_a_source_keeps_its_newest_checkpoint_and_those_of_files_being_read(
    tmp_path: Path,
) -> None:
    """A source with no checkpoint at all would count as starting for the first time, where
    read_from = "end" skips what its files hold: one checkpoint always stays."""
    paths = [tmp_path / f"{n}.log" for n in range(3)]
    for path in paths:
        path.write_bytes(b"line\n" + path.name.encode())
    held = {c.key: c for c in map(cp, paths)}
    for path in paths:
        path.unlink()
    keys = list(held)
    assert prunable(held, set(), 1024) == set(keys[:2])  # the newest stays
    assert prunable(held, {keys[0]}, 1024) == set(keys[1:])  # being read (deleted while open)
    assert prunable({}, set(), 1024) == set()


@contextlib.asynccontextmanager
async def tailing_into(buffer: Buffer, config: FileSourceConfig) -> AsyncIterator[FileSource]:
    stop = asyncio.Event()
    source = FileSource(
        "app", config, buffer.checkpoints_for("app"), buffer.emit, stop, store=buffer
    )
    task = asyncio.create_task(source.run())
    try:
        yield source
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE)
        await buffer.barrier()


def shipped(state: Path) -> list[str]:
    """The msgs of the records the buffer holds from the file source, in order."""
    records = [orjson.loads(frame.record) for frame in stored(state)]
    return [r["msg"] for r in records if r.get("src") == "app"]


async def until(condition: Callable[[], object], what: str) -> None:
    await eventually(lambda: bool(condition()), timeout=DEADLINE, what=what)


@pytest.fixture
def prune_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file, "PRUNE_EVERY", 0.0)  # every round, not every ten minutes


async def test_a_restarted_source_forgets_files_gone_and_the_summary_loses_them(
    tmp_path: Path, prune_every_round: None
) -> None:
    state, logs = tmp_path / "state", tmp_path / "logs"
    logs.mkdir()
    config = make_config(logs)
    buffer_config = BufferConfig(segment_bytes=4096)
    run = await start(state, buffer_config)
    (logs / "a.log").write_bytes(b"a1\n")
    (logs / "b.log").write_bytes(b"b1\n")
    async with tailing_into(run.buffer, config):
        await until(lambda: len(run.buffer.checkpoints_for("app")) == 2, "2 files")
    a_key, b_key = key_of(logs / "a.log"), key_of(logs / "b.log")
    (logs / "a.log").unlink()
    async with tailing_into(run.buffer, config):
        await until(lambda: a_key not in run.buffer.checkpoints_for("app"), "forgot a")
        append(logs / "b.log", b"".join(b"b%d\n" % i for i in range(2, 100)))
        await until(lambda: len(shipped(state)) == 100, "b2..b99")
    assert sorted(shipped(state)[:2]) == ["a1", "b1"]
    assert shipped(state)[2:] == [f"b{i}" for i in range(2, 100)]  # b resumed, nothing twice
    # Segments deleted after the acks: checkpoints.json is written from the map, without a.
    await run.ack_all()
    await run.close()
    reopened = await asyncio.to_thread(Buffer.open, state, buffer_config, ["a", "b"])
    try:
        assert set(reopened.checkpoints_for("app")) == {b_key}
    finally:
        await asyncio.to_thread(reopened.stop)


async def test_a_source_whose_files_are_all_gone_still_counts_as_started(
    tmp_path: Path, prune_every_round: None
) -> None:
    """read_from = "end" applies only at a source's first start: after every file it read was
    deleted, a file created while the agent was down still ships from its first line."""
    state, logs = tmp_path / "state", tmp_path / "logs"
    logs.mkdir()
    config = make_config(logs, read_from="end")
    run = await start(state)
    for name in ("c", "d"):
        (logs / f"{name}.log").write_bytes(f"{name}0\n".encode())
    async with tailing_into(run.buffer, config):
        for name in ("c", "d"):  # read_from = "end": c0 and d0 are history
            path = logs / f"{name}.log"
            await until(partial(open_fds_to, path), f"{name} open")
            append(path, f"{name}1\n".encode())
        await until(lambda: sorted(shipped(state)) == ["c1", "d1"], "c1 and d1")
    keys = list(run.buffer.checkpoints_for("app"))
    (logs / "c.log").unlink()
    (logs / "d.log").unlink()
    async with tailing_into(run.buffer, config):  # no file left: all its checkpoints are gone
        await until(lambda: list(run.buffer.checkpoints_for("app")) == keys[-1:], "one left")
    (logs / "e.log").write_bytes(b"e1\n")  # written while the agent is down
    async with tailing_into(run.buffer, config):
        await until(lambda: len(shipped(state)) == 3, "e1")
    assert shipped(state)[2] == "e1"
    await run.close()


async def test_a_running_source_forgets_a_deleted_file_once_it_is_retired(
    tmp_path: Path, prune_every_round: None
) -> None:
    state, logs = tmp_path / "state", tmp_path / "logs"
    logs.mkdir()
    run = await start(state)
    (logs / "keep.log").write_bytes(b"k1\n")
    (logs / "drop.log").write_bytes(b"d1\n")
    async with tailing_into(run.buffer, make_config(logs)) as source:
        await until(lambda: len(run.buffer.checkpoints_for("app")) == 2, "2 files")
        drop_key = key_of(logs / "drop.log")
        (logs / "drop.log").unlink()
        await until(lambda: drop_key not in run.buffer.checkpoints_for("app"), "forgot")
        assert not any(f.key == drop_key for f in source._files.values())  # retired first
        # Nor is its content still known in memory (rotated siblings are matched against it).
        known = source._generations.known
        assert known.find(b"d1\n") is None
        assert known.find(b"k1\n") is not None
        assert set(run.buffer.checkpoints_for("app")) == {key_of(logs / "keep.log")}
    await run.close()


async def test_a_directory_empty_at_the_start_keeps_its_checkpoints(tmp_path: Path) -> None:
    """A filesystem mounted late at boot: at the source's first pass its directory is empty, and
    its files are back before the next pass (ten minutes on). Nothing is forgotten, nothing is
    shipped again (found by review: the first pass used to forget them all)."""
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    mnt.mkdir()
    run = await start(state)
    (mnt / "app.log").write_bytes(b"".join(b"m%d\n" % i for i in range(100)))
    (mnt / "b.log").write_bytes(b"b0\n")
    config = make_config(mnt)
    async with tailing_into(run.buffer, config):
        await until(lambda: len(shipped(state)) == 101, "all")
    held = set(run.buffer.checkpoints_for("app"))
    (tmp_path / "real").mkdir()
    for name in ("app.log", "b.log"):
        (mnt / name).rename(tmp_path / "real" / name)  # not mounted yet
    async with tailing_into(run.buffer, config) as source:
        # All gone but the newest, which a source always keeps.
        await until(lambda: len(source._suspects & held) == 1, "the first pass found them gone")
        for name in ("app.log", "b.log"):
            (tmp_path / "real" / name).rename(mnt / name)  # mounted now
        append(mnt / "app.log", b"m100\n")
        await until(lambda: len(shipped(state)) == 102, "m100")
    assert shipped(state)[-1] == "m100"
    assert set(run.buffer.checkpoints_for("app")) >= held
    await run.close()


def test_a_file_whose_start_cannot_be_read_keeps_only_its_own_checkpoints(
    tmp_path: Path,
) -> None:
    """A file whose first bytes cannot be read (a compressed one damaged at its start here; for
    an agent outside its group, /var/log/btmp) may still be the file its own keys name: those
    stay. It does not pin the keys of the other files of its directory (found by review: it
    kept them all, forever)."""
    damaged = tmp_path / "other.log.1.gz"
    damaged.write_bytes(b"\x1f\x8b\x08garbage")
    log = tmp_path / "app.log"
    log.write_bytes(b"line\n")
    own = Checkpoint("app", f"{identity(damaged)}:5:0123456789abcdef", 5, str(damaged))
    other = cp(log)
    log.unlink()
    assert gone([own, other], 1024) == {other.key}


def test_a_files_first_line_key_goes_once_its_full_key_holds_the_same_bytes(
    tmp_path: Path,
) -> None:
    """A file first keyed by its first line (all it had) and then by its first 1024 bytes: the
    short key is superseded. Kept, it would live as long as any file starts with that line (a
    CSV header), whatever happened to this one (found by review)."""
    log = tmp_path / "app.csv"
    log.write_bytes(b"time,user,action\n")
    short = cp(log)
    append(log, b"".join(b"2024-05-01,alice,login %d\n" % i for i in range(100)))
    full = cp(log)
    assert gone([short, full], 1024) == {short.key}
    (tmp_path / "other.csv").write_bytes(b"time,user,action\nnew\n")  # same first line
    assert gone([short, full], 1024) == {short.key}
