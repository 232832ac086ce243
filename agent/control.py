"""The local control endpoint: `/healthz`, `/readyz`, `/status`, `/metrics`, `POST /drain`.

``/healthz`` is 200 while the event loop answers (never depends on the collector); ``/readyz``
is 200 once the sources run and the buffer accepts writes; ``/metrics`` is Prometheus text.

Served on a unix socket (default ``<state_dir>/control.sock``, mode 0660) and optionally on a
loopback TCP port for HTTP probes; never on a public interface. ``POST /drain`` requests the
shutdown sequence and answers with NDJSON progress lines (phase, backlog) until the run is over,
ending with the final status: ``tailseal drain`` (a preStop hook, an ASG lifecycle script)
renders them. The server outlives the pipeline until every drain response has been written.

Owned by the supervisor; it only reads the agent's status and calls ``Lifecycle.request``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.config import AgentConfig
from agent.errors import ConfigError, StateError
from agent.metrics import registry_for
from agent.pipeline import Agent, Lifecycle

log = logging.getLogger(__name__)

RELOAD_TIMEOUT = 60.0  # seconds a reload (stopping and restarting components) may take
PROGRESS_INTERVAL = 0.25  # seconds between drain progress lines
MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the NUL
NDJSON = "application/x-ndjson"


def socket_path(config: AgentConfig) -> Path | None:
    """Where the control socket lives for ``config`` (None when it is off)."""
    if config.control.socket == "off":
        return None
    if config.control.socket:
        return Path(config.control.socket)
    return Path(config.state_dir) / "control.sock"


class ControlServer:
    def __init__(self, config: AgentConfig, agent: Agent, life: Lifecycle) -> None:
        self.config = config
        self.agent = agent
        self.life = life
        self.path = socket_path(config)
        self.registry = registry_for(agent)
        self._runner: web.AppRunner | None = None
        self._drains = 0
        self._idle = asyncio.Event()
        self._bound = False  # the unix socket is ours to remove
        self._idle.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/drain", self._drain)
        app.router.add_post("/reload", self._reload)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.path is not None:
            if len(str(self.path).encode()) > MAX_UNIX_PATH:
                raise ConfigError("control.socket", f"path longer than {MAX_UNIX_PATH} bytes")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Started before the buffer's lock is taken: a socket an agent still answers on is
            # that agent's (a second one on the same config would take it over, then delete
            # it on its way out); one nobody answers on is a dead agent's.
            if await asyncio.to_thread(_answered, self.path):
                raise StateError(
                    f"control socket {self.path} is in use by another running tailseal agent"
                )
            self.path.unlink(missing_ok=True)
            await web.UnixSite(self._runner, str(self.path)).start()
            self._bound = True
            self.path.chmod(0o660)
        if self.config.control.listen:
            host, _, port = self.config.control.listen.rpartition(":")
            await web.TCPSite(self._runner, host.strip("[]"), int(port)).start()

    async def stop(self) -> None:
        """Close after every drain response was finished (bounded wait)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5.0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.path is not None and self._bound:  # never another agent's
            self.path.unlink(missing_ok=True)

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Alive means the event loop answers; it never depends on the collector.
        return web.json_response({"status": "ok", "phase": self.life.phase})

    async def _readyz(self, _request: web.Request) -> web.Response:
        """Ready: config loaded, sources started, buffer writable (not failing writes)."""
        buffer = self.agent.buffer
        problems = []
        if self.life.phase != "running":
            problems.append(f"phase is {self.life.phase}")
        if buffer is not None and buffer.write_error:
            problems.append(f"buffer writes failing: {buffer.write_error}")
        if problems:
            return web.json_response({"ready": False, "problems": problems}, status=503)
        return web.json_response({"ready": True})

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, self.registry)  # psutil reads /proc
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(self.agent.status(self.life)), content_type="application/json"
        )

    async def _reload(self, _request: web.Request) -> web.Response:
        """Re-read the config file (as SIGHUP does) and answer with the outcome."""
        if self.life.phase != "running":
            return web.json_response(
                {"ok": False, "error": f"agent is {self.life.phase}"}, status=409
            )
        self.agent.reload_done.clear()
        self.life.reload.set()
        try:
            await asyncio.wait_for(self.agent.reload_done.wait(), RELOAD_TIMEOUT)
        except TimeoutError:
            return web.json_response({"ok": False, "error": "reload still running"}, status=504)
        outcome = self.agent.last_reload
        return web.json_response(outcome, status=200 if outcome.get("ok") else 422)

    async def _drain(self, request: web.Request) -> web.StreamResponse:
        self._drains += 1
        self._idle.clear()
        try:
            log.info("drain requested over the control endpoint")
            self.life.request("drain request")
            response = web.StreamResponse(headers={"Content-Type": NDJSON})
            await response.prepare(request)
            while not self.life.finished.is_set():
                await response.write(self._line())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.life.finished.wait(), PROGRESS_INTERVAL)
            await response.write(self._line())
            await response.write_eof()
            return response
        finally:
            self._drains -= 1
            if self._drains == 0:
                self._idle.set()

    def _line(self) -> bytes:
        status = self.agent.status(self.life)
        keep = ("phase", "reason", "backlog", "last_seq", "exit_code", "sinks")
        return orjson.dumps({k: status[k] for k in keep}) + b"\n"


def _answered(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:  # none there, refused (stale), not a socket
            return False
    return True
