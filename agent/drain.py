"""``tailseal drain``: ask the running agent to drain, show the backlog going down, report.

For Kubernetes preStop hooks and ASG lifecycle scripts. It posts to the agent's control socket
and renders the NDJSON progress lines the agent streams until its run is over. Exit codes:
0 the agent drained and sealed; 1 it stopped with records left (they stay on disk), the
timeout passed, or no agent answered.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from agent.config import load_agent_config
from agent.control import socket_path
from agent.errors import ConfigError

BAR_WIDTH = 30
SILENCE = 30.0  # seconds without a progress line (the agent sends 4 a second) before giving up


def control_socket(config_path: str, socket: str) -> Path:
    """The agent's control socket: ``socket`` if given, else from its config file."""
    return Path(socket) if socket else _socket_from_config(Path(config_path))


def drain_agent(config_path: str, socket: str, timeout: float) -> int:
    path = control_socket(config_path, socket)
    try:
        return asyncio.run(_drain(path, timeout or None))
    except TimeoutError:
        print(f"\ntailseal drain: still draining after {timeout:g}s; giving up", file=sys.stderr)
        return 1


def _socket_from_config(config_path: Path) -> Path:
    path = socket_path(load_agent_config(config_path))
    if path is None:
        raise ConfigError("control.socket", "the control socket is off; pass --socket")
    return path


async def _drain(path: Path, limit: float | None) -> int:
    connector = aiohttp.UnixConnector(path=str(path))
    client_timeout = aiohttp.ClientTimeout(total=None, sock_read=SILENCE)
    last: dict[str, Any] = {}
    progress = Progress()
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session,
            asyncio.timeout(limit),
            session.post("http://tailseal/drain") as resp,
        ):
            if resp.status != 200:
                print(f"tailseal drain: agent answered {resp.status}", file=sys.stderr)
                return 1
            try:
                async for line in resp.content:
                    if line.strip():
                        last = orjson.loads(line)
                        progress.show(last)
            except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
                # Silent for SILENCE seconds, or killed (SIGKILL, a second signal's forced exit)
                # with the answer half sent.
                progress.done()
                why = (
                    f"no word from the agent for {SILENCE:g}s; giving up"
                    if isinstance(exc, aiohttp.ServerTimeoutError)
                    else f"the agent went away during the drain ({exc})"
                )
                print(f"tailseal drain: {why}; {_last_seen(last)}", file=sys.stderr)
                return 1
    except (aiohttp.ClientConnectionError, FileNotFoundError) as exc:
        print(f"tailseal drain: no agent answers on {path}: {exc}", file=sys.stderr)
        return 1
    progress.done()
    if last.get("phase") == "drained":
        print(f"drained and sealed at seq {last.get('last_seq')}", file=sys.stderr)
        return 0
    print(
        f"tailseal drain: agent stopped in phase {last.get('phase')!r} with "
        f"{last.get('backlog')} records unshipped (kept on disk)",
        file=sys.stderr,
    )
    return 1


def _last_seen(status: dict[str, Any]) -> str:
    if not status:
        return "no progress was reported"
    return (
        f"last seen in phase {status.get('phase')!r} with {status.get('backlog')} records "
        "unshipped (kept on disk)"
    )


class Progress:
    """A one-line progress bar on a terminal; a line per second otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.peak = 0
        self.printed = 0.0

    def show(self, status: dict[str, Any]) -> None:
        backlog = int(status.get("backlog") or 0)
        self.peak = max(self.peak, backlog)
        done = 1.0 if self.peak == 0 else 1 - backlog / self.peak
        filled = int(done * BAR_WIDTH)
        text = (
            f"{status.get('phase', '?'):>9} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{backlog} records left, seq {status.get('last_seq')}"
        )
        if self.tty:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
        elif time.monotonic() - self.printed >= 1.0 or status.get("exit_code") is not None:
            self.printed = time.monotonic()
            print(text, file=sys.stderr)

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def reload_agent(config_path: str, socket: str) -> int:
    """``tailseal reload``: the running agent re-reads its config file (for ExecReload=)."""
    path = control_socket(config_path, socket)
    try:
        status, outcome = asyncio.run(_post(path, "/reload"))
    except (aiohttp.ClientConnectionError, FileNotFoundError) as exc:
        print(f"tailseal reload: no agent answers on {path}: {exc}", file=sys.stderr)
        return 1
    if status == 200:
        print(f"reloaded: {outcome.get('summary')}", file=sys.stderr)
        for name in outcome.get("restart_needed", []):
            print(f"  {name} changed: takes effect after a restart", file=sys.stderr)
        return 0
    print(f"tailseal reload: {outcome.get('error', status)}", file=sys.stderr)
    return 1


async def _post(path: Path, route: str) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.UnixConnector(path=str(path))
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.post(f"http://tailseal{route}") as resp,
    ):
        return resp.status, orjson.loads(await resp.read())
