"""Driving a real ``FileSource`` in tests: an ``emit`` that records batches and can be held shut
(backpressure) to freeze the source at a known point while a test rotates or deletes files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from agent.config import FileSourceConfig
from agent.record import Record
from agent.sources import Checkpoint, Checkpoints, Item, Pending, materialize
from agent.sources.file import FileSource
from agent.sources.identity import make_key
from tests.support import eventually

DEADLINE = 10.0


class GatedEmit:
    """An ``emit`` for any source: records its batches, and can be held shut (``gate`` cleared)
    as a full buffer would, to freeze the source at a known point."""

    def __init__(self) -> None:
        self.batches: list[list[Pending]] = []
        self.gate = asyncio.Event()  # cleared: emit blocks, as when the buffer is full
        self.gate.set()
        self.blocked = asyncio.Event()  # set once an emit waits at the closed gate
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def emit(self, batch: Sequence[Item]) -> None:
        if not self.gate.is_set():
            self.blocked.set()
            await self.gate.wait()
        self.batches.append(materialize(batch))  # runs of plain lines: as their records


class Tail(GatedEmit):
    """A running file source and what it emitted."""

    @property
    def pending(self) -> list[Pending]:
        return [p for batch in self.batches for p in batch]

    @property
    def records(self) -> list[Record]:
        return [p.record for p in self.pending]

    @property
    def msgs(self) -> list[str]:
        return [r["msg"] for r in self.records]

    def checkpoints(self) -> list[Checkpoint]:
        found = [p.checkpoint for p in self.pending]
        assert all(cp is not None for cp in found)
        return [cp for cp in found if cp is not None]

    async def wait_records(self, count: int) -> None:
        await eventually(
            lambda: len(self.records) >= count, timeout=DEADLINE, what=f"{count} records"
        )

    async def wait_for(self, condition: Callable[[], bool], what: str = "condition") -> None:
        await eventually(condition, timeout=DEADLINE, what=what)

    async def finish(self) -> None:
        """Stop the source; it must return promptly, after its final sweep."""
        self.stop.set()
        self.gate.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, DEADLINE)


@contextlib.asynccontextmanager
async def tailing(
    config: FileSourceConfig,
    checkpoints: Checkpoints | None = None,
    *,
    gate_open: bool = True,
    observer_factory: Callable[[], BaseObserver] = Observer,
    spool_dir: str = "",
) -> AsyncIterator[Tail]:
    tail = Tail()
    if not gate_open:
        tail.gate.clear()
    source = FileSource(
        "app",
        config,
        checkpoints or {},
        tail.emit,
        tail.stop,
        observer_factory=observer_factory,
        spool_dir=spool_dir,
    )
    tail.task = asyncio.create_task(source.run())
    try:
        yield tail
    finally:
        await tail.finish()


def make_config(directory: Path, *patterns: str, **overrides: Any) -> FileSourceConfig:
    options: dict[str, Any] = {"poll_interval": 0.05, "rotate_wait": 0.3, **overrides}
    return FileSourceConfig(paths=[str(directory / p) for p in patterns or ("*.log",)], **options)


def numbered(start: int, count: int, prefix: str = "line") -> bytes:
    """Lines of exactly 10 bytes: ``line 0003\\n``."""
    return b"".join(f"{prefix} {i:04d}\n".encode() for i in range(start, start + count))


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def identity(path: Path) -> str:
    """Device and inode: the part of a checkpoint key that names the file."""
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def key_of(path: Path, length: int = 1024) -> str:
    """The checkpoint key of ``path`` as fingerprinted over its first ``length`` bytes."""
    return make_key(identity(path), path.read_bytes()[:length])


def ident_of(key: str) -> str:
    return key.rsplit(":", 2)[0]


def open_fds_to(path: Path) -> list[str]:
    fd_dir = Path("/proc/self/fd")
    targets = []
    for entry in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            targets.append(str(entry.readlink()))
    return [t for t in targets if t.startswith(str(path))]
