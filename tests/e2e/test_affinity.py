"""cpu_affinity on a real agent process: every one of its threads runs where the setting says,
and a CPU list naming no CPU the process may use stops it with a configuration error."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agent.affinity import parse
from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.e2e.test_delivery import lines
from tests.support import eventually_sync

ALLOWED = sorted(os.sched_getaffinity(0))


def thread_cpus(pid: int) -> dict[str, frozenset[int]]:
    """Each thread's allowed CPUs, from /proc (as taskset -a -p shows them)."""
    found: dict[str, frozenset[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus = parse(line.split(":", 1)[1].strip())
                assert isinstance(cpus, frozenset)
                found[task.name] = cpus
    return found


def running_agent(
    tmp_path: Path, collector: CollectorProcess, setting: str, tables: str = ""
) -> AgentProcess:
    """An agent with ``cpu_affinity`` = ``setting`` that has shipped some lines (its worker
    threads have started by then)."""
    (tmp_path / "agent").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    agent = AgentProcess(
        tmp_path / "agent",
        collector,
        sources={"app": [str(tmp_path / "logs" / "*.log")]},
        env={"TAILSEAL_CPU_AFFINITY": setting},
        tables=tables,
    )
    write_lines(tmp_path / "logs" / "app.log", lines(0, 2000))
    agent.start()
    eventually_sync(
        lambda: (
            (agent.status_or_none() or {}).get("sinks", {}).get("central", {}).get("acked", 0)
            >= 2000
        ),
        timeout=60,
        what="the agent's lines to be acknowledged",
    )
    return agent


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to tell pinned from not")
def test_auto_puts_every_thread_on_one_allowed_cpu_until_the_drain(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    agent = running_agent(tmp_path, collector, "auto", "[shutdown]\ntimeout = 5")
    assert agent.proc is not None
    threads = thread_cpus(agent.proc.pid)
    assert len(threads) >= 3  # the loop and worker threads, not only the main one
    (cpus,) = set(threads.values())
    assert len(cpus) == 1
    assert cpus <= set(ALLOWED)
    assert agent.status()["cpus"] == sorted(cpus)  # /status and `tailseal status` say where
    assert "cpu_affinity auto" in (tmp_path / "agent" / "agent.log").read_text()
    # Draining (the seal cannot ship: the collector is down), the threads get every CPU back.
    collector.stop()
    agent.proc.send_signal(signal.SIGTERM)
    pid = agent.proc.pid
    eventually_sync(
        lambda: set(thread_cpus(pid).values()) == {frozenset(ALLOWED)},
        timeout=10,
        what="the draining agent's threads to be allowed every CPU",
    )
    assert agent.proc.wait(timeout=60) == 75  # the seal stayed unshipped


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to tell pinned from not")
def test_a_cpu_list_is_applied_to_every_thread_and_none_leaves_them_free(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    last = ALLOWED[-1]
    agent = running_agent(tmp_path / "listed", collector, f"[{last}]")
    assert agent.proc is not None
    assert set(thread_cpus(agent.proc.pid).values()) == {frozenset({last})}
    assert agent.terminate() == 0

    free = running_agent(tmp_path / "free", collector, "none")
    assert free.proc is not None
    assert set(thread_cpus(free.proc.pid).values()) == {frozenset(ALLOWED)}
    assert free.status()["cpus"] == ALLOWED
    assert free.terminate() == 0


def test_a_cpu_list_with_no_usable_cpu_is_a_config_error(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(
        tmp_path / "agent",
        collector,
        sources={"app": [str(tmp_path / "*.log")]},
        env={"TAILSEAL_CPU_AFFINITY": '"4000-4001"'},
    )
    agent.start()
    assert agent.proc is not None
    assert agent.proc.wait(timeout=60) == 78
    log = (tmp_path / "agent" / "agent.log").read_text()
    assert "cpu_affinity: none of CPUs 4000-4001 is available to this process" in log
