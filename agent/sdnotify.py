"""systemd ``Type=notify`` integration with the sd_notify datagram protocol (no libsystemd).

``NOTIFY_SOCKET`` names a unix datagram socket (``@name`` for the abstract namespace); each
message is newline-separated ``KEY=VALUE`` assignments. We send ``READY=1`` once the sources
run, ``STATUS=`` with the backlog, ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while the event
loop is alive, ``STOPPING=1`` when the shutdown starts and ``EXTEND_TIMEOUT_USEC=`` while
draining so systemd waits for the drain instead of killing us mid-way. Without NOTIFY_SOCKET
every call is a no-op. Sending never raises: systemd going away must not stop the agent.

Owned by the supervisor's notifier task (``run``); nothing else sends.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from agent.pipeline import Agent, Lifecycle, first_of

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates while running
EXTEND_MARGIN = 5.0  # seconds added to the remaining drain budget in EXTEND_TIMEOUT_USEC


class SdNotify:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            self.watchdog = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str | int) -> None:
        if not self.address:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify to %r failed: %s", self.address, exc)

    async def run(self, agent: Agent, life: Lifecycle, budget: float) -> None:
        """Tell systemd what the agent is doing until the run is over."""
        if not self.enabled:
            return
        try:
            await first_of(life.started, life.finished)
            self.send(READY=1, STATUS=_status_line(agent, life))
            interval = min(STATUS_INTERVAL, self.watchdog / 2 if self.watchdog else STATUS_INTERVAL)
            stopping = False
            while not life.finished.is_set():
                if self.watchdog:
                    self.send(WATCHDOG=1)
                if life.stop.is_set():
                    left = budget - (time.monotonic() - life.stop_requested_at)
                    extend = int((max(left, 0) + EXTEND_MARGIN) * 1e6)
                    if stopping:
                        self.send(EXTEND_TIMEOUT_USEC=extend)
                    else:
                        stopping = True
                        self.send(STOPPING=1, EXTEND_TIMEOUT_USEC=extend)
                self.send(STATUS=_status_line(agent, life))
                # Wake at once on the stop request: STOPPING=1 must not wait for a tick.
                wake = [life.finished] if stopping else [life.finished, life.stop]
                await first_of(*wake, within=interval)
        finally:
            self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_line(agent: Agent, life: Lifecycle) -> str:
    status = agent.status(life)
    return f"{life.phase}: seq {status['last_seq']}, backlog {status['backlog']}"
