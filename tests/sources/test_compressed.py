"""Compressed rotated generations (logrotate's ``compress``): real files, a real file source."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import logging
import lzma
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources import Checkpoint, Item
from agent.sources import compressed as compressed_module
from agent.sources.compressed import decompressed_size, spool, xz_size
from agent.sources.file import FileSource
from agent.sources.forget import gone
from agent.sources.identity import Sibling, make_key
from tests.sources.tailing import Tail, append, identity, key_of, make_config, tailing

CHECKS = [lzma.CHECK_NONE, lzma.CHECK_CRC32, lzma.CHECK_CRC64, lzma.CHECK_SHA256]
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": zstandard.compress,
}


def lines(prefix: str, count: int, start: int = 0) -> bytes:
    return b"".join(f"{prefix}{i}\n".encode() for i in range(start, start + count))


def compress(path: Path, suffix: str) -> Path:
    """As logrotate's compress does: ``path`` is replaced by ``path.suffix``."""
    target = path.with_name(f"{path.name}.{suffix}")
    target.write_bytes(COMPRESSORS[suffix](path.read_bytes()))
    path.unlink()
    return target


def rotated_gz(tmp_path: Path, read: bytes, content: bytes) -> tuple[Path, Checkpoint]:
    """app.log held ``content``, of which ``read`` shipped; then it was rotated and compressed,
    and a new app.log holds "n0". Returns the compressed file and the checkpoint."""
    log = tmp_path / "app.log"
    log.write_bytes(read)
    checkpoint = Checkpoint("app", key_of(log), len(read), str(log))
    log.write_bytes(content)
    log.rename(tmp_path / "app.log.1")
    packed = compress(tmp_path / "app.log.1", "gz")
    log.write_bytes(b"n0\n")
    return packed, checkpoint


async def said_about(
    tmp_path: Path, checkpoint: Checkpoint, path: Path, caplog: pytest.LogCaptureFixture
) -> list[str]:
    """Run the source until "n0" ships (nothing else may); what it logged about ``path``."""
    with caplog.at_level(logging.WARNING):
        async with tailing(make_config(tmp_path), {"k": checkpoint}) as tail:
            await tail.wait_records(1)
    assert tail.msgs == ["n0"]
    return [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]


def last_checkpoints(tail: Tail) -> dict[str, Checkpoint]:
    return {cp.key: cp for cp in tail.checkpoints()}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
async def test_a_file_compressed_while_the_agent_was_down_resumes_at_its_checkpoint(
    tmp_path: Path, suffix: str
) -> None:
    """Read up to l4; while the agent is down, l5..l14 are written, the file is rotated and
    compressed at once (no delaycompress) and a new one started. On restart l5..l14 come from
    the compressed generation, at their own offsets, then the new file: nothing twice, nothing
    lost. A second restart ships nothing again."""
    log = tmp_path / "app.log"
    log.write_bytes(lines("l", 10))
    checkpoint = Checkpoint("app", key_of(log), len(lines("l", 5)), str(log))
    append(log, lines("l", 5, start=10))
    log.rename(tmp_path / "app.log.1")
    packed = compress(tmp_path / "app.log.1", suffix)
    log.write_bytes(lines("n", 2))
    config = make_config(tmp_path)
    async with tailing(config, {"k": checkpoint}, spool_dir=str(tmp_path / "spool")) as tail:
        await tail.wait_records(12)
    assert sorted(tail.msgs) == sorted([f"l{i}" for i in range(5, 15)] + ["n0", "n1"])
    from_packed = [r for r in tail.records if r["log"]["file"]["path"] == str(packed)]
    assert [r["msg"] for r in from_packed] == [f"l{i}" for i in range(5, 15)]
    content = lines("l", 15)
    assert [r["log"]["offset"] for r in from_packed] == [
        content.index(f"l{i}\n".encode()) for i in range(5, 15)
    ]
    key = make_key(identity(packed), content[:1024])
    assert last_checkpoints(tail)[key] == Checkpoint("app", key, len(content), str(packed))
    assert list((tmp_path / "spool").iterdir()) == []  # anonymous files only, closed

    (tmp_path / "spool").rmdir()
    async with tailing(config, last_checkpoints(tail), spool_dir=str(tmp_path / "spool")) as again:
        append(log, b"n2\n")
        await again.wait_records(1)
    assert again.msgs == ["n2"]
    # gzip and xz files say their size: one read to its end is not decompressed again.
    assert (tmp_path / "spool").exists() == (suffix not in ("gz", "xz"))


async def test_a_generation_compressed_before_it_was_ever_read_ships_from_its_start(
    tmp_path: Path,
) -> None:
    """Two rotations while the agent is down: the generation written between them was never
    read, and it is compressed now. Newer than the checkpointed one, it ships whole."""
    log = tmp_path / "app.log"
    log.write_bytes(lines("a", 3))
    checkpoint = Checkpoint("app", key_of(log), len(lines("a", 3)), str(log))  # read to its end
    log.rename(tmp_path / "app.log.1")
    compress(tmp_path / "app.log.1", "gz").rename(tmp_path / "app.log.2.gz")
    log.write_bytes(lines("b", 3))
    log.rename(tmp_path / "app.log.1")
    compress(tmp_path / "app.log.1", "gz")
    log.write_bytes(lines("c", 1))
    async with tailing(make_config(tmp_path), {"k": checkpoint}) as tail:
        await tail.wait_records(4)
    assert sorted(tail.msgs) == ["b0", "b1", "b2", "c0"]


async def test_a_damaged_compressed_generation_ships_what_decompresses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines("l", 2))
    checkpoint = Checkpoint("app", key_of(log), len(lines("l", 1)), str(log))
    append(log, lines("l", 4000, start=2))
    log.rename(tmp_path / "app.log.1")
    packed = compress(tmp_path / "app.log.1", "gz")
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])  # cut off mid-stream
    log.write_bytes(b"after\n")
    with caplog.at_level(logging.WARNING):
        async with tailing(make_config(tmp_path), {"k": checkpoint}) as tail:
            await tail.wait_records(2)
            await tail.wait_for(lambda: "after" in tail.msgs)
    shipped = [r for r in tail.records if r["msg"] != "after"]
    assert len(shipped) > 100, "nothing decompressed"
    assert len(shipped) < 4001
    # In order from l1; the line the damage cut ships as far as it goes, tagged partial.
    whole = [r["msg"] for r in shipped if "partial" not in r.get("tags", [])]
    assert whole == [f"l{i}" for i in range(1, 1 + len(whole))]
    cut = shipped[len(whole) :]
    assert len(cut) <= 1
    assert all(f"l{len(whole) + 1}".startswith(r["msg"]) for r in cut)
    assert any(
        "read only in part" in r.getMessage() and str(packed) in r.getMessage()
        for r in caplog.records
    )


async def test_a_glob_never_follows_a_compressed_file_as_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A glob matching a compressed file (exclude_rotated = false) gets a warning, not its
    bytes as lines."""
    (tmp_path / "old.log.gz").write_bytes(gzip.compress(b"inside\n"))
    hour_ago = time.time() - 3600  # history: not a generation rotated away since the start
    os.utime(tmp_path / "old.log.gz", (hour_ago, hour_ago))
    (tmp_path / "app.log").write_bytes(b"plain\n")
    with caplog.at_level(logging.WARNING):
        async with tailing(make_config(tmp_path, "*", exclude_rotated=False)) as tail:
            await tail.wait_records(1)
    assert tail.msgs == ["plain"]
    warned = [r.getMessage() for r in caplog.records if "not following" in r.getMessage()]
    assert len(warned) == 1  # once, not every round
    assert f"not following {tmp_path / 'old.log.gz'}: compressed files are read" in warned[0]


def test_the_checkpoint_of_a_generation_compressed_since_is_not_forgotten(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines("l", 3))
    held = Checkpoint("app", key_of(log), 6, str(log))
    log.rename(tmp_path / "app.log.1")
    compress(tmp_path / "app.log.1", "xz")
    assert gone([held], 1024) == set()
    (tmp_path / "app.log.1.xz").unlink()
    assert gone([held], 1024) == {held.key}


@pytest.mark.parametrize("name", ["app.log.1.gz", "app.log-20240101.gz"])
async def test_a_generation_rotated_and_compressed_between_two_scans_is_read(
    tmp_path: Path, name: str
) -> None:
    """Written, rotated and compressed before the source ever opened it: the sweep finds it
    under logrotate's names (it looked only for one rotation suffix: found by review)."""
    (tmp_path / "other.log").write_bytes(b"o\n")
    async with tailing(make_config(tmp_path), spool_dir=str(tmp_path / "spool")) as tail:
        await tail.wait_records(1)
        (tmp_path / name).write_bytes(gzip.compress(b"unseen 1\nunseen 2\n"))
        await tail.wait_records(3)
    assert sorted(tail.msgs) == ["o", "unseen 1", "unseen 2"]


@pytest.mark.parametrize("keep_plain", [True, False])
async def test_a_generation_there_both_plain_and_compressed_is_read_once(
    tmp_path: Path, keep_plain: bool
) -> None:
    """The agent starts while gzip is compressing app.log.1 (or after gzip -k): the plain file
    is read, the compressed copy is not read again (found by review: both were)."""
    log = tmp_path / "app.log"
    log.write_bytes(lines("l", 10))
    checkpoint = Checkpoint("app", key_of(log), len(lines("l", 5)), str(log))
    log.rename(tmp_path / "app.log.1")
    packed = tmp_path / "app.log.1.gz"
    whole = gzip.compress((tmp_path / "app.log.1").read_bytes())
    packed.write_bytes(whole if keep_plain else whole[: len(whole) // 2])  # still writing
    log.write_bytes(b"n0\n")
    async with tailing(make_config(tmp_path), {"k": checkpoint}) as tail:
        await tail.wait_records(6)
        await tail.wait_for(lambda: "n0" in tail.msgs)
    assert sorted(tail.msgs) == sorted([f"l{i}" for i in range(5, 10)] + ["n0"])


async def test_a_copytruncate_copy_compressed_at_once_is_read_from_where_we_were(
    tmp_path: Path,
) -> None:
    """copytruncate + compress without delaycompress, noticed late: the rest of the truncated
    generation is read from its compressed copy, and no gap is claimed (found by review: the
    copy's compressed size was compared with offsets in its content)."""
    log = tmp_path / "app.log"
    data = b"".join(b"%07d GET /index.html 200 OK\n" % i for i in range(40000))
    log.write_bytes(data)
    async with tailing(make_config(tmp_path), gate_open=False) as tail:
        await tail.blocked.wait()  # one chunk read, its emit held: we are behind
        (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(data))
        with log.open("r+b") as f:
            f.truncate(0)
        tail.gate.set()
        await tail.wait_for(lambda: len(tail.records) >= 40000, "the whole generation")
    assert not [r for r in tail.records if r.get("type") == "gap"]
    expected = {f"{i:07d} GET /index.html 200 OK" for i in range(40000)}
    # At most the line the first chunk cut ships in two records (as with a plain copy).
    assert len(expected - set(tail.msgs)) <= 1


async def test_a_generation_whose_start_does_not_decompress_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Damage in the first bytes leaves nothing to match or read: said, not silent."""
    packed, checkpoint = rotated_gz(tmp_path, lines("l", 3), lines("l", 3))
    packed.write_bytes(packed.read_bytes()[:12] + b"\xff" * 40)  # header kept, deflate garbage
    said = await said_about(tmp_path, checkpoint, packed, caplog)
    assert said == [f"file source app: rotated generation {packed} does not decompress; not read"]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_a_sibling_rotated_again_between_its_planning_and_its_opening_is_found_again(
    tmp_path: Path, suffix: str
) -> None:
    """Planned under one identity, another file is at its path when it is opened (logrotate ran
    meanwhile): that file is not read from the planned offset, which is not its own; the planned
    one is read where it went, renamed (found by review: first read wrongly, then not at all)."""
    planned = tmp_path / f"app.log.1{suffix}"
    planned.write_bytes(gzip.compress(lines("l", 3)) if suffix else lines("l", 3))
    stale = Sibling(str(planned), identity(planned), planned.stat().st_size, 0)
    moved = tmp_path / f"app.log.2{suffix}"
    planned.rename(moved)
    planned.write_bytes(gzip.compress(lines("n", 3)) if suffix else lines("n", 3))
    if suffix:
        with pytest.raises(FileNotFoundError):
            spool(str(planned), 3, 1024, str(tmp_path / "spool"), stale.ident)
    source = FileSource("app", make_config(tmp_path), {}, _never, asyncio.Event())
    assert source._adopt(stale, 3)
    [tailed] = source._files.values()
    assert (tailed.path, tailed.ident, tailed.read_pos) == (str(moved), stale.ident, 3)
    os.close(tailed.fd)
    source._files.clear()
    moved.unlink()  # gone for good: not read, and said
    assert not source._adopt(stale, 3)
    assert source._files == {}


async def _never(batch: Sequence[Item]) -> None:
    raise AssertionError("nothing is read here")


async def test_the_spool_stops_short_of_filling_its_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A generation that decompresses to more than the spool's filesystem can spare (a bomb, or
    just huge) is read only as far as it fits, in whole lines, with a warning: the buffer's disk
    stays usable. The rest is read at the next start, when there is room."""
    monkeypatch.setattr(compressed_module, "SPOOL_RESERVE", 1.0)  # no room at all
    # Past the fingerprint, which is always spooled.
    packed, checkpoint = rotated_gz(tmp_path, lines("l", 1000), lines("l", 2000))
    said = await said_about(tmp_path, checkpoint, packed, caplog)  # only n0: no cut line
    assert len(said) == 1
    assert "read only in part: the spool's filesystem" in said[0]
    monkeypatch.undo()
    async with tailing(make_config(tmp_path), {"k": checkpoint}) as tail:
        await tail.wait_records(1001)
    assert sorted(tail.msgs) == sorted([f"l{i}" for i in range(1000, 2000)] + ["n0"])


async def test_a_compressed_generation_is_not_hidden_by_a_different_plain_one(
    tmp_path: Path,
) -> None:
    """app.log.1.gz, the checkpointed generation, and app.log.1, a newer one never read (a
    config switched to delaycompress): both are read. The plain one hides the compressed one
    only when it holds the same content (found by review: by name alone, both were lost)."""
    log = tmp_path / "app.log"
    log.write_bytes(lines("l", 5))
    checkpoint = Checkpoint("app", key_of(log), len(lines("l", 5)), str(log))
    append(log, lines("l", 10, start=5))
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(log.read_bytes()))
    log.unlink()
    log.write_bytes(lines("y", 3))  # the next generation
    log.rename(tmp_path / "app.log.1")
    now = time.time()  # both rotated while the agent was down, the .gz first
    os.utime(tmp_path / "app.log.1.gz", (now - 7200, now - 7200))
    os.utime(tmp_path / "app.log.1", (now - 3600, now - 3600))
    log.write_bytes(b"n0\n")
    async with tailing(make_config(tmp_path), {"k": checkpoint}) as tail:
        await tail.wait_records(14)
    assert sorted(tail.msgs) == sorted([f"l{i}" for i in range(5, 15)] + ["y0", "y1", "y2", "n0"])


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200_000), preset=st.integers(0, 3), check=st.sampled_from(CHECKS))
def test_an_xz_files_index_gives_its_size(data: bytes, preset: int, check: int) -> None:
    """Read from the index at its end, the size equals what decompressing counts; a file of two
    streams, or damaged at its end, gives None (the restart then decompresses to find out)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log.1.xz"
        packed = lzma.compress(data, preset=preset, check=check)
        path.write_bytes(packed)
        assert xz_size(str(path)) == decompressed_size(str(path)) == len(data)
        path.write_bytes(packed + lzma.compress(b"more\n"))
        assert xz_size(str(path)) is None
        path.write_bytes(packed[:-13] + bytes([packed[-13] ^ 1]) + packed[-12:])  # index CRC
        assert xz_size(str(path)) is None
