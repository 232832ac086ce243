"""Agent -> collector as real processes: a clean stop seals the stream and ``tailseal verify``
accepts it; a SIGKILL leaves it unsealed, then ``silent``, and ``verify`` says so."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess, run_verify, write_lines
from tests.support import TlsFiles, eventually_sync

LINES = 2_000
TIMEOUT = 60.0
SILENT_AFTER = 2.0


@pytest.fixture
def collector(tmp_path: Path, tls_files: TlsFiles) -> Iterator[CollectorProcess]:
    root = tmp_path / "collector"
    root.mkdir()
    process = CollectorProcess(root, tls_files, extra=f"silent_after = {SILENT_AFTER}")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def agent(tmp_path: Path, collector: CollectorProcess) -> Iterator[AgentProcess]:
    root = tmp_path / "agent"
    root.mkdir()
    (tmp_path / "logs").mkdir()
    process = AgentProcess(root, collector, sources={"auth": [str(tmp_path / "logs" / "*.log")]})
    yield process
    process.cleanup()


def ship(tmp_path: Path, collector: CollectorProcess, agent: AgentProcess) -> None:
    lines = [
        f"Nov 21 10:00:00 host sshd[7]: Accepted publickey for u{i} port {i}" for i in range(LINES)
    ]
    write_lines(tmp_path / "logs" / "auth.log", lines)
    agent.start()
    eventually_sync(lambda: collector.held() >= LINES, timeout=TIMEOUT, what=f"{LINES} records")


def state(collector: CollectorProcess) -> str:
    (stream,) = collector.streams()
    return str(stream["state"])


@pytest.mark.slow
def test_clean_stop_seals_the_stream_and_it_verifies(
    tmp_path: Path, collector: CollectorProcess, agent: AgentProcess
) -> None:
    ship(tmp_path, collector, agent)

    assert agent.terminate() == 0, agent.log_tail()

    assert state(collector) == "sealed", (collector.streams(), agent.log_tail())
    result = run_verify(str(collector.storage), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (stream,) = json.loads(result.stdout)["streams"]
    assert stream["sealed"] is True
    assert stream["last_seq"] >= LINES + 1
    assert stream["findings"] == []
    assert stream["head"] == collector.streams()[0]["head"]


@pytest.mark.slow
def test_sigkilled_agent_leaves_the_stream_unsealed_then_silent(
    tmp_path: Path, collector: CollectorProcess, agent: AgentProcess
) -> None:
    ship(tmp_path, collector, agent)

    agent.kill()

    assert state(collector) != "sealed"
    eventually_sync(
        lambda: state(collector) == "silent",
        timeout=SILENT_AFTER + 30,
        what="the stream to turn silent",
    )
    result = run_verify(str(collector.storage))
    assert result.returncode == 1
    assert "break unsealed" in result.stdout
    assert "BROKEN stream" in result.stdout
    allowed = run_verify(str(collector.storage), "--allow-unsealed", "--json")
    assert allowed.returncode == 0, allowed.stdout
    (stream,) = json.loads(allowed.stdout)["streams"]
    assert [(f["kind"], f["break"]) for f in stream["findings"]] == [("unsealed", False)]


def _holds(collector: CollectorProcess, count: int) -> bool:
    return collector.held() >= count


def test_idle_agent_heartbeats_keep_its_stream_live_until_it_dies(
    tmp_path: Path, collector: CollectorProcess, agent: AgentProcess
) -> None:
    # Without heartbeats an idle host and a dead one look the same at the collector: silent.
    agent.env["TAILSEAL_HEARTBEAT"] = "0.5"  # well inside silent_after (2 s)
    ship(tmp_path, collector, agent)
    for beats in (1, 2, 3):
        eventually_sync(
            functools.partial(_holds, collector, LINES + beats),
            timeout=TIMEOUT,
            what=f"beat {beats}",
        )
        assert state(collector) == "live"  # a record arrived within the last second
    notices = [r for r in collector.records() if r.get("type") == "notice"]
    assert len(notices) >= 3
    assert {r["notice"]["kind"] for r in notices} == {"heartbeat"}
    assert {r["src"] for r in notices} == {"tailseal"}

    agent.kill()

    eventually_sync(
        lambda: state(collector) == "silent",
        timeout=SILENT_AFTER + 30,
        what="the stream to turn silent once the heartbeats stop",
    )
