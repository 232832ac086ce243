"""Wake-ups for the file source: inotify (through watchdog) with a polling fallback.

The watchdog thread only sets a coalescing flag and wakes the source's ``run()`` task through
``loop.call_soon_threadsafe``; everything else here runs in the source's worker threads while
``run()`` awaits them. When inotify cannot start or runs out of watches the source just polls
every ``poll_interval``; it never stops because of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePath

from watchdog import events
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

_log = logging.getLogger("agent.sources.file")
_MAGIC = re.compile(r"[*?[]")
# Opens and reads (ours included) are not changes: subscribing to them would wake us in a loop.
_WAKE_EVENTS: list[type[events.FileSystemEvent]] = [
    *(events.FileCreatedEvent, events.FileDeletedEvent, events.FileModifiedEvent),
    *(events.FileMovedEvent, events.DirCreatedEvent, events.DirDeletedEvent, events.DirMovedEvent),
]


class Watcher(events.FileSystemEventHandler):
    """Turns inotify events into wake-ups of the run task. Without an observer (inotify could
    not start) the source just polls."""

    def __init__(
        self,
        source: str,
        patterns: list[str],
        wake: asyncio.Event,
        observer_factory: Callable[[], BaseObserver] = Observer,
    ) -> None:
        super().__init__()
        self._observer_factory = observer_factory
        self._source = source
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._observer: BaseObserver | None = None
        self._fire_scheduled = False
        self.paths: frozenset[str] = frozenset()  # the tailed paths, replaced each round
        # Watch the deepest directory without glob magic, recursively when the rest of the
        # directory part has magic: "/var/log/**/*.log" watches /var/log and what is below.
        roots: dict[str, bool] = {}
        for pattern in patterns:
            parts = PurePath(pattern).parent.parts
            fixed = list(itertools.takewhile(lambda part: not _MAGIC.search(part), parts))
            root = str(PurePath(*fixed))
            roots[root] = roots.get(root, False) or len(fixed) < len(parts)
        self._unwatched = list(roots.items())

    def start(self) -> None:  # worker thread
        try:
            self._observer = self._observer_factory()
            self._observer.start()
        except OSError as exc:
            self._fall_back(exc)  # stop() also ends a half-started observer
            return
        self.watch_new_roots()

    def watch_new_roots(self) -> None:  # worker thread
        """Watch the roots that exist now; one created later is picked up by a later round."""
        missing = []
        for root, recursive in self._unwatched:
            if self._observer is None:
                return
            try:
                if Path(root).is_dir():
                    self._observer.schedule(
                        self, root, recursive=recursive, event_filter=_WAKE_EVENTS
                    )
                    continue
            except (FileNotFoundError, NotADirectoryError):
                pass  # gone again since is_dir()
            except OSError as exc:  # typically the inotify watch limit
                self._fall_back(exc)
            missing.append((root, recursive))
        self._unwatched = missing

    def stop(self) -> None:  # worker thread
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            with contextlib.suppress(RuntimeError):  # it never started
                observer.join()

    def _fall_back(self, exc: OSError) -> None:
        _log.warning("file source %s: inotify unavailable, polling only: %s", self._source, exc)
        self.stop()

    def on_any_event(self, event: events.FileSystemEvent) -> None:  # watchdog thread
        path = os.fsdecode(event.src_path)
        if isinstance(event, events.FileModifiedEvent) and path not in self.paths:
            return  # a busy file we do not tail must not keep us awake
        if self._fire_scheduled:
            return  # one wake-up per burst: the round it triggers reads everything anyway
        self._fire_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop closed while the observer stopped
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:  # event loop
        self._fire_scheduled = False
        self._wake.set()
