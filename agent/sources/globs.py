"""Which paths the file source tails: include globs (with ``**``) minus excludes and, by default,
rotated siblings.

``exclude_rotated`` skips names rotation gives older generations (``app.log.1``, ``*.gz``,
``app.log-20240101``; ``identity.ROTATED_NAME``) wherever the file-name part of a pattern is a
glob; a literal ``app.log.1`` is what it asks for. Skipping them never loses a line of a file the
source already follows: a file that leaves the glob set is read to its end (``file.py``), and
generations rotated away unseen are found through ``rotated_of`` (``rotated.py``).

Immutable after construction; used from the file source's worker threads.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re

from agent.config import FileSourceConfig
from agent.sources.identity import ROTATED_NAME

_MAGIC = re.compile(r"[*?[]")


class Globs:
    def __init__(self, config: FileSourceConfig) -> None:
        # Absolute, normalized patterns, as watchdog reports paths. Not resolve(): configured
        # names stay as they are even when they go through symlinks.
        self.patterns = [os.path.abspath(p) for p in config.paths]  # noqa: PTH100
        # Directories named without glob magic: swept for rotated generations even while empty.
        self.directories = {
            os.path.dirname(p)  # noqa: PTH120
            for p in self.patterns
            if not _MAGIC.search(os.path.dirname(p))  # noqa: PTH120
        }
        self._exclude = list(config.exclude)
        self._skip_rotated = [
            config.exclude_rotated and bool(_MAGIC.search(os.path.basename(p)))  # noqa: PTH119
            for p in self.patterns
        ]

    def match(self) -> list[str]:
        """Every path the globs match now, in pattern order, each once."""
        paths: dict[str, None] = {}
        for pattern, skip_rotated in zip(self.patterns, self._skip_rotated, strict=True):
            # Path.glob takes no absolute patterns; glob.glob does, and "**" with recursive=True.
            for path in sorted(glob.glob(pattern, recursive=True)):  # noqa: PTH207
                if skip_rotated and ROTATED_NAME.search(path):
                    continue
                if not self._excluded(path):
                    paths[path] = None
        return list(paths)

    def rotated_of(self, path: str) -> bool:
        """Whether ``path`` is a rotated name (``app.log.1``, ``app.log.1.gz``,
        ``app.log-20240101.gz``) of a name the globs match."""
        base = path
        while (shorter := ROTATED_NAME.sub("", base)) != base:
            base = shorter
        return (
            base != path
            and any(fnmatch.fnmatchcase(base, p) for p in self.patterns)
            and not self._excluded(base)
        )

    def _excluded(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, ex) for ex in self._exclude)
