"""A spot interruption notice reaches the collector as a notice record and starts drain mode."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.support import eventually_sync
from tests.termination.metadata import MetadataServer


def watching_ec2(
    tmp_path: Path,
    collector: CollectorProcess,
    metadata: MetadataServer,
    *,
    extra: str = "",
    endpoint: str = "",
    tables: str = "",
) -> AgentProcess:
    """An agent (not started) tailing one line, its EC2 watcher polling ``metadata``."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.log", ["before the notice"])
    root = tmp_path / "agent"
    root.mkdir()
    return AgentProcess(
        root,
        collector,
        sources={"app": [str(logs / "*.log")]},
        extra=extra,
        endpoint=endpoint,
        tables=(
            f'[termination]\nec2 = "on"\ngcp = "off"\nazure = "off"\n'
            f'poll_interval = 0.1\nec2_endpoint = "{metadata.url}"\n{tables}'
        ),
    )


@pytest.mark.slow
def test_spot_notice_is_shipped_and_switches_on_drain_mode(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    with MetadataServer() as metadata:
        # A long linger: only drain mode makes a single record ship at once.
        agent = watching_ec2(tmp_path, collector, metadata, extra="linger = 30\n")
        agent.start()
        try:
            eventually_sync(
                lambda: (agent.status_or_none() or {}).get("phase") == "running",
                timeout=30,
                what="the agent running",
            )
            metadata.state.spot_action = {"action": "terminate", "time": "2026-11-21T23:00:00Z"}
            eventually_sync(
                lambda: any(r.get("type") == "notice" for r in collector.records()),
                timeout=30,
                what="the notice record at the collector",
            )
            status = agent.status()
            assert status["drain"] is True
            assert status["phase"] == "running"  # the host still runs; SIGTERM ends it
            assert status["notices"][0]["event"] == "spot-interruption"
            assert agent.terminate() == 0
        finally:
            agent.cleanup()
    records = collector.records()
    notice = next(r for r in records if r.get("type") == "notice")
    assert notice["notice"]["action"] == "terminate"
    assert records[-1]["type"] == "seal"


@pytest.mark.slow
def test_a_notice_during_the_drain_is_reported_not_silently_dropped(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    # The ASG sequence: the lifecycle hook drains the agent, then the lifecycle state turns
    # Terminated. The seal is written when the drain begins, and nothing follows a seal: the
    # notice was emitted behind the writer's stop and vanished without a word.
    hole = socket.create_server(("127.0.0.1", 0))  # a collector that never answers
    with MetadataServer() as metadata, hole:
        agent = watching_ec2(
            tmp_path,
            collector,
            metadata,
            endpoint=f"https://127.0.0.1:{hole.getsockname()[1]}",
            tables="[shutdown]\ntimeout = 60\n",
        )
        agent.start()
        try:
            eventually_sync(
                lambda: (agent.status_or_none() or {}).get("last_seq", 0) >= 1,
                timeout=30,
                what="the line committed",
            )
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGTERM)
            eventually_sync(
                lambda: (agent.status_or_none() or {}).get("phase") == "draining",
                timeout=30,
                what="the drain",
            )
            metadata.state.lifecycle = "Terminated"
            eventually_sync(
                lambda: "came after the seal: in /status only" in agent.log_tail(),
                timeout=30,
                what="the late notice reported",
            )
            assert agent.status()["notices"][0]["event"] == "asg-lifecycle"
            assert agent.terminate(timeout=30) == 75  # the second signal
        finally:
            agent.cleanup()
