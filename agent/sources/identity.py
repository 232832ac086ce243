"""File identity for the file source: which file a checkpoint belongs to, and its rotated siblings.

A checkpoint key is ``"{dev}:{ino}:{length}:{hash}"``: the device and inode, confirmed by a hash of
the file's first ``length`` bytes (at most ``fingerprint_bytes``). A reused inode or a recreated
path therefore never resumes at the old file's offset: its first bytes differ. A file shorter than
``fingerprint_bytes`` is keyed by the bytes it has when its first record ships (``length`` can be a
single line); once it has grown to ``fingerprint_bytes`` its key is upgraded, once. On restart a
checkpoint matches a file when the device and inode agree and the file's first ``length`` bytes
hash the same; of several matches the longest fingerprint wins (it is the newest key of that
file). Keys of the old ``"{dev}:{ino}"`` form carry no fingerprint and match by inode alone.

The fingerprint alone (any inode) also recognizes *content*: a rotated sibling whose first bytes
match a checkpoint is that file renamed, or its copy (copytruncate); one matching no checkpoint is
a generation that was never read (see ``KnownHeads``).

Two generations of one inode whose first ``fingerprint_bytes`` are identical cannot be told apart;
that is the limit of any fingerprint.

Everything here is pure or does blocking I/O on paths it is given; it runs in the file source's
worker threads and holds no state of its own beyond the objects the source owns.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from agent.sources import Checkpoint
from agent.sources.compressed import READABLE_COMPRESSED, content_head

# Names logrotate (and friends) give rotated files: numbered, dated (dateext), compressed.
ROTATED_NAME = re.compile(r"(\.\d{1,3}|-\d{8}(\d{2,6})?|\.(gz|xz|zst|bz2|lz4|zip|Z))$")
_COMPRESSED = re.compile(r"\.(gz|xz|zst|bz2|lz4|zip|Z)$")
_SAME_START = 4096  # bytes compared to tell X.gz the compressed copy of X


def fingerprint(head: bytes) -> str:
    """``"{length}:{hash}"`` of a file's first bytes."""
    return f"{len(head)}:{hashlib.blake2b(head, digest_size=8).hexdigest()}"


def make_key(ident: str, head: bytes) -> str:
    return f"{ident}:{fingerprint(head)}"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    ident: str  # "dev:ino"
    length: int  # bytes the fingerprint covers; 0 = no fingerprint (legacy key)
    digest: str

    def matches(self, head: bytes) -> bool:
        """Whether a file starting with ``head`` (its first min(size, N) bytes) is this one."""
        if self.length == 0:
            return True
        return len(head) >= self.length and fingerprint(head[: self.length]) == (
            f"{self.length}:{self.digest}"
        )


def parse_key(key: str) -> ParsedKey | None:
    parts = key.split(":")
    try:
        if len(parts) == 2:
            return ParsedKey(key, 0, "")
        if len(parts) == 4:
            return ParsedKey(f"{parts[0]}:{parts[1]}", int(parts[2]), parts[3])
    except ValueError:
        pass
    return None


def match(candidates: Iterable[Checkpoint], head: bytes) -> Checkpoint | None:
    """The checkpoint (of one inode) that a file starting with ``head`` continues, if any."""
    best: tuple[int, Checkpoint] | None = None
    for cp in candidates:
        parsed = parse_key(cp.key)
        if (
            parsed is not None
            and parsed.matches(head)
            and (best is None or parsed.length > best[0])
        ):
            best = (parsed.length, cp)
    return None if best is None else best[1]


class KnownHeads:
    """Fingerprints of content already shipped: checkpoint keys by fingerprint length. A file
    whose head matches one is known content (the same file renamed, or a copy of it)."""

    def __init__(self) -> None:
        self._by_length: dict[int, dict[str, Checkpoint]] = {}

    def add(self, cp: Checkpoint) -> None:
        parsed = parse_key(cp.key)
        if parsed is None or parsed.length == 0:
            return
        known = self._by_length.setdefault(parsed.length, {})
        old = known.get(parsed.digest)
        if old is None or cp.offset > old.offset:
            known[parsed.digest] = cp

    def discard(self, keys: Collection[str]) -> None:
        """Forget the content known through the checkpoints ``keys``."""
        for known in self._by_length.values():
            for digest in [d for d, cp in known.items() if cp.key in keys]:
                del known[digest]

    def merge(self, other: KnownHeads) -> None:
        for length, known in other._by_length.items():
            self._by_length.setdefault(length, {}).update(known)

    def find(self, head: bytes) -> Checkpoint | None:
        """The checkpoint of the longest known fingerprint that ``head`` starts with."""
        for length in sorted(self._by_length, reverse=True):
            if len(head) >= length:
                digest = fingerprint(head[:length]).split(":", 1)[1]
                cp = self._by_length[length].get(digest)
                if cp is not None:
                    return cp
        return None


def read_head(fd: int, size: int, limit: int) -> bytes:
    """The first ``min(size, limit)`` bytes of an open file (short if it shrank meanwhile)."""
    want = min(size, limit)
    return os.pread(fd, want, 0) if want > 0 else b""


@dataclass(frozen=True, slots=True)
class Sibling:
    path: str
    ident: str
    size: int  # on disk: of a compressed sibling, compressed
    mtime_ns: int

    @property
    def compressed(self) -> bool:
        return READABLE_COMPRESSED.search(self.path) is not None


def siblings(path: str) -> list[Sibling]:
    """Regular files next to ``path`` whose name extends its name: where rotation puts its
    older generations (``app.log.1``, ``app.log-20240101``, ``app.log.2.gz``). Oldest first."""
    directory = os.path.dirname(path)  # noqa: PTH120
    return entries(directory, lambda other: other != path and other.startswith(path))


def entries(directory: str, wanted: Callable[[str], bool]) -> list[Sibling]:
    """The regular files in ``directory`` whose path is ``wanted``, uncompressed or in a
    compression that is read (``READABLE_COMPRESSED``). Oldest first."""
    try:
        names = os.listdir(directory or ".")  # noqa: PTH208 -- names only, no Path per entry
    except OSError:
        return []
    found = []
    for other in names:
        full = os.path.join(directory, other)  # noqa: PTH118
        if (_COMPRESSED.search(other) and not READABLE_COMPRESSED.search(other)) or not wanted(
            full
        ):
            continue
        try:
            st = os.stat(full)  # noqa: PTH116
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append(Sibling(full, f"{st.st_dev}:{st.st_ino}", st.st_size, st.st_mtime_ns))
    # A generation both plain and compressed (gzip still writing, or gzip -k) is read plain,
    # once: the compressed copy starts with the same bytes. (By name alone, an older X.gz would
    # hide behind a newer X.)
    plain = {s.path for s in found if not s.compressed}
    found = [s for s in found if not (s.compressed and _same_start(s.path, plain))]
    found.sort(key=lambda s: s.mtime_ns)
    return found


def _same_start(packed: str, plain: set[str]) -> bool:
    """Whether ``packed`` (``X.gz``) has a plain ``X`` beside it with the same first bytes."""
    name = packed.rsplit(".", 1)[0]
    if name not in plain:
        return False
    head = content_head(name, _SAME_START)
    return bool(head) and content_head(packed, len(head or b"")) == head
