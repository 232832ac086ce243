"""Runs the real agent and the real collector as subprocesses on loopback with real TLS.

The collector binds port 0 and writes the port it got to a file; the agent is started, killed
with SIGKILL or stopped with SIGTERM like a host would. Stored records are read back from the
collector's documented storage layout (``streams/<id>/records.ndjson``).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import TlsFiles, eventually_sync

TOKEN = "e2e-token-0123456789"
START_TIMEOUT = 30.0


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", *args], stdout=out, stderr=out, env=env
        )


@dataclass
class CollectorProcess:
    root: Path
    tls: TlsFiles
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def start(self) -> None:
        port_file = self.root / "port"
        port_file.unlink(missing_ok=True)
        config = self.root / "collector.toml"
        config.write_text(
            f"""
host = "127.0.0.1"
port = 0
port_file = "{port_file}"
storage_dir = "{self.storage}"
[tls]
cert_file = "{self.tls.cert_file}"
key_file = "{self.tls.key_file}"
[[tokens]]
name = "e2e"
token = "{TOKEN}"
"""
        )
        self.proc = _spawn(["collector", "-c", str(config)], self.root / "collector.log")
        eventually_sync(port_file.exists, timeout=START_TIMEOUT, what="collector port file")
        self.port = int(port_file.read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def streams(self) -> list[dict[str, Any]]:
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_file))
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/v1/streams",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:  # noqa: S310
            streams: list[dict[str, Any]] = json.load(resp)["streams"]
        return streams

    def held(self) -> int:
        """Total records the collector holds over all streams."""
        return sum(int(s["last_seq"]) for s in self.streams())

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in sorted(self.storage.glob("streams/*/records.ndjson")):
            out.extend(json.loads(line) for line in path.read_bytes().splitlines() if line)
        return out


@dataclass
class AgentProcess:
    root: Path
    collector: CollectorProcess
    sources: dict[str, list[str]]
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    def write_config(self) -> Path:
        token_file = self.root / "token"
        token_file.write_text(TOKEN + "\n")
        sources = "".join(
            f'\n[sources.{name}]\ntype = "file"\npaths = {json.dumps(paths)}\npoll_interval = 0.2\n'
            for name, paths in self.sources.items()
        )
        config = self.root / "agent.toml"
        config.write_text(
            f"""
state_dir = "{self.root / "state"}"
host_name = "e2e-host"
{sources}
[sinks.central]
type = "tailseal"
endpoint = "https://127.0.0.1:{self.collector.port}"
ca_file = "{self.collector.tls.ca_file}"
token_file = "{token_file}"
{self.extra}
"""
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        self.proc = _spawn(["run", "-c", str(config)], self.root / "agent.log")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.exits.append(self.proc.wait(timeout=30))

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.exits.append(code)
        return code

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self) -> str:
        return (self.root / "agent.log").read_text(errors="replace")[-4000:]


def write_lines(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in lines))
