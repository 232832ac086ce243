"""Batch redaction: one trigger scan over every string the records of a batch hold.

Role: ``TransformChain`` redacts each parsed batch with ``redact_records``, and
``Redactor.record`` one record's fields with ``redact_fields``. Which records need a walk is
found first, in one scan: with a parser that only copies parts of msg, those whose msg holds a
trigger word; otherwise those whose JSON text holds one (``may_hold``: a string inside appears
verbatim in it). Their strings are then gathered (``Slots``) with where each lives (container
and key or index): msg first when it is redacted like a field, then every parsed field depth
first, skipping the top-level keys the source owns (``SKIP_KEYS``). One ``Redactor.suspects``
pass over all of them says which may hold a secret; only those run the rules
(``Redactor.text``), and changed ones are written back. A clean string thus costs its share of
one scan, not a lowered copy and a score of substring tests.

Invariants: the values, tags and count are exactly those of ``Redactor.record`` called on each
record in batch order (the chain's per-record path). A split part's redaction depends on the
parts before it (the redactor's carry), so it takes that path itself, after the records gathered
before it are rewritten. A string whose slot an earlier write changed (a container reachable
twice) is redacted again from what is there now, as a walk in order would have done.

State: none beyond one call; a ``Slots`` belongs to the call that made it.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import repeat
from operator import contains
from typing import TYPE_CHECKING, Any

from orjson import dumps

from agent.record import Record
from agent.transforms.fields import tag

if TYPE_CHECKING:
    from agent.transforms.redact import Redactor

SKIP_KEYS = frozenset(("ts", "src", "log", "tags", "seq", "h", "type"))
_NOT_FIELDS = SKIP_KEYS | {"msg"}


def _gather(
    container: dict[Any, Any] | list[Any],
    items: Any,
    where: list[tuple[Any, Any]],
    values: list[str],
) -> None:
    for key, value in items:
        if isinstance(value, str):
            where.append((container, key))
            values.append(value)
        elif isinstance(value, dict):
            _gather(value, value.items(), where, values)
        elif isinstance(value, list):
            _gather(value, enumerate(value), where, values)


class Slots:
    """Strings gathered from records, with where each lives, to be rewritten in one go."""

    __slots__ = ("ends", "records", "values", "where")

    def __init__(self) -> None:
        self.where: list[tuple[Any, Any]] = []  # (container, key or index) of each value
        self.values: list[str] = []
        self.records: list[Record] = []
        self.ends: list[int] = []  # record i's values end at ends[i]

    def add(self, record: Record, msg: str | None = None, *, fields: bool = True) -> None:
        """Gather ``record``'s parsed fields (if ``fields``), after ``msg`` if it is to be
        redacted as one."""
        where, values = self.where, self.values
        if msg is not None:
            where.append((record, "msg"))
            values.append(msg)
        if fields:  # _gather inlined for the top level, where the source's keys are skipped
            for key, value in record.items():
                if key in _NOT_FIELDS:
                    continue
                if isinstance(value, str):
                    where.append((record, key))
                    values.append(value)
                elif isinstance(value, dict):
                    _gather(value, value.items(), where, values)
                elif isinstance(value, list):
                    _gather(value, enumerate(value), where, values)
        self.records.append(record)
        self.ends.append(len(values))

    def rewrite(self, redactor: Redactor) -> list[Record]:
        """Redact the gathered strings in place; the records that changed, in order. Empties
        the slots."""
        where, values, ends, records = self.where, self.values, self.ends, self.records
        changed: list[Record] = []
        flags = redactor.suspects(values)
        text = redactor.text
        i = flags.find(1)
        while i >= 0:
            parent, key = where[i]
            value = values[i]
            record = records[bisect_right(ends, i)]
            current = parent[key]
            if current is value:
                new = text(value, suspect=True)
            else:  # rewritten through another path to the same container: redact it again
                value = current
                # the record's own msg is redacted with the flag of the msg as read, as the
                # chain passes it; a field is checked afresh
                new = text(value, suspect=True if parent is record and key == "msg" else None)
            if new != value:
                parent[key] = new
                if not changed or changed[-1] is not record:
                    changed.append(record)
            i = flags.find(1, i + 1)
        where.clear()
        values.clear()
        ends.clear()
        records.clear()
        return changed


def may_hold(redactor: Redactor, objects: list[Any]) -> bytearray:
    """1 for each of ``objects`` (records, or their parsed fields) some string in which may
    hold a secret, else 0: one scan over their JSON texts.

    A string inside appears verbatim in the JSON (orjson escapes only quotes, backslashes and
    control characters, which no trigger word or AWS key id holds; keys and other values can
    only add hits). Any trigger word counts here, unconfirmed by the rules' prefilters: in JSON
    an escape (``\\"``, ``\\t``) can stand between a key word and its separator. An object
    orjson cannot encode (a surrogate, a non-str key) gets 1."""
    if redactor.custom:
        return bytearray(b"\x01" * len(objects))
    failed: list[int] = []
    try:
        texts = [dumps(obj).decode() for obj in objects]
    except TypeError:  # orjson.JSONEncodeError: find which, the slow way
        texts = []
        for i, obj in enumerate(objects):
            try:
                texts.append(dumps(obj).decode())
            except TypeError:
                texts.append("")
                failed.append(i)
    flags = redactor.suspects(texts, confirm=False)  # escapes can hide a separator
    for i in failed:
        flags[i] = 1
    return flags


def fields_may_hold(redactor: Redactor, records: list[Record]) -> bytearray:
    """``may_hold`` of each record's parsed fields (what ``Slots.add`` gathers besides msg)."""
    skip = _NOT_FIELDS
    return may_hold(redactor, [{k: v for k, v in r.items() if k not in skip} for r in records])


def _ones(first: bytearray, second: bytearray) -> list[int]:
    """The indexes where ``first`` or ``second`` holds 1, in order (both are mostly 0)."""
    found: set[int] = set()
    for flags in (first, second):
        at = flags.find(1)
        while at >= 0:
            found.add(at)
            at = flags.find(1, at + 1)
    return sorted(found)


def _texts(msgs: list[Any]) -> list[str]:
    """``msgs`` with "" for any that is not a str (those have nothing to redact)."""
    if set(map(type, msgs)) == {str}:
        return msgs
    return [m if isinstance(m, str) else "" for m in msgs]


def _tag(records: list[Record]) -> int:
    """Tag ``records`` ``redacted``; how many were not tagged so already."""
    count = 0
    for record in records:
        had = "redacted" in record.get("tags", ())
        tag(record, "redacted")
        count += not had
    return count


def _one(redactor: Redactor, record: Record, fields_from_msg: bool, suspect: bool | None) -> int:
    had = "redacted" in record.get("tags", ())
    redactor.record(record, fields_from_msg=fields_from_msg, suspect=suspect)
    return int(not had and "redacted" in record.get("tags", ()))


def redact_fields(redactor: Redactor, record: Record) -> bool:
    """Redact the strings of ``record``'s parsed fields in place; whether any changed."""
    slots = Slots()
    slots.add(record)
    return bool(slots.rewrite(redactor))


def redact_records(redactor: Redactor, records: list[Record], *, fields_from_msg: bool) -> int:
    """Redact ``records`` in place as ``redactor.record`` does one by one; returns how many
    became tagged ``redacted``. ``fields_from_msg`` as for ``Redactor.record``: then the records
    whose msg holds no trigger word (one scan over all msgs) are not walked. Otherwise every
    record is walked, except those whose JSON holds none (one scan over all records' JSON)."""
    # Split parts take the per-record path whatever they hold: it also moves the carry.
    todo: list[tuple[Record, object, int, int]]
    if fields_from_msg:
        # map() over the records, not a Python loop: this runs for every line of a batch, and
        # most are clean; only the hits and the tagged records are looked at one by one.
        msgs = list(map(dict.get, records, repeat("msg")))
        hits = redactor.suspects(_texts(msgs))
        tagged = bytearray(map(contains, records, repeat("tags")))
        todo = [
            (records[i], msgs[i], hits[i], hits[i])
            for i in _ones(hits, tagged)
            if hits[i] or "split" in records[i]["tags"]
        ]
    else:
        hits = may_hold(redactor, records)
        found = [
            r
            for r, hit in zip(records, hits, strict=True)
            if hit or ("tags" in r and "split" in r["tags"])
        ]
        msgs = [record.get("msg") for record in found]
        # which part of a hit record holds the hit: its msg, its fields or both
        flags = redactor.suspects(_texts(msgs))
        todo = list(zip(found, msgs, flags, fields_may_hold(redactor, found), strict=True))
    slots = Slots()
    count = 0
    for record, msg, flag, fields in todo:
        if isinstance(msg, str):
            tags = record.get("tags")
            if tags and "split" in tags:
                count += _tag(slots.rewrite(redactor))
                suspect = bool(flag) if fields_from_msg else None
                count += _one(redactor, record, fields_from_msg, suspect)
            elif flag or fields:
                slots.add(record, msg if flag else None, fields=bool(fields))
        elif fields and not fields_from_msg:  # else nothing: no msg, and no fields from one
            slots.add(record)
    return count + _tag(slots.rewrite(redactor))
