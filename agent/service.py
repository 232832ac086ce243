"""The agent process: the pipeline plus its control plane, in one TaskGroup.

Around ``Agent.run`` (the pipeline) run the control endpoint, the systemd notifier, the
termination watchers, the force-exit guard and (``cpu_affinity = "auto"``) the CPU follower.
The pipeline's end ends them: watchers, the notifier and the follower are cancelled, the control
endpoint closes after its drain responses are finished. A second SIGTERM/SIGINT exits at once
with ``os._exit``: state-safe because every record and position acknowledged is already on disk
(the same guarantee the SIGKILL tests check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from agent.affinity import Affinity
from agent.config import AgentConfig
from agent.control import ControlServer
from agent.pipeline import EX_NOT_DRAINED, Agent, Lifecycle
from agent.sdnotify import SdNotify
from agent.termination import watchers

log = logging.getLogger(__name__)


async def run_service(
    config: AgentConfig,
    life: Lifecycle,
    config_path: Path | None = None,
    affinity: Affinity | None = None,
) -> int:
    agent = Agent(config, config_path)
    control = ControlServer(config, agent, life)
    notifier = SdNotify()

    async def on_notice(kind: str, detail: dict[str, Any]) -> None:
        life.drain.set()  # ship without lingering from now on: the host is going away
        await agent.notice(kind, detail)

    await control.start()
    try:
        async with asyncio.TaskGroup() as group:
            helpers = [
                group.create_task(_force_exit(life), name="force-exit"),
                group.create_task(
                    notifier.run(agent, life, config.shutdown.timeout), name="sd-notify"
                ),
            ]
            if affinity is not None and affinity.auto:
                helpers.append(group.create_task(affinity.follow(life.drain), name="affinity"))
            interval = config.termination.poll_interval
            for watcher in watchers.build(config.termination):
                watch = _after_start(life, watcher, interval, on_notice)
                helpers.append(group.create_task(watch, name=f"watch:{watcher.kind}"))
            try:
                code = await agent.run(life)
            finally:
                for task in helpers:
                    task.cancel()
    finally:
        await control.stop()
    return code


async def _after_start(
    life: Lifecycle, watcher: watchers.Watcher, interval: float, on_notice: watchers.OnNotice
) -> None:
    """Start a watcher once the buffer is open (its notice needs somewhere to go)."""
    await life.started.wait()
    await watchers.watch(watcher, interval, on_notice)


async def _force_exit(life: Lifecycle) -> None:
    await life.force.wait()
    log.warning("second signal: exiting now; unshipped records stay in the buffer")
    with contextlib.suppress(Exception):
        logging.shutdown()
    os._exit(EX_NOT_DRAINED)
