"""FileStreamStore: layout, durability across restarts, and crash recovery past the head."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.collector.index import ENTRY
from agent.collector.storage import FileStreamStore, Skip, StreamHead
from agent.errors import StateError
from tests.collector.chains import Chain, make_chain, tampered

HOST = {"name": "web-1", "image": "ami-123"}


async def store_records(store: FileStreamStore, chain: Chain, first: int, last: int) -> StreamHead:
    return await store.append(
        chain.stream,
        HOST,
        chain.lines[first - 1 : last],
        last_seq=last,
        head=chain.head(last),
        state="live",
    )


def records_file(root: Path, chain: Chain) -> Path:
    return root / "streams" / chain.stream / "records.ndjson"


def head_file(root: Path, chain: Chain) -> dict[str, object]:
    data: dict[str, object] = orjson.loads(
        (root / "streams" / chain.stream / "head.json").read_bytes()
    )
    return data


def append_raw(root: Path, chain: Chain, data: bytes) -> None:
    """What a crash between the data fsync and the head update leaves behind."""
    with records_file(root, chain).open("ab") as file:
        file.write(data)


async def test_append_stores_lines_as_received_and_writes_the_head(tmp_path: Path) -> None:
    chain = make_chain(3)
    store = FileStreamStore(tmp_path)

    head = await store_records(store, chain, 1, 3)

    assert records_file(tmp_path, chain).read_bytes() == b"".join(
        line + b"\n" for line in chain.lines
    )
    assert head_file(tmp_path, chain) == {
        "stream": chain.stream,
        "host": HOST,
        "last_seq": 3,
        "head": chain.head(3),
        "bytes": records_file(tmp_path, chain).stat().st_size,
        "state": "live",
        "updated": head.updated,
        "gaps": 0,
        "skips": 0,
        "client": None,
    }
    assert await store.read_records(chain.stream) == chain.lines


async def test_unknown_stream_has_no_head_and_no_records(tmp_path: Path) -> None:
    store = FileStreamStore(tmp_path)

    assert await store.head("nothing-here") is None
    assert await store.read_records("nothing-here") == []
    assert await store.list_streams() == []


async def test_restart_keeps_last_seq_and_head(tmp_path: Path) -> None:
    chain = make_chain(7)
    first = FileStreamStore(tmp_path)
    await store_records(first, chain, 1, 4)
    await store_records(first, chain, 5, 7)
    await first.close()

    reopened = FileStreamStore(tmp_path)
    head = await reopened.head(chain.stream)

    assert head is not None
    assert (head.last_seq, head.head, head.host) == (7, chain.head(7), HOST)
    assert await reopened.read_records(chain.stream) == chain.lines


async def test_verified_lines_past_the_head_are_adopted_on_open(tmp_path: Path) -> None:
    chain = make_chain(8)
    await store_records(FileStreamStore(tmp_path), chain, 1, 5)
    append_raw(tmp_path, chain, b"".join(line + b"\n" for line in chain.lines[5:8]))

    head = await FileStreamStore(tmp_path).head(chain.stream)

    assert head is not None
    assert (head.last_seq, head.head, head.host) == (8, chain.head(8), HOST)
    on_disk = head_file(tmp_path, chain)
    assert on_disk["last_seq"] == 8
    assert on_disk["bytes"] == records_file(tmp_path, chain).stat().st_size


async def test_torn_last_line_is_cut_and_quarantined_on_open(tmp_path: Path) -> None:
    chain = make_chain(7)
    await store_records(FileStreamStore(tmp_path), chain, 1, 5)
    torn = chain.line(7)[:40]
    append_raw(tmp_path, chain, chain.line(6) + b"\n" + torn)

    store = FileStreamStore(tmp_path)
    head = await store.head(chain.stream)

    assert head is not None
    assert (head.last_seq, head.head) == (6, chain.head(6))
    assert await store.read_records(chain.stream) == chain.lines[:6]
    assert records_file(tmp_path, chain).stat().st_size == head.size
    quarantined = list((tmp_path / "streams" / chain.stream).glob("quarantine-*.bin"))
    assert [path.read_bytes() for path in quarantined] == [torn]


@pytest.mark.parametrize("kind", ["forged", "deep"])
async def test_unverifiable_line_past_the_head_is_cut_with_everything_after_it(
    tmp_path: Path, kind: str
) -> None:
    chain = make_chain(8)
    await store_records(FileStreamStore(tmp_path), chain, 1, 5)
    forged = tampered(chain.line(7), msg="nothing to see here")
    # Or nested past what orjson encodes: it reads, but has no canonical form to hash.
    deep = chain.line(7)[:-1] + b',"zz":' + b"[" * 300 + b"]" * 300 + b"}"
    bad = forged if kind == "forged" else deep
    append_raw(tmp_path, chain, b"\n".join([chain.line(6), bad, chain.line(8)]) + b"\n")

    store = FileStreamStore(tmp_path)
    head = await store.head(chain.stream)

    assert head is not None
    assert head.last_seq == 6
    assert await store.read_records(chain.stream) == chain.lines[:6]


async def test_records_without_a_head_file_are_recovered_from_genesis(tmp_path: Path) -> None:
    chain = make_chain(3)
    await store_records(FileStreamStore(tmp_path), chain, 1, 3)
    (tmp_path / "streams" / chain.stream / "head.json").unlink()

    head = await FileStreamStore(tmp_path).head(chain.stream)

    assert head is not None
    assert (head.last_seq, head.head, head.host) == (3, chain.head(3), {})


async def test_seal_record_adopted_on_open_marks_the_stream_sealed(tmp_path: Path) -> None:
    chain = make_chain(4, seal=True)
    await store_records(FileStreamStore(tmp_path), chain, 1, 3)
    append_raw(tmp_path, chain, chain.line(4) + b"\n")

    head = await FileStreamStore(tmp_path).head(chain.stream)

    assert head is not None
    assert (head.last_seq, head.state) == (4, "sealed")


async def test_stale_head_tmp_file_is_ignored(tmp_path: Path) -> None:
    chain = make_chain(2)
    await store_records(FileStreamStore(tmp_path), chain, 1, 2)
    (tmp_path / "streams" / chain.stream / "head.json.tmp").write_bytes(b'{"stream": "x", "la')

    store = FileStreamStore(tmp_path)
    head = await store.head(chain.stream)

    assert head is not None
    assert head.last_seq == 2
    chain_more = make_chain(3, stream=chain.stream)
    assert (await store_records(store, chain_more, 3, 3)).last_seq == 3


async def test_data_file_shorter_than_its_head_is_a_state_error(tmp_path: Path) -> None:
    chain = make_chain(3)
    await store_records(FileStreamStore(tmp_path), chain, 1, 3)
    path = records_file(tmp_path, chain)
    path.write_bytes(path.read_bytes()[:-10])

    with pytest.raises(StateError, match="covers"):
        await FileStreamStore(tmp_path).head(chain.stream)


async def test_corrupt_head_file_is_a_state_error(tmp_path: Path) -> None:
    chain = make_chain(1)
    await store_records(FileStreamStore(tmp_path), chain, 1, 1)
    (tmp_path / "streams" / chain.stream / "head.json").write_bytes(b'{"last_seq": "many"}')

    with pytest.raises(StateError, match="unreadable head"):
        await FileStreamStore(tmp_path).head(chain.stream)


async def test_head_file_whose_head_ends_in_a_newline_is_a_state_error(tmp_path: Path) -> None:
    chain = make_chain(1)
    await store_records(FileStreamStore(tmp_path), chain, 1, 1)
    path = tmp_path / "streams" / chain.stream / "head.json"
    path.write_bytes(
        path.read_bytes().replace(chain.head(1).encode(), chain.head(1).encode() + b"\\n")
    )

    with pytest.raises(StateError, match="unreadable head"):
        await FileStreamStore(tmp_path).head(chain.stream)


async def test_listing_skips_a_damaged_stream_and_shows_the_rest(tmp_path: Path) -> None:
    damaged, intact = make_chain(1), make_chain(2)
    first = FileStreamStore(tmp_path)
    await store_records(first, damaged, 1, 1)
    await store_records(first, intact, 1, 2)
    (tmp_path / "streams" / damaged.stream / "head.json").write_bytes(b"{")

    listed = await FileStreamStore(tmp_path).list_streams()

    assert [head.stream for head in listed] == [intact.stream]


@pytest.mark.parametrize("stream_id", ["", "../etc", "a/b", "a.b", "x" * 65, "caf\u00e9"])
async def test_invalid_stream_id_is_refused(tmp_path: Path, stream_id: str) -> None:
    store = FileStreamStore(tmp_path)

    with pytest.raises(ValueError, match="invalid stream id"):
        await store.head(stream_id)


async def test_append_that_does_not_add_up_is_refused(tmp_path: Path) -> None:
    chain = make_chain(3)
    store = FileStreamStore(tmp_path)

    with pytest.raises(ValueError, match="do not end at"):
        await store.append(
            chain.stream, HOST, chain.lines[:2], last_seq=3, head=chain.head(3), state="live"
        )
    assert await store.head(chain.stream) is None


async def test_list_streams_returns_every_stream_in_id_order(tmp_path: Path) -> None:
    store = FileStreamStore(tmp_path)
    chains = [make_chain(n) for n in (1, 2, 3)]
    for chain in chains:
        await store_records(store, chain, 1, len(chain.lines))
    (tmp_path / "streams" / "not a stream").mkdir()

    listed = await FileStreamStore(tmp_path).list_streams()

    expected = sorted((chain.stream, len(chain.lines)) for chain in chains)
    assert [(head.stream, head.last_seq) for head in listed] == expected


CRASH_CHAIN = make_chain(8)
CRASH_TAIL = b"".join(line + b"\n" for line in CRASH_CHAIN.lines[4:8])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(CRASH_TAIL)))
def test_crash_anywhere_in_an_append_recovers_every_complete_record(cut: int) -> None:
    """Whatever prefix of an append reached the disk, recovery keeps exactly its whole lines."""
    whole_lines = CRASH_TAIL[:cut].count(b"\n")

    async def scenario(root: Path) -> None:
        await store_records(FileStreamStore(root), CRASH_CHAIN, 1, 4)
        append_raw(root, CRASH_CHAIN, CRASH_TAIL[:cut])
        store = FileStreamStore(root)
        head = await store.head(CRASH_CHAIN.stream)
        assert head is not None
        assert head.last_seq == 4 + whole_lines
        assert head.head == CRASH_CHAIN.head(4 + whole_lines)
        assert await store.read_records(CRASH_CHAIN.stream) == CRASH_CHAIN.lines[: head.last_seq]
        assert records_file(root, CRASH_CHAIN).stat().st_size == head.size

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(scenario(Path(directory)))


# --- stream state and the seq index ---------------------------------------------------------------


async def test_gap_record_makes_the_stream_state_gap_until_sealed(tmp_path: Path) -> None:
    chain = make_chain(6, seal=True, gap_at=2)
    store = FileStreamStore(tmp_path)
    await store.append(
        chain.stream, HOST, chain.lines[:3], last_seq=3, head=chain.head(3), state="gap", gaps=1
    )
    head = await store.append(
        chain.stream, HOST, chain.lines[3:], last_seq=6, head=chain.head(6), state="sealed"
    )

    assert (head.state, head.gaps) == ("sealed", 1)
    assert head_file(tmp_path, chain)["gaps"] == 1


async def test_adopted_gap_records_are_counted_on_recovery(tmp_path: Path) -> None:
    chain = make_chain(6, gap_at=5)
    await store_records(FileStreamStore(tmp_path), chain, 1, 3)
    append_raw(tmp_path, chain, b"".join(line + b"\n" for line in chain.lines[3:]))

    head = await FileStreamStore(tmp_path).head(chain.stream)

    assert head is not None
    assert (head.last_seq, head.state, head.gaps) == (6, "gap", 1)


def index_file(root: Path, chain: Chain) -> Path:
    return root / "streams" / chain.stream / "index.bin"


async def stored_in_batches(root: Path, chain: Chain, every: int) -> FileStreamStore:
    store = FileStreamStore(root, index_every=every)
    for first in range(1, len(chain.lines) + 1, 7):
        await store_records(store, chain, first, min(first + 6, len(chain.lines)))
    return store


@pytest.mark.parametrize(("first", "last"), [(1, 40), (1, 1), (5, 5), (9, 17), (33, 40), (38, 99)])
async def test_a_seq_range_is_read_through_the_index(tmp_path: Path, first: int, last: int) -> None:
    chain = make_chain(40)
    store = await stored_in_batches(tmp_path, chain, every=4)

    assert await store.read_records(chain.stream, first, last) == chain.lines[first - 1 : last]
    reopened = FileStreamStore(tmp_path, index_every=4)
    assert await reopened.read_records(chain.stream, first, last) == chain.lines[first - 1 : last]


async def test_index_holds_one_entry_every_n_records_at_line_starts(tmp_path: Path) -> None:
    chain = make_chain(40)
    await stored_in_batches(tmp_path, chain, every=8)

    raw = index_file(tmp_path, chain).read_bytes()
    entries = [ENTRY.unpack_from(raw, i) for i in range(0, len(raw), 16)]

    starts = [0]
    for line in chain.lines:
        starts.append(starts[-1] + len(line) + 1)
    assert entries == [(seq, starts[seq - 1]) for seq in (1, 9, 17, 25, 33)]


@pytest.mark.parametrize(
    "damage",
    ["deleted", "torn", "garbage", "zeroed", "past the head"],
)
async def test_damaged_index_is_rebuilt_on_open(tmp_path: Path, damage: str) -> None:
    chain = make_chain(40)
    await stored_in_batches(tmp_path, chain, every=4)
    path = index_file(tmp_path, chain)
    good = path.read_bytes()
    if damage == "deleted":
        path.unlink()
    elif damage == "torn":
        path.write_bytes(good[:-5])
    elif damage == "garbage":
        path.write_bytes(good[:32] + ENTRY.pack(9, 12345) + good[48:])
    elif damage == "zeroed":
        path.write_bytes(good[:16] + bytes(len(good) - 16))
    else:
        path.write_bytes(good + ENTRY.pack(41, 10**9))

    store = FileStreamStore(tmp_path, index_every=4)

    assert await store.read_records(chain.stream, 21, 30) == chain.lines[20:30]
    assert path.read_bytes() == good


async def test_plausible_but_wrong_index_entry_never_serves_wrong_records(tmp_path: Path) -> None:
    chain = make_chain(40)
    store = await stored_in_batches(tmp_path, chain, every=4)
    path = index_file(tmp_path, chain)
    good = path.read_bytes()
    seq_9 = ENTRY.unpack_from(good, 32)[1]
    path.write_bytes(good[:32] + ENTRY.pack(9, seq_9 + len(chain.lines[8]) + 1) + good[48:])

    reopened = FileStreamStore(tmp_path, index_every=4)

    assert await reopened.read_records(chain.stream, 9, 12) == chain.lines[8:12]
    assert await store.read_records(chain.stream, 9, 12) == chain.lines[8:12]


async def test_adopted_lines_are_fsynced_before_the_head_covers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lines past the head may be what a process that died between write and fsync left:
    # in the page cache only. Once the head covers them a resend is acked as a repeat, so the
    # data file must be durable first.
    chain = make_chain(6)
    await store_records(FileStreamStore(tmp_path), chain, 1, 3)
    append_raw(tmp_path, chain, b"".join(line + b"\n" for line in chain.lines[3:6]))
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(fd: int) -> None:
        synced.append(Path(f"/proc/self/fd/{fd}").readlink().name)
        real_fsync(fd)

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        synced.append(f"rename {self.name}")
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)

    head = await FileStreamStore(tmp_path).head(chain.stream)

    assert head is not None
    assert head.last_seq == 6
    assert "records.ndjson" in synced
    assert synced.index("records.ndjson") < synced.index("rename head.json.tmp")


@pytest.mark.parametrize(
    ("first", "last"), [(1, 3), (11, 12), (14, 15), (17, 20), (2, 18), (4, 10)]
)
async def test_a_seq_range_after_a_declared_gap_is_read_by_seq(
    tmp_path: Path, first: int, last: int
) -> None:
    # Seqs 4..10 were declared lost: the stored lines are 1..3 then 11..20. The index counts
    # lines, so after the gap its entries and a positional slice were off by seven.
    chain = make_chain(20)
    store = FileStreamStore(tmp_path, index_every=4)
    await store_records(store, chain, 1, 3)
    await store.append(
        chain.stream,
        HOST,
        chain.lines[10:20],
        last_seq=20,
        head=chain.head(20),
        state="live",
        skip=Skip(4, 10, chain.head(10)),
    )
    wanted = [line for line in chain.lines if first <= orjson.loads(line)["seq"] <= last]
    wanted = [line for line in wanted if not 4 <= orjson.loads(line)["seq"] <= 10]

    assert await store.read_records(chain.stream, first, last) == wanted
    assert (
        await FileStreamStore(tmp_path, index_every=4).read_records(chain.stream, first, last)
        == wanted
    )
