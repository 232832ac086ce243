"""systemd notify protocol: a real agent process talking to a real datagram socket."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import SdNotify
from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, Path]]:
    path = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp")) / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    yield sock, path
    sock.close()


def receive_until(sock: socket.socket, wanted: str, seen: list[str], timeout: float) -> None:
    """Collect datagrams until one assigns ``wanted`` (e.g. "READY=1")."""
    deadline = time.monotonic() + timeout
    while not any(wanted in message.split("\n") for message in seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {wanted} within {timeout}s; got {seen}")
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue


def assignments(seen: list[str], key: str) -> list[str]:
    return [line for m in seen for line in m.split("\n") if line.startswith(key + "=")]


@pytest.mark.slow
def test_agent_reports_ready_watchdog_stopping_and_extends_timeout_while_draining(
    tmp_path: Path,
    collector: CollectorProcess,
    notify_socket: tuple[socket.socket, Path],
) -> None:
    sock, path = notify_socket
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.log", ["hello"] * 10)
    root = tmp_path / "agent"
    root.mkdir()
    agent = AgentProcess(
        root,
        collector,
        sources={"app": [str(logs / "*.log")]},
        env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"},
    )
    agent.start()
    seen: list[str] = []
    try:
        receive_until(sock, "READY=1", seen, timeout=30)
        seen.clear()
        receive_until(sock, "WATCHDOG=1", seen, timeout=5)  # every WATCHDOG_USEC / 2
        assert agent.terminate() == 0
        seen_after: list[str] = []
        receive_until(sock, "STOPPING=1", seen_after, timeout=5)
    finally:
        agent.cleanup()
    extend = assignments(seen_after, "EXTEND_TIMEOUT_USEC")
    assert extend, f"no EXTEND_TIMEOUT_USEC while draining: {seen_after}"
    assert 0 < int(extend[0].split("=")[1]) <= 31_000_000  # 25 s budget + 5 s margin
    assert any("seq" in s for s in assignments(seen + seen_after, "STATUS"))


def test_abstract_socket_names_and_absent_socket() -> None:
    assert SdNotify({"NOTIFY_SOCKET": "@tailseal/test"}).address == "\0tailseal/test"
    quiet = SdNotify({})
    assert not quiet.enabled
    quiet.send(READY=1)  # a no-op, never an error


def test_watchdog_is_only_for_this_process() -> None:
    assert SdNotify({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000"}).watchdog == 2.0
    other = SdNotify({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert other.watchdog is None


def test_unreachable_notify_socket_never_raises(tmp_path: Path) -> None:
    notifier = SdNotify({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    try:
        notifier.send(READY=1)
        notifier.send(STATUS="still fine")
    finally:
        notifier.close()
