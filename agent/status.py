"""``tailseal status``: a human summary of a running agent, from its control endpoint.

Per source what it follows and how far behind it is, per sink the acknowledged seq, the
backlog and the last error, the buffer's use, the stream id and chain head. ``--watch``
refreshes it every two seconds. Exit codes: 0 shown, 1 no agent answered.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

WATCH_INTERVAL = 2.0


def show_status(socket: Path, *, watch: bool, as_json: bool) -> int:
    try:
        while True:
            status = asyncio.run(_fetch(socket))
            if as_json:
                print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
            else:
                if watch and sys.stdout.isatty():
                    print("\033[H\033[2J", end="")
                print(render(status))
            if not watch:
                return 0
            time.sleep(WATCH_INTERVAL)  # the refresh period a person watches
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as exc:
        print(f"tailseal status: no agent answers on {socket}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


async def _fetch(socket: Path) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(socket))
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.get("http://tailseal/status") as resp,
    ):
        status: dict[str, Any] = orjson.loads(await resp.read())
        return status


def render(status: dict[str, Any]) -> str:
    buffer = status["buffer"]
    used = 100 * buffer["bytes"] / buffer["max_bytes"] if buffer["max_bytes"] else 0
    lines = [
        f"tailseal: {status['phase']}" + (f" ({status['reason']})" if status["reason"] else ""),
        f"stream {status['stream']}  seq {status['last_seq']}  head {status['head'][:16]}"
        + (f"  cpus {','.join(map(str, status['cpus']))}" if status.get("cpus") else ""),
        f"buffer {_size(buffer['bytes'])} of {_size(buffer['max_bytes'])} ({used:.1f}%)"
        + ("  BLOCKED: full" if buffer["blocked"] else "")
        + (f"  WRITE ERROR: {buffer['write_error']}" if buffer["write_error"] else ""),
        "sources:",
    ]
    for name, source in status["sources"].items():
        lines.append(
            f"  {name}: {source['records']} records, {_size(source['bytes'])},"
            f" {source['parse_failures']} parse failures"
        )
        lines.extend(
            f"    {file['path']}  offset {file['offset']}  behind {_size(file['lag_bytes'])}"
            f" / {file['lag_seconds']:.1f}s"
            for file in source.get("files", [])
        )
    lines.append("sinks:")
    for name, sink in status["sinks"].items():
        error = f"  last error: {sink['last_error']}" if sink["last_error"] else ""
        kept = sink.get("quarantined", 0)
        refused = f"  QUARANTINED: {kept} records" if kept else ""
        lines.append(
            f"  {name} -> {sink['endpoint']}: acked seq {sink['acked']},"
            f" backlog {sink['backlog']} records{refused}{error}"
        )
    lines.extend(f"termination notice: {notice}" for notice in status.get("notices", []))
    return "\n".join(lines)


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
