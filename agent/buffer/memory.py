"""The hot tail: recently committed records kept in memory, so sinks rarely read segment files.

Entries are appended only after the fsync that made them durable, so serving from here never
ships anything a crash could take back. Owned by the ``Buffer``; every method runs under
``Buffer.lock``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate, islice
from operator import itemgetter

# A committed record as the hot tail keeps it: (seq, h, wire form).
Entry = tuple[int, bytes, bytes]
_SEQ, _WIRE = itemgetter(0), itemgetter(2)


def take_run(
    seqs: list[int], sizes: Iterable[int], max_records: int, max_bytes: int
) -> tuple[int, int]:
    """How many records of a batch to take from the start of ``seqs`` (and their bytes): up to
    the first hole in seqs (after recovery), ``max_records``, and the first record whose running
    size reaches ``max_bytes`` — at least one. Shared by the hot tail and the file reader."""
    take = min(len(seqs), max_records)
    if seqs[take - 1] - seqs[0] != take - 1:  # seqs only grow: ends len - 1 apart = no hole
        take = next(i for i in range(1, take) if seqs[i] != seqs[i - 1] + 1)
    running = list(accumulate(islice(sizes, take)))
    take = min(take, bisect_left(running, max_bytes) + 1)
    return take, running[take - 1]


class HotTail:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: list[Entry] = []
        # Running wire bytes through each entry, counted from the tail's start: a trim finds its
        # cut by bisection instead of summing every entry held (~12k of them at 4 MiB).
        self._ends: list[int] = []
        self._base = 0  # the running count before _entries[0]

    def extend(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self._entries.extend(entries)
        start = self._ends[-1] if self._ends else self._base
        self._ends.extend(islice(accumulate(map(len, map(_WIRE, entries)), initial=start), 1, None))
        if self._bytes > self.max_bytes:
            # Trim to half at once: trimming costs a list shift, so do it rarely. The cut is
            # the first entry whose running size takes what is left to half or below.
            excess = self._bytes - self.max_bytes // 2
            cut = min(bisect_left(self._ends, self._base + excess) + 1, len(self._ends))
            self._drop(cut)

    def _drop(self, cut: int) -> None:
        """Forget the first ``cut`` entries."""
        if cut:
            self._base = self._ends[cut - 1]
            del self._entries[:cut]
            del self._ends[:cut]

    @property
    def _bytes(self) -> int:
        """Wire bytes of the entries held."""
        return self._ends[-1] - self._base if self._ends else 0

    def after(self, after_seq: int, max_records: int, max_bytes: int) -> list[Entry] | None:
        """Consecutive entries after ``after_seq``; None unless the next one is held here."""
        entries = self._entries
        if not entries or not entries[0][0] <= after_seq + 1 <= entries[-1][0]:
            return None
        start = after_seq + 1 - entries[0][0]
        if start >= len(entries) or entries[start][0] != after_seq + 1:
            return None  # a hole in seqs (after recovery): the file reader handles it
        out = entries[start : start + max_records]
        take, _ = take_run(list(map(_SEQ, out)), map(len, map(_WIRE, out)), max_records, max_bytes)
        return out[:take]

    def forget_through(self, seq: int) -> None:
        """Drop entries up to ``seq`` (their segments were deleted)."""
        cut = 0
        while cut < len(self._entries) and self._entries[cut][0] <= seq:
            cut += 1
        self._drop(cut)
