"""Suspects: which strings may hold a secret, found for many strings in one pass.

Role: ``Suspects(values)`` answers, for each value, whether some built-in rule (``rules.py``) may
change it, so that ``Redactor`` runs the rules only on those and ``redact_batch`` walks only the
records holding one. Hyperscan over a big batch joined by "\\n", ``str.find`` over a small one,
a check per value below that: the same answers (tests hold them equal to ``_suspects``).

A value is suspect when it holds a word of ``_FAST_WORDS`` (the triggers of rules without a
prefilter) or an AWS key id, or a word of ``_GATED_WORDS`` (the triggers of rules with one)
confirmed by ``_confirmed``. The gate matters for auth logs, where "Failed password for ..."
and the parsed method "password" hold "pass" but never a ``password=`` assignment: checking
the prefilter once per such value costs far less than running the rules on it and walking its
record's fields. ``confirm=False`` counts the words alone, for JSON texts (``may_hold``).

State: a ``Suspects`` makes its Hyperscan scanner (and scratch space) for its first big batch;
one thread drives it at a time, as the ``Redactor`` that owns it.
"""

from __future__ import annotations

import importlib.util
import re
from bisect import bisect_right
from collections.abc import Collection, Iterator, Sequence, Sized
from itertools import accumulate, pairwise, repeat
from operator import add
from typing import cast

from agent.transforms.rules import AWS_PREFIX, BUILTIN_RULES, Rule, caseless

# Without a hyperscan wheel for the platform, the pure-Python scan gives the same answers.
_HYPERSCAN = importlib.util.find_spec("hyperscan") is not None
# Smaller batches (a trickle of lines) are scanned with ``str.find``: the scanner pays off on
# big ones, and loading its library costs ~6 MB of RSS that an idle agent need not carry.
_SCAN_MIN = 64
_FIND_MIN = 4  # below this, one ``_suspect`` per value beats joining them for ``_find_suspects``


def _cover(rules: tuple[Rule, ...], *, beside: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fewest lower-case words such that every line some rule can match holds one: the
    rules' own triggers, minus any that contains a shorter one ("--pass" holds "-pass") or a
    word of ``beside`` (a line holding that is found by it). AWS key ids are upper case and
    found by their own regex instead; rules with ``exact`` words by those (``_EXACT_WORDS``)."""
    words = {
        w
        for rule in rules
        if rule.name != "aws_access_key" and not rule.exact
        for w in rule.triggers
    }
    return tuple(
        sorted(
            w
            for w in words
            if not any(o != w and o in w for o in words) and not any(o in w for o in beside)
        )
    )


# The fast path. Python's ``re`` is slow at alternations of literals; ``in`` over one
# ``lower()`` copy is several times faster, and one Hyperscan pass over a whole batch faster still.
_GATED = tuple(rule for rule in BUILTIN_RULES if rule.prefilter is not None)
_FAST_WORDS = _cover(tuple(rule for rule in BUILTIN_RULES if rule.prefilter is None))
_GATED_WORDS = _cover(_GATED, beside=_FAST_WORDS)
# For each gated word (by its index in _GATED_WORDS), the prefilters of the rules it stands for
# (those with a trigger that holds it), searched one after the other in the lowered text: one
# pattern of them all cost re its literal-prefix search (2.6 us a line against 0.6 for the
# slowest alone), and a word needs only its own rules' (a "curl" user agent, in every line of
# some access logs, is confirmed by "-u|--user" alone).
_WORD_GATES = tuple(
    tuple(
        rule.prefilter
        for rule in _GATED
        if rule.prefilter is not None and any(word in trigger for trigger in rule.triggers)
    )
    for word in _GATED_WORDS
)
_FAST_AWS = re.compile(rf"(?:{AWS_PREFIX})[A-Z0-9]{{16}}")
# The gates, each once (by its number in _GATES), and for each gated word the numbers of its own.
_GATES = tuple({gate.pattern: gate for gates in _WORD_GATES for gate in gates}.values())
_WORD_GATE_IDS = tuple(frozenset(_GATES.index(gate) for gate in gates) for gates in _WORD_GATES)
# re's ``\s`` on ASCII text but "\n" (a run's lines are scanned joined by it): also \x1c-\x1f.
_LINE_SPACE = r"[ \t\x0b\x0c\r\x1c-\x1f]"


def _line_gate(pattern: str) -> bytes:
    r"""A gate's pattern as Hyperscan matches it in ASCII lines joined by "\n", caselessly (as
    re does in the lowered line): ``\s`` made ``_LINE_SPACE``, so that no match spans two
    lines, and the escapes view's private-use character dropped (never in ASCII text).
    The tests hold the scanner's spans to ``_suspects`` on such lines."""
    return pattern.replace("|\\ue000", "").replace("\\s", _LINE_SPACE).encode("ascii")


# Case-sensitive words, looked for in the text as it is (``Rule.exact``).
_EXACT_WORDS = tuple(sorted({word for rule in BUILTIN_RULES for word in rule.exact}))


def _confirmed(value: str, words: Collection[int]) -> bool:
    """Whether ``value``, which holds the ``_GATED_WORDS`` numbered ``words``, is suspect:
    unless it is ASCII and no prefilter of the rules those words stand for finds anything in it
    lowered (a prefilter is a necessary condition of its rule on ASCII text only, which is also
    when ``Redactor.text`` consults it)."""
    if not value.isascii():
        return True
    low = value.lower()
    gates = {gate for k in words for gate in _WORD_GATES[k]}
    return any(gate.search(low) for gate in gates)


def _suspect(value: str) -> bool:
    low = caseless(value)
    if any(map(low.__contains__, _FAST_WORDS)) or _FAST_AWS.search(value):
        return True
    if any(map(value.__contains__, _EXACT_WORDS)):
        return True
    words = [k for k, word in enumerate(_GATED_WORDS) if word in low]
    return bool(words) and _confirmed(value, words)


def _unconfirmed(value: str) -> bool:
    """``_suspect`` without the gate: any trigger word at all. For JSON texts (``may_hold``),
    where escapes (``\\"``, ``\\t``) can hide the separator a prefilter looks for."""
    low = caseless(value)
    words = (*_FAST_WORDS, *_GATED_WORDS)
    if any(map(low.__contains__, words)) or any(map(value.__contains__, _EXACT_WORDS)):
        return True
    return bool(_FAST_AWS.search(value))


def _suspects(values: list[str], *, confirm: bool = True) -> bytearray:
    """``_suspect`` of each value (1 or 0), or ``_unconfirmed`` if not ``confirm``: the reference
    the batch scanners must agree with."""
    return bytearray(map(_suspect if confirm else _unconfirmed, values))


def _ends(values: Sequence[Sized]) -> list[int]:
    """Where each of ``values`` ends once they are joined by one separator (one past it)."""
    return list(accumulate(map(add, map(len, values), repeat(1))))


def _mark(offsets: list[int], ends: list[int], flags: bytearray) -> None:
    for at in offsets:  # value i ends at ends[i]
        flags[bisect_right(ends, at)] = 1


def _gate(
    found: list[tuple[int, int]],
    ends: list[int],
    values: list[str],
    flags: bytearray,
    confirm: bool,
) -> None:
    """Flag the values holding a gated word where ``found`` says (offset and word, as
    ``_mark``), once ``_confirmed``."""
    if not confirm:
        _mark([at for at, _ in found], ends, flags)
        return
    words: dict[int, set[int]] = {}
    for at, word in found:
        words.setdefault(bisect_right(ends, at), set()).add(word)
    for i, held in words.items():
        if not flags[i] and _confirmed(values[i], held):
            flags[i] = 1


def _find_aws(text: str, values: list[str], flags: bytearray) -> None:
    """Flag the values holding an AWS key id, ``text`` being them joined by "\\n"."""
    if starts := [m.start() for m in _FAST_AWS.finditer(text)]:
        _mark(starts, _ends(values), flags)


def _find_exact(text: str, values: list[str], flags: bytearray) -> None:
    """Flag the values holding an ``_EXACT_WORDS`` word as it is, ``text`` being them joined by
    "\\n"."""
    ends: list[int] = []
    for word in _EXACT_WORDS:
        at = text.find(word)
        while at >= 0:  # after a hit, on from the next value
            ends = ends or _ends(values)
            i = bisect_right(ends, at)
            flags[i] = 1
            at = text.find(word, ends[i])


def _find_suspects(values: list[str], *, confirm: bool = True) -> bytearray:
    """``_suspects`` by ``str.find`` over the values joined: a pass per word over the batch, not
    one per value. No word holds the "\\n" that joins them, so a hit lies inside one value.
    Non-ASCII values are made ``caseless`` one by one, as ``_suspect`` does, and where each ends
    is counted in those (lowering may change lengths: str.lower() makes two of "\\u0130")."""
    flags = bytearray(len(values))
    text = "\n".join(values)
    if text.isascii():
        low, ends = text.lower(), _ends(values)
    else:
        lowered = [caseless(v) for v in values]
        low, ends = "\n".join(lowered), _ends(lowered)
    gated: list[tuple[int, int]] = []  # (offset, word) of each gated word found
    for words, gate in ((_FAST_WORDS, False), (_GATED_WORDS, True)):
        for k, word in enumerate(words):
            at = low.find(word)
            while at >= 0:  # after a hit, on from the next value: one hit per word and value
                i = bisect_right(ends, at)
                if gate:
                    gated.append((at, k))
                else:
                    flags[i] = 1
                at = low.find(word, ends[i])
    _find_aws(text, values, flags)
    _find_exact(text, values, flags)
    _gate(gated, ends, values, flags, confirm)
    return flags


def every_line(data: bytes, begin: int, end: int) -> list[tuple[int, int]]:
    """The (start, newline) offsets in ``data`` of each line of ``data[begin:end]`` (whole
    lines, each ending in "\\n")."""
    lengths = map(len, data[begin : end - 1].split(b"\n"))  # in C: a run may be 256 KiB
    starts = list(accumulate(map(add, lengths, repeat(1)), initial=begin))
    return [(start, stop - 1) for start, stop in pairwise(starts)]


def _by_line(
    data: bytes, begin: int, end: int, found: list[tuple[int, int]]
) -> Iterator[tuple[int, int, set[int]]]:
    """The lines of ``data[begin:end]`` that (offset relative to ``begin``, word) pairs fall in,
    each once, as (start, newline, the words): a line is looked for once, not once per hit (a
    long line of one word holds a hit every few bytes, and each look costs the line's length)."""
    stop, start, words = -1, 0, set[int]()
    for offset, word in sorted(found):
        at = begin + offset
        if at >= stop:  # past the line looked at last: find this one
            if words:
                yield start, stop, words
            start = data.rfind(b"\n", begin, at) + 1 or begin
            stop, words = data.find(b"\n", at, end), set()
        words.add(word)
    if words:
        yield start, stop, words


class _Found:
    """What one Hyperscan scan found (its match handler): the offsets of the last byte of each
    trigger word, of each gated word (with its number in ``_GATED_WORDS``) and of each AWS key
    id prefix. Ids from ``exact_id`` to ``gated_id`` (exact words) are left out when set: a scan
    of lowered text finds them where the text did not hold them so."""

    __slots__ = ("aws_id", "exact_id", "gate_id", "gated", "gated_id", "gates", "hits", "prefixes")

    def __init__(self, gated_id: int, aws_id: int, gate_id: int) -> None:
        self.gated_id, self.aws_id, self.exact_id = gated_id, aws_id, gated_id
        self.gate_id = gate_id
        self.hits: list[int] = []
        self.gated: list[tuple[int, int]] = []
        self.prefixes: list[int] = []
        self.gates: list[tuple[int, int]] = []  # (offset, gate's number): spans only

    def __call__(self, id_: int, _start: int, end: int, _flags: int, _context: object) -> None:
        if id_ >= self.gate_id:
            self.gates.append((end - 1, id_ - self.gate_id))
        elif id_ >= self.aws_id:
            self.prefixes.append(end - 1)
        elif id_ >= self.gated_id:
            self.gated.append((end - 1, id_ - self.gated_id))
        elif id_ < self.exact_id:
            self.hits.append(end - 1)

    def __bool__(self) -> bool:
        return bool(self.hits or self.gated or self.prefixes)


class _BatchScanner:
    """``_suspects`` in one Hyperscan pass over a batch's values joined by "\\n" (which no
    trigger word holds, so a hit's offset says which value holds it).

    An ASCII batch (the common case) is scanned as it is, the words matching ASCII-caselessly
    (on ASCII text, what ``str.lower`` gives); the ``_EXACT_WORDS`` and AWS key id prefixes,
    case-sensitive, are in the database too, and a value with a prefix is checked with the
    regex. Otherwise values are made ``caseless`` by Python (what the triggers assume: the
    Kelvin sign lowers to "k"), scanned as UTF-8, and the exact words and the AWS regex are
    looked for in the original text. Values with a gated word are confirmed one by one
    (``_gate``); in a run's lines (``spans``) the gates themselves are in the scan, so a line is
    confirmed without a regex search of its own (0.6 -> 0.24 us a line on the benchmark's auth
    lines, a quarter of which say "Failed password"). (The whole AWS regex in the database
    would take ~50 ms to compile, literals ~1 ms.) One scanner (and its scratch space) per
    ``Redactor``, which one thread drives at a time.
    """

    def __init__(self) -> None:
        import hyperscan

        self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        # ids: caseless fast words, exact words (both flag their value), gated words, prefixes
        words = [re.escape(word).encode() for word in (*_FAST_WORDS, *_EXACT_WORDS, *_GATED_WORDS)]
        self.gated_id = len(_FAST_WORDS) + len(_EXACT_WORDS)  # ids from here on are gated words
        self.aws_id = len(words)  # ids from here on are AWS key id prefixes
        prefixes = [prefix.encode() for prefix in AWS_PREFIX.split("|")]
        self.gate_id = len(words) + len(prefixes)  # then the gates (spans: ASCII lines)
        gates = [_line_gate(gate.pattern) for gate in _GATES]
        caseless_flag = hyperscan.HS_FLAG_CASELESS
        self.db.compile(
            expressions=words + prefixes + gates,
            ids=list(range(len(words) + len(prefixes) + len(gates))),
            flags=[caseless_flag] * len(_FAST_WORDS)
            + [0] * len(_EXACT_WORDS)
            + [caseless_flag] * len(_GATED_WORDS)
            + [0] * len(prefixes)
            + [caseless_flag] * len(gates),
        )

    def _found(self) -> _Found:
        return _Found(self.gated_id, self.aws_id, self.gate_id)

    def __call__(self, values: list[str], *, confirm: bool = True) -> bytearray:
        flags = bytearray(len(values))
        text = "\n".join(values)
        found = self._found()
        if text.isascii():
            self.db.scan(text.encode("ascii"), match_event_handler=found)
            if found:  # where values end matters only then: most are clean
                self._ascii(values, flags, found, confirm)
            return flags
        lowered = [caseless(v).encode("utf-8", "surrogatepass") for v in values]
        found.exact_id = len(_FAST_WORDS)  # exact words in lowered text were not so in the text
        self.db.scan(b"\n".join(lowered), match_event_handler=found)
        ends = _ends(lowered) if found.hits or found.gated else []
        _mark(found.hits, ends, flags)
        _find_aws(text, values, flags)
        _find_exact(text, values, flags)
        _gate(found.gated, ends, values, flags, confirm)
        return flags

    def spans(self, data: bytes, begin: int, end: int) -> list[tuple[int, int]]:
        """The lines of ``data[begin:end]`` (ASCII, each ending in "\\n") that ``__call__``
        flags, as the (start, newline) offsets of each in ``data``, in order. One scan over the
        bytes in place; only a line a hit falls in is looked at (most lines hold none)."""
        scanned = self._found()
        with memoryview(data) as view:  # scan takes any buffer; its stub says bytes or str
            self.db.scan(cast(bytes, view[begin:end]), match_event_handler=scanned)
        if not scanned:
            return []
        hits = [(at, 0) for at in scanned.hits]
        # start -> newline of each line flagged
        found = {start: stop for start, stop, _ in _by_line(data, begin, end, hits)}
        prefixes = [(at, 0) for at in scanned.prefixes]
        for start, stop, _ in _by_line(data, begin, end, prefixes):
            if start not in found and _FAST_AWS.search(data[start:stop].decode("ascii")):
                found[start] = stop
        # A line with a gated word is flagged if a gate of that word's matched in it: the
        # gates were in the scan (what ``_confirmed`` searches, one line at a time).
        gates = {start: hit for start, _, hit in _by_line(data, begin, end, scanned.gates)}
        for start, stop, words in _by_line(data, begin, end, scanned.gated):
            hit = gates.get(start)
            if (
                start not in found
                and hit
                and any(not hit.isdisjoint(_WORD_GATE_IDS[k]) for k in words)
            ):
                found[start] = stop
        return sorted(found.items())

    @staticmethod
    def _ascii(values: list[str], flags: bytearray, found: _Found, confirm: bool) -> None:
        """Flag the ASCII values that what a scan found in them joined by "\\n" says may hold
        one."""
        ends = _ends(values)
        _mark(found.hits, ends, flags)
        for i in {bisect_right(ends, at) for at in found.prefixes}:  # each value once
            flags[i] = flags[i] or _FAST_AWS.search(values[i]) is not None
        _gate(found.gated, ends, values, flags, confirm)


class Suspects:
    """``_suspects`` of a batch by the cheapest scan for its size."""

    __slots__ = ("_scanner",)

    def __init__(self) -> None:
        self._scanner: _BatchScanner | None = None  # made for the first big batch

    @property
    def scanner(self) -> _BatchScanner | None:
        return self._scanner

    def spans(self, data: bytes, begin: int, end: int, count: int) -> list[tuple[int, int]]:
        """For the ``count`` lines of ``data[begin:end]`` (ASCII, each ending in "\\n", as a
        ``PlainRun``'s): those ``__call__`` flags, as the (start, newline) offsets of each in
        ``data``. Without making a str per line where the batch scanner runs."""
        if count >= _SCAN_MIN and _HYPERSCAN:
            if self._scanner is None:
                self._scanner = _BatchScanner()
            return self._scanner.spans(data, begin, end)
        flags = self(data[begin : end - 1].decode("ascii").split("\n"))
        return [
            span for span, flag in zip(every_line(data, begin, end), flags, strict=True) if flag
        ]

    def __call__(self, values: list[str], *, confirm: bool = True) -> bytearray:
        if len(values) < _FIND_MIN:
            return _suspects(values, confirm=confirm)
        if len(values) < _SCAN_MIN or not _HYPERSCAN:
            return _find_suspects(values, confirm=confirm)
        if self._scanner is None:
            self._scanner = _BatchScanner()
        return self._scanner(values, confirm=confirm)
