"""systemd/tailseal.service: it verifies cleanly, is hardened, and is ordered for a full drain.

``systemd-analyze`` runs offline here: ``verify --root`` against a scratch root holding the
host's stock units (for the dependencies) and a stand-in /opt/tailseal/bin/tailseal (verify
checks that ExecStart= exists), ``security --offline=true`` on the unit file itself.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from agent.config import AgentConfig
from tests.packaging.tools import REPO, ensure_commands, run

UNIT = REPO / "systemd" / "tailseal.service"
MAX_EXPOSURE = 2.0


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def words(section: dict[str, list[str]], key: str) -> set[str]:
    return {word for value in section.get(key, []) for word in value.split()}


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert match, value
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_unit_passes_systemd_analyze_verify_without_any_output(tmp_path: Path) -> None:
    ensure_commands("systemd-analyze")
    root = tmp_path / "root"
    shutil.copytree(Path("/usr/lib/systemd/system"), root / "usr/lib/systemd/system", True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/tailseal.service")
    tailseal = root / "opt/tailseal/bin/tailseal"
    tailseal.parent.mkdir(parents=True)
    tailseal.write_text("#!/bin/sh\n")
    tailseal.chmod(0o755)

    result = run(
        ["systemd-analyze", "verify", f"--root={root}", "tailseal.service"],
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_security_exposure_is_2_or_better() -> None:
    ensure_commands("systemd-analyze")
    result = run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT], timeout=60)

    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout
    assert match[2] == "OK"


def test_agent_starts_after_log_daemons_and_network_and_before_logins() -> None:
    unit = parse_unit(UNIT)["Unit"]

    assert {"systemd-journald.service", "rsyslog.service", "network-online.target"} <= words(
        unit, "After"
    )
    assert "network-online.target" in words(unit, "Wants")
    assert {"sshd.service", "ssh.service", "systemd-user-sessions.service"} <= words(unit, "Before")


def test_stop_timeout_leaves_room_for_the_default_drain_budget() -> None:
    service = parse_unit(UNIT)["Service"]

    assert service["Type"] == ["notify"]
    (timeout,) = service["TimeoutStopSec"]
    assert seconds(timeout) > AgentConfig().shutdown.timeout + 5
    assert seconds(service["WatchdogSec"][0]) > 0
    assert service["Restart"] == ["always"]


def test_agent_runs_unprivileged_with_only_the_log_groups() -> None:
    service = parse_unit(UNIT)["Service"]

    assert service["User"] == ["tailseal"]
    assert words(service, "SupplementaryGroups") == {"adm", "systemd-journal"}
    assert service["CapabilityBoundingSet"] == [""]
    assert service["StateDirectory"] == ["tailseal"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["PrivateTmp"] == ["yes"]
    assert "@system-service" in words(service, "SystemCallFilter")


def test_reload_needs_no_kill_binary() -> None:
    (reload,) = parse_unit(UNIT)["Service"]["ExecReload"]

    assert reload.split()[0].startswith("/opt/tailseal/bin/")
    assert "kill" not in reload
