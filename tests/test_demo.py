"""The README's demo command runs the whole pipeline and ends with a sealed stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_ships_its_lines_and_seals_the_stream(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--lines", "4", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agent exited 0 (drained and sealed)" in result.stdout
    assert "[seal] stream sealed: agent stopped (SIGTERM)" in result.stdout
    (head,) = tmp_path.glob("collector/streams/*/head.json")
    info = json.loads(head.read_text())
    assert info["state"] == "sealed"
    assert info["last_seq"] == 5  # four demo lines and the seal
    stored = (head.parent / "records.ndjson").read_text().splitlines()
    assert "Accepted publickey for alice" in json.loads(stored[0])["msg"]
