"""The profile.d shell hook, run in a real interactive bash, parsed by the shell parser."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from agent.record import Record
from agent.transforms import build
from tests.transforms.corpus import line_record
from tests.transforms.test_chain import source_config

HOOK = Path(__file__).resolve().parents[2] / "packaging" / "profile.d" / "tailseal.sh"


def run_bash(tmp_path: Path, commands: list[str]) -> list[Record]:
    bash = shutil.which("bash")
    assert bash is not None, "bash is required for the shell hook test"
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
        [bash, "--norc", "--noprofile", "-i"],
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
