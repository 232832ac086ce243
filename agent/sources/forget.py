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
Anything unsure is kept: a key that is not a file's, a directory that cannot be read, any key of
a directory holding a file whose first bytes cannot be read (it may be any of them). Forgetting a
checkpoint whose content turned up again elsewhere could only re-ship that content (duplicates,
never a loss).

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
from agent.sources.compressed import decompressed_head
from agent.sources.identity import READABLE_COMPRESSED, ParsedKey, parse_key, read_head

PRUNE_EVERY = 600.0  # seconds between two passes of a running source


class CheckpointStore(Protocol):
    """Where checkpoints live (the buffer)."""

    def checkpoints_for(self, source: str) -> dict[str, Checkpoint]: ...

    def forget_checkpoints(self, source: str, keys: Collection[str]) -> int: ...


class _Directory:
    """The regular files of one directory: identities, and first bytes read on demand."""

    def __init__(self, directory: str, fp_bytes: int) -> None:
        self.idents: set[str] = set()
        self.unsure = False  # a file whose first bytes could not be read: it may be any
        self._paths: list[str] = []
        self._heads: list[bytes] | None = None
        self._fp_bytes = fp_bytes
        with os.scandir(directory or ".") as found:
            for entry in found:
                with contextlib.suppress(OSError):  # gone meanwhile, a dangling link
                    st = entry.stat()  # follows a symlink (/var/log/containers)
                    if stat.S_ISREG(st.st_mode):
                        self.idents.add(f"{st.st_dev}:{st.st_ino}")
                        self._paths.append(entry.path)

    def heads(self) -> list[bytes]:
        if self._heads is None:
            heads = [self._head(path) for path in self._paths]
            self.unsure = None in heads
            self._heads = [head for head in heads if head is not None]
        return self._heads

    def _head(self, path: str) -> bytes | None:
        if READABLE_COMPRESSED.search(path):  # a generation compressed since: its content
            return decompressed_head(path, self._fp_bytes)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            return read_head(fd, st.st_size, self._fp_bytes) if stat.S_ISREG(st.st_mode) else None
        except OSError:
            return None
        finally:
            os.close(fd)


def _alive(parsed: ParsedKey, files: _Directory) -> bool:
    if parsed.length == 0:
        return parsed.ident in files.idents
    return any(parsed.matches(head) for head in files.heads())


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
        gone_here = {key for key, parsed in keys if not _alive(parsed, files)}
        if not files.unsure:  # else a file we could not read may hold any of them: kept
            dead |= gone_here
    return dead


def prunable(held: dict[str, Checkpoint], following: Collection[str], fp_bytes: int) -> set[str]:
    """Of a source's checkpoints ``held`` (key -> checkpoint, in the order they were made), the
    keys to forget: gone, not of a file being read (``following``), and never all of them."""
    dead = gone((cp for key, cp in held.items() if key not in following), fp_bytes)
    if dead and len(dead) == len(held):
        dead.discard(next(reversed(held)))  # the newest stays: this source has started before
    return dead
