"""``TailedFile``: a truncation in place met between the look at a file's size and its read."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from agent.sources import materialize
from agent.sources.tailed import TailedFile
from tests.sources.tailing import append, numbered


class Racing(TailedFile):
    """A ``TailedFile`` that runs ``race`` at its second look at the file's first bytes of a
    read: the one just after the read of its bytes (the in-call window a copytruncate can
    land in, held open)."""

    race: Callable[[], None] | None = None
    looks = 0

    def _head_intact(self, size: int) -> bool:
        self.looks += 1
        if self.looks == 2 and self.race is not None:
            race, self.race = self.race, None
            race()
        return super()._head_intact(size)


def test_a_truncation_just_after_a_read_accounts_the_size_seen_before_it(tmp_path: Path) -> None:
    # The size taken at a drain's start is this generation's once its first bytes are found
    # still there after it. Truncated (no copy) between the read of the bytes and the look that
    # follows, the 70 bytes at 30..100 are lost: the gap must cover them, not stop at 30.
    log = tmp_path / "app.log"
    log.write_bytes(numbered(0, 3))
    st = log.stat()
    fd = os.open(log, os.O_RDONLY)
    try:
        tailed = Racing("app", 1024, 1024, str(log), f"{st.st_dev}:{st.st_ino}", fd, 0, 0.0)
        tailed.set_head(log.read_bytes())
        batch, _, _ = tailed.read(1024, None)
        assert len(batch) == 3
        append(log, numbered(3, 7))  # 100 bytes now

        def truncate() -> None:
            os.truncate(log, 0)
            append(log, numbered(0, 20, prefix="next"))

        tailed.race, tailed.looks = truncate, 0
        batch, _, _ = tailed.read(20, None)
    finally:
        os.close(fd)
    assert [p.record["msg"] for p in materialize(batch)] == ["next 0000", "next 0001"]
    assert tailed.truncation is not None
    assert (tailed.truncation.read_to, tailed.truncation.seen_size) == (30, 100)
