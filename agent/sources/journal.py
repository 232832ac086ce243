"""Journal entries into records: the pure half of the journald source.

Role: ``Decoder.decode(lines)`` turns the lines ``journalctl --output=json`` printed into
``Pending`` records, each with the checkpoint that makes its entry consumed. ``journald.py`` runs
journalctl and feeds the lines; this module never does I/O.

Record shape (ECS where ECS has a name, compact otherwise)::

    {"ts": __REALTIME_TIMESTAMP as RFC 3339 UTC µs, "src": source, "msg": MESSAGE,
     "log": {"journal": {"cursor": __CURSOR}},
     "process": {"pid": _PID, "name": _COMM, "user": {"id": _UID}},
     "journald": {"unit": _SYSTEMD_UNIT, "identifier": SYSLOG_IDENTIFIER, "host": _HOSTNAME,
                  "boot_id": _BOOT_ID, "facility": SYSLOG_FACILITY, "priority": PRIORITY}}

Absent fields are left out. ``_UID`` is the uid of the process that logged (sshd runs as root),
so it is ``process.user.id``: ``user.*`` belongs to the subject of an auth event. With ``auth``
on, ``parse_auth(SYSLOG_IDENTIFIER, MESSAGE, record)`` adds the same auth event fields the
``auth`` parser adds to a syslog line of the same program (the program and the body are separate
fields here, so there is no header to parse).

Invariants:
* A MESSAGE journalctl prints as a byte array (not valid UTF-8, or holding control bytes) ships
  decoded with replacement, tagged ``invalid_utf8`` when it was not UTF-8 and ``binary`` when it
  holds control bytes other than tab/newline/CR. A field repeated in one entry (a JSON list)
  ships its values joined by newlines (MESSAGE) or its first value (the others).
* Checkpoint = ``Checkpoint(source, key, offset, path=cursor)``: ``key`` names the journal read
  (``journal_key``), ``offset`` counts the entries this source has emitted over its whole life
  (monotonic: resumed from the committed checkpoint), ``path`` is the journal cursor. The buffer
  keeps the last checkpoint per (source, key): the cursor of the last committed entry.
* After a (re)start at ``--cursor=C`` (inclusive) the first entry must be C itself: it was
  committed already and is skipped. Any other first entry means C is gone from the journal
  (vacuumed, rotated away, another journal): a ``gap`` record (``journal_cursor_lost``) ships
  before that entry. Never ``--after-cursor``: journalctl 252 then skips the first remaining
  entry when C is gone, silently.
* Entries of ``exclude_units`` are dropped (no record, no checkpoint): the agent never ships its
  own output. A line that is not JSON ships as read, tagged ``invalid_json``, without checkpoint;
  journalctl's ``-- No entries --`` marker is ignored.

State: a ``Decoder`` (cursor, count, expected first cursor) belongs to the source's ``run()`` task;
a worker thread uses it only while ``run()`` awaits that thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from agent.record import Record, format_ts, now_rfc3339
from agent.sources import Checkpoint, Pending
from agent.transforms.auth import parse_auth
from agent.transforms.fields import tag

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Control bytes that make a message "binary"; tab, newline and CR are text.
_CONTROL = frozenset(range(32)) - {9, 10, 13} | {127}
# journald field -> (record section, key, convert to int)
_JOURNALD = (
    ("_SYSTEMD_UNIT", "unit", False),
    ("SYSLOG_IDENTIFIER", "identifier", False),
    ("_HOSTNAME", "host", False),
    ("_BOOT_ID", "boot_id", False),
    ("SYSLOG_FACILITY", "facility", True),
    ("PRIORITY", "priority", True),
)
CURSOR_LOST = "journal_cursor_lost"


def journal_key(directory: str, files: Iterable[str]) -> str:
    """The checkpoint key of the journal a source reads: another journal, another cursor."""
    if directory:
        return f"journal:dir:{directory}"
    names = list(files)
    return f"journal:files:{','.join(names)}" if names else "journal:system"


def realtime_ts(value: object) -> str:
    """``__REALTIME_TIMESTAMP`` (µs since the epoch, as text) as a record ``ts``."""
    try:
        return format_ts(_EPOCH + timedelta(microseconds=int(str(value))))
    except (ValueError, OverflowError):
        return now_rfc3339()


def decode_message(value: object) -> tuple[str, list[str]]:
    """A MESSAGE value as text plus the tags it earns (see the module invariants)."""
    if isinstance(value, str):
        return value, []
    if isinstance(value, list):
        if all(isinstance(b, int) for b in value):
            return _decode_bytes(bytes(b & 0xFF for b in value))
        parts = [decode_message(v) for v in value]  # a repeated field
        tags = sorted({t for _, ts in parts for t in ts})
        return "\n".join(text for text, _ in parts), tags
    if value is None:
        return "", []
    return str(value), []


def _decode_bytes(raw: bytes) -> tuple[str, list[str]]:
    tags = []
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode(errors="replace")
        tags.append("invalid_utf8")
    if not _CONTROL.isdisjoint(raw):
        tags.append("binary")
    return text, tags


def _first(value: Any) -> Any:
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return value[0]
    return value


def _text(value: Any) -> str | None:
    value = _first(value)
    if value is None:
        return None
    return value if isinstance(value, str) else decode_message(value)[0]


def cursor_lost_gap(source: str, lost: str, resumed: str) -> Record:
    """The ``gap`` record for a cursor the journal no longer has."""
    where = f"resumed at {resumed}" if resumed else "resumed at the start of the journal"
    return {
        "type": "gap",
        "ts": now_rfc3339(),
        "src": source,
        "reason": CURSOR_LOST,
        "msg": f"journal cursor {lost} is gone (vacuumed or invalid); entries after it and "
        f"before the first one still there may be lost; {where}",
        "gap": {"cursor": lost, "resumed_cursor": resumed},
    }


class Decoder:
    """journalctl JSON lines -> records with checkpoints, for one source (see module doc)."""

    def __init__(
        self, source: str, key: str, exclude_units: Iterable[str], *, auth: bool, count: int = 0
    ) -> None:
        self.source = source
        self.key = key
        self.exclude = frozenset(exclude_units)
        self.auth = auth
        self.cursor = ""  # of the last entry turned into a record
        self.count = count  # checkpoint offset of that entry
        self.expect: str | None = None  # the cursor the next entry must be (a resume)
        self.gaps = 0

    def resume(self, cursor: str) -> None:
        """journalctl was started at ``--cursor=cursor`` (inclusive): check the first entry."""
        self.cursor = cursor
        self.expect = cursor or None

    def decode(self, lines: Iterable[bytes]) -> list[Pending]:
        out: list[Pending] = []
        for line in lines:
            if not line or (line.startswith(b"-- ") and line.endswith(b" --")):
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict):
                out.append(self._invalid(line))
                continue
            cursor = _text(entry.get("__CURSOR")) or ""
            if self.expect is not None:
                expected, self.expect = self.expect, None
                if cursor == expected:
                    continue  # committed before the restart
                self.gaps += 1
                out.append(Pending(cursor_lost_gap(self.source, expected, cursor), None))
            if _text(entry.get("_SYSTEMD_UNIT")) in self.exclude:
                continue
            self.cursor = cursor
            self.count += 1
            record = self.record(entry, cursor)
            out.append(Pending(record, Checkpoint(self.source, self.key, self.count, cursor)))
        return out

    def record(self, entry: dict[str, Any], cursor: str) -> Record:
        msg, tags = decode_message(entry.get("MESSAGE"))
        record: Record = {
            "ts": realtime_ts(_first(entry.get("__REALTIME_TIMESTAMP"))),
            "src": self.source,
            "msg": msg,
            "log": {"journal": {"cursor": cursor}},
        }
        process: dict[str, Any] = {}
        pid = _text(entry.get("_PID"))
        if pid is not None and pid.isdigit():
            process["pid"] = int(pid)
        comm = _text(entry.get("_COMM"))
        if comm is not None:
            process["name"] = comm
        uid = _text(entry.get("_UID"))
        if uid is not None:
            process["user"] = {"id": uid}
        if process:
            record["process"] = process
        journald: dict[str, Any] = {}
        for field, name, numeric in _JOURNALD:
            value = _text(entry.get(field))
            if value is not None:
                journald[name] = int(value) if numeric and value.isdigit() else value
        record["journald"] = journald
        if tags:
            record["tags"] = tags
        if self.auth:
            self._auth(journald.get("identifier"), msg, record)
        return record

    def _auth(self, program: str | None, body: str, record: Record) -> None:
        try:
            parse_auth(program, body, record)
        except Exception:  # contract 6: a parser bug must not stop the source
            log.debug("auth parser error in source %s", self.source, exc_info=True)
            tag(record, "parse_failure")

    def _invalid(self, line: bytes) -> Pending:
        record: Record = {
            "ts": now_rfc3339(),
            "src": self.source,
            "msg": line.decode(errors="replace"),
            "tags": ["invalid_json"],
        }
        return Pending(record, None)
