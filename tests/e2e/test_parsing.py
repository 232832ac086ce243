"""Auth lines are parsed into ECS fields and secrets redacted before records leave the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.support import eventually_sync

LINES = [
    (
        "Nov 21 10:00:01 web-1 sshd[2314]: Accepted publickey for alice from 203.0.113.7 port 50122"
        " ssh2: ED25519 SHA256:Zp3yq0"
    ),
    (
        "Nov 21 10:00:02 web-1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ;"
        " COMMAND=/usr/bin/mysql -u root --password=hunter2secret"
    ),
    (
        "Nov 21 10:00:03 web-1 sshd[2388]: Failed password for invalid user admin from"
        " 198.51.100.23 port 41866 ssh2"
    ),
]


def ship(
    tmp_path: Path, collector: CollectorProcess, source: str, lines: list[str]
) -> list[dict[str, Any]]:
    """Run the agent on ``lines`` with parser ``source`` until the collector holds them all,
    stop it cleanly; returns the records the collector holds (special records left out)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / f"{source}.log", lines)
    root = tmp_path / "agent"
    root.mkdir()
    agent = AgentProcess(
        root,
        collector,
        sources={source: [str(logs / f"{source}.log")]},
        source_options=f'parser = {{ format = "{source}" }}',
    )
    agent.start()
    try:
        eventually_sync(
            lambda: collector.held() >= len(lines), timeout=30, what=f"{len(lines)} records"
        )
        assert agent.terminate() == 0, agent.log_tail()
    finally:
        agent.cleanup()
    return [r for r in collector.records() if "type" not in r]


@pytest.mark.slow
def test_auth_lines_arrive_parsed_and_redacted(tmp_path: Path, collector: CollectorProcess) -> None:
    accepted, sudo, failed = ship(tmp_path, collector, "auth", LINES)
    assert accepted["user"]["name"] == "alice"
    assert accepted["source"]["ip"] == "203.0.113.7"
    assert accepted["event"]["outcome"] == "success"
    assert failed["event"]["outcome"] == "failure"
    assert failed["source"]["ip"] == "198.51.100.23"
    assert "hunter2secret" not in str(sudo)
    assert "redacted" in sudo["tags"]
    assert sudo["user"]["effective"]["name"] == "root"


@pytest.mark.slow
def test_json_line_too_deep_to_hash_ships_unparsed_and_the_agent_goes_on(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    # 300 levels: orjson reads it (up to 1024) but the chain cannot encode it (255). This line
    # used to stop the buffer writer, and on every restart again: the whole host went silent.
    deep = '{"a":' * 300 + "1" + "}" * 300
    first, middle, last = ship(tmp_path, collector, "json", ['{"n":1}', deep, '{"n":3}'])
    assert (first["json"], last["json"]) == ({"n": 1}, {"n": 3})
    assert middle["msg"] == deep
    assert middle["tags"] == ["parse_failure"]
    assert "json" not in middle
