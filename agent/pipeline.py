"""The supervisor: builds the pipeline from config and runs it in one TaskGroup.

Phases: (1) sources, the buffer writer and the sinks run until the shutdown event is set;
(2) sources do a final sweep to the current end of their inputs and return; (3) the buffer
commits what is queued, appends the ``seal`` and closes; (4) sinks ship without lingering until
the buffer is empty or the shutdown deadline (measured from the shutdown request) passes; then
the remaining sink tasks are cancelled with a stated reason. Everything acknowledged is durable
at every instant, so a cut-off drain loses nothing: the next start ships the rest.

The supervisor owns the components; signal handlers (in cli.py) only set the ``Shutdown`` event.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from agent.buffer.wal import Buffer
from agent.config import AgentConfig
from agent.sinks.native import NativeSink
from agent.sources.file import FileSource

log = logging.getLogger(__name__)

EX_NOT_DRAINED = 75  # sysexits EX_TEMPFAIL: stopped with records still unshipped (kept on disk)


@dataclass
class Shutdown:
    """Set by signal handlers, a termination notice or a test; ``reason`` goes into the seal."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    def request(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.host = {"name": config.host_name or socket.gethostname()}
        self.buffer: Buffer | None = None
        self.sinks: list[NativeSink] = []

    async def run(self, shutdown: Shutdown) -> int:
        """Run until ``shutdown`` is requested and the drain ends; the process exit code."""
        state_dir = Path(self.config.state_dir)
        buffer = await asyncio.to_thread(
            Buffer.open, state_dir, self.config.buffer, list(self.config.sinks)
        )
        self.buffer = buffer
        try:
            return await self._run(buffer, shutdown)
        finally:
            await asyncio.to_thread(buffer.stop)

    async def _run(self, buffer: Buffer, shutdown: Shutdown) -> int:
        loop = asyncio.get_running_loop()
        drain = asyncio.Event()
        self.sinks = [
            NativeSink(name, cfg, buffer, self.host, drain)
            for name, cfg in self.config.sinks.items()
        ]
        sources = {
            name: FileSource(name, cfg, buffer.checkpoints_for(name), buffer.emit, shutdown.event)
            for name, cfg in self.config.sources.items()
        }
        log.info(
            "agent started: stream %s, last seq %d, %d sources, %d sinks",
            buffer.stream_id,
            buffer.last_seq,
            len(sources),
            len(self.sinks),
        )
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(buffer.run(), name="buffer-writer")
            sink_tasks = [group.create_task(s.run(), name=f"sink:{s.name}") for s in self.sinks]
            async with asyncio.TaskGroup() as source_group:
                for name, source in sources.items():
                    source_group.create_task(source.run(), name=f"source:{name}")
            deadline = loop.time() + self.config.shutdown.timeout
            log.info("shutdown (%s): sources swept, draining", shutdown.reason)
            drain.set()
            await buffer.close(shutdown.reason or "stopped")
            await writer
            remaining = max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(sink_tasks, timeout=remaining)
            for task in pending:
                task.cancel(f"shutdown.timeout of {self.config.shutdown.timeout}s passed")
        backlog = {s.name: buffer.backlog(s.name) for s in self.sinks}
        if any(backlog.values()):
            log.error("stopped before the buffer drained; unshipped records: %s", backlog)
            return EX_NOT_DRAINED
        log.info("drained and sealed at seq %d", buffer.last_seq)
        return 0
