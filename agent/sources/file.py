"""The file source: tails the files matched by globs and turns each line into a record.

Role in the pipeline: the first stage for auth, shell and API logs. Each complete line becomes one
record (``msg`` = the line, ``log`` = path and byte offset) handed to ``emit`` with its checkpoint
``(source, key, offset just after the line)``, where ``key`` is the file's identity: device, inode
and a fingerprint of its first bytes (``identity.py``). One ``emit`` per chunk read. Which paths
match is ``globs.py``; cutting bytes into records ``tailed.py``; finding rotated generations
``rotated.py``; grouping lines into multi-line records ``multiline.py``.

Invariants:
* Bytes count as consumed only through an emitted record that covers them (see ``tailed.py``).
  An unterminated last line waits for its newline, ships tagged ``partial`` once the file stopped
  growing for ``partial_line_timeout`` or when the file is retired; a stop does not ship it (the
  next start re-reads it from the checkpoint).
* A file is known by identity, not by name. A rename within the globs keeps tailing the same
  descriptor. A file that leaves the glob set (rename + create, delete while open, rotated-sibling
  exclusion) keeps being read until it has been idle for ``rotate_wait``, then is read to its end,
  its unterminated line shipped, and closed; whatever now has its name is a new file read from 0.
  Generations rotated away unseen, between two scans or while the agent was down, are found among
  the rotated siblings and read (``rotated.py``).
* Those planned generations are read before the other files, oldest first (by mtime), each to its
  end, and while one has read bytes but shipped none (one unterminated line or multi-line group,
  until its timeout or retirement) the files after it wait. So a generation's checkpoint is
  committed only after every older planned one has one: a restart takes unknown siblings older
  than the newest checkpointed one for history, and a kill between two generations' records must
  not make an unread one look like that.
* Copytruncate: a file shorter than our offset, or whose first bytes changed, was truncated in
  place. Reading restarts at 0 (tagged ``truncated``). The bytes of the old generation we had not
  read are read from its copy when a sibling is one; otherwise the bytes we provably missed are
  accounted by a ``gap`` record. *Provably missed* = bytes between our read position and the
  largest size we saw the old generation have (or the copy's end, whichever is larger): a file
  size we observed proves those bytes existed. Bytes written after our last look and before the
  truncation (and not in a copy) cannot be proven and are not claimed.
* ``read_from`` applies only at the very first start, told by the absence of any checkpoint for
  this source (so a restart before the first record shipped counts as a first start, and rotated
  siblings that exist then are history, not read). After that, files without a checkpoint are
  new since and are read from 0, and known files resume at their checkpoint (a checkpoint whose
  fingerprint no longer matches is a different file: from 0).
* At most ``max_open_files`` descriptors: a file idle for ``close_idle_after`` and read to its
  end (or the least recently active idle file read to its end, when a new one needs the slot)
  is closed with its offset and identity kept, and reopened when its size or mtime changes. A
  file deleted or rotated away while closed this way is simply forgotten: it was read to its end
  before it was closed. A file that finds no slot waits: a new one in the glob set is found
  again by the next scan, a planned rotated generation is kept and retried at every scan.
* Every filesystem call runs in a worker thread; the event loop only awaits those threads,
  ``emit`` and the wake-up event.

State ownership: all mutable state (tailed files, resume checkpoints, known content) belongs to
the ``run()`` task. Worker threads touch it only while ``run()`` awaits them, one at a time, and
never after ``run()`` returned: a cancelled await still waits for its thread. The watchdog thread
touches only a coalescing flag and wakes ``run()`` through ``loop.call_soon_threadsafe``.

Compressed generations (``.gz``, ``.bz2``, ``.xz``, ``.zst``: logrotate's ``compress``) are read
like the others where ``rotated.py`` plans them (a checkpointed file compressed while the agent
was down resumes at its checkpoint; a generation never read is read from 0): decompressed into an
anonymous file in the spool directory (``compressed.py``), keyed and fingerprinted by their
decompressed content; damaged data ships up to the damage, with a warning. A glob never follows
a compressed file.

Not covered yet: writes to a file reached through a symlink into an unwatched directory
(Kubernetes ``/var/log/containers``) are seen by polling only; a generation deleted before it was
read, or compressed by a tool not read here (lz4, zip, compress), is lost unaccounted; rotated
generations are recognized only under the names in ``identity.ROTATED_NAME`` (or, for a followed
file, any name extending its name). The checkpoints of files gone are forgotten (``forget.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from agent.config import FileSourceConfig
from agent.record import now_rfc3339
from agent.sources import (
    Checkpoint,
    Checkpoints,
    Emit,
    Item,
    Pending,
    compressed,
    identity,
    materialize,
    rotated,
)
from agent.sources.forget import PRUNE_EVERY, CheckpointStore, prunable
from agent.sources.globs import Globs
from agent.sources.identity import Sibling
from agent.sources.multiline import Grouper
from agent.sources.tailed import TailedFile, gap_record
from agent.sources.watch import Watcher
from agent.threads import in_thread

_log = logging.getLogger(__name__)
# A round reads at most this many chunks of one file before the other files get their turn; the
# round then leaves the wake event set, so reading resumes at once.
_ROUND_CHUNKS = 16


def _moved(sibling: Sibling) -> bool:
    """Whether the file at ``sibling``'s path is no longer it (or there is none)."""
    try:
        st = os.stat(sibling.path)  # noqa: PTH116
    except OSError:
        return True
    return f"{st.st_dev}:{st.st_ino}" != sibling.ident


def _read_to_end(tailed: TailedFile) -> bool:
    """Whether ``tailed``'s file holds no byte past what we read (taken as so if its descriptor
    cannot be stat'ed: nothing more can be read from it)."""
    try:
        return os.fstat(tailed.fd).st_size == tailed.read_pos
    except OSError:
        return True


def cuts_runs(config: FileSourceConfig) -> bool:
    """Whether the source's plain chunks go on as ``PlainRun``s: where nothing reads their
    records before the buffer (no parser, no multi-line grouping), or the parser is the syslog
    or auth one, which encodes the lines it parses in C without making their records. The
    transform chain makes records of the lines that may hold a secret (and of the lines the
    parser leaves to its Python path)."""
    return config.parser.format in ("none", "syslog", "auth") and not config.multiline_start


class FileSource:
    """Tails ``config.paths`` (globs minus ``config.exclude``) until ``stop`` is set."""

    def __init__(
        self,
        name: str,
        config: FileSourceConfig,
        checkpoints: Checkpoints,
        emit: Emit,
        stop: asyncio.Event,
        *,
        store: CheckpointStore | None = None,
        spool_dir: str = "",
        observer_factory: Callable[[], BaseObserver] = Observer,
    ) -> None:
        self._name = name
        # Where compressed generations are decompressed to be read (anonymous files, gone when
        # closed); "" = the system's temporary directory.
        self._spool_dir = spool_dir or tempfile.gettempdir()
        self._store = store  # where checkpoints of files gone are forgotten (``forget.py``)
        self._pruned_at = 0.0
        self._suspects: set[str] = set()  # keys the last pass found gone
        self._observer_factory = observer_factory  # a seam for the polling-fallback test
        self._config = config
        self._emit = emit
        self._stop = stop
        self._globs = Globs(config)
        mine = [cp for cp in checkpoints.values() if cp.source == name]
        self._fresh = not mine  # the first start: read_from applies
        self._generations = rotated.Generations(name, mine, config.fingerprint_bytes)
        self._files: dict[str, TailedFile] = {}  # ident -> file
        # Rotated generations planned to be read (ident -> its mtime in ns, and when it was
        # planned): read first, oldest first; one holds the files after it back for at most
        # _max_hold since it was planned, growing or not (_round).
        self._planned: dict[str, tuple[int, float]] = {}
        self._max_hold = max(config.partial_line_timeout, config.multiline_timeout)
        # Planned generations not opened yet for want of a descriptor (ident -> the plan):
        # retried at every scan until they open (dropped, as any plan, only if they can no
        # longer be found: a warning says so).
        self._waiting: dict[str, tuple[Sibling, int]] = {}
        self._fds = 0  # descriptors held
        self._groups: dict[str, Grouper] = {}  # ident -> held multi-line group
        self._multiline = re.compile(config.multiline_start) if config.multiline_start else None
        self._warned: set[str] = set()  # paths and identities whose error was logged once
        self._wake = asyncio.Event()
        self._adopted = False  # set by a worker thread that opened a rotated sibling

    def status(self) -> dict[str, Any]:
        """Files followed and how far behind they are, for ``/status`` (event loop; cheap:
        one stat per file, on demand). ``lag_seconds``: while a file has unread bytes, how
        long since we last read from it (a stall shows as a growing figure)."""
        files = []
        now = time.monotonic()
        for tailed in list(self._files.values()):  # a copy: worker threads add and remove
            try:  # by descriptor: the size of what we read, even after a rename
                size = os.fstat(tailed.fd).st_size if tailed.fd >= 0 else tailed.seen_size
            except OSError:
                size = tailed.seen_size
            lag = max(0, size - tailed.consumed)
            files.append(
                {
                    "path": tailed.path,
                    "offset": tailed.consumed,
                    "size": size,
                    "lag_bytes": lag,
                    "lag_seconds": max(0.0, now - tailed.grew_at) if lag else 0.0,
                }
            )
        return {"files": sorted(files, key=lambda f: str(f["path"]))}

    async def run(self) -> None:
        watcher = Watcher(self._name, self._globs.patterns, self._wake, self._observer_factory)
        forward_stop = asyncio.create_task(self._forward_stop())
        try:
            await in_thread(watcher.start)
            first = True
            while not self._stop.is_set():
                self._wake.clear()
                await self._round(watcher, first=first, final=False)
                first = False
                # A timer that sets the event, not a timeout around the wait: an idle agent
                # waits so at every poll, and the timeout's cancellation and TimeoutError were
                # ~15% of an idle round's CPU.
                timer = asyncio.get_running_loop().call_later(self._next_wake(), self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
            # The final sweep: everything written before the stop ships now.
            await self._round(watcher, first=first, final=True)
        finally:
            forward_stop.cancel()
            for tailed in self._files.values():
                if tailed.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(tailed.fd)
            self._files.clear()
            await in_thread(watcher.stop)

    async def _forward_stop(self) -> None:
        await self._stop.wait()
        self._wake.set()

    def _next_wake(self) -> float:
        """Seconds until the next round: the poll interval, or sooner when a partial line, a
        multi-line group, a rotated-away file or the end of a hold is due."""
        config, now = self._config, time.monotonic()
        due = [f.grew_at + config.partial_line_timeout for f in self._files.values() if f.pending]
        due += [g.since + config.multiline_timeout for g in self._groups.values() if g.holding]
        due += [
            max(f.grew_at, f.left_at) + config.rotate_wait
            for f in self._files.values()
            if f.left_at is not None
        ]
        holds = (at + self._max_hold for _, at in self._planned.values())
        due += [end for end in holds if end > now]  # a hold's end: the files after it go on
        return min([config.poll_interval, *(max(d - now, 0.0) for d in due)])

    async def _round(self, watcher: Watcher, *, first: bool, final: bool) -> None:
        """Rescan the globs, read every file (in the final sweep: to its end; planned rotated
        generations first, see the module docstring), retire the files that left the glob set
        and are done, then (except in the final sweep) flush stale partial lines and groups and
        close idle files."""
        found = await in_thread(self._discover, watcher, first)
        now = time.monotonic()
        await self._locate(found, now)
        for tailed in self._reading_order():
            if tailed.fd < 0:
                if tailed.left_at is not None:
                    self._forget(tailed)  # closed while idle: read to its end already
                continue
            planned = tailed.ident in self._planned
            if not await self._drain(tailed, to_end=final or planned):
                continue
            idle = now - max(tailed.grew_at, tailed.left_at or 0.0)
            if tailed.left_at is not None and (final or idle >= self._config.rotate_wait):
                await self._retire(tailed)
            elif planned and not final and self._holds_back(tailed):
                # The files after it wait until it ships: its timeout, its retirement. Not in
                # the final sweep, which reads every file to its end (one renamed back into the
                # glob set is never retired, and its line stays unshipped, as in any live file).
                if now - self._planned[tailed.ident][1] < self._max_hold:
                    break
                # Still growing after the longest timeout since it was planned (a writer still
                # appends to it, and each growth restarts the timeouts): what it holds ships as
                # it stands, as at a timeout, and the files after it are read.
                await self._end_hold(tailed)
        if self._adopted:  # a copy opened while reading (copy_of) is read in the next round
            self._adopted = False
            self._wake.set()
        if not final:
            await self._flush_stale()
            await self._close_idle()
            if self._store is not None and (first or now - self._pruned_at >= PRUNE_EVERY):
                self._pruned_at = now
                await in_thread(self._prune, self._store)

    async def _locate(self, found: dict[str, str], now: float) -> None:
        """Note where each file is (``found``: identity -> path in the glob set). For one that
        has just left the set, plan the generations rotated away since it was last there: they
        are read in this round, before the others."""
        for tailed in list(self._files.values()):
            path = found.get(tailed.ident)
            if path is not None:
                tailed.path, tailed.left_at = path, None
            elif tailed.left_at is None:
                tailed.left_at = now
                if tailed.in_set_mtime:
                    await in_thread(self._adopt_missed, tailed)

    def _reading_order(self) -> list[TailedFile]:
        """Every file followed, the rotated generations planned to be read first, oldest first."""
        files = list(self._files.values())
        if not self._planned:
            return files
        planned = sorted(self._planned, key=lambda ident: self._planned[ident][0])
        return [self._files[i] for i in planned] + [
            f for f in files if f.ident not in self._planned
        ]

    async def _end_hold(self, tailed: TailedFile) -> None:
        """Ship ``tailed``'s unterminated line and multi-line group as they stand."""
        if tailed.pending:
            await self._ship(tailed, [tailed.flush_partial(now_rfc3339())])
        if self._grouping(tailed):
            await self._emit(self._groups[tailed.ident].flush())

    def _holds_back(self, tailed: TailedFile) -> bool:
        """Whether ``tailed`` read bytes and shipped none (one unterminated line, one held
        multi-line group): no checkpoint makes its content known yet."""
        group = self._groups.get(tailed.ident)
        if group is not None and group.holding:
            return group.offset == 0
        return tailed.consumed == 0 and bool(tailed.pending)

    def _prune(self, store: CheckpointStore) -> None:
        """Forget the checkpoints of files gone (worker thread)."""
        held = store.checkpoints_for(self._name)
        following = {tailed.key for tailed in self._files.values()}
        gone = prunable(held, following, self._config.fingerprint_bytes)
        dead, self._suspects = gone & self._suspects, gone - self._suspects  # twice in a row
        if dead:
            store.forget_checkpoints(self._name, dead)
            self._generations.forget(dead, [cp for key, cp in held.items() if key not in dead])
            _log.info("file source %s: forgot checkpoints of %d gone files", self._name, len(dead))

    # --- discovery (worker thread) -------------------------------------------------------------

    def _discover(self, watcher: Watcher, first: bool) -> dict[str, str]:
        """Map identity -> path of every matching regular file, opening (and registering) the
        ones not tailed yet and reopening changed ones closed while idle."""
        watcher.watch_new_roots()
        found: dict[str, str] = {}
        for path in self._globs.match():
            if compressed.READABLE_COMPRESSED.search(path):  # exclude_rotated = false, say
                self._warn_once(
                    path,
                    "not following %s: compressed files are read only as the rotated "
                    "generations of a file followed",
                    path,
                )
                continue
            try:
                st = Path(path).stat()
            except OSError:
                continue  # gone between glob and stat: the next round sees what replaced it
            ident = f"{st.st_dev}:{st.st_ino}"
            if not stat.S_ISREG(st.st_mode) or ident in found:
                continue  # FIFOs and devices would block a read; hard links are one file
            tailed = self._files.get(ident)
            if tailed is None:
                ident = self._open(path, first=first) or ident
            elif tailed.fd < 0 and (st.st_size, st.st_mtime_ns) != (
                tailed.read_pos,
                tailed.in_set_mtime,
            ):
                self._reopen(tailed, path)
            if ident in self._files:
                self._files[ident].in_set_mtime = st.st_mtime_ns
            found[ident] = path
        open_idents = set(self._files)
        if first:
            plan = self._generations.on_restart(open_idents, self._live_heads)
        else:
            # Every file we follow, in the glob set or not: copies of them are not unknown.
            following = [(f.path, f.key) for f in self._files.values()]
            directories = {os.path.dirname(p) for p in found.values()} | self._globs.directories  # noqa: PTH120
            plan = self._generations.sweep(
                directories, self._globs.rotated_of, following, open_idents, self._live_heads
            )
        for sibling, start in [*self._waiting.values(), *plan]:
            self._adopt(sibling, start)
        # Before any read: a write after this point must wake the next round.
        watcher.paths = frozenset(found.values())
        return found

    def _open(
        self, path: str, *, first: bool, start: int | None = None, planned: str = ""
    ) -> str | None:
        """Open ``path`` and register it under the identity of what was opened (the name may
        have been rotated since it was stat'ed); return that identity. ``start``: the offset
        to read from (a rotated sibling, whose identity was ``planned``: another file now
        there is left to the next round); otherwise its checkpoint, or 0, or its end."""
        if not self._room_for(path):
            return None
        packed = compressed.READABLE_COMPRESSED.search(path) is not None
        if packed and start is None:
            return None  # only as a rotated generation, from a planned offset
        try:
            if packed:
                fd, st, size = self._spool(path, start or 0, planned)
            else:
                # O_NONBLOCK: should the name turn into a FIFO after the stat, open must not hang.
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                st = os.fstat(fd)
                size = st.st_size
                if planned and f"{st.st_dev}:{st.st_ino}" != planned:
                    os.close(fd)  # rotated again since it was found: the next round sees it
                    return None
            head = identity.read_head(fd, size, self._config.fingerprint_bytes)
            # A copytruncate between the fstat and the head's read makes ``size`` the old
            # generation's: it counts as seen only if the file whose head we hold has that much.
            seen = size if os.fstat(fd).st_size >= size else len(head)
        except OSError as exc:
            self._warn_once(path, "cannot open %s: %s", path, exc)
            return None
        self._warned.discard(path)
        ident = f"{st.st_dev}:{st.st_ino}"
        if ident in self._files or not stat.S_ISREG(st.st_mode) or (packed and not size):
            os.close(fd)
            return ident
        config = self._config
        tailed = TailedFile(
            self._name, config.max_line_bytes, config.fingerprint_bytes, path, ident, fd, 0, 0.0
        )
        tailed.runs = cuts_runs(config)
        tailed.grew_at, tailed.seen_size = time.monotonic(), seen
        resume = self._generations.resume(ident, head) if start is None else None
        if start is not None:
            tailed.read_pos = start
        elif resume is not None and resume.offset <= st.st_size:
            tailed.read_pos = resume.offset
        elif resume is not None:
            tailed.truncated = True  # shorter than what was shipped: truncated meanwhile
        elif first and self._fresh and config.read_from == "end":
            tailed.read_pos = st.st_size
        keep = resume is not None and resume.offset <= st.st_size
        tailed.set_head(head, resume.key if keep and resume is not None else "")
        self._files[ident] = tailed
        self._fds += 1
        return ident

    def _spool(self, path: str, start: int, planned: str) -> tuple[int, os.stat_result, int]:
        """A compressed generation, decompressed into an anonymous file in the spool directory
        (``compressed.spool``): its descriptor, the compressed file's stat (its identity) and the
        size of its content, or 0 when nothing is left to read from ``start``."""
        fd, st, short = compressed.spool(
            path, start, self._config.fingerprint_bytes, self._spool_dir, planned
        )
        if short:
            self._warn_once(path, "%s is read only in part: %s", path, short)
        size = os.fstat(fd).st_size
        return fd, st, size if size > start else 0

    def _reopen(self, tailed: TailedFile, path: str) -> None:
        """Reopen a file closed while idle, if ``path`` still is that file."""
        if not self._room_for(path):
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            self._warn_once(path, "cannot open %s: %s", path, exc)
            return
        st = os.fstat(fd)
        if f"{st.st_dev}:{st.st_ino}" != tailed.ident:
            os.close(fd)  # rotated meanwhile: the next scan sees what is there now
            return
        tailed.fd = fd
        self._fds += 1

    def _room_for(self, path: str) -> bool:
        """Whether a descriptor is free for ``path`` (one closed for it if need be); warns once
        when none is."""
        if self._fds < self._config.max_open_files or self._make_room():
            return True
        self._warn_once("max_open_files", "max_open_files reached; %s waits", path)
        return False

    def _make_room(self) -> bool:
        """Close the least recently active idle file read to its end to free a descriptor. One
        holding bytes not read yet stays open: closed, and rotated before it was reopened, it
        would be forgotten with them (see :meth:`_close_if_read`)."""
        idle = [
            f
            for f in self._files.values()
            if f.fd >= 0 and f.left_at is None and not f.pending and not self._grouping(f)
        ]
        for tailed in sorted(idle, key=lambda f: f.grew_at):
            if _read_to_end(tailed):
                self._close_fd(tailed)
                return True
        return False

    def _close_fd(self, tailed: TailedFile) -> None:
        with contextlib.suppress(OSError):
            os.close(tailed.fd)
        tailed.fd = -1
        self._fds -= 1

    def _adopt_missed(self, tailed: TailedFile) -> None:  # worker thread
        """``tailed`` left the glob set: read the generations rotated away since it was last
        seen there that we never opened."""
        self._generations.shipped(tailed.key, tailed.consumed, tailed.path)
        plan = self._generations.on_leave(
            tailed.path, tailed.in_set_mtime, set(self._files), self._live_heads
        )
        for sibling, start in plan:
            self._adopt(sibling, start)

    def _live_heads(self) -> identity.KnownHeads:  # worker thread
        """The first bytes the open files hold now (not what we read: they may be truncated)."""
        heads = identity.KnownHeads()
        for tailed in self._files.values():
            if tailed.fd >= 0:
                with contextlib.suppress(OSError):
                    head = os.pread(tailed.fd, self._config.fingerprint_bytes, 0)
                    key = identity.make_key(tailed.ident, head)
                    heads.add(Checkpoint(self._name, key, 0, tailed.path))
        return heads

    def _adopt(self, sibling: Sibling, start: int) -> bool:
        """Read the rotated ``sibling`` from ``start``; True once it is open, or waits for a
        descriptor (``_waiting``: it is read once one frees), False if it cannot be. Rotated again
        since it was found (another file at its path), it is looked for where it went: renamed
        (its inode) or compressed (its content, known by a checkpoint at ``start``)."""
        self._waiting.pop(sibling.ident, None)
        if sibling.ident in self._files:
            return True  # opened meanwhile (planned twice: waiting, then by a later sweep)
        if not self._room_for(sibling.path):
            self._waiting.setdefault(sibling.ident, (sibling, start))
            return True  # read once a descriptor frees
        ident = self._open(sibling.path, first=False, start=start, planned=sibling.ident)
        if ident is None and _moved(sibling):
            moved = self._generations.relocate(sibling, start, set(self._files))
            if moved is None:
                self._warn_once(
                    sibling.path,
                    "%s was rotated again before it could be read, and is not found beside it",
                    sibling.path,
                )
                return False
            sibling = moved
            ident = self._open(sibling.path, first=False, start=start, planned=sibling.ident)
        adopted = self._files.get(ident or "")
        if adopted is None:
            return False
        if adopted.in_set_mtime == 0:
            adopted.left_at = time.monotonic()  # never in the glob set: retire when idle
            self._planned[adopted.ident] = (sibling.mtime_ns, adopted.left_at)
            self._adopted = True
            _log.info("file source %s: reading rotated %s from %d", self._name, sibling.path, start)
        return True

    # --- reading -------------------------------------------------------------------------------

    async def _drain(self, tailed: TailedFile, *, to_end: bool) -> bool:
        """Read ``tailed`` up to the size it has now, one ``emit`` per chunk. False when a read
        error made us close it instead."""
        end: int | None = None
        chunks, more = 0, True
        while more:
            if not to_end and chunks == _ROUND_CHUNKS:
                self._wake.set()  # the rest is read next round, after the other files
                return True
            try:
                batch, end, more = await in_thread(tailed.read, self._config.chunk_bytes, end)
            except OSError as exc:
                await self._drop(tailed, exc)
                return False
            chunks += 1
            if tailed.truncation is not None:
                gap = await self._after_truncation(tailed)
                if gap:
                    await self._emit(gap)
            await self._ship(tailed, batch)
        return True

    async def _ship(self, tailed: TailedFile, batch: Sequence[Item]) -> None:
        if self._multiline is not None and batch:
            group = self._groups.get(tailed.ident)
            if group is None:
                group = Grouper(self._multiline, self._config.max_line_bytes)
                self._groups[tailed.ident] = group
            batch = group.feed(materialize(batch), time.monotonic())  # (no runs are cut here)
        if batch:
            await self._emit(batch)

    async def _after_truncation(self, tailed: TailedFile) -> list[Pending]:
        """Recover the truncated generation's unread bytes from its copy, and account with a
        ``gap`` record the bytes we saw it hold that neither we nor the copy have."""
        old, tailed.truncation = tailed.truncation, None
        if old is None:
            return []
        generations = self._generations
        generations.shipped(old.key, old.read_to, old.path)
        copy = await in_thread(generations.copy_of, old.path, old.head, old.read_to)
        lost_from = old.read_to
        if copy is not None and await in_thread(self._adopt, copy, old.read_to):
            lost_from = max(lost_from, copy.size)
        if old.seen_size <= lost_from:
            return []
        span = (lost_from, old.seen_size)
        gap = gap_record(self._name, "copytruncate", old.path, span, now_rfc3339())
        return [Pending(gap, None)]

    async def _drop(self, tailed: TailedFile, exc: OSError) -> None:
        """A read failed (EIO, a vanished network share): close the file but remember where it
        stood, so that the next round reopens it there instead of stopping the pipeline."""
        self._warn_once(tailed.ident, "cannot read %s: %s", tailed.path, exc)
        group = self._groups.pop(tailed.ident, None)
        offset = group.offset if group is not None and group.holding else tailed.consumed
        if tailed.key:
            cp = Checkpoint(self._name, tailed.key, offset, tailed.path)
            self._generations.add_resume(cp, tailed.ident)
        await in_thread(self._forget, tailed)

    async def _retire(self, tailed: TailedFile) -> None:
        """``tailed`` left the glob set and is done: read what it still holds, ship its
        unterminated line and group (no newline can reach us anymore), then close it."""
        if not await self._drain(tailed, to_end=True):
            return
        await self._end_hold(tailed)
        self._generations.shipped(tailed.key, tailed.consumed, tailed.path)
        await in_thread(self._forget, tailed)

    def _forget(self, tailed: TailedFile) -> None:
        if tailed.fd >= 0:
            self._close_fd(tailed)
        self._files.pop(tailed.ident, None)
        self._groups.pop(tailed.ident, None)
        self._planned.pop(tailed.ident, None)

    async def _flush_stale(self) -> None:
        """Ship unterminated lines whose file has not grown for ``partial_line_timeout`` and
        multi-line groups that waited ``multiline_timeout`` for another line. One of a planned
        generation may have held the round back: the next round starts at once, to read the
        files after it (not at the next poll)."""
        now = time.monotonic()
        since = now - self._config.partial_line_timeout
        stale = [f for f in self._files.values() if f.pending and f.grew_at <= since]
        ts = now_rfc3339()
        planned = False
        for tailed in stale:
            await self._ship(tailed, [tailed.flush_partial(ts)])
            planned = planned or tailed.ident in self._planned
        since = now - self._config.multiline_timeout
        for ident, group in self._groups.items():
            if group.holding and group.since <= since:
                await self._emit(group.flush())
                planned = planned or ident in self._planned
        if planned:
            self._wake.set()

    def _grouping(self, tailed: TailedFile) -> bool:
        """Whether ``tailed``'s multi-line group holds lines (every file keeps its grouper)."""
        group = self._groups.get(tailed.ident)
        return group is not None and group.holding

    async def _close_idle(self) -> None:
        """Close the descriptors of files idle for ``close_idle_after``; they reopen on change."""
        since = time.monotonic() - self._config.close_idle_after
        for tailed in self._files.values():
            busy = tailed.pending or self._grouping(tailed)
            if tailed.fd >= 0 and tailed.left_at is None and not busy and tailed.grew_at <= since:
                await in_thread(self._close_if_read, tailed)

    def _close_if_read(self, tailed: TailedFile) -> None:  # worker thread
        """Close ``tailed`` unless it holds bytes we have not read: written since its last read,
        or not read at all because a planned generation held the round back. A file that leaves
        the glob set while closed is forgotten, taken to be read to its end."""
        if _read_to_end(tailed):
            self._close_fd(tailed)

    def _warn_once(self, subject: str, message: str, *args: object) -> None:
        if subject not in self._warned:
            self._warned.add(subject)
            _log.warning("file source %s: " + message, self._name, *args)
