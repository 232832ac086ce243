"""``tailseal verify``: stored streams tampered with in each way; each break is named by seq."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collector.report import run_verify
from agent.collector.storage import FileStreamStore
from agent.collector.verify import ChainWalk, Finding, StreamReport, verify_path, verify_stream
from tests.collector.chains import Chain, make_chain

HOST = {"name": "web-1"}


async def stored_stream(root: Path, chain: Chain, *, batches: int = 2) -> Path:
    """Store ``chain`` through the collector's own store, in a few appends; returns its dir."""
    store = FileStreamStore(root)
    count = len(chain.lines)
    cuts = [count * i // batches for i in range(batches + 1)]
    for first, last in itertools.pairwise(cuts):
        sealed = last == count and b'"type":"seal"' in chain.lines[-1]
        await store.append(
            chain.stream,
            HOST,
            chain.lines[first:last],
            last_seq=last,
            head=chain.head(last),
            state="sealed" if sealed else "live",
        )
    return root / "streams" / chain.stream


def rewrite(directory: Path, lines: list[bytes]) -> None:
    (directory / "records.ndjson").write_bytes(b"".join(line + b"\n" for line in lines))


def kinds(report: StreamReport) -> list[tuple[str, int, int]]:
    return [(f.kind, f.seq, f.last_seq) for f in report.breaks(allow_unsealed=False)]


async def test_untouched_sealed_stream_verifies(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)

    report = verify_stream(directory)

    assert report.findings == []
    assert (report.records, report.last_seq, report.sealed) == (10, 10, True)
    assert report.head == chain.head(10)
    assert report.host == HOST


async def test_edited_byte_in_a_message_is_a_modified_record_at_its_seq(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)
    lines = list(chain.lines)
    lines[4] = lines[4].replace(b"alice", b"alicf")

    rewrite(directory, lines)

    assert kinds(verify_stream(directory)) == [("modified", 5, 5)]


async def test_deleted_record_is_a_missing_seq(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)

    rewrite(directory, chain.lines[:4] + chain.lines[5:])

    found = kinds(verify_stream(directory))
    assert ("missing", 5, 5) in found
    assert all(kind in {"missing", "head"} for kind, _, _ in found)  # head.bytes no longer fits


async def test_deleted_range_is_one_missing_range(tmp_path: Path) -> None:
    chain = make_chain(20, seal=True)
    directory = await stored_stream(tmp_path, chain)

    rewrite(directory, chain.lines[:6] + chain.lines[12:])

    assert ("missing", 7, 12) in kinds(verify_stream(directory))


async def test_swapped_records_are_reported_reordered(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)
    lines = list(chain.lines)
    lines[3], lines[4] = lines[4], lines[3]

    rewrite(directory, lines)

    assert kinds(verify_stream(directory)) == [("reordered", 4, 4)]


async def test_record_moved_far_is_reordered_and_still_chain_checked(tmp_path: Path) -> None:
    chain = make_chain(12, seal=True)
    directory = await stored_stream(tmp_path, chain, batches=1)
    lines = list(chain.lines)
    moved = lines.pop(2)  # seq 3 moved after seq 8
    lines.insert(7, moved.replace(b"alice", b"mallory"))

    rewrite(directory, lines)

    found = kinds(verify_stream(directory))
    assert ("reordered", 3, 3) in found
    assert ("modified", 3, 3) in found
    assert not any(kind == "missing" for kind, _, _ in found)


async def test_truncated_tail_is_reported_against_the_head(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)

    rewrite(directory, chain.lines[:7])

    assert kinds(verify_stream(directory)) == [("truncated", 8, 10), ("unsealed", 7, 7)]


async def test_dropped_seal_is_reported_even_when_the_head_is_forged_too(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)
    rewrite(directory, chain.lines[:9])
    head = orjson.loads((directory / "head.json").read_bytes())
    head.update(last_seq=9, head=chain.head(9), bytes=(directory / "records.ndjson").stat().st_size)
    (directory / "head.json").write_bytes(orjson.dumps(head))

    report = verify_stream(directory)

    assert kinds(report) == [("unsealed", 9, 9)]
    assert not report.sealed


async def test_torn_last_line_is_truncated(tmp_path: Path) -> None:
    chain = make_chain(5, seal=True)
    directory = await stored_stream(tmp_path, chain)
    data = (directory / "records.ndjson").read_bytes()

    (directory / "records.ndjson").write_bytes(data[:-20])

    found = kinds(verify_stream(directory))
    assert ("truncated", 5, 5) in found
    assert ("unsealed", 4, 4) in found


async def test_line_that_is_not_a_record_is_modified_and_the_rest_verifies(
    tmp_path: Path,
) -> None:
    chain = make_chain(8, seal=True)
    directory = await stored_stream(tmp_path, chain)
    lines = list(chain.lines)
    lines[2] = lines[2][:30] + b"\xff" + lines[2][31:]

    rewrite(directory, lines)

    assert kinds(verify_stream(directory)) == [("modified", 3, 3)]


async def test_record_nested_past_the_canonical_encoding_is_modified(tmp_path: Path) -> None:
    # orjson reads it but cannot encode it canonically: no h can verify, and verify goes on.
    chain = make_chain(8, seal=True)
    directory = await stored_stream(tmp_path, chain)
    lines = list(chain.lines)
    lines[2] = lines[2][:-1] + b',"zz":' + b"[" * 300 + b"]" * 300 + b"}"

    rewrite(directory, lines)

    # The file grew, so head.json's byte count no longer matches either.
    assert kinds(verify_stream(directory)) == [("modified", 3, 3), ("head", 8, 8)]


async def test_duplicated_record_is_reported(tmp_path: Path) -> None:
    chain = make_chain(6, seal=True)
    directory = await stored_stream(tmp_path, chain)

    rewrite(directory, [*chain.lines[:3], chain.lines[1], *chain.lines[3:]])

    assert ("duplicate", 2, 2) in kinds(verify_stream(directory))


async def test_gap_record_is_listed_but_is_not_a_break(tmp_path: Path) -> None:
    chain = make_chain(6, seal=True, gap_at=3)
    directory = await stored_stream(tmp_path, chain)

    report = verify_stream(directory)

    assert report.ok(allow_unsealed=False)
    assert [(f.kind, f.seq) for f in report.findings] == [("gap", 3)]


async def test_unsealed_stream_is_a_break_unless_allowed(tmp_path: Path) -> None:
    directory = await stored_stream(tmp_path, make_chain(6))

    report = verify_stream(directory)

    assert report.findings == [Finding("unsealed", 6, 6, "the last record is not a seal")]
    assert not report.ok(allow_unsealed=False)
    assert report.ok(allow_unsealed=True)


async def test_missing_head_file_is_a_break(tmp_path: Path) -> None:
    directory = await stored_stream(tmp_path, make_chain(4, seal=True))

    (directory / "head.json").unlink()

    assert kinds(verify_stream(directory)) == [("head", 0, 0)]


async def test_records_past_the_head_are_a_note(tmp_path: Path) -> None:
    chain = make_chain(6, seal=True)
    directory = await stored_stream(tmp_path, chain)
    head = orjson.loads((directory / "head.json").read_bytes())
    head.update(last_seq=3, head=chain.head(3), bytes=sum(len(x) + 1 for x in chain.lines[:3]))
    (directory / "head.json").write_bytes(orjson.dumps(head))

    report = verify_stream(directory)

    assert report.ok(allow_unsealed=False)
    assert [(f.kind, f.seq, f.last_seq) for f in report.findings] == [("beyond_head", 4, 6)]


async def test_storage_dir_with_several_streams_reports_each(tmp_path: Path) -> None:
    good, bad = make_chain(5, seal=True), make_chain(5, seal=True)
    await stored_stream(tmp_path, good)
    bad_dir = await stored_stream(tmp_path, bad)
    rewrite(bad_dir, [bad.lines[0].replace(b"alice", b"eve__"), *bad.lines[1:]])

    reports = {r.stream: r for r in verify_path(tmp_path)}

    assert reports[good.stream].ok(allow_unsealed=False)
    assert kinds(reports[bad.stream]) == [("modified", 1, 1)]


async def test_human_report_names_stream_kind_and_seq(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)
    rewrite(directory, chain.lines[:4] + chain.lines[5:])
    out = io.StringIO()

    code = run_verify(tmp_path, as_json=False, allow_unsealed=False, out=out)

    assert code == 1
    text = out.getvalue()
    assert f"BROKEN stream {chain.stream}" in text
    assert "break missing seq 5: " in text
    assert "1 streams: 0 verified, 1 broken" in text


def test_path_that_is_not_storage_exits_2(tmp_path: Path) -> None:
    assert run_verify(tmp_path / "nope", as_json=True, allow_unsealed=False) == 2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("seal", "flags", "code"), [(True, [], 0), (False, [], 1), (False, ["--allow-unsealed"], 0)]
)
async def test_cli_exit_code_and_json_report(
    tmp_path: Path, seal: bool, flags: list[str], code: int
) -> None:
    chain = make_chain(5, seal=seal)
    await stored_stream(tmp_path, chain)

    result = run_cli(str(tmp_path), "--json", *flags)

    assert result.returncode == code, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is (code == 0)
    (stream,) = document["streams"]
    assert (stream["stream"], stream["last_seq"], stream["sealed"]) == (chain.stream, 5, seal)


async def test_cli_names_a_swapped_pair_in_a_single_stream_dir(tmp_path: Path) -> None:
    chain = make_chain(10, seal=True)
    directory = await stored_stream(tmp_path, chain)
    lines = list(chain.lines)
    lines[6], lines[7] = lines[7], lines[6]
    rewrite(directory, lines)

    result = run_cli(str(directory))

    assert result.returncode == 1
    assert "break reordered seq 7: stored after seq 8" in result.stdout


SAMPLE = make_chain(12, seal=True)


@settings(max_examples=300, deadline=None)
@given(order=st.lists(st.integers(min_value=0, max_value=11), max_size=16))
def test_any_deletion_duplication_or_reordering_is_detected(order: list[int]) -> None:
    walk = ChainWalk(SAMPLE.stream)
    offset = 0
    for i in order:
        offset += len(SAMPLE.lines[i]) + 1
        walk.feed(SAMPLE.lines[i], offset)
    findings = walk.finish()

    breaks = [f for f in findings if f.is_break(allow_unsealed=False)]
    intact = order == list(range(12))
    assert (not breaks and walk.last_type == "seal") is intact
    absent = set(range(1, 13)) - {i + 1 for i in order}
    named = {s for f in findings if f.kind == "missing" for s in range(f.seq, f.last_seq + 1)}
    assert named == {s for s in absent if s < max(order, default=-1) + 1}
