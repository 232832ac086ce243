"""Multi-line records for the file source: consecutive lines grouped by a start pattern.

A line whose text matches ``multiline_start`` (``re.match``) starts a new record; any other line
is appended to the record being built, joined with ``"\\n"`` (a stack trace under its log line).
The group ships when the next start line arrives, when it has waited ``multiline_timeout``
seconds for another line, when adding a line would take it past ``max_line_bytes`` characters
(the line then starts the next group instead), or when its file is retired.

Invariant: a group's checkpoint is the end of its last line, and groups ship in file order, so
checkpoints stay monotonic. A group not shipped yet is not checkpointed: a restart re-reads its
lines from the last checkpoint and groups them again.

State ownership: one ``Grouper`` per tailed file, owned by the file source's ``run()`` task.
"""

from __future__ import annotations

import re

from agent.sources import Pending


class Grouper:
    def __init__(self, start: re.Pattern[str], max_chars: int) -> None:
        self._start = start
        self._max = max_chars
        self._held: Pending | None = None
        self._size = 0
        self._lines = 0
        self.since = 0.0  # monotonic time the held group last grew

    @property
    def holding(self) -> bool:
        return self._held is not None

    @property
    def offset(self) -> int:
        """File offset where the held group starts (meaningful only while ``holding``)."""
        return int(self._held.record["log"]["offset"]) if self._held is not None else 0

    def feed(self, batch: list[Pending], now: float) -> list[Pending]:
        """Group the line records of ``batch``; return the groups that are complete."""
        out: list[Pending] = []
        start = self._start.match
        for item in batch:
            msg = item.record.get("msg", "")
            held = self._held
            if held is None or start(msg) or self._size + 1 + len(msg) > self._max:
                if held is not None:
                    out.append(self._finish(held))
                self._held, self._size, self._lines = item, len(msg), 1
                continue
            record = held.record
            record["msg"] += "\n" + msg
            for tag in item.record.get("tags", ()):
                tags = record.setdefault("tags", [])
                if tag not in tags:
                    tags.append(tag)
            held.checkpoint = item.checkpoint
            self._size += 1 + len(msg)
            self._lines += 1
        if batch:
            self.since = now
        return out

    def flush(self) -> list[Pending]:
        """Ship the held group as it is (timeout, retirement)."""
        held, self._held = self._held, None
        return [] if held is None else [self._finish(held)]

    def _finish(self, held: Pending) -> Pending:
        if self._lines > 1:
            held.record["log"]["lines"] = self._lines
        return held
