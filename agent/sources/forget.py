"""Forgetting the checkpoints of files that are gone, so the buffer's checkpoint map stays bounded.

Every file generation the file source ships leaves one or two checkpoint keys (``identity.py``)
in the buffer's checkpoint map, and in ``checkpoints.json`` each time segments are deleted. On a
Kubernetes node every container's log file is a new generation and whole pod directories come and
go, so without forgetting, the map grows for as long as the agent's state lives.

A checkpoint is *gone* when no file in its path's directory starts with the bytes its key's
fingerprint covers (a legacy key without a fingerprint: when no file there has its inode), or when
that directory no longer exists. A file that still holds those bytes (the file itself, a rename
within the directory, a copytruncate copy, a generation compressed since, once decompressed)
keeps it: it says how much of that content shipped.
Anything unsure is kept: a key that is not a file's, a directory that cannot be read, the keys
of a file whose first bytes cannot be read (``/var/log/btmp`` for an agent not in its group: it
holds its own keys, not those of the whole directory). A file's shorter key is gone once its full
key holds the same bytes. Forgetting a checkpoint whose content turned up again elsewhere could
only re-ship that content (duplicates, never a loss).

The file source asks at its first round and then every ``PRUNE_EVERY`` seconds (``FileSource``,
``_prune``), and forgets a checkpoint only when two passes in a row found it gone: a directory
that is empty or missing for a while (a filesystem mounted late at boot, a network share
reconnecting) keeps its checkpoints. Its own files being read are not asked about. A source keeps
at least one checkpoint: one with none at all counts as starting for the first time, where
``read_from`` applies.

Blocking I/O on the paths given; runs in the file source's worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import Protocol

from agent.sources import Checkpoint
from agent.sources.compressed import content_head
from agent.sources.identity import ParsedKey, parse_key

PRUNE_EVERY = 600.0  # seconds between two passes of a running source


class CheckpointStore(Protocol):
    """Where checkpoints live (the buffer)."""

    def checkpoints_for(self, source: str) -> dict[str, Checkpoint]: ...

    def forget_checkpoints(self, source: str, keys: Collection[str]) -> int: ...


class _Directory:
    """The regular files of one directory: identities, and first bytes read on demand."""

    def __init__(self, directory: str, fp_bytes: int) -> None:
        self.idents: set[str] = set()
        self.unreadable: set[str] = set()  # identities of files whose first bytes are unknown
        self._files: list[tuple[str, str]] = []  # (path, identity)
        self._heads: list[tuple[str, bytes]] | None = None
        self._fp_bytes = fp_bytes
        with os.scandir(directory or ".") as found:
            for entry in found:
                with contextlib.suppress(OSError):  # gone meanwhile, a dangling link
                    st = entry.stat()  # follows a symlink (/var/log/containers)
                    if stat.S_ISREG(st.st_mode):
                        ident = f"{st.st_dev}:{st.st_ino}"
                        self.idents.add(ident)
                        self._files.append((entry.path, ident))

    def heads(self) -> list[tuple[str, bytes]]:
        """(identity, first bytes) of each file whose first bytes could be read."""
        if self._heads is None:
            self._heads = []
            for path, ident in self._files:
                head = content_head(path, self._fp_bytes)
                if head is None:
                    self.unreadable.add(ident)
                else:
                    self._heads.append((ident, head))
        return self._heads


def _gone_here(keys: list[tuple[str, ParsedKey]], files: _Directory) -> set[str]:
    """Of ``keys`` (of checkpoints in this directory), those gone: no file holds the bytes
    their fingerprint covers (a legacy key: no file has its inode), or a longer key of the same
    file holds them too (its first key covered only its first line: once a file has its full
    key, the shorter one says nothing more, and a first line many files share, a CSV header,
    would keep it forever). A file whose first bytes cannot be read keeps its own keys."""
    heads = files.heads()
    dead: set[str] = set()
    in_own_file: set[str] = set()  # keys the file with their identity still holds
    longest: dict[str, int] = {}  # identity -> its file's longest key
    for key, parsed in keys:
        if parsed.length == 0:
            if parsed.ident not in files.idents:
                dead.add(key)
            continue
        if parsed.ident in files.unreadable:
            continue
        holders = [ident for ident, head in heads if parsed.matches(head)]
        if not holders:
            dead.add(key)
        elif parsed.ident in holders:
            in_own_file.add(key)
            longest[parsed.ident] = max(longest.get(parsed.ident, 0), parsed.length)
    for key, parsed in keys:
        if key in in_own_file and longest[parsed.ident] > parsed.length:
            dead.add(key)  # superseded by its file's longer key
    return dead


def gone(checkpoints: Iterable[Checkpoint], fp_bytes: int) -> set[str]:
    """The keys of ``checkpoints`` whose files are gone (see the module doc)."""
    by_directory: dict[str, list[tuple[str, ParsedKey]]] = defaultdict(list)
    for cp in checkpoints:
        parsed = parse_key(cp.key)
        if parsed is not None and cp.path:
            by_directory[os.path.dirname(cp.path)].append((cp.key, parsed))  # noqa: PTH120
    dead: set[str] = set()
    for directory, keys in by_directory.items():
        try:
            files = _Directory(directory, fp_bytes)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                dead.update(key for key, _ in keys)
            continue  # unreadable: kept
        dead |= _gone_here(keys, files)
    return dead


def prunable(held: dict[str, Checkpoint], following: Collection[str], fp_bytes: int) -> set[str]:
    """Of a source's checkpoints ``held`` (key -> checkpoint, in the order they were made), the
    keys to forget: gone, not of a file being read (``following``), and never all of them."""
    dead = gone((cp for key, cp in held.items() if key not in following), fp_bytes)
    if dead and len(dead) == len(held):
        dead.discard(next(reversed(held)))  # the newest stays: this source has started before
    return dead
