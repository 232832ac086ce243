"""Runs the real agent and the real collector as subprocesses on loopback with real TLS.

The collector binds port 0 and writes the port it got to a file; the agent is started, killed
with SIGKILL or stopped with SIGTERM like a host would. Stored records are read back from the
collector's documented storage layout (``streams/<id>/records.ndjson``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import TlsFiles, eventually_sync

TOKEN = "e2e-token-0123456789"
# Test traffic stays on loopback: no metadata service is asked unless a test points one at a
# local fake (whatever the DMI data of the machine running the tests says).
NO_CLOUD = '[termination]\nec2 = "off"\ngcp = "off"\nazure = "off"\n'
START_TIMEOUT = 30.0


def _spawn(
    args: list[str], log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
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
    extra: str = ""  # more top-level collector settings (TOML lines), e.g. "silent_after = 2"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def start(self, port: int = 0) -> None:
        """Start (again); ``port`` > 0 binds that port, e.g. to come back where agents expect."""
        port_file = self.root / "port"
        port_file.unlink(missing_ok=True)
        config = self.root / "collector.toml"
        config.write_text(
            f"""
host = "127.0.0.1"
port = {port}
port_file = "{port_file}"
storage_dir = "{self.storage}"
{self.extra}
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

    def held_on_disk(self) -> int:
        """``held`` read from the streams' ``head.json`` files (replaced atomically after the
        records are fsynced, before the reply): no request, so polling it costs the collector
        no CPU (bench/ measures that CPU)."""
        total = 0
        for path in self.storage.glob("streams/*/head.json"):
            with contextlib.suppress(FileNotFoundError):
                total += int(json.loads(path.read_bytes())["last_seq"])
        return total

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
    extra: str = ""  # more [sinks.central] settings (TOML lines)
    source_options: str = ""  # more settings for every source table, e.g. parser = {...}
    tables: str = ""  # more tables at the end, e.g. "[shutdown]\ntimeout = 3"
    endpoint: str = ""  # overrides the collector's URL (e.g. a server that never answers)
    env: dict[str, str] = field(default_factory=dict)
    control_listen: str = ""  # e.g. "127.0.0.1:7879" for HTTP probes and scrapes
    # Tests poll fast so a missed inotify event costs little time; None: the agent's default.
    poll_interval: float | None = 0.2
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)
    # A unix socket path must stay under 108 bytes; pytest's tmp_path can be longer.
    control_socket: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp")) / "control.sock"
    )

    def write_config(self) -> Path:
        token_file = self.root / "token"
        token_file.write_text(TOKEN + "\n")
        poll = "" if self.poll_interval is None else f"poll_interval = {self.poll_interval}\n"
        sources = "".join(
            f'\n[sources.{name}]\ntype = "file"\npaths = {json.dumps(paths)}\n{poll}'
            f"{self.source_options}\n"
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
endpoint = "{self.endpoint or f"https://127.0.0.1:{self.collector.port}"}"
ca_file = "{self.collector.tls.ca_file}"
token_file = "{token_file}"
{self.extra}
[control]
socket = "{self.control_socket}"
listen = "{self.control_listen}"
{self.tables}
{"" if "[termination]" in self.tables else NO_CLOUD}
"""
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        self.proc = _spawn(["run", "-c", str(config)], self.root / "agent.log", self.env)

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

    def status(self) -> dict[str, Any]:
        """GET /status from the agent's control socket (raises OSError while it is not up)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(self.control_socket))
            conn.sendall(b"GET /status HTTP/1.0\r\nHost: tailseal\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        status: dict[str, Any] = json.loads(data.split(b"\r\n\r\n", 1)[1])
        return status

    def status_or_none(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except OSError:
            return None

    def log_tail(self) -> str:
        return (self.root / "agent.log").read_text(errors="replace")[-4000:]


def write_lines(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in lines))


def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    """``tailseal verify`` as the operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
