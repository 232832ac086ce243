"""Journal entries -> agent -> collector as real processes: exactly once across a SIGKILL."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess
from tests.e2e.test_delivery import verify_stream
from tests.sources.journal_files import Journal, journal_remote
from tests.support import eventually_sync

TOTAL = 20_000
DELIVERY_TIMEOUT = 120.0


@pytest.fixture(scope="session", autouse=True)
def _journal_remote_installed() -> None:
    journal_remote()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(tmp_path / "journal")
    yield journal
    # A SIGKILLed agent leaves its journalctl to die on its next write; end it now.
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "journalctl" and any(
            str(journal.directory) in arg for arg in proc.info["cmdline"] or []
        ):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.fixture
def agent(tmp_path: Path, collector: CollectorProcess, journal: Journal) -> Iterator[AgentProcess]:
    root = tmp_path / "agent"
    root.mkdir()
    process = AgentProcess(
        root,
        collector,
        sources={},
        extra="max_batch_records = 200\nlinger = 0.01\n",
        tables=(
            f'[sources.journal]\ntype = "journald"\ndirectory = "{journal.directory}"\n'
            "since_boot = false\nretry_initial = 0.1\n"
        ),
    )
    yield process
    process.cleanup()


def sshd_entries(start: int, count: int) -> list[dict[str, str | bytes]]:
    return [
        {
            "MESSAGE": f"Accepted publickey for user{i % 13} from 10.0.{i % 255}.{i % 7} "
            f"port {40000 + i % 20000} ssh2: RSA SHA256:entry{i:06d}",
            "SYSLOG_IDENTIFIER": "sshd",
            "_COMM": "sshd",
            "_PID": str(1000 + i % 97),
            "_UID": "0",
            "_SYSTEMD_UNIT": "ssh.service",
            "_HOSTNAME": "e2e-host",
        }
        for i in range(start, start + count)
    ]


@pytest.mark.slow
def test_journal_entries_arrive_exactly_once_across_a_sigkill(
    collector: CollectorProcess, agent: AgentProcess, journal: Journal
) -> None:
    half = TOTAL // 2
    journal.append(sshd_entries(0, half))
    agent.start()
    eventually_sync(lambda: collector.held() > 0, timeout=DELIVERY_TIMEOUT, what="progress")
    agent.kill()
    assert collector.held() < half, "the kill came after the agent caught up"
    journal.append(sshd_entries(half, half // 2))  # written while the agent is down
    agent.start()
    journal.append(sshd_entries(half + half // 2, TOTAL - half - half // 2))  # while following
    eventually_sync(lambda: collector.held() >= TOTAL, timeout=DELIVERY_TIMEOUT, what="every entry")
    assert agent.terminate() == 0, agent.log_tail()
    assert agent.exits == [-9, 0]

    records = collector.records()
    entries = [r for r in records if "type" not in r]
    counts = Counter(r["msg"] for r in entries)
    assert [m for m, n in counts.items() if n > 1] == []
    assert sorted(counts) == sorted(str(e["MESSAGE"]) for e in sshd_entries(0, TOTAL))
    assert not [r for r in records if r.get("type") == "gap"]
    sample = entries[0]
    assert sample["event"]["action"] == "ssh_login"  # auth parsing applies to journal entries
    assert sample["user"]["name"].startswith("user")
    assert sample["journald"]["unit"] == "ssh.service"
    assert sample["log"]["journal"]["cursor"].startswith("s=")
    assert records[-1]["type"] == "seal"
    assert collector.streams()[0]["state"] == "sealed"
    verify_stream(collector)
