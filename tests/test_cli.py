"""The command line's own errors: one line naming the problem, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def run_agent(tmp_path: Path, state: Path) -> subprocess.CompletedProcess[str]:
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{state}"\n'
        f'[control]\nsocket = "{tmp_path / "control.sock"}"\n'
        f'[sources.app]\ntype = "file"\npaths = ["{logs}/*.log"]\n'
        '[sinks.central]\ntype = "tailseal"\nendpoint = "https://127.0.0.1:1"\n'
        '[termination]\nec2 = "off"\ngcp = "off"\nazure = "off"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"stream_id": 5}', "stream.json"),
        (b"{", "stream.json"),
        # Not the protocol's: the collector refused every batch, for ever (400 on the header).
        (b'{"stream_id": "bad_id/../x"}', "is not [A-Za-z0-9-]{1,64}"),
        (b'{"stream_id": ""}', "is not [A-Za-z0-9-]{1,64}"),
    ],
    ids=["wrong type", "torn", "not the protocol's", "empty"],
)
def test_a_state_file_refused_at_start_is_one_line_not_a_traceback(
    tmp_path: Path, content: bytes, says: str
) -> None:
    # The agent runs in task groups: its StateError came out wrapped in an ExceptionGroup,
    # printed as pages of traceback with the message buried in them.
    state = tmp_path / "state"
    (state / "buffer").mkdir(parents=True)
    (state / "buffer" / "stream.json").write_bytes(content)

    result = run_agent(tmp_path, state)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert says in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("tailseal: ")


@pytest.mark.parametrize(
    "args",
    [
        ["drain", "--socket", "/nonexistent.sock", "--timeout", "nan"],
        ["drain", "--socket", "/nonexistent.sock", "--timeout", "-1"],
        ["drain", "--socket", "/nonexistent.sock", "--timeout", "inf"],
        ["demo", "--lines", "-5"],
    ],
    ids=["timeout nan", "timeout negative", "timeout inf", "lines negative"],
)
def test_a_bad_number_on_the_command_line_is_a_usage_error(args: list[str]) -> None:
    # `tailseal drain --timeout nan` gave up at once ("still draining after nans").
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2  # argparse's usage error
    assert "(0 or more)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda buffer: (buffer / "cursors").write_text("a file"), "cursors"),
        (lambda buffer: (buffer / "lock").mkdir(), "lock"),
        (lambda buffer: (buffer / "stream.json.tmp").mkdir(), "stream.json"),
    ],
    ids=["cursors a file", "lock a directory", "stream.json.tmp a directory"],
)
def test_a_wrong_kind_of_file_in_the_state_dir_is_one_line(
    tmp_path: Path, make: Callable[[Path], object], says: str
) -> None:
    # These raised the OS's own error (FileExistsError, IsADirectoryError): a traceback
    # without the state file's name in a sentence.
    buffer = tmp_path / "state" / "buffer"
    buffer.mkdir(parents=True)
    make(buffer)

    result = run_agent(tmp_path, tmp_path / "state")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("tailseal: ")
    assert says in last
