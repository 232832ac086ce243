"""The supervisor: builds the pipeline from config and runs it in one TaskGroup.

Phases (``Lifecycle.phase``): ``starting`` -> ``running`` -> ``draining`` -> ``drained`` or
``stopped`` (stopped before the buffer drained). On a shutdown request (SIGTERM/SIGINT, ``POST
/drain``, a test): (1) sources do a final sweep to the current end of their inputs and return;
(2) the buffer commits what is queued, appends the ``seal`` and closes; (3) sinks ship without
lingering until the buffer is empty or ``shutdown.timeout`` (measured from the request) passes;
(4) what is left is cancelled with a stated reason. Everything acknowledged is durable at every
instant, so a cut-off drain loses nothing: the next start ships the rest. A termination notice
switches on drain mode early (no linger, quick retries) while the host keeps running.

The supervisor owns the components and the lifecycle; signal handlers (cli.py) only call
``Lifecycle.signal``, which sets events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent import transforms
from agent.buffer.wal import Buffer
from agent.config import AgentConfig
from agent.record import now_rfc3339
from agent.sinks.native import NativeSink
from agent.sources import Emit, Pending
from agent.sources.file import FileSource
from agent.transforms import TransformChain, enrich

log = logging.getLogger(__name__)

EX_NOT_DRAINED = 75  # sysexits EX_TEMPFAIL: stopped with records still unshipped (kept on disk)

Phase = Literal["starting", "running", "draining", "drained", "stopped"]


@dataclass
class Lifecycle:
    """Where the agent is in its life, and the events that move it on.

    ``stop``: a shutdown was requested (``reason`` goes into the seal). ``drain``: ship without
    lingering (set by a stop, or early by a termination notice). ``force``: a second signal;
    the CLI exits at once, which is state-safe because everything acknowledged is on disk.
    ``started``: sources run (readiness). ``finished``: the run is over, ``exit_code`` is final.
    """

    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    drain: asyncio.Event = field(default_factory=asyncio.Event)
    force: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    phase: Phase = "starting"
    stop_requested_at: float = 0.0  # loop.time() of the request: the drain deadline counts from it
    exit_code: int | None = None

    def request(self, reason: str) -> None:
        """Ask for a clean stop (idempotent: the first reason wins)."""
        if not self.stop.is_set():
            self.reason = reason
            self.stop_requested_at = time.monotonic()
            self.drain.set()
            self.stop.set()

    def signal(self, name: str) -> None:
        """A signal handler: the first signal stops cleanly, a second one forces."""
        if self.stop.is_set():
            self.force.set()
        else:
            self.request(name)


class Transformed:
    """A source's records on their way to the buffer: parsed and redacted off the event loop.

    The chain is driven by one thread at a time (``self.lock``): the source's batches and the
    periodic flush of held-back auditd events take turns.
    """

    def __init__(self, chain: TransformChain, emit: Emit, flush_every: float) -> None:
        self.chain = chain
        self.emit_to = emit
        self.flush_every = flush_every
        self.lock = asyncio.Lock()
        self.records_in = 0  # metrics: what the source read
        self.bytes_in = 0

    async def emit(self, batch: list[Pending]) -> None:
        self.records_in += len(batch)
        self.bytes_in += sum(len(p.record.get("msg", "")) for p in batch)
        async with self.lock:
            batch = await asyncio.to_thread(self.chain.apply, batch)
        await self.emit_to(batch)

    async def flush(self, *, final: bool = False) -> None:
        async with self.lock:
            made = await asyncio.to_thread(self.chain.flush, final=final)
        if made:
            await self.emit_to(made)

    async def flush_periodically(self, stop: asyncio.Event) -> None:
        """Release held events as they age; returns (never mid-flush) once ``stop`` is set."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_every)
            if stop.is_set():
                return
            await self.flush()


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.host: dict[str, Any] = {"name": config.host_name or socket.gethostname()}
        self.buffer: Buffer | None = None
        self.sinks: list[NativeSink] = []
        self.sources: dict[str, FileSource] = {}
        self.transforms: dict[str, Transformed] = {}
        self.notices: list[dict[str, Any]] = []

    async def run(self, life: Lifecycle) -> int:
        """Run until a stop is requested and the drain ends; returns the process exit code."""
        state_dir = Path(self.config.state_dir)
        try:
            buffer = await asyncio.to_thread(
                Buffer.open, state_dir, self.config.buffer, list(self.config.sinks)
            )
            self.buffer = buffer
            try:
                life.exit_code = await self._run(buffer, life)
            finally:
                await asyncio.to_thread(buffer.stop)
        except BaseException:
            life.phase = "stopped"
            life.exit_code = life.exit_code if life.exit_code is not None else 1
            raise
        finally:
            life.finished.set()
        return life.exit_code

    async def notice(self, kind: str, detail: dict[str, Any]) -> None:
        """A termination notice: record it in the stream and ship without lingering from now."""
        if self.buffer is None:
            return
        record = {
            "type": "notice",
            "ts": now_rfc3339(),
            "src": "tailseal",
            "msg": f"termination notice: {kind}",
            "notice": {"kind": kind, **detail},
        }
        self.notices.append(record)
        await self.buffer.emit([Pending(record, None)])

    async def _run(self, buffer: Buffer, life: Lifecycle) -> int:
        self.host = await enrich.host_info(self.config)
        self.sinks = [
            NativeSink(name, cfg, buffer, self.host, life.drain)
            for name, cfg in self.config.sinks.items()
        ]
        self.transforms = {
            name: Transformed(transforms.build(name, cfg), buffer.emit, cfg.parser.audit_timeout)
            for name, cfg in self.config.sources.items()
        }
        self.sources = {
            name: FileSource(
                name, cfg, buffer.checkpoints_for(name), self.transforms[name].emit, life.stop
            )
            for name, cfg in self.config.sources.items()
        }
        log.info(
            "agent started: stream %s, last seq %d, %d sources, %d sinks",
            buffer.stream_id,
            buffer.last_seq,
            len(self.sources),
            len(self.sinks),
        )
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(buffer.run(), name="buffer-writer")
            sink_tasks = [group.create_task(s.run(), name=f"sink:{s.name}") for s in self.sinks]
            flushers = [
                group.create_task(t.flush_periodically(life.stop), name=f"flush:{name}")
                for name, t in self.transforms.items()
                if t.chain.audit is not None
            ]
            async with asyncio.TaskGroup() as source_group:
                for name, source in self.sources.items():
                    source_group.create_task(source.run(), name=f"source:{name}")
                life.phase = "running"
                life.started.set()
            await asyncio.gather(*flushers)
            for transformed in self.transforms.values():
                await transformed.flush(final=True)  # held-back auditd events ship too
            life.phase = "draining"
            log.info("shutdown (%s): sources swept, draining", life.reason)
            await buffer.close(life.reason or "stopped")
            await writer
            remaining = self.config.shutdown.timeout - (time.monotonic() - life.stop_requested_at)
            _, pending = await asyncio.wait(sink_tasks, timeout=max(0.0, remaining))
            for task in pending:
                task.cancel(f"shutdown.timeout of {self.config.shutdown.timeout}s passed")
        backlog = {s.name: buffer.backlog(s.name) for s in self.sinks}
        if any(backlog.values()):
            life.phase = "stopped"
            log.error("stopped before the buffer drained; unshipped records: %s", backlog)
            return EX_NOT_DRAINED
        life.phase = "drained"
        log.info("drained and sealed at seq %d", buffer.last_seq)
        return 0

    def status(self, life: Lifecycle) -> dict[str, Any]:
        """A JSON-able snapshot for ``/status``, ``tailseal drain`` and sd_notify STATUS=."""
        buffer = self.buffer
        sinks: dict[str, dict[str, Any]] = {
            s.name: {
                "acked": buffer.cursors[s.name][0] if buffer else 0,
                "backlog": buffer.backlog(s.name) if buffer else 0,
                "batches_sent": s.batches_sent,
                "last_error": s.last_error,
                "endpoint": s.config.endpoint,
            }
            for s in self.sinks
        }
        return {
            "phase": life.phase,
            "reason": life.reason,
            "drain": life.drain.is_set(),
            "stream": buffer.stream_id if buffer else "",
            "last_seq": buffer.last_seq if buffer else 0,
            "head": buffer.last_h.hex() if buffer else "",
            "backlog": max((int(v["backlog"]) for v in sinks.values()), default=0),
            "buffer": {
                "bytes": buffer.total_bytes() if buffer else 0,
                "max_bytes": self.config.buffer.max_bytes,
                "blocked": buffer.blocked if buffer else False,
                "write_error": buffer.write_error if buffer else "",
                "oldest_unacked_age": buffer.oldest_unacked_age() if buffer else 0.0,
            },
            "sinks": sinks,
            "sources": {name: self._source_status(name) for name in sorted(self.sources)},
            "notices": [n["notice"] for n in self.notices],
            "exit_code": life.exit_code,
        }

    def _source_status(self, name: str) -> dict[str, Any]:
        transformed = self.transforms.get(name)
        status: dict[str, Any] = {
            "records": transformed.records_in if transformed else 0,
            "bytes": transformed.bytes_in if transformed else 0,
            "parse_failures": transformed.chain.stats.parse_failures if transformed else 0,
        }
        detail = getattr(self.sources[name], "status", None)
        if callable(detail):  # e.g. the file source: files followed, their lag
            status.update(detail())
        return status
