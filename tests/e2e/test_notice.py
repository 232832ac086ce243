"""A spot interruption notice reaches the collector as a notice record and starts drain mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.support import eventually_sync
from tests.termination.metadata import MetadataServer


@pytest.mark.slow
def test_spot_notice_is_shipped_and_switches_on_drain_mode(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.log", ["before the notice"])
    root = tmp_path / "agent"
    root.mkdir()
    with MetadataServer() as metadata:
        agent = AgentProcess(
            root,
            collector,
            sources={"app": [str(logs / "*.log")]},
            # A long linger: only drain mode makes a single record ship at once.
            extra="linger = 30\n",
            tables=(
                f'[termination]\nec2 = "on"\ngcp = "off"\nazure = "off"\n'
                f'poll_interval = 0.1\nec2_endpoint = "{metadata.url}"\n'
            ),
        )
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
