"""Operators can see it working: /metrics, /healthz, /readyz and `tailseal status`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.e2e.test_delivery import lines
from tests.support import eventually_sync


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    assert found, f"no sample {name}{{{want}}}"
    return float(found[1])


@pytest.mark.slow
def test_metrics_counters_match_what_the_collector_received(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    port = free_port()
    agent = AgentProcess(
        tmp_path / "agent",
        collector,
        sources={"app": [str(tmp_path / "logs" / "*.log")]},
        control_listen=f"127.0.0.1:{port}",
    )
    (tmp_path / "agent").mkdir()
    (tmp_path / "logs").mkdir()
    expected = lines(0, 3000)
    write_lines(tmp_path / "logs" / "app.log", expected)
    agent.start()
    try:
        eventually_sync(lambda: collector.held() >= 3000, timeout=60, what="3000 records")
        eventually_sync(
            lambda: (
                get(port, "/metrics")[0] == 200
                and metric(
                    get(port, "/metrics")[1], "tailseal_sink_backlog_records", sink="central"
                )
                == 0
            ),
            timeout=30,
            what="the backlog at zero",
        )
        status, text = get(port, "/metrics")
    finally:
        agent.cleanup()
    assert status == 200
    held = len([r for r in collector.records() if "type" not in r])
    assert metric(text, "tailseal_sink_records_total", sink="central") == held == 3000
    assert metric(text, "tailseal_source_records_total", source="app") == 3000
    size = sum(len(line) for line in expected)
    assert metric(text, "tailseal_source_bytes_total", source="app") == size
    assert metric(text, "tailseal_buffer_records_total") == 3000
    assert metric(text, "tailseal_process_rss_bytes") > 10_000_000
    assert metric(text, "tailseal_process_open_fds") > 0
    assert metric(text, "tailseal_sink_ack_latency_seconds_count", sink="central") >= 1
    assert metric(text, "tailseal_sink_relinks_total", sink="central") == 0
    # exposed (how many batches overtook others on loopback depends on timing)
    metric(text, "tailseal_sink_overtaken_total", sink="central")


@pytest.mark.slow
def test_healthz_stays_ok_while_the_collector_is_down(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    port = free_port()
    (tmp_path / "agent").mkdir()
    (tmp_path / "logs").mkdir()
    write_lines(tmp_path / "logs" / "app.log", lines(0, 10))
    collector.stop()
    agent = AgentProcess(
        tmp_path / "agent",
        collector,
        sources={"app": [str(tmp_path / "logs" / "*.log")]},
        control_listen=f"127.0.0.1:{port}",
    )
    agent.start()
    try:
        eventually_sync(
            lambda: 'reason="network"' in _scrape(port), timeout=30, what="a failed delivery"
        )
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 200  # the collector is not the agent's readiness
        assert (
            metric(get(port, "/metrics")[1], "tailseal_sink_backlog_records", sink="central") == 10
        )
    finally:
        agent.cleanup()


@pytest.mark.slow
def test_readyz_is_not_ready_before_the_sources_start(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    """Start-up held for a few seconds by a metadata service that never answers."""
    silent = socket.create_server(("127.0.0.1", 0))
    port = free_port()
    (tmp_path / "agent").mkdir()
    (tmp_path / "logs").mkdir()
    agent = AgentProcess(
        tmp_path / "agent",
        collector,
        sources={"app": [str(tmp_path / "logs" / "*.log")]},
        control_listen=f"127.0.0.1:{port}",
        tables=(
            f'[termination]\nec2 = "on"\ngcp = "off"\nazure = "off"\ntimeout = 4.0\n'
            f'ec2_endpoint = "http://127.0.0.1:{silent.getsockname()[1]}"\n'
        ),
    )
    agent.start()
    try:
        eventually_sync(lambda: _answers(port, "/healthz"), timeout=30, what="the control endpoint")
        status, body = get(port, "/readyz")
        assert status == 503
        assert "phase is starting" in json.loads(body)["problems"]
        assert get(port, "/healthz")[0] == 200
        eventually_sync(lambda: get(port, "/readyz")[0] == 200, timeout=30, what="ready")
    finally:
        agent.cleanup()
        silent.close()


def _scrape(port: int) -> str:
    """/metrics, or "" while the control endpoint is not listening yet."""
    try:
        status, text = get(port, "/metrics")
    except OSError:
        return ""
    return text if status == 200 else ""


def _answers(port: int, path: str) -> bool:
    try:
        return get(port, path)[0] == 200
    except OSError:
        return False


@pytest.mark.slow
def test_status_command_names_each_source_and_sink_with_a_backlog(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "logs").mkdir()
    write_lines(tmp_path / "logs" / "app.log", lines(0, 50))
    agent = AgentProcess(
        tmp_path / "agent", collector, sources={"app": [str(tmp_path / "logs" / "*.log")]}
    )
    agent.start()
    try:
        eventually_sync(lambda: collector.held() >= 50, timeout=30, what="50 records")
        result = subprocess.run(
            [sys.executable, "-m", "agent.cli", "status", "-c", str(agent.root / "agent.toml")],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        agent.cleanup()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tailseal: running" in out
    assert re.search(r"^  app: 50 records", out, re.MULTILINE), out
    log = tmp_path / "logs" / "app.log"
    assert re.search(
        rf"^    {re.escape(str(log))}  offset \d+  behind 0 B / 0\.0s", out, re.MULTILINE
    ), out
    assert re.search(
        r"^  central -> https://127\.0\.0\.1:\d+: acked seq 50, backlog 0 records",
        out,
        re.MULTILINE,
    ), out


def test_a_second_agent_on_the_same_config_leaves_the_first_ones_control_socket(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    # The control socket is set up before the buffer's lock is taken: the second agent
    # replaced the socket, then deleted it on its way out; `tailseal drain` (a preStop hook)
    # and `tailseal reload` no longer reached the running agent.
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.log", lines(0, 10))
    root = tmp_path / "agent"
    root.mkdir()
    agent = AgentProcess(root, collector, sources={"app": [str(logs / "*.log")]})
    agent.start()
    try:
        eventually_sync(lambda: agent.status_or_none() is not None, timeout=30, what="agent up")
        second = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "-c", str(root / "agent.toml")],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert second.returncode == 1
        assert "in use by another running tailseal agent" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert agent.status()["phase"] == "running"  # its socket is still there, and its own
        assert agent.terminate() == 0, agent.log_tail()
    finally:
        agent.cleanup()
