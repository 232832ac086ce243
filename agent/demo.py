"""``tailseal demo``: the whole pipeline on loopback, on embedded defaults.

Makes a throwaway CA and server certificate, starts the reference collector and the agent as
child processes (in their own process groups, so Ctrl-C reaches only the demo, which then stops
the agent first — it drains and seals — and the collector last), writes realistic auth, shell
and access-log lines into a demo log, and shows what arrived at the collector and where it is
stored. Everything lives under one directory (``demo-state/`` by default).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUTH_LOG = Path("/var/log/auth.log")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0

SAMPLES = [
    (
        "{ts} demo-host sshd[2314]: Accepted publickey for alice from 203.0.113.7 port 50122 ssh2: "
        "ED25519 SHA256:Zp3yq0"
    ),
    (
        "{ts} demo-host sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
        "COMMAND=/usr/bin/systemctl restart nginx"
    ),
    (
        "{ts} demo-host sshd[2388]: Failed password for invalid user admin from 198.51.100.23 port "
        "41866 ssh2"
    ),
    (
        "{ts} demo-host useradd[2401]: new user: name=deploy, UID=1002, GID=1002, "
        "home=/home/deploy, "
        "shell=/bin/bash, from=/dev/pts/0"
    ),
    '198.51.100.4 - - [{clf}] "GET /api/v1/orders?page=2 HTTP/1.1" 200 5123 "-" "curl/8.5.0"',
    (
        '{{"time":"{iso}","user":"alice","uid":1000,"tty":"pts/0","cwd":"/srv/app",'
        '"command":"git pull --ff-only","exit":0,"session":"4f2a"}}'
    ),
]


@dataclass(frozen=True)
class DemoTls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path) -> DemoTls:
    """A throwaway CA and a server certificate for 127.0.0.1, localhost and ::1, as PEM files."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    directory.mkdir(parents=True, exist_ok=True)
    files = DemoTls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca_file))
    server.cert_chain_pems[0].write_to_path(str(files.cert_file))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(files.cert_file), append=True)
    server.private_key_pem.write_to_path(str(files.key_file))
    files.key_file.chmod(0o600)
    return files


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", *args],
            stdout=out,
            stderr=out,
            start_new_session=True,  # Ctrl-C goes to the demo only; it stops children in order
        )


def _wait_for_port(port_file: Path, proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the collector did not start; its log:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return int(port_file.read_text())


def _write_configs(root: Path, tls: DemoTls, token: str) -> tuple[Path, Path, list[str]]:
    (root / "token").write_text(token + "\n")
    (root / "token").chmod(0o600)
    collector = root / "collector.toml"
    collector.write_text(
        f'host = "127.0.0.1"\nport = 0\nport_file = "{root / "collector.port"}"\n'
        f'storage_dir = "{root / "collector"}"\n'
        f'[tls]\ncert_file = "{tls.cert_file}"\nkey_file = "{tls.key_file}"\n'
        f'[[tokens]]\nname = "demo"\ntoken_file = "{root / "token"}"\n'
    )
    paths = [str(root / "logs" / "*.log")]
    if os.access(AUTH_LOG, os.R_OK):
        paths.append(str(AUTH_LOG))
    return collector, root / "agent.toml", paths


def _agent_config(path: Path, root: Path, tls: DemoTls, port: int, paths: list[str]) -> None:
    path.write_text(
        f'state_dir = "{root / "agent-state"}"\n\n[sources.demo]\ntype = "file"\n'
        f"paths = {json.dumps(paths)}\npoll_interval = 0.5\n\n"
        f'[sinks.collector]\ntype = "tailseal"\nendpoint = "https://127.0.0.1:{port}"\n'
        f'ca_file = "{tls.ca_file}"\ntoken_file = "{root / "token"}"\n'
        "\n[shutdown]\ntimeout = 20.0\n"
    )


class Viewer:
    """Shows the operator what the collector holds, by reading its API and its storage."""

    def __init__(self, port: int, token: str, tls: DemoTls, storage: Path) -> None:
        self.url = f"https://127.0.0.1:{port}/v1/streams"
        self.token = token
        self.ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        self.storage = storage
        self.offsets: dict[Path, int] = {}

    def streams(self) -> list[dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310 (our own https:// URL)
            self.url, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, context=self.ctx, timeout=5) as resp:  # noqa: S310
            streams: list[dict[str, Any]] = json.load(resp)["streams"]
        return streams

    def show_new(self) -> int:
        shown = 0
        for path in sorted(self.storage.glob("streams/*/records.ndjson")):
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.offsets[path] = self.offsets.get(path, 0) + len(complete)
            for line in complete.splitlines():
                record = json.loads(line)
                kind = record.get("type", record.get("src", "?"))
                print(f"  seq {record['seq']:>5}  [{kind}] {record.get('msg', '')[:100]}")
                shown += 1
        return shown


def _sample_line(n: int) -> str:
    now = time.gmtime()
    return SAMPLES[n % len(SAMPLES)].format(
        ts=time.strftime("%b %e %H:%M:%S", now),
        clf=time.strftime("%d/%b/%Y:%H:%M:%S +0000", now),
        iso=time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
    )


def run_demo(root: Path, lines: int = 0) -> int:
    """Run the demo until Ctrl-C (or until ``lines`` demo lines were written and shipped)."""
    root = root.resolve()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    tls = make_tls_files(root / "tls")
    token = secrets.token_urlsafe(24)
    collector_toml, agent_toml, paths = _write_configs(root, tls, token)
    (root / "collector.port").unlink(missing_ok=True)
    collector = _spawn(["collector", "-c", str(collector_toml)], root / "collector.log")
    agent: subprocess.Popen[bytes] | None = None
    viewer: Viewer | None = None
    try:
        port = _wait_for_port(root / "collector.port", collector, root / "collector.log")
        _agent_config(agent_toml, root, tls, port, paths)
        agent = _spawn(["run", "-c", str(agent_toml)], root / "agent.log")
        print(f"collector: https://127.0.0.1:{port} (TLS, throwaway CA {tls.ca_file})")
        print(f"agent:     tailing {', '.join(paths)}; state in {root / 'agent-state'}")
        print(f"logs:      {root / 'agent.log'}, {root / 'collector.log'}")
        print("writing demo lines to logs/app.log; records as the collector stores them:")
        viewer = Viewer(port, token, tls, root / "collector")
        _loop(root, viewer, agent, lines)
    except KeyboardInterrupt:
        print("\nCtrl-C: stopping the agent (drain + seal), then the collector")
    finally:
        code = _stop(agent, collector)
    if viewer is not None:
        viewer.show_new()  # what the drain shipped, the seal last
    return _summary(root, code)


def _loop(root: Path, viewer: Viewer, agent: subprocess.Popen[bytes], lines: int) -> None:
    log = root / "logs" / "app.log"
    for n in itertools.count():
        if lines and n >= lines:
            break
        with log.open("a", encoding="utf-8") as out:
            out.write(_sample_line(n) + "\n")
        if agent.poll() is not None:
            raise SystemExit(f"the agent exited ({agent.returncode}); see {root / 'agent.log'}")
        time.sleep(1.0 if not lines else 0.1)  # pacing for a human watching, not a sync
        viewer.show_new()
    deadline = time.monotonic() + START_TIMEOUT
    while sum(s["last_seq"] for s in viewer.streams()) < lines and time.monotonic() < deadline:
        time.sleep(0.1)
        viewer.show_new()
    viewer.show_new()


def _stop(agent: subprocess.Popen[bytes] | None, collector: subprocess.Popen[bytes]) -> int | None:
    code = None
    if agent is not None and agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=STOP_TIMEOUT)
    elif agent is not None:
        code = agent.returncode
    if collector.poll() is None:
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=STOP_TIMEOUT)
    return code


def _summary(root: Path, agent_code: int | None) -> int:
    storage = root / "collector" / "streams"
    print()
    status = {0: "drained and sealed", None: "not started"}.get(agent_code, "NOT drained")
    print(f"agent exited {agent_code} ({status})")
    for head in sorted(storage.glob("*/head.json")):
        info = json.loads(head.read_text())
        print(
            f"stream {info['stream']}: {info['last_seq']} records, state {info['state']}, "
            f"stored in {head.parent}"
        )
    return 0 if agent_code == 0 else 1
