"""Agent -> collector as real processes: every line exactly once, across SIGKILLs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.record import expected_h, genesis
from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.support import eventually_sync

TOTAL = 50_000
DELIVERY_TIMEOUT = 120.0


def lines(start: int, count: int) -> list[str]:
    return [
        f"Nov 21 10:{(i // 60) % 60:02d}:{i % 60:02d} host sshd[{1000 + i % 97}]: "
        f"Accepted publickey for user{i % 13} from 10.0.{i % 255}.{i % 7} port {40000 + i} ssh2 "
        f"line={i:06d}"
        for i in range(start, start + count)
    ]


@pytest.fixture
def agent(tmp_path: Path, collector: CollectorProcess) -> Iterator[AgentProcess]:
    root = tmp_path / "agent"
    root.mkdir()
    process = AgentProcess(
        root,
        collector,
        sources={"app": [str(tmp_path / "logs" / "*.log")]},
        # Small batches so a SIGKILL lands mid-stream with many requests still to go.
        extra="max_batch_records = 500\nlinger = 0.01\n",
    )
    (tmp_path / "logs").mkdir()
    yield process
    process.cleanup()


def assert_exactly_once(records: list[dict[str, Any]], expected: list[str]) -> None:
    data = [r for r in records if "type" not in r]
    counts = Counter(r["msg"] for r in data)
    duplicated = [m for m, n in counts.items() if n > 1]
    missing = set(expected) - set(counts)
    assert not duplicated, f"{len(duplicated)} lines duplicated, e.g. {duplicated[:3]}"
    assert not missing, f"{len(missing)} lines missing, e.g. {sorted(missing)[:3]}"
    assert len(data) == len(expected)


def assert_chain_verifies(records: list[dict[str, Any]]) -> None:
    """The stored stream is one unbroken chain from its genesis, seqs 1..n."""
    assert records, "no records stored"
    by_seq = {r["seq"]: r for r in records}
    assert sorted(by_seq) == list(range(1, len(records) + 1)), "seqs are not 1..n exactly once"


def verify_stream(collector: CollectorProcess) -> None:
    streams = collector.streams()
    assert len(streams) == 1
    stream_id = streams[0]["stream"]
    prev = genesis(stream_id)
    records = collector.records()
    assert_chain_verifies(records)
    for record in records:
        assert bytes.fromhex(record["h"]) == expected_h(prev, record), record["seq"]
        prev = bytes.fromhex(record["h"])
    assert streams[0]["head"] == prev.hex()


@pytest.mark.slow
def test_fifty_thousand_lines_arrive_exactly_once_and_sealed(
    tmp_path: Path, collector: CollectorProcess, agent: AgentProcess
) -> None:
    log = tmp_path / "logs" / "app.log"
    expected = lines(0, TOTAL)
    write_lines(log, expected[: TOTAL // 2])
    agent.start()
    write_lines(log, expected[TOTAL // 2 :])  # the rest arrives while the agent tails
    eventually_sync(
        lambda: collector.held() >= TOTAL, timeout=DELIVERY_TIMEOUT, what="50,000 records"
    )
    assert agent.terminate() == 0, agent.log_tail()
    streams = collector.streams()
    assert streams[0]["state"] == "sealed"
    host = streams[0]["host"]  # identity travels in batch headers (agent/transforms/enrich.py)
    assert host["name"] == "e2e-host"
    assert host["boot"]["id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert host["os"]["family"]
    records = collector.records()
    assert_exactly_once(records, expected)
    assert records[-1]["type"] == "seal"
    verify_stream(collector)


@pytest.mark.slow
def test_sigkill_mid_stream_three_times_still_delivers_each_line_once(
    tmp_path: Path, collector: CollectorProcess, agent: AgentProcess
) -> None:
    log = tmp_path / "logs" / "app.log"
    expected = lines(0, TOTAL)
    phase = TOTAL // 4
    for kill in range(3):
        write_lines(log, expected[kill * phase : (kill + 1) * phase])
        before = collector.held()
        agent.start()
        eventually_sync(
            lambda before=before: collector.held() > before,  # type: ignore[misc]
            timeout=DELIVERY_TIMEOUT,
            what=f"progress before kill {kill + 1}",
        )
        agent.kill()
        held = collector.held()
        # The kill must land mid-stream: lines were written that the collector does not hold.
        assert held < (kill + 1) * phase, f"kill {kill + 1} came after the agent caught up"
    write_lines(log, expected[3 * phase :])
    agent.start()
    eventually_sync(
        lambda: collector.held() >= TOTAL, timeout=DELIVERY_TIMEOUT, what="all records after kills"
    )
    assert agent.terminate() == 0, agent.log_tail()
    assert agent.exits[:3] == [-9, -9, -9]
    assert_exactly_once(collector.records(), expected)
    verify_stream(collector)
    assert collector.streams()[0]["state"] == "sealed"
