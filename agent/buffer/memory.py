"""The hot tail: recently committed records kept in memory, so sinks rarely read segment files.

Entries are appended only after the fsync that made them durable, so serving from here never
ships anything a crash could take back. Owned by the ``Buffer``; every method runs under
``Buffer.lock``.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate
from operator import itemgetter

# A committed record as the hot tail keeps it: (seq, h, wire form).
Entry = tuple[int, bytes, bytes]
_WIRE = itemgetter(2)


class HotTail:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: list[Entry] = []
        self._bytes = 0

    def extend(self, entries: list[Entry]) -> None:
        self._entries.extend(entries)
        self._bytes += sum(map(len, map(_WIRE, entries)))
        if self._bytes > self.max_bytes:
            # Trim to half at once: trimming costs a list shift, so do it rarely.
            cut = 0
            while self._bytes > self.max_bytes // 2 and cut < len(self._entries):
                self._bytes -= len(self._entries[cut][2])
                cut += 1
            del self._entries[:cut]

    def after(self, after_seq: int, max_records: int, max_bytes: int) -> list[Entry] | None:
        """Consecutive entries after ``after_seq``; None unless the next one is held here."""
        entries = self._entries
        if not entries or not entries[0][0] <= after_seq + 1 <= entries[-1][0]:
            return None
        start = after_seq + 1 - entries[0][0]
        if start >= len(entries) or entries[start][0] != after_seq + 1:
            return None  # a hole in seqs (after recovery): the file reader handles it
        out = entries[start : start + max_records]
        if out[-1][0] - out[0][0] != len(out) - 1:
            # Seqs only grow, so a run is consecutive exactly when its ends are len - 1 apart;
            # this one holds a hole (after recovery): end before it.
            hole = next(i for i in range(1, len(out)) if out[i][0] != out[i - 1][0] + 1)
            out = out[:hole]
        # Whole records up to the first that reaches max_bytes (at least one).
        sizes = list(accumulate(map(len, map(_WIRE, out))))
        return out[: bisect_left(sizes, max_bytes) + 1]

    def forget_through(self, seq: int) -> None:
        """Drop entries up to ``seq`` (their segments were deleted)."""
        cut = 0
        while cut < len(self._entries) and self._entries[cut][0] <= seq:
            self._bytes -= len(self._entries[cut][2])
            cut += 1
        del self._entries[:cut]
