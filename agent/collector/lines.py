"""Record lines held as one body and the offsets where they end (:class:`BodyLines`).

The collector receives a batch as one decompressed body of NDJSON. It verifies the lines where
they are (``parse_records``), indexes them by their offsets and stores them as they came: a
view of the body, not a join of copies. A ``bytes`` object per line (``split``) cost a copy of
the whole body and an allocation per record, ~10 % of the collector's CPU under load; here a
line becomes a ``bytes`` only when one is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import accumulate, repeat
from operator import add
from typing import overload


def count_lines(data: bytes, begin: int) -> int:
    """How many lines :meth:`BodyLines.split` finds in ``data[begin:]``, counted in C (a
    refusal for a wrong count needs no offset per line of a body full of them)."""
    if begin >= len(data):
        return 0
    return data.count(b"\n", begin) + (data[-1] != ord("\n"))


class BodyLines(Sequence[bytes]):
    """Lines ``lo..hi`` of ``data``: line ``i`` ends at ``ends[i]`` (its newline, or the end of
    ``data`` for a last line without one) and starts after the newline of the line before it
    (the first, at ``begin``). A slice is a view of the same body."""

    __slots__ = ("_begin", "_data", "_ends", "_hi", "_lo")

    def __init__(
        self, data: bytes, begin: int, ends: Sequence[int], lo: int = 0, hi: int | None = None
    ) -> None:
        self._data, self._begin, self._ends = data, begin, ends
        self._lo = lo
        self._hi = len(ends) if hi is None else hi

    @classmethod
    def split(cls, data: bytes, begin: int) -> BodyLines:
        """The lines of ``data[begin:]`` as ``split(b"\\n")`` cuts them, without the empty one
        after a final newline (the way without the compiled check, which finds them as it
        verifies). Line i ends at ``begin - 1`` plus the lengths of lines 0..i, a newline each:
        summed by iterators in C, not a Python loop over the lines."""
        lines = data[begin:].split(b"\n") if begin < len(data) else []
        if lines and not lines[-1]:
            lines.pop()
        ends = accumulate(map(add, map(len, lines), repeat(1)), initial=begin - 1)
        next(ends)  # the initial value: the end of no line
        return cls(data, begin, list(ends))

    def __len__(self) -> int:
        return self._hi - self._lo

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> BodyLines: ...

    def __getitem__(self, index: int | slice) -> bytes | BodyLines:
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step != 1:
                raise ValueError("lines of a body are sliced without a step")
            return BodyLines(
                self._data, self._begin, self._ends, self._lo + lo, self._lo + max(lo, hi)
            )
        at = index + len(self) if index < 0 else index
        if not 0 <= at < len(self):
            raise IndexError("line index out of range")
        at += self._lo
        return self._data[self._start(at) : self._ends[at]]

    def __iter__(self) -> Iterator[bytes]:
        data, ends = self._data, self._ends
        start = self._start(self._lo)
        for at in range(self._lo, self._hi):
            end = ends[at]
            yield data[start:end]
            start = end + 1

    def _start(self, at: int) -> int:
        return self._begin if at == 0 else self._ends[at - 1] + 1

    def offset(self, index: int) -> int:
        """Where line ``index`` (0 to ``len``) starts in :attr:`stored`: the bytes of the lines
        before it and their newlines."""
        if not 0 <= index <= len(self):
            raise IndexError("line index out of range")
        return self._start(self._lo + index) - self._start(self._lo)

    @property
    def stored(self) -> memoryview | None:
        """The lines as stored, each followed by its newline: a view of the body. None when
        there are none, or the last one has no newline in the body."""
        if self._hi == self._lo:
            return None
        end = self._ends[self._hi - 1]
        if end >= len(self._data):
            return None
        return memoryview(self._data)[self._start(self._lo) : end + 1]
