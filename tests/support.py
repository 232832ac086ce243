"""Test support shared by every test package: waiting for observable outcomes, TLS material.

Waiting is always for an observable outcome under a deadline; the short pause between checks is
what a check costs, not a guess at how long something takes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from agent.demo import DemoTls as TlsFiles
from agent.demo import make_tls_files

__all__ = ["CHECK_INTERVAL", "TlsFiles", "eventually", "eventually_sync", "make_tls_files"]

CHECK_INTERVAL = 0.02


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout: float, what: str
) -> None:
    """Return as soon as ``check()`` is true; fail naming ``what`` if the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(CHECK_INTERVAL)


def eventually_sync(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Blocking variant of :func:`eventually` for tests that drive subprocesses."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(CHECK_INTERVAL)
