"""SIGHUP reloads the config: sources and sinks change while lines flow, nothing lost or doubled."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.e2e.test_delivery import assert_exactly_once, lines
from tests.support import eventually_sync


class Writer(threading.Thread):
    """Appends numbered lines at a steady pace (the workload) until told to stop."""

    def __init__(self, path: Path, prefix: str) -> None:
        super().__init__(daemon=True)
        self.path, self.prefix = path, prefix
        self.written: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            batch = [f"{self.prefix} line {len(self.written) + i:06d}" for i in range(50)]
            write_lines(self.path, batch)
            self.written.extend(batch)
            time.sleep(0.01)  # pacing of the workload, not synchronization


def reload(agent: AgentProcess) -> None:
    assert agent.proc is not None
    agent.write_config()
    agent.proc.send_signal(signal.SIGHUP)


@pytest.mark.slow
def test_reload_adds_a_source_and_changes_a_sink_while_lines_flow(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent", collector, sources={"a": [str(logs / "a.log")]})
    first = Writer(logs / "a.log", "a")
    agent.start()
    try:
        first.start()
        eventually_sync(lambda: collector.held() > 500, timeout=60, what="lines flowing")
        agent.sources["b"] = [str(logs / "b.log")]
        agent.extra = 'compression = "gzip"\nmax_batch_records = 300\n'  # the sink changes
        second = Writer(logs / "b.log", "b")
        second.start()
        reload(agent)
        eventually_sync(
            lambda: (agent.status_or_none() or {}).get("reloads", {}).get("ok") == 1,
            timeout=30,
            what="the reload applied",
        )
        status = agent.status()
        assert sorted(status["sources"]) == ["a", "b"]
        eventually_sync(
            lambda: collector.held() > len(first.written) + 500, timeout=60, what="more"
        )
        first.halt.set()
        second.halt.set()
        first.join()
        second.join()
        expected = first.written + second.written
        eventually_sync(
            lambda: collector.held() >= len(expected), timeout=60, what="every line shipped"
        )
        assert agent.terminate() == 0, agent.log_tail()
    finally:
        first.halt.set()
        agent.cleanup()
    assert_exactly_once(collector.records(), expected)


@pytest.mark.slow
def test_invalid_config_on_reload_is_rejected_and_the_old_one_keeps_running(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent", collector, sources={"a": [str(logs / "a.log")]})
    write_lines(logs / "a.log", lines(0, 100))
    agent.start()
    try:
        eventually_sync(lambda: collector.held() >= 100, timeout=60, what="100 records")
        assert agent.proc is not None
        config = agent.root / "agent.toml"
        config.write_text(config.read_text().replace("poll_interval", "pol_interval"))
        agent.proc.send_signal(signal.SIGHUP)
        eventually_sync(
            lambda: (agent.status_or_none() or {}).get("reloads", {}).get("rejected") == 1,
            timeout=30,
            what="the reload rejected",
        )
        write_lines(logs / "a.log", lines(100, 100))
        eventually_sync(lambda: collector.held() >= 200, timeout=60, what="still shipping")
        assert agent.status()["phase"] == "running"
        assert agent.terminate() == 0
    finally:
        agent.cleanup()
    assert_exactly_once(collector.records(), lines(0, 200))


@pytest.mark.slow
def test_reload_command_reports_the_outcome(tmp_path: Path, collector: CollectorProcess) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent", collector, sources={"a": [str(logs / "a.log")]})
    agent.start()
    config = agent.root / "agent.toml"

    def reload_command(*how: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", "reload", *(how or ("-c", str(config)))],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    try:
        eventually_sync(
            lambda: (agent.status_or_none() or {}).get("phase") == "running",
            timeout=30,
            what="the agent running",
        )
        agent.sources["b"] = [str(logs / "b.log")]
        agent.write_config()
        done = reload_command()
        assert done.returncode == 0, done.stderr
        assert "reloaded: sources added b" in done.stderr
        config.write_text(config.read_text().replace("poll_interval", "pol_interval"))
        # The command validates the file first: a broken one never reaches the agent (78) ...
        refused = reload_command()
        assert refused.returncode == 78
        assert "pol_interval: unknown key" in refused.stderr
        # ... and the agent refuses it too when asked directly, keeping what runs.
        refused = reload_command("--socket", str(agent.control_socket))
        assert refused.returncode == 1
        assert "pol_interval: unknown key" in refused.stderr
        assert agent.status()["reloads"] == {"ok": 1, "rejected": 1}
        assert sorted(agent.status()["sources"]) == ["a", "b"]
        assert agent.terminate() == 0
    finally:
        agent.cleanup()
