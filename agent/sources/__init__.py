"""Sources: where records come from.

A source turns external input (a tailed file, the journal) into records plus a
**checkpoint**: the position the record advances. The checkpoint travels into the buffer in the
same frame as its record (DESIGN.md contract 2), so a position counts as consumed exactly when its
record is durable; on start a source is handed the checkpoints the buffer recovered and resumes
from them. A source never writes state files of its own.

Each source instance owns its own mutable state and is driven by its single ``run()`` task. It
hands records to the pipeline with ``await emit(batch)``; ``emit`` blocks when the buffer is full,
which is how backpressure reaches the source (it stops reading; files stay on disk).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from agent.record import Record


class Checkpoint(NamedTuple):
    """A source position: ``key`` identifies the input (e.g. a file identity), ``offset`` is the
    byte position just after the record it travels with. ``path`` is informational for files;
    for the journal it is the cursor, and ``offset`` counts entries (sources/journal.py).

    A named tuple, not a frozen dataclass: one is made per line, and a frozen dataclass costs
    twice as much to construct (bench/stages.py)."""

    source: str
    key: str
    offset: int
    path: str = ""


@dataclass(slots=True)
class Pending:
    """A record on its way to the buffer, with the checkpoint it advances (if any)."""

    record: Record
    checkpoint: Checkpoint | None


Emit = Callable[[list[Pending]], Awaitable[None]]
# The checkpoints a source resumes from: key -> last committed Checkpoint.
Checkpoints = Mapping[str, Checkpoint]
