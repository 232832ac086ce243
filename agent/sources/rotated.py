"""Rotated siblings: the generations of a tailed file that rotation moved out of the globs.

``Generations`` remembers what the file source has shipped (checkpoints by inode, and by
fingerprint of the first bytes, which also recognizes a renamed file or a copy of it) and decides
which rotated siblings (``identity.siblings``: ``app.log.1``, ``app.log-20240101``) still hold
bytes to read, and from where. A sibling whose head matches nothing shipped is *unknown* content:
reading it from 0 can never duplicate a line. Four situations:

* **Restart** (``on_restart``): a checkpointed file may have been renamed while the agent was
  down, and whole generations created and rotated away before it came back. A sibling matching a
  checkpoint (by inode, else by fingerprint) resumes at it if it holds more. An unknown sibling
  modified no earlier than the newest matched one was never read: from 0. Older unknown siblings
  are history from before the first start and are left alone. (The source ships planned
  generations oldest first and before the files it follows, so a newer one's checkpoint implies
  the older planned ones have one: ``file.py``.)
* **A tailed file left the glob set** (``on_leave``, rename + create): unknown siblings modified
  since the file was last seen in the glob set were created and rotated away between two scans.
* **A watched directory changed** (``sweep``): unknown files with a rotated name of a tailed
  name, modified since the previous sweep, are generations rotated away before we ever opened
  them (a file written and renamed or copytruncated between two scans). Copies of the
  generation we are reading are not unknown: its head is matched too.
* **Copytruncate** (``copy_of``): the copy is the newest sibling that starts with the truncated
  generation's first bytes and holds at least what we read of it (compressed: decompressed).

A compressed sibling (``app.log.2.gz``; ``compressed.READABLE_COMPRESSED``) is matched by its
decompressed first bytes, and a checkpoint's offset is compared with its decompressed size.

State ownership: owned by the file source's ``run()`` task; used from its worker threads only
while ``run()`` awaits them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace

from agent.sources import Checkpoint
from agent.sources.compressed import content_head, decompressed_size, gzip_size, xz_size
from agent.sources.identity import KnownHeads, Sibling, entries, match, parse_key, siblings

_log = logging.getLogger(__name__)

# File and directory mtimes come from a coarse clock (a few ms behind time.time_ns()).
_CLOCK_SLACK_NS = 100_000_000
Plan = list[tuple[Sibling, int]]  # (sibling, offset to read it from)
# The current first bytes of the files being followed, read only when needed.
LiveHeads = Callable[[], KnownHeads]


class Generations:
    def __init__(self, source: str, checkpoints: Iterable[Checkpoint], fp_bytes: int) -> None:
        self._source = source
        self._fp_bytes = fp_bytes
        self.known = KnownHeads()  # content already shipped, by fingerprint
        self._by_ident: dict[str, list[Checkpoint]] = {}  # checkpoints not resumed yet
        paths: set[str] = set()
        for cp in checkpoints:
            parsed = parse_key(cp.key)
            if parsed is not None:
                self._by_ident.setdefault(parsed.ident, []).append(cp)
                self.known.add(cp)
                paths.add(cp.path)
        self._bases = sorted(p for p in paths if p)
        self._dir_mtimes: dict[str, int] = {}
        self._swept_ns = time.time_ns()
        # Unknown siblings whose content a followed file holds too, not yet read from it (a
        # copy made before its truncation): decided again at every sweep.
        self._deferred: dict[str, Sibling] = {}
        self._undecodable: set[str] = set()  # compressed siblings whose head does not decompress

    def resume(self, ident: str, head: bytes) -> Checkpoint | None:
        """The checkpoint a newly opened file continues (each inode's are consulted once)."""
        return match(self._by_ident.pop(ident, []), head)

    def add_resume(self, cp: Checkpoint, ident: str) -> None:
        self._by_ident.setdefault(ident, []).append(cp)

    def forget(self, keys: Collection[str], live: Iterable[Checkpoint]) -> None:
        """Drop the checkpoints ``keys`` (files gone); ``live``: the source's other ones, kept
        known (one may share its fingerprint with a dropped one: a copy)."""
        for ident, cps in list(self._by_ident.items()):
            kept = [cp for cp in cps if cp.key not in keys]
            if kept:
                self._by_ident[ident] = kept
            else:
                del self._by_ident[ident]
        self.known.discard(keys)
        for cp in live:
            self.known.add(cp)

    def shipped(self, key: str, offset: int, path: str) -> None:
        """Content up to ``offset`` of the file with ``key`` is shipped (retired, truncated)."""
        if key:
            self.known.add(Checkpoint(self._source, key, offset, path))

    def on_restart(self, open_idents: set[str], live: LiveHeads) -> Plan:
        bases, self._bases = self._bases, []
        plan: Plan = []
        live_heads: KnownHeads | None = None
        seen: set[str] = set()  # a sibling of two bases (app.log, app.log.1) is judged once
        for base in bases:
            unknown: list[Sibling] = []
            newest = -1
            for sib in self._candidates(base, open_idents):
                if sib.path in seen:
                    continue
                seen.add(sib.path)
                head = self._head(sib)
                if head is None:
                    continue
                own = match(self._by_ident.get(sib.ident, ()), head)
                cp = own or self.known.find(head)
                if cp is None:
                    unknown.append(sib)
                    continue
                newest = max(newest, sib.mtime_ns)
                if own is None:  # a checkpoint of another inode: this may be a copy of it
                    live_heads = live_heads or live()
                    if live_heads.find(head) is not None:
                        # ... made by copytruncate before its truncate: the original, read on
                        # from the checkpoint, holds it too. Read from the copy only what the
                        # original loses when truncated (the source's copy_of), not both.
                        self._deferred[sib.path] = sib
                        continue
                if _may_hold_more(sib, cp.offset):
                    plan.append((sib, cp.offset))
            newer = [s for s in unknown if 0 <= newest <= s.mtime_ns]
            plan += self._unknown(newer, self.known, live)
        return plan

    def on_leave(self, path: str, since_ns: int, open_idents: set[str], live: LiveHeads) -> Plan:
        found = [s for s in self._candidates(path, open_idents) if s.mtime_ns >= since_ns]
        return self._unknown(found, self.known, live)

    def sweep(
        self,
        directories: set[str],
        is_rotated: Callable[[str], bool],
        tailed: Sequence[tuple[str, str]],
        open_idents: set[str],
        live: LiveHeads,
    ) -> Plan:
        """Unknown files modified since the last sweep in those ``directories`` whose mtime
        changed (or may have: the clock is coarse) and that ``is_rotated`` says are rotated
        generations of tailed names. ``tailed``: (path, key) of the files being read."""
        now, since = time.time_ns(), self._swept_ns - _CLOCK_SLACK_NS
        self._swept_ns = now
        changed: list[str] = []
        for directory in directories:
            try:
                mtime = os.stat(directory).st_mtime_ns  # noqa: PTH116
            except OSError:
                continue
            if mtime != self._dir_mtimes.get(directory) or mtime >= since:
                changed.append(directory)
            self._dir_mtimes[directory] = mtime
        found = [
            s
            for directory in changed
            for s in entries(directory, is_rotated)
            if s.ident not in open_idents and s.mtime_ns >= since and s.path not in self._deferred
        ]
        found += [s for s in self._deferred.values() if s.ident not in open_idents]
        self._deferred.clear()
        if not found:
            return []
        known = KnownHeads()
        known.merge(self.known)
        for path, key in tailed:
            known.add(Checkpoint(self._source, key, 0, path))
        return self._unknown(found, known, live)

    def relocate(self, sibling: Sibling, offset: int, open_idents: set[str]) -> Sibling | None:
        """Where ``sibling``, planned from ``offset``, went when rotated again: beside it, the
        file with its inode (renamed), or one whose first bytes a checkpoint at ``offset``
        knows (compressed since)."""
        directory = os.path.dirname(sibling.path)  # noqa: PTH120
        found = entries(directory, lambda path: path != sibling.path)
        for candidate in reversed(found):  # newest first
            if candidate.ident == sibling.ident:
                return candidate
        for candidate in reversed(found):
            if candidate.ident in open_idents:
                continue
            head = self._head(candidate)
            if head is None:
                continue
            cp = match(self._by_ident.get(sibling.ident, ()), head) or self.known.find(head)
            if cp is not None and cp.offset == offset:
                return candidate
        return None

    def copy_of(self, path: str, head: bytes, read_to: int) -> Sibling | None:
        """The copy (possibly already being read) of the generation that started with ``head``,
        if it holds at least ``read_to`` bytes. A compressed copy (copytruncate + compress) is
        returned with ``size`` its decompressed size."""
        for sib in reversed(siblings(path)):  # newest first
            if not sib.compressed and sib.size < read_to:
                continue
            got = self._head(sib)
            if got is None or not got.startswith(head):
                continue
            if not sib.compressed:
                return sib
            content = replace(sib, size=_content_size(sib))
            if content.size >= read_to:
                return content
        return None

    def _unknown(self, found: Iterable[Sibling], known: KnownHeads, live: LiveHeads) -> Plan:
        """The siblings holding content nobody shipped and no followed file holds: to read from
        0. Those a followed file holds too are deferred to the next sweep."""
        plan: Plan = []
        live_heads: KnownHeads | None = None
        for sib in found:
            head = self._head(sib)
            if not head or known.find(head) is not None:
                continue
            if live_heads is None:
                live_heads = live()
            if live_heads.find(head) is not None:
                self._deferred[sib.path] = sib
            else:
                plan.append((sib, 0))
        return plan

    @staticmethod
    def _candidates(path: str, open_idents: set[str]) -> list[Sibling]:
        return [s for s in siblings(path) if s.ident not in open_idents]

    def _head(self, sib: Sibling) -> bytes | None:
        head = content_head(sib.path, self._fp_bytes)
        if head is None and sib.compressed and sib.path not in self._undecodable:
            self._undecodable.add(sib.path)  # said once per file
            _log.warning(
                "file source %s: rotated generation %s does not decompress; not read",
                self._source,
                sib.path,
            )
        return head


def _may_hold_more(sib: Sibling, offset: int) -> bool:
    """Whether ``sib`` may hold bytes past ``offset``. For a compressed one, without reading it
    whole where its format says its size (gzip: the last member's size, modulo 4 GiB, in its
    last four bytes, equal to ``offset`` meaning read to its end; xz: its index): the spool
    finds out otherwise, in the one pass that reads the rest."""
    if not sib.compressed:
        return offset < sib.size
    if sib.path.endswith(".xz"):
        size = xz_size(sib.path)
        return size is None or offset < size
    size = gzip_size(sib.path) if sib.path.endswith(".gz") else None
    return size is None or size != offset % (1 << 32)


def _content_size(sib: Sibling) -> int:
    """The bytes ``sib`` holds (decompressed: one pass, only for a sibling a checkpoint matched,
    at a restart); -1 if unreadable."""
    if not sib.compressed:
        return sib.size
    size = decompressed_size(sib.path)
    return -1 if size is None else size
