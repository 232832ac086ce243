"""The profile.d shell hook in a real interactive bash and zsh, parsed by the shell parser."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.record import Record
from agent.transforms import build
from tests.packaging.tools import ensure_commands
from tests.transforms.corpus import line_record
from tests.transforms.test_chain import source_config

HOOK = Path(__file__).resolve().parents[2] / "packaging" / "profile.d" / "tailseal.sh"


def run_bash(tmp_path: Path, commands: list[str]) -> list[Record]:
    bash = shutil.which("bash")
    assert bash is not None, "bash is required for the shell hook test"
    return run_shell([bash, "--norc", "--noprofile", "-i"], tmp_path, commands)


def run_zsh(tmp_path: Path, commands: list[str]) -> list[Record]:
    ensure_commands("zsh")  # not on a fresh Debian: installed from its package
    zsh = shutil.which("zsh")
    assert zsh is not None
    return run_shell([zsh, "-f", "-i"], tmp_path, commands)


def run_shell(argv: list[str], tmp_path: Path, commands: list[str]) -> list[Record]:
    """``commands`` typed into an interactive shell (no rc files) that sources the hook; the
    spool's lines through the shell parser."""
    spool = tmp_path / "shell.jsonl"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "USER": "tester",
        "HISTFILE": str(tmp_path / "history"),
        "HISTCONTROL": "ignorespace",
        "TAILSEAL_SHELL_SPOOL": str(spool),
    }
    script = "\n".join([f"source {HOOK}", *commands, "exit"]) + "\n"
    subprocess.run(
        argv,
        input=script.encode(),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    chain = build("shell", source_config(format="shell"))
    return [chain(line_record(line)) for line in spool.read_text().splitlines()]


def test_each_interactive_command_becomes_one_ecs_record(tmp_path: Path) -> None:
    records = run_bash(tmp_path, ["echo hi | cat", "ls /nonexistent-dir", " echo hidden"])
    assert all("parse_failure" not in r.get("tags", ()) for r in records)
    commands = [r for r in records if r["event"]["action"] == "shell_command"]
    assert [c["process"]["command_line"] for c in commands] == [
        "echo hi | cat",
        "ls /nonexistent-dir",
        "echo hidden",  # not in history (ignorespace): the DEBUG trap's copy is used
    ]
    assert [c["process"]["exit_code"] for c in commands] == [0, 2, 0]
    assert commands[1]["event"]["outcome"] == "failure"
    assert commands[0]["user"]["name"] == "tester"
    assert commands[0]["process"]["working_directory"] == str(tmp_path)
    assert commands[0]["process"]["name"] == "bash"


def test_removing_the_hooks_is_recorded_and_undone(tmp_path: Path) -> None:
    records = run_bash(
        tmp_path, ["PROMPT_COMMAND=", "echo one", "trap - DEBUG", "echo two", "echo three"]
    )
    tampers = [r for r in records if r["event"]["action"] == "shell_hook_tampered"]
    assert [t["process"]["command_line"] for t in tampers] == [
        "PROMPT_COMMAND=",
        "DEBUG trap removed",
    ]
    commands = [
        r["process"]["command_line"] for r in records if r["event"]["action"] == "shell_command"
    ]
    assert commands[-4:] == ["echo one", "trap - DEBUG", "echo two", "echo three"]


def test_secrets_typed_at_the_prompt_are_redacted(tmp_path: Path) -> None:
    records = run_bash(tmp_path, ["echo mysql -uroot -pS3cretPw db"])
    (command,) = [r for r in records if r["event"]["action"] == "shell_command"]
    assert "S3cretPw" not in command["msg"]
    assert "S3cretPw" not in command["process"]["command_line"]
    assert "redacted" in command["tags"]


@pytest.mark.slow  # may install zsh
def test_zsh_records_each_interactive_command(tmp_path: Path) -> None:
    # zsh's precmd took its exit status into "local status", which zsh keeps read-only: every
    # prompt failed there and not one command was recorded.
    records = run_zsh(tmp_path, ["echo hi | cat", "ls /nonexistent-dir", "echo mysql -pS3cretPw"])
    assert all("parse_failure" not in r.get("tags", ()) for r in records)
    commands = [r for r in records if r["event"]["action"] == "shell_command"]
    assert [c["process"]["command_line"] for c in commands] == [
        "echo hi | cat",
        "ls /nonexistent-dir",
        "echo mysql -p[REDACTED]",
    ]
    assert [c["process"]["exit_code"] for c in commands] == [0, 2, 0]
    assert commands[0]["process"]["name"] == "zsh"
    assert commands[0]["user"]["name"] == "tester"
    assert commands[0]["process"]["working_directory"] == str(tmp_path)
    assert "S3cretPw" not in str(records)


@pytest.mark.slow  # may install zsh
def test_zsh_hooks_removed_are_recorded_and_put_back(tmp_path: Path) -> None:
    records = run_zsh(
        tmp_path,
        ["precmd_functions=()", "echo one", "preexec_functions=()", "echo two", "echo three"],
    )
    tampers = [r for r in records if r["event"]["action"] == "shell_hook_tampered"]
    assert [t["process"]["command_line"] for t in tampers] == [
        "precmd_functions=()",  # the command that removed it, noticed by the next preexec
        "preexec hook removed",  # noticed by the next precmd
    ]
    commands = [
        r["process"]["command_line"] for r in records if r["event"]["action"] == "shell_command"
    ]
    # The command that removed precmd is in the tamper record; every other one is recorded
    # (preexec is back before echo two).
    assert commands == ["echo one", "preexec_functions=()", "echo two", "echo three"]
