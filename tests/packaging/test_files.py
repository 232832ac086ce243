"""The files the packages install: a valid stock config and maintainer scripts that parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import FileSourceConfig, load_agent_config
from tests.packaging.tools import REPO, ensure_commands, run

SCRIPTS = sorted((REPO / "packaging" / "scripts").glob("*.sh"))
BASH_SCRIPTS = [REPO / "packaging" / "build.sh", REPO / "packaging" / "install.sh"]


def test_stock_config_is_valid_and_ships_auth_and_shell_logs() -> None:
    config = load_agent_config(REPO / "packaging" / "config" / "tailseal.toml")

    auth, shell = config.sources["auth"], config.sources["shell"]
    assert config.state_dir == "/var/lib/tailseal"
    assert isinstance(auth, FileSourceConfig)
    assert "/var/log/auth.log" in auth.paths
    assert isinstance(shell, FileSourceConfig)
    assert shell.paths == ["/var/log/tailseal/shell.jsonl"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_maintainer_scripts_are_posix_sh(script: Path) -> None:
    assert script.read_text().startswith("#!/bin/sh\n")
    run(["sh", "-n", script], timeout=30)


@pytest.mark.parametrize("script", BASH_SCRIPTS, ids=lambda p: p.name)
def test_build_and_install_scripts_parse(script: Path) -> None:
    run(["bash", "-n", script], timeout=30)


def test_packaging_shell_scripts_pass_shellcheck() -> None:
    ensure_commands("shellcheck")
    result = run(["shellcheck", *SCRIPTS, *BASH_SCRIPTS], timeout=60, check=False)

    assert result.returncode == 0, result.stdout
