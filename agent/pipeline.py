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
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Literal

from agent import reload, transforms
from agent.buffer import special
from agent.buffer.wal import Buffer
from agent.config import (
    AgentConfig,
    JournaldSourceConfig,
    SinkConfig,
    SourceConfig,
    load_agent_config,
)
from agent.errors import ConfigError
from agent.runtime import trim_malloc
from agent.sinks.native import NativeSink
from agent.sources import Emit, Item, Pending, PlainRun, record_count
from agent.sources.file import FileSource
from agent.sources.journald import JournaldSource
from agent.threads import in_thread
from agent.transforms import TransformChain, enrich

log = logging.getLogger(__name__)

EX_NOT_DRAINED = 75  # sysexits EX_TEMPFAIL: stopped with records still unshipped (kept on disk)

Phase = Literal["starting", "running", "draining", "drained", "stopped"]


def make_source(
    name: str, config: SourceConfig, buffer: Buffer, emit: Emit, stop: asyncio.Event
) -> FileSource | JournaldSource:
    """The source for one ``[sources.NAME]`` table, resuming from ``buffer``'s checkpoints."""
    checkpoints = buffer.checkpoints_for(name)
    if isinstance(config, JournaldSourceConfig):
        return JournaldSource(name, config, checkpoints, emit, stop)
    spool = str(buffer.directory.parent / "spool")  # state_dir/spool: compressed generations
    return FileSource(name, config, checkpoints, emit, stop, store=buffer, spool_dir=spool)


async def first_of(*events: asyncio.Event, within: float | None = None) -> None:
    """Wait until any of ``events`` is set (or ``within`` seconds pass)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


@dataclass
class Lifecycle:
    """Where the agent is in its life, and the events that move it on.

    ``stop``: a shutdown was requested (``reason`` goes into the seal). ``drain``: ship without
    lingering (set by a stop, or early by a termination notice). ``force``: a second signal
    (not a signal after a drain request: a host shutting down during ``tailseal drain`` sends
    its first); the CLI exits at once, which is state-safe because everything acknowledged is
    on disk.
    ``started``: sources run (readiness). ``finished``: the run is over, ``exit_code`` is final.
    ``reload``: re-read the config file (SIGHUP).
    """

    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    drain: asyncio.Event = field(default_factory=asyncio.Event)
    force: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    reload: asyncio.Event = field(default_factory=asyncio.Event)  # SIGHUP
    reason: str = ""
    phase: Phase = "starting"
    stop_requested_at: float = 0.0  # loop.time() of the request: the drain deadline counts from it
    exit_code: int | None = None
    signalled: bool = False  # a SIGTERM/SIGINT came: the next one forces

    def request(self, reason: str) -> None:
        """Ask for a clean stop (idempotent: the first reason wins)."""
        if not self.stop.is_set():
            self.reason = reason
            self.stop_requested_at = time.monotonic()
            self.drain.set()
            self.stop.set()

    def signal(self, name: str) -> None:
        """A signal handler: the first signal stops cleanly (or goes on with a stop already
        requested, e.g. by ``POST /drain``), a second one forces."""
        if self.signalled:
            self.force.set()
        else:
            self.signalled = True
            self.request(name)


_RECORD, _MSG = attrgetter("record"), itemgetter("msg")


def _msg_bytes(batch: Sequence[Item]) -> int:
    """Characters of msg in ``batch`` (the bytes-in metric): map/itemgetter run in C, per batch;
    a record without msg (a gap, a notice) or a run of lines takes the per-item way."""
    try:
        return sum(map(len, map(_MSG, map(_RECORD, batch))))
    except (KeyError, AttributeError):
        return sum(map(_item_msg_bytes, batch))


def _item_msg_bytes(item: Item) -> int:
    if isinstance(item, PlainRun):
        return item.end - item.begin - item.count
    if isinstance(item, Pending):
        return len(item.record.get("msg", ""))
    raise TypeError("a source's batch holds no encoded run")  # the transform chain makes them


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

    async def emit(self, batch: Sequence[Item]) -> None:
        self.records_in += record_count(batch)
        self.bytes_in += _msg_bytes(batch)
        async with self.lock:
            transformed = await asyncio.to_thread(self.chain.apply, batch)
        await self.emit_to(transformed)

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


@dataclass
class _SourceRun:
    config: SourceConfig
    source: FileSource | JournaldSource
    transformed: Transformed
    stop: asyncio.Event
    task: asyncio.Task[None]
    flusher: asyncio.Task[None] | None


@dataclass
class _SinkRun:
    config: SinkConfig
    sink: NativeSink
    task: asyncio.Task[None]


class Agent:
    def __init__(self, config: AgentConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # re-read on SIGHUP
        self.host: dict[str, Any] = {"name": config.host_name or socket.gethostname()}
        self.buffer: Buffer | None = None
        self.sources: dict[str, FileSource | JournaldSource] = {}
        self.transforms: dict[str, Transformed] = {}
        self.notices: list[dict[str, Any]] = []
        self.reloads = {"ok": 0, "rejected": 0}  # config reloads, by outcome
        self.last_reload: dict[str, Any] = {}
        self.reload_done = asyncio.Event()  # set after each reload attempt
        self._source_runs: dict[str, _SourceRun] = {}
        self._sink_runs: dict[str, _SinkRun] = {}
        self._group: asyncio.TaskGroup | None = None

    @property
    def sinks(self) -> list[NativeSink]:
        return [run.sink for run in self._sink_runs.values()]

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
        record = special.notice(kind, f"termination notice: {kind}", **detail)
        self.notices.append(record)
        if self.buffer.closing:
            # The drain has begun (an ASG hook's `tailseal drain`, then the lifecycle state
            # turning Terminated): the stream ends with the seal already written.
            log.warning("termination notice %s came after the seal: in /status only", kind)
            return
        await self.buffer.emit([Pending(record, None)])

    async def _heartbeat(self, buffer: Buffer, stop: asyncio.Event) -> None:
        """Write a heartbeat notice whenever ``heartbeat`` seconds passed with no record
        committed (checked every ``heartbeat`` seconds: at most twice that after the last
        record), until ``stop``. The first time after records, the heap's free pages go back
        to the OS first (``runtime.trim_malloc``): what a burst freed is not kept while idle."""
        interval = self.config.heartbeat
        seen = buffer.last_seq
        trimmed = False  # since the last records
        while interval > 0:
            await first_of(stop, within=interval)
            if stop.is_set():
                return
            if buffer.last_seq != seen:
                seen, trimmed = buffer.last_seq, False
                continue
            if not trimmed:
                await in_thread(trim_malloc)
                trimmed = True
            msg = f"heartbeat: agent running, no records for {interval:g} s"
            record = special.notice("heartbeat", msg, idle_seconds=interval)
            await buffer.emit([Pending(record, None)])
            seen = buffer.last_seq + 1  # the heartbeat itself is not activity

    async def _run(self, buffer: Buffer, life: Lifecycle) -> int:
        self.host = await enrich.host_info(self.config)
        async with asyncio.TaskGroup() as group:
            self._group = group
            writer = group.create_task(buffer.run(), name="buffer-writer")
            group.create_task(self._heartbeat(buffer, life.stop), name="heartbeat")
            for name, sink_config in self.config.sinks.items():
                self._start_sink(name, sink_config, life)
            for name, source_config in self.config.sources.items():
                self._start_source(name, source_config)
            log.info(
                "agent started: stream %s, last seq %d, %d sources, %d sinks",
                buffer.stream_id,
                buffer.last_seq,
                len(self._source_runs),
                len(self._sink_runs),
            )
            life.phase = "running"
            life.started.set()
            while not life.stop.is_set():
                await first_of(life.stop, life.reload)
                if life.reload.is_set() and not life.stop.is_set():
                    life.reload.clear()
                    await self._reload(life)
            # Final sweep of every source (with held-back auditd events), then seal and drain.
            # The deadline holds for the sweep too: with the buffer full ("block") and no acks
            # coming, a source waits in emit for room that only close() would make. Cut off,
            # a source's unswept lines stay in its files, from its last committed checkpoint.
            runs = list(self._source_runs.values())
            for run in runs:  # each ends its sweep, whether the deadline leaves it time or not
                run.stop.set()
            sweep = asyncio.gather(*(self._stop_source(name) for name in list(self._source_runs)))
            swept = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sweep, timeout=max(0.0, self._remaining(life)))
                swept = True
            if not swept:
                # A deadline already passed cancels the sweep before some sources' stops begin:
                # those are cut off here, or the task group would wait for them for ever.
                for run in runs:
                    for task in (run.task, run.flusher):
                        if task is not None:
                            task.cancel("shutdown.timeout passed during the final sweep")
                await asyncio.gather(
                    *(t for run in runs for t in (run.task, run.flusher) if t is not None),
                    return_exceptions=True,
                )
                self._source_runs.clear()
                self.sources.clear()
                log.error(
                    "shutdown.timeout of %gs passed during the final sweep (buffer blocked: %s);"
                    " unswept lines stay in their files",
                    self.config.shutdown.timeout,
                    buffer.blocked,
                )
            life.phase = "draining"
            log.info("shutdown (%s): sources swept, draining", life.reason)
            await buffer.close(life.reason or "stopped")
            await writer
            remaining = self._remaining(life)
            tasks = [run.task for run in self._sink_runs.values()]
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, remaining))
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

    # --- starting and stopping components (supervisor task only) ------------------------------

    def _running(self) -> tuple[Buffer, asyncio.TaskGroup]:
        if self.buffer is None or self._group is None:
            raise RuntimeError("the pipeline is not running")
        return self.buffer, self._group

    def _start_source(self, name: str, config: SourceConfig) -> None:
        buffer, group = self._running()
        stop = asyncio.Event()
        chain = transforms.build(name, config)
        transformed = Transformed(chain, buffer.emit, config.parser.audit_timeout)
        source = make_source(name, config, buffer, transformed.emit, stop)
        task = group.create_task(source.run(), name=f"source:{name}")
        flusher = None
        if chain.audit is not None:
            flusher = group.create_task(transformed.flush_periodically(stop), name=f"flush:{name}")
        self._source_runs[name] = _SourceRun(config, source, transformed, stop, task, flusher)
        self.sources[name] = source
        self.transforms[name] = transformed

    def _remaining(self, life: Lifecycle) -> float:
        """Seconds left of ``shutdown.timeout``, counted from the stop request."""
        return self.config.shutdown.timeout - (time.monotonic() - life.stop_requested_at)

    async def _stop_source(self, name: str) -> None:
        """Stop a source after its final sweep; its records are queued for the buffer.
        Cancelled (the shutdown deadline), it cancels the source's task where it waits."""
        run = self._source_runs.pop(name)
        run.stop.set()
        try:
            await run.task
            if run.flusher is not None:
                await run.flusher
            await run.transformed.flush(final=True)  # held-back auditd events ship too
        finally:
            self.sources.pop(name, None)

    def _start_sink(self, name: str, config: SinkConfig, life: Lifecycle) -> None:
        buffer, group = self._running()
        sink = NativeSink(name, config, buffer, self.host, life.drain)
        task = group.create_task(sink.run(), name=f"sink:{name}")
        self._sink_runs[name] = _SinkRun(config, sink, task)

    async def _stop_sink(self, name: str) -> None:
        """Cancel a sink: a batch in flight is sent again by its successor (deduped by seq)."""
        run = self._sink_runs.pop(name)
        run.task.cancel("sink removed or changed by a config reload")
        with contextlib.suppress(asyncio.CancelledError):
            await run.task

    async def _reload(self, life: Lifecycle) -> None:
        """Apply a re-read config file; an invalid one is rejected and the old one runs on.
        The outcome is left in ``last_reload`` and announced on ``reload_done``."""
        try:
            self.last_reload = await self._reload_once(life)
        finally:
            self.reload_done.set()

    async def _reload_once(self, life: Lifecycle) -> dict[str, Any]:
        if self.config_path is None:
            log.warning("SIGHUP: no config file to reload")
            return {"ok": False, "error": "the agent was started without a config file"}
        try:
            new = await asyncio.to_thread(load_agent_config, self.config_path)
        except ConfigError as exc:
            self.reloads["rejected"] += 1
            log.error("config reload rejected (%s); the running config stays in effect", exc)  # noqa: TRY400
            return {"ok": False, "error": str(exc)}
        plan = reload.plan(self.config, new)
        for field_name in plan.restart_needed:
            log.warning("config reload: %s changed; takes effect after a restart", field_name)
        await self._apply(plan, life)
        self.config = reload.merged(self.config, new)
        self.reloads["ok"] += 1
        log.info("config reloaded: %s", plan.summary())
        return {"ok": True, "summary": plan.summary(), "restart_needed": plan.restart_needed}

    async def _apply(self, plan: reload.Plan, life: Lifecycle) -> None:
        buffer, _ = self._running()
        for name in plan.sinks_removed:
            await self._stop_sink(name)
            await buffer.remove_sink(name)
        for name, sink_config in plan.sinks_changed.items():
            await self._stop_sink(name)
            self._start_sink(name, sink_config, life)
        for name, sink_config in plan.sinks_added.items():
            await buffer.add_sink(name)
            self._start_sink(name, sink_config, life)
        for name in [*plan.sources_removed, *plan.sources_changed]:
            await self._stop_source(name)
        if plan.sources_changed:
            # The stopped sources' last records (and checkpoints) must be committed before a
            # successor reads the checkpoints, or it would read those lines again.
            await buffer.barrier()
        for name, source_config in {**plan.sources_changed, **plan.sources_added}.items():
            self._start_source(name, source_config)

    def status(self, life: Lifecycle) -> dict[str, Any]:
        """A JSON-able snapshot for ``/status``, ``tailseal drain`` and sd_notify STATUS=."""
        buffer = self.buffer
        sinks: dict[str, dict[str, Any]] = {
            s.name: {
                "acked": buffer.cursors[s.name][0] if buffer else 0,
                "backlog": buffer.backlog(s.name) if buffer else 0,
                "batches_sent": s.batches_sent,
                "quarantined": s.quarantined,
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
            "reloads": dict(self.reloads),
            "exit_code": life.exit_code,
            # Where the agent's (main) thread may run: with cpu_affinity = "auto", its one CPU.
            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
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
