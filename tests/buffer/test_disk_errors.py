"""Disk trouble: the writer pauses, retries, and loses nothing it acknowledged as durable."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agent.buffer.wal import SegmentIO
from agent.config import BufferConfig
from tests.buffer.harness import assert_chain, pending, start, stored
from tests.support import eventually

# queue_batches: room for every batch a test emits while the writer is paused by the error,
# so the test's own emits never wait on the pause they are about to observe.
FAST_RETRY = BufferConfig(
    segment_bytes=16384, max_bytes=1 << 20, retry_initial=0.01, retry_max=0.05, queue_batches=16
)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 192 KiB tmpfs: a real filesystem that really fills up.

    Mounting needs CAP_SYS_ADMIN, which this project's machines and CI have; where it is
    missing the injected-error tests below still cover the same code path.
    """
    mount = tmp_path / "mnt"
    mount.mkdir()
    mount_cmd, umount_cmd = shutil.which("mount"), shutil.which("umount")
    if mount_cmd is None or umount_cmd is None:
        pytest.skip("no mount(8) on this machine")
    result = subprocess.run(
        [mount_cmd, "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run([umount_cmd, "-l", str(mount)], check=False)


async def test_disk_full_pauses_the_writer_and_recovers_without_loss(tiny_fs: Path) -> None:
    run = await start(tiny_fs / "state", FAST_RETRY)
    buf = run.buffer
    filler = tiny_fs / "filler"
    with filler.open("wb") as out:  # leave roughly 40 KB free
        stat = os.statvfs(tiny_fs)
        out.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 40_000))
    for i in range(10):
        await buf.emit(pending(50, start=i * 50, size=100))
    await eventually(lambda: "No space" in buf.write_error, timeout=10, what="ENOSPC")
    durable = buf.last_seq
    assert 0 < durable < 500
    assert buf.stats.write_errors >= 1
    filler.unlink()
    await eventually(lambda: buf.last_seq == 500, timeout=10, what="recovery after space freed")
    assert buf.write_error == ""
    await run.close()
    frames = stored(tiny_fs / "state")
    assert [orjson.loads(f.record)["msg"] for f in frames[:500]] == [
        f"line {i}{'x' * 100}" for i in range(500)
    ]
    assert_chain(frames, buf.stream_id)


class FailingFsync(SegmentIO):
    """Writes land, then fsync reports EIO ``failures`` times: the bytes must not count."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def fsync(self, fd: int) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(fd)


async def test_eio_on_fsync_rewrites_the_commit_exactly_once(tmp_path: Path) -> None:
    io = FailingFsync(failures=0)
    run = await start(tmp_path, FAST_RETRY, io)
    buf = run.buffer
    await run.commit(pending(10))
    io.failures = 3
    await buf.emit(pending(10, start=10))
    await eventually(lambda: buf.last_seq == 20, timeout=10, what="commit after EIO")
    assert buf.stats.write_errors == 3
    await run.close()
    # The bytes written before each failed fsync were cut off: no record appears twice.
    frames = stored(tmp_path)
    assert [orjson.loads(f.record)["msg"] for f in frames[:20]] == [f"line {i}" for i in range(20)]
    assert_chain(frames, buf.stream_id)


async def test_a_retry_after_eio_may_grow_the_frames_buffer(tmp_path: Path) -> None:
    """The failed commit's error, which the writer keeps across its retry, holds views of the
    frames buffer the failed write was made from. A retry that must grow it (here its second
    segment's frame, which the failed attempt never got to, is bigger than the buffer) got
    BufferError, which ended the writer task: it must commit instead."""
    io = FailingFsync(failures=0)
    run = await start(tmp_path, FAST_RETRY, io)  # segments of 16 KiB
    buf = run.buffer
    await run.commit(pending(1))
    io.failures = 1
    # A small frame that fits the segment (its fsync fails), then a 100 KB one: the next segment.
    await buf.emit(pending(1, start=1) + pending(1, start=2, size=100_000))
    await eventually(lambda: buf.last_seq == 3 or run.task.done(), timeout=10, what="the retry")
    assert not run.task.done(), run.task
    assert buf.stats.write_errors == 1
    await run.close()
    frames = stored(tmp_path)
    assert [orjson.loads(f.record)["msg"] for f in frames[:3]] == [
        "line 0",
        "line 1",
        "line 2" + "x" * 100_000,
    ]
    assert_chain(frames, buf.stream_id)


class FailingWrite(SegmentIO):
    def __init__(self) -> None:
        self.fail = False

    def write(self, fd: int, data: bytes | memoryview) -> None:
        if self.fail:
            # Half the data reaches the file before the error, as a real short write would.
            super().write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(fd, data)


async def test_injected_enospc_mid_write_keeps_acked_records_and_retries(tmp_path: Path) -> None:
    io = FailingWrite()
    run = await start(tmp_path, FAST_RETRY, io)
    buf = run.buffer
    await run.commit(pending(5))
    io.fail = True
    await buf.emit(pending(5, start=5))
    await eventually(lambda: buf.stats.write_errors >= 2, timeout=10, what="repeated failures")
    assert buf.last_seq == 5
    io.fail = False
    await eventually(lambda: buf.last_seq == 10, timeout=10, what="recovery")
    await run.close()
    frames = stored(tmp_path)
    assert len(frames) == 11
    assert_chain(frames, buf.stream_id)


async def test_cursor_write_on_a_full_disk_is_retried_not_fatal(tiny_fs: Path) -> None:
    run = await start(tiny_fs / "state", FAST_RETRY)
    buf = run.buffer
    await run.commit(pending(20))
    filler = tiny_fs / "filler"
    with filler.open("wb") as out:  # fill the disk completely
        stat = os.statvfs(tiny_fs)
        out.write(b"\0" * (stat.f_bavail * stat.f_frsize))
    acking = asyncio.create_task(run.ack_all())
    await eventually(lambda: buf.stats.write_errors >= 2, timeout=10, what="failed cursor writes")
    assert not acking.done()
    filler.unlink()
    await asyncio.wait_for(acking, timeout=10)
    assert buf.cursors["a"][0] == 20
    await run.close()
