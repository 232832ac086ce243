"""Declared gaps: a batch may start after seqs its agent no longer has, if it says so."""

from __future__ import annotations

from pathlib import Path

import orjson

from agent.collector.verify import verify_stream
from tests.collector.chains import Chain, make_chain
from tests.collector.harness import Running, assert_still_serving, list_streams, post, stored


def declared(chain: Chain, first: int, last: int, gap_from: int, gap_to: int) -> bytes:
    """A batch first..last whose header declares gap_from..gap_to lost before it."""
    body = chain.batch(first, last)
    header, rest = body.split(b"\n", 1)
    value = orjson.loads(header)
    value["gap"] = {"from_seq": gap_from, "to_seq": gap_to}
    return orjson.dumps(value) + b"\n" + rest


def stream_dir(tmp_path: Path, chain: Chain) -> Path:
    return tmp_path / "collector" / "streams" / chain.stream


async def test_declared_gap_is_accepted_but_unaccounted_seqs_are_a_missing_break(
    collector: Running, tmp_path: Path
) -> None:
    # seq 20 is a gap record, but it states no seq range: nothing accounts for 6..12.
    chain = make_chain(20, gap_at=20)
    await post(collector, chain.batch(1, 5))

    reply = await post(collector, declared(chain, 13, 20, 6, 12))

    assert reply == (200, {"acked": 20, "head": chain.head(20)})
    assert await stored(collector, chain) == chain.lines[:5] + chain.lines[12:]
    findings = verify_stream(stream_dir(tmp_path, chain)).findings
    assert [(f.kind, f.seq, f.last_seq) for f in findings if f.kind == "missing"] == [
        ("missing", 6, 12)
    ]


async def test_declared_gap_with_an_accounting_gap_record_is_a_note_not_a_break(
    collector: Running, tmp_path: Path
) -> None:
    # The agent dropped 4..8 unshipped; its gap record (seq 11) says so; seq 12 seals.
    chain = make_chain(12, seal=True, gap_at=11, gap_range=(4, 8))
    await post(collector, chain.batch(1, 3))

    reply = await post(collector, declared(chain, 9, 12, 4, 8))

    assert reply == (200, {"acked": 12, "head": chain.head(12)})
    report = verify_stream(stream_dir(tmp_path, chain))
    kinds = [(f.kind, f.seq, f.last_seq) for f in report.findings]
    assert ("skip", 4, 8) in kinds
    assert report.ok(allow_unsealed=False), kinds


async def test_declared_gap_that_starts_after_what_is_held_gets_409(collector: Running) -> None:
    chain = make_chain(20)
    await post(collector, chain.batch(1, 5))

    reply = await post(collector, declared(chain, 13, 20, 8, 12))

    assert reply == (409, {"expected": 6})
    await assert_still_serving(collector)


async def test_declared_gap_must_end_right_before_the_first_record(collector: Running) -> None:
    chain = make_chain(20)
    await post(collector, chain.batch(1, 5))

    status, body = await post(collector, declared(chain, 13, 20, 6, 10))

    assert status == 400
    assert "gap must be" in body["error"]
    assert await stored(collector, chain) == chain.lines[:5]


async def test_declared_gap_does_not_excuse_a_forged_record(collector: Running) -> None:
    chain = make_chain(20)
    await post(collector, chain.batch(1, 5))
    body = declared(chain, 13, 20, 6, 12)
    forged = body.replace(b"Accepted publickey for alice", b"Accepted publickey for mallory", 1)

    status, _ = await post(collector, forged)

    assert status == 400
    assert await stored(collector, chain) == chain.lines[:5]


async def test_a_declared_gap_counts_as_a_skip_and_its_gap_record_as_one_gap(
    collector: Running,
) -> None:
    # One loss: the header declares 4..8, the gap record at seq 11 accounts for it.
    chain = make_chain(12, gap_at=11, gap_range=(4, 8))
    await post(collector, chain.batch(1, 3))
    await post(collector, declared(chain, 9, 12, 4, 8))

    (view,) = (await list_streams(collector))["streams"]

    assert (view["state"], view["gaps"], view["skips"]) == ("gap", 1, 1)


async def test_a_declared_gap_keeps_the_stream_in_gap_state_after_later_batches(
    collector: Running, tmp_path: Path
) -> None:
    # Declared, but no gap record says so: still a loss, whatever batch comes next.
    chain = make_chain(20)
    await post(collector, chain.batch(1, 5))
    await post(collector, declared(chain, 13, 15, 6, 12))
    await post(collector, chain.batch(16, 20))

    (view,) = (await list_streams(collector))["streams"]

    assert (view["state"], view["gaps"], view["skips"]) == ("gap", 0, 1)
