"""Syslog headers: RFC 3164 (BSD), RFC 5424 and rsyslog's RFC 3339 high-precision format.

Role: the first stage of the ``syslog`` and ``auth`` parsers. ``SyslogParser.header(line)``
splits a line into a ``Header`` (event time, host, program, pid, body); ``apply`` moves the
header into ECS fields (``host.hostname``, ``process.name``, ``process.pid``, ``log.syslog.*``),
sets the record's ``ts`` to the event time and keeps the agent's read time in ``event.created``.

Invariants: ``msg`` is never modified (it stays the line as read, the evidence). A line without a
recognisable header returns ``None``; the caller tags it, nothing raises. RFC 3164 carries no year
and no zone: the zone is configured (``UTC``, ``Local``, ``+01:30`` or an IANA name) and the year
is inferred from the clock so that a December line read in January lands in the old year.

State: each parser owns a one-entry cache (last timestamp text -> ``ts``) because consecutive lines
mostly share their second; it belongs to the task that runs the transform chain.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import NamedTuple

from agent.record import Record

Clock = Callable[[], datetime]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_PRI = r"(?:<(?P<pri>\d{1,3})>)?"
_PROG = r"(?P<prog>[^\s:\[\]]{1,64})(?:\[(?P<pid>\d{1,10})\])?: ?"
_RFC3164 = re.compile(
    _PRI
    + r"(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]?\d) (?P<time>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?"
    r" (?:(?P<host>\S{1,255}) )??" + _PROG + r"(?P<body>.*)",
    re.S,
)
_RFC3339 = re.compile(
    _PRI + r"(?P<stamp>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
    r" (?:(?P<host>\S{1,255}) )??" + _PROG + r"(?P<body>.*)",
    re.S,
)
_SD = r'(?P<sd>-|(?:\[(?:[^\]"]|"(?:[^"\\]|\\.)*")*\])+)'
_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<ver>\d{1,2}) (?P<stamp>\S+) (?P<host>\S+) (?P<app>\S+)"
    r" (?P<procid>\S+) (?P<msgid>\S+) " + _SD + r"(?: (?P<body>.*))?",
    re.S,
)
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")


class Header(NamedTuple):
    ts: str  # RFC 3339 UTC with microseconds, like every record ``ts``
    host: str | None
    program: str | None
    pid: int | None
    body: str
    pri: int | None = None
    rfc5424: tuple[str, str, str] | None = None  # msgid, structured data, version


def parse_timezone(name: str) -> tzinfo | None:
    """``UTC``/``Z``, ``Local`` (``None``: the host's rules, DST included), ``±HH:MM`` or an IANA
    zone name. Raises ``ValueError`` for anything else (config validation calls this)."""
    if name in ("UTC", "Z", "utc"):
        return UTC
    if name.lower() == "local":
        return None
    offset = _OFFSET.fullmatch(name)
    if offset:
        sign = -1 if offset[1] == "-" else 1
        return timezone(sign * timedelta(hours=int(offset[2]), minutes=int(offset[3])))
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


def format_utc(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds; naive ``moment`` is taken as host local time."""
    u = moment.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


def _micros(frac: str | None) -> int:
    return int((frac or "0")[:6].ljust(6, "0"))


def iso_to_utc(stamp: str, tz: tzinfo | None) -> str | None:
    """An RFC 3339 / ISO 8601 time (``T`` or space, any fraction, ``Z``/offset/none) as a record
    ``ts``; ``tz`` applies when it has no offset. ``None`` when it is not such a time."""
    if len(stamp) < 19 or not stamp[:4].isdigit():
        return None
    body, frac, zone = stamp[:19], "", ""
    rest = stamp[19:]
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac, zone = rest[1:end], rest[end:]
    else:
        zone = rest
    try:
        moment = datetime.fromisoformat(body.replace(" ", "T"))
    except ValueError:
        return None
    moment = moment.replace(microsecond=_micros(frac))
    if zone in ("Z", "z"):
        moment = moment.replace(tzinfo=UTC)
    elif zone:
        off = _OFFSET.fullmatch(zone)
        if off is None:
            return None
        sign = -1 if off[1] == "-" else 1
        delta = timedelta(hours=int(off[2]), minutes=int(off[3]))
        moment = moment.replace(tzinfo=timezone(sign * delta))
    else:
        moment = moment.replace(tzinfo=tz)
    return format_utc(moment)


class SyslogParser:
    """Parses syslog headers; ``tz`` applies to times that carry no offset."""

    def __init__(self, tz: tzinfo | None = UTC, clock: Clock | None = None) -> None:
        self.tz = tz
        self.clock = clock or (lambda: datetime.now(UTC))
        self._cache_key = ""
        self._cache_ts = ""

    def header(self, line: str) -> Header | None:
        """The header of ``line``, or ``None`` when it has none we know."""
        if not line:
            return None
        first = line[0]
        if first == "<":
            m = _RFC5424.match(line)
            if m and m["ver"] != "0":
                return self._rfc5424(m)
            close = line.find(">", 1, 5)
            first = line[close + 1 : close + 2] if close > 0 else ""
        if first.isdigit():
            m = _RFC3339.match(line)
            return self._rfc3339(m) if m else None
        m = _RFC3164.match(line)
        return self._rfc3164(m) if m else None

    def apply(self, record: Record, head: Header) -> None:
        """Move ``head`` into ECS fields of ``record`` (``msg`` stays the whole line)."""
        event = record.get("event")
        if not isinstance(event, dict):
            event = record["event"] = {}
        event["created"] = record.get("ts")
        record["ts"] = head.ts
        if head.host is not None:
            record["host"] = {"hostname": head.host}
        if head.program is not None:
            proc: dict[str, object] = {"name": head.program}
            if head.pid is not None:
                proc["pid"] = head.pid
            record["process"] = proc
        if head.pri is not None or head.rfc5424 is not None:
            self._apply_syslog(record, head)

    @staticmethod
    def _apply_syslog(record: Record, head: Header) -> None:
        log = record.get("log")
        if not isinstance(log, dict):
            log = record["log"] = {}
        syslog: dict[str, object] = {}
        if head.pri is not None:
            syslog["priority"] = head.pri
            syslog["facility"] = {"code": head.pri >> 3}
            syslog["severity"] = {"code": head.pri & 7}
        if head.rfc5424 is not None:
            msgid, sd, version = head.rfc5424
            syslog["version"] = version
            if msgid != "-":
                syslog["msgid"] = msgid
            if sd != "-":
                syslog["structured_data"] = sd
        log["syslog"] = syslog

    def _rfc3164(self, m: re.Match[str]) -> Header | None:
        stamp = m.group("mon", "day", "time", "frac")
        key = "|".join(s or "" for s in stamp)
        if key != self._cache_key:
            month = _MONTHS.get(stamp[0])
            if month is None:
                return None
            ts = self._naive_to_ts(month, int(stamp[1]), stamp[2], stamp[3])
            if ts is None:
                return None
            self._cache_key, self._cache_ts = key, ts
        return self._header(m, self._cache_ts)

    def _naive_to_ts(self, month: int, day: int, hms: str, frac: str | None) -> str | None:
        now = self.clock().astimezone(self.tz)
        year = now.year
        if month > now.month + 1:  # e.g. a December line read in January
            year -= 1
        elif month == 1 and now.month == 12 and day == 1:  # our clock runs slightly behind
            year += 1
        hour, minute, second = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        try:
            moment = datetime(year, month, day, hour, minute, second, _micros(frac), self.tz)
        except ValueError:  # Feb 30, hour 25, Feb 29 in the wrong year
            return None
        return format_utc(moment)

    def _rfc3339(self, m: re.Match[str]) -> Header | None:
        stamp = m["stamp"]
        if stamp != self._cache_key:
            ts = self._iso_to_ts(stamp)
            if ts is None:
                return None
            self._cache_key, self._cache_ts = stamp, ts
        return self._header(m, self._cache_ts)

    def _iso_to_ts(self, stamp: str) -> str | None:
        return iso_to_utc(stamp, self.tz)

    def _rfc5424(self, m: re.Match[str]) -> Header | None:
        stamp = m["stamp"]
        ts = self.clock().astimezone(UTC) if stamp == "-" else None
        text = format_utc(ts) if ts is not None else self._iso_to_ts(stamp)
        if text is None:
            return None
        host, app, procid = (None if v == "-" else v for v in m.group("host", "app", "procid"))
        pid = int(procid) if procid is not None and procid.isdigit() else None
        return Header(
            text,
            host,
            app,
            pid,
            m["body"] or "",
            int(m["pri"]),
            (m["msgid"], m["sd"], m["ver"]),
        )

    @staticmethod
    def _header(m: re.Match[str], ts: str) -> Header:
        pid = m["pid"]
        pri = m["pri"]
        return Header(
            ts,
            m["host"],
            m["prog"],
            int(pid) if pid is not None else None,
            m["body"],
            int(pri) if pri is not None else None,
        )
