"""The journald source: follows the systemd journal through ``journalctl``.

Role: the first stage for hosts that keep auth events only in the journal (Amazon Linux 2023,
RHEL 9 minimal, container hosts). One ``journalctl --follow --output=json --all`` child per
source, read off its stdout without blocking the loop; each read burst (whatever the pipe holds,
up to ``_CHUNK`` bytes) becomes one ``emit``. ``journal.py`` turns the lines into records and
explains the record shape, the checkpoint (the cursor is ``Checkpoint.path``) and the resume rule.

Why journalctl and not a binding: it is on every systemd host, follows journal rotation and
vacuuming, understands matches, ``--unit``, ``--directory`` and ``--file`` exactly as operators
do, and keeps libsystemd out of the agent's process. The arguments we add and why:
* ``--cursor=C`` (inclusive; the first entry is checked against C, see ``journal.py``), else on
  the very first start with ``since_boot`` ``--boot``, else the head of the journal.
* ``--merge``: journalctl 252 (Debian 12, RHEL 9, AL2023) silently adds ``--boot`` to ``--follow``,
  so a restart after a reboot would miss the previous boot's last entries. ``--merge`` turns that
  off; on the system journal it also opens journals stored for other machines (remote, linked
  container journals), which ``matches`` can filter.
* ``--all``: without it JSON output replaces fields of 4096 bytes and more by ``null``.
* ``--no-tail``: ``--follow`` alone starts at the last 10 entries.

Invariants:
* An entry counts as consumed only through an emitted record carrying its cursor (contract 2).
  Lines still in the pipe at a stop are dropped with the child: the final sweep, a non-follow
  ``journalctl --cursor=<last emitted>``, reads them again, and everything else written up to
  the stop, then ends at the journal's end.
* Failures never crash-loop and never stop the pipeline. A missing ``journalctl`` (the binary
  cannot be executed) is permanent: one error line, the source stays idle until the stop
  (``status()["state"] == "unavailable"``). journalctl exiting (unreadable or missing journal,
  bad matches) is retried with capped, jittered backoff; its stderr is logged, each distinct line
  once. A cursor journalctl rejects ("Failed to seek to cursor") ships a ``gap`` record
  (``journal_cursor_lost``) and reading restarts at the head of the journal.
* The child never outlives ``run()``: it is killed and reaped on every exit path (a SIGKILLed
  agent leaves it to die on its next write into the closed pipe).

State ownership: everything mutable (the decoder, the child, the backoff, the counters) belongs
to the ``run()`` task; the decoder runs in a worker thread only while ``run()`` awaits it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from typing import Any

from agent.config import JournaldSourceConfig
from agent.sources import Checkpoints, Emit, Pending
from agent.sources.journal import Decoder, cursor_lost_gap, journal_key
from agent.threads import in_thread

_log = logging.getLogger(__name__)
_CHUNK = 1 << 20  # bytes per read burst (and the pipe reader's buffer limit)
_SEEK_FAILED = "Failed to seek to cursor"


class JournalctlMissingError(Exception):
    """``journalctl`` cannot be executed: a permanent condition for this source."""


class JournaldSource:
    """Follows the journal selected by ``config`` until ``stop`` is set (see module doc)."""

    def __init__(
        self,
        name: str,
        config: JournaldSourceConfig,
        checkpoints: Checkpoints,
        emit: Emit,
        stop: asyncio.Event,
    ) -> None:
        self._name = name
        self._config = config
        self._emit = emit
        self._stop = stop
        key = journal_key(config.directory, config.files)
        resume = checkpoints.get(key)
        self._decoder = Decoder(
            name,
            key,
            config.exclude_units,
            auth=config.auth,
            count=resume.offset if resume is not None else 0,
        )
        self._decoder.cursor = resume.path if resume is not None else ""
        self._fresh = resume is None  # the first start ever: since_boot applies
        self._state = "starting"
        self._error = ""
        self._restarts = 0
        self._seen_stderr: set[str] = set()

    def status(self) -> dict[str, Any]:
        """Details for ``/status``: what the source does, where it stands."""
        return {
            "state": self._state,
            "cursor": self._decoder.cursor,
            "entries": self._decoder.count,
            "gaps": self._decoder.gaps,
            "restarts": self._restarts,
            "error": self._error,
        }

    async def run(self) -> None:
        delay = self._config.retry_initial
        try:
            while not self._stop.is_set():
                read = await self._pass(follow=True)
                if self._stop.is_set():
                    break
                self._restarts += 1
                delay = self._config.retry_initial if read else delay
                if self._state != "cursor_lost":  # a lost cursor restarts at once
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):  # noqa: S311
                            await self._stop.wait()
                    delay = min(delay * 2, self._config.retry_max)
            self._state = "sweeping"
            await self._pass(follow=False)  # the final sweep
            self._state = "stopped"
        except JournalctlMissingError as exc:
            self._state, self._error = "unavailable", str(exc)
            _log.error("journald source %s: %s; the source stays idle", self._name, exc)
            await self._stop.wait()

    def _command(self, *, follow: bool) -> list[str]:
        config = self._config
        args = [config.journalctl, "--output=json", "--all", "--no-pager", "--no-tail"]
        if config.directory:
            args.append(f"--directory={config.directory}")
        args += [f"--file={f}" for f in config.files]
        args += [f"--unit={u}" for u in config.units]
        if self._decoder.cursor:
            args.append(f"--cursor={self._decoder.cursor}")
        if self._fresh and config.since_boot and not self._decoder.cursor:
            args.append("--boot")
        else:
            args.append("--merge")
        if follow:
            args.append("--follow")
        return [*args, *config.matches]

    async def _pass(self, *, follow: bool) -> int:
        """Run one journalctl (following, or to the journal's end) and ship what it prints;
        returns how many records it produced."""
        self._decoder.resume(self._decoder.cursor)
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(follow=follow),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=_CHUNK,
            )
        except OSError as exc:
            raise JournalctlMissingError(
                f"cannot run {self._config.journalctl!r}: {exc.strerror or exc}"
            ) from exc
        if follow:
            self._state = "following"
        assert proc.stdout is not None  # noqa: S101 (PIPE above)
        assert proc.stderr is not None  # noqa: S101
        last_stderr: collections.deque[str] = collections.deque(maxlen=4)
        stderr = asyncio.create_task(self._read_stderr(proc.stderr, last_stderr))
        at_end = False  # a sweep that read to EOF: journalctl exits by itself
        try:
            shipped = await self._read(proc.stdout, follow=follow)
            at_end = not follow
        finally:
            if not at_end and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            await stderr
        if not (follow and self._stop.is_set()):
            await self._exited(proc.returncode, list(last_stderr), follow=follow)
        return shipped

    async def _read(self, stdout: asyncio.StreamReader, *, follow: bool) -> int:
        """Ship stdout burst by burst until EOF (or, when following, until the stop)."""
        stopped = asyncio.ensure_future(self._stop.wait())
        carry, shipped = b"", 0
        try:
            while True:
                chunk = asyncio.ensure_future(stdout.read(_CHUNK))
                if follow:
                    await asyncio.wait({chunk, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if not chunk.done():
                        chunk.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await chunk
                        return shipped  # the rest is read again by the final sweep
                data = await chunk
                if not data:
                    return shipped
                lines = (carry + data).split(b"\n")
                carry = lines.pop()
                batch = await in_thread(self._decoder.decode, lines)
                if batch:
                    shipped += len(batch)
                    await self._emit(batch)
        finally:
            stopped.cancel()

    async def _read_stderr(
        self, stderr: asyncio.StreamReader, last: collections.deque[str]
    ) -> None:
        while line := await stderr.readline():
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            last.append(text)
            if text not in self._seen_stderr and len(self._seen_stderr) < 100:
                self._seen_stderr.add(text)
                _log.warning("journald source %s: journalctl: %s", self._name, text)

    async def _exited(self, code: int | None, stderr: list[str], *, follow: bool) -> None:
        """journalctl ended on its own: a rejected cursor, or an error to back off from."""
        if follow or code != 0:
            detail = " / ".join(stderr) or "no message"
            error = f"journalctl exited with {code}: {detail}"
            if error != self._error:
                _log.warning("journald source %s: %s", self._name, error)
            self._error, self._state = error, "failing"
        cursor = self._decoder.cursor
        if code != 0 and cursor and any(_SEEK_FAILED in line for line in stderr):
            _log.error("journald source %s: journal cursor %s rejected", self._name, cursor)
            self._decoder.cursor, self._fresh = "", False
            self._decoder.gaps += 1
            self._state = "cursor_lost"
            await self._emit([Pending(cursor_lost_gap(self._name, cursor, ""), None)])
