"""A file source with a real buffer: the checkpoints of a file deleted for good leave the
buffer's checkpoint map once its last records are committed; a file renamed away keeps them
(it may be found again as a rotated sibling)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from agent.buffer.wal import Buffer
from agent.config import BufferConfig
from agent.sources.file import FileSource
from tests.sources.tailing import DEADLINE, append, ident_of, identity, make_config
from tests.support import eventually


async def test_a_deleted_files_checkpoints_are_forgotten_a_renamed_ones_kept(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", BufferConfig(), ["a"])
    writer = asyncio.create_task(buffer.run())
    stop = asyncio.Event()
    source = FileSource(
        "app",
        make_config(logs),
        buffer.checkpoints_for("app"),
        buffer.emit,
        stop,
        forget=functools.partial(buffer.forget_checkpoints, "app"),
    )
    task = asyncio.create_task(source.run())

    def idents() -> set[str]:
        return {ident_of(key) for key in buffer.checkpoints_for("app")}

    try:
        files = {name: logs / f"{name}.log" for name in ("keep", "gone", "moved")}
        for name, path in files.items():
            append(path, b"".join(b"%s line %d\n" % (name.encode(), i) for i in range(3)))
        ids = {name: identity(path) for name, path in files.items()}
        await eventually(
            lambda: idents() == set(ids.values()), timeout=DEADLINE, what="all three committed"
        )
        append(files["gone"], b"its last line\n")
        files["gone"].unlink()  # still open: read to its end, retired, then forgotten
        files["moved"].rename(logs / "moved.old")  # out of the globs, but not gone
        await eventually(
            lambda: ids["gone"] not in idents(), timeout=DEADLINE, what="gone forgotten"
        )
        assert idents() == {ids["keep"], ids["moved"]}
        gone = [p for p in buffer.tail.after(0, 100, 1 << 20) or [] if b"its last line" in p[2]]
        assert len(gone) == 1  # its last line was committed before its checkpoint went
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE)
        await buffer.close("test")
        await writer
        await asyncio.to_thread(buffer.stop)
