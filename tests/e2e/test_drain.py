"""Last words: the drain on SIGTERM, its deadline, `tailseal drain`, and the forced exit."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.e2e.test_delivery import assert_exactly_once, lines, verify_stream
from tests.support import eventually_sync

BACKLOG = 100_000


class SilentServer:
    """Accepts TCP connections and never answers a byte: a collector that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


def make_agent(
    tmp_path: Path, collector: CollectorProcess, logs: Path, endpoint: str = "", tables: str = ""
) -> AgentProcess:
    root = tmp_path / "agent"
    root.mkdir(exist_ok=True)
    sources = {"app": [str(logs / "*.log")]}
    return AgentProcess(root, collector, sources=sources, endpoint=endpoint, tables=tables)


def started_against_a_hung_collector(
    tmp_path: Path, collector: CollectorProcess, logs: Path, hung: SilentServer
) -> AgentProcess:
    """An agent whose collector never answers (a 60 s shutdown budget), started with 100
    lines committed: a drain that goes on until something ends it."""
    agent = make_agent(
        tmp_path,
        collector,
        logs,
        endpoint=f"https://127.0.0.1:{hung.port}",
        tables="[shutdown]\ntimeout = 60",
    )
    write_lines(logs / "app.log", lines(0, 100))
    agent.start()
    eventually_sync(
        lambda: (agent.status_or_none() or {}).get("last_seq", 0) >= 100,
        timeout=60,
        what="lines committed",
    )
    return agent


@pytest.fixture
def hung() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.slow
def test_sigterm_ships_a_large_backlog_and_seals_before_exit(
    tmp_path: Path, collector: CollectorProcess, logs: Path
) -> None:
    port = collector.port
    collector.stop()  # the collector is down while the backlog builds up
    agent = make_agent(tmp_path, collector, logs, tables="[shutdown]\ntimeout = 60")
    expected = lines(0, BACKLOG)
    write_lines(logs / "app.log", expected)
    agent.start()
    try:
        eventually_sync(
            lambda: (agent.status_or_none() or {}).get("last_seq", 0) >= BACKLOG,
            timeout=120,
            what="the backlog committed to the buffer",
        )
        collector.start(port=port)
        started = time.monotonic()
        assert agent.terminate(timeout=90) == 0, agent.log_tail()
        elapsed = time.monotonic() - started
    finally:
        agent.cleanup()
    records = collector.records()
    assert_exactly_once(records, expected)
    assert records[-1]["type"] == "seal"
    assert collector.streams()[0]["state"] == "sealed"
    verify_stream(collector)
    size = sum(len(line) + 1 for line in expected)
    sys.stderr.write(
        f"drain: {BACKLOG} records ({size / 1e6:.1f} MB) in {elapsed:.2f}s = "
        f"{BACKLOG / elapsed:,.0f} records/s, {size / 1e6 / elapsed:.1f} MB/s\n"
    )


@pytest.mark.slow
def test_hung_collector_exit_within_timeout_and_next_start_ships_the_rest(
    tmp_path: Path, collector: CollectorProcess, logs: Path, hung: SilentServer
) -> None:
    timeout = 3.0
    agent = make_agent(
        tmp_path,
        collector,
        logs,
        endpoint=f"https://127.0.0.1:{hung.port}",
        tables=f"[shutdown]\ntimeout = {timeout}",
    )
    expected = lines(0, 5000)
    write_lines(logs / "app.log", expected)
    agent.start()
    eventually_sync(
        lambda: (agent.status_or_none() or {}).get("last_seq", 0) >= 5000,
        timeout=60,
        what="lines committed",
    )
    started = time.monotonic()
    code = agent.terminate(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 75, agent.log_tail()  # not drained: records are kept on disk
    assert elapsed < timeout + 2, f"exit took {elapsed:.1f}s"
    # The next start on the same state directory, collector reachable: everything arrives.
    agent.endpoint = ""
    agent.start()
    eventually_sync(lambda: collector.held() >= 5001, timeout=60, what="the rest shipped")
    assert agent.terminate() == 0, agent.log_tail()
    assert_exactly_once(collector.records(), expected)
    verify_stream(collector)


def test_sigterm_with_the_buffer_full_exits_at_the_deadline_and_loses_nothing(
    tmp_path: Path, collector: CollectorProcess, logs: Path, hung: SilentServer
) -> None:
    # when_full = "block" with no acks: the file source waits in emit for room, the final
    # sweep with it. The deadline used to start only after the sweep, so the agent hung
    # until killed: no seal, and `tailseal drain` (preStop) waiting with it.
    root = tmp_path / "agent"
    root.mkdir()
    agent = AgentProcess(
        root,
        collector,
        sources={"app": [str(logs / "*.log")]},
        endpoint=f"https://127.0.0.1:{hung.port}",
        source_options="read_chunk_bytes = 4096",
        tables="[buffer]\nsegment_bytes = 4096\nmax_bytes = 8192\n[shutdown]\ntimeout = 2",
    )
    expected = [f"line {i:06d} " + "x" * 90 for i in range(3000)]
    write_lines(logs / "app.log", expected)
    agent.start()
    try:
        eventually_sync(
            lambda: ((agent.status_or_none() or {}).get("buffer") or {}).get("blocked") is True,
            timeout=60,
            what="the buffer full and blocking",
        )

        code = agent.terminate(timeout=30)

        assert code == 75, agent.log_tail()  # by itself, not drained: records kept on disk
        assert "passed during the final sweep" in agent.log_tail()
        # Nothing lost: the next start, collector reachable, ships every line once, and seals.
        agent.endpoint = ""
        agent.start()
        eventually_sync(
            lambda: collector.held() >= len(expected) + 1, timeout=120, what="the rest shipped"
        )
        assert agent.terminate() == 0, agent.log_tail()
    finally:
        agent.cleanup()
    assert_exactly_once(collector.records(), expected)
    verify_stream(collector)


def test_a_deadline_already_passed_at_the_sweep_still_ends_the_run(
    tmp_path: Path, collector: CollectorProcess, logs: Path
) -> None:
    # shutdown.timeout = 1e-9, gone by the sweep: its wait_for(timeout=0) cancelled the sweep
    # before any source was told to stop, and the task group waited for them for ever.
    agent = make_agent(tmp_path, collector, logs, tables="[shutdown]\ntimeout = 1e-9")
    write_lines(logs / "app.log", lines(0, 50))
    agent.start()
    try:
        eventually_sync(lambda: collector.held() >= 50, timeout=60, what="lines shipped")
        assert agent.terminate(timeout=30) in (0, 75), agent.log_tail()
    finally:
        agent.cleanup()


@pytest.mark.slow
def test_second_sigterm_forces_an_immediate_exit(
    tmp_path: Path, collector: CollectorProcess, logs: Path, hung: SilentServer
) -> None:
    agent = started_against_a_hung_collector(tmp_path, collector, logs, hung)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    eventually_sync(
        lambda: (agent.status_or_none() or {}).get("phase") == "draining",
        timeout=30,
        what="the drain to start",
    )
    started = time.monotonic()
    code = agent.terminate(timeout=30)
    assert code == 75
    assert time.monotonic() - started < 5
    # State-safe: a normal restart with the collector reachable ships every line.
    agent.endpoint = ""
    agent.start()
    eventually_sync(lambda: collector.held() >= 101, timeout=60, what="records shipped")
    assert agent.terminate() == 0, agent.log_tail()
    assert_exactly_once(collector.records(), lines(0, 100))


@pytest.mark.slow
def test_drain_command_drains_a_running_agent_and_reports_progress(
    tmp_path: Path, collector: CollectorProcess, logs: Path
) -> None:
    agent = make_agent(tmp_path, collector, logs)
    expected = lines(0, 20_000)
    write_lines(logs / "app.log", expected)
    agent.start()
    eventually_sync(lambda: agent.status_or_none() is not None, timeout=30, what="control up")
    config = agent.root / "agent.toml"
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "drain", "-c", str(config), "--timeout", "60"],
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "records left" in result.stderr
    assert "drained and sealed at seq" in result.stderr
    assert agent.proc is not None
    assert agent.proc.wait(timeout=30) == 0
    assert_exactly_once(collector.records(), expected)
    assert collector.streams()[0]["state"] == "sealed"


@pytest.mark.slow
def test_drain_command_reports_an_agent_killed_mid_drain_without_a_traceback(
    tmp_path: Path, collector: CollectorProcess, logs: Path, hung: SilentServer
) -> None:
    agent = started_against_a_hung_collector(tmp_path, collector, logs, hung)
    config = agent.root / "agent.toml"
    drain = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "drain", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually_sync(
            lambda: (agent.status_or_none() or {}).get("phase") == "draining",
            timeout=30,
            what="the drain to start",
        )
        assert agent.proc is not None
        agent.proc.kill()  # SIGKILL (or a second signal's forced exit) mid-answer
        agent.proc.wait(timeout=30)
        _, stderr = drain.communicate(timeout=60)
    finally:
        agent.cleanup()
        if drain.poll() is None:
            drain.kill()
            drain.wait(timeout=30)

    assert drain.returncode == 1
    assert "the agent went away during the drain" in stderr, stderr
    assert "records unshipped (kept on disk)" in stderr
    assert "Traceback" not in stderr


def test_drain_command_without_an_agent_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "drain", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no agent answers on" in result.stderr
