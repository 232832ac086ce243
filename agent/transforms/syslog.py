"""Syslog headers: RFC 3164 (BSD), RFC 5424 and rsyslog's RFC 3339 high-precision format.

Role: the first stage of the ``syslog`` and ``auth`` parsers. ``SyslogParser.header(line)``
splits a line into a ``Header`` (event time, host, program, pid, body); ``apply`` moves the
header into ECS fields (``host.hostname``, ``process.name``, ``process.pid``, ``log.syslog.*``),
sets the record's ``ts`` to the event time and keeps the agent's read time in ``event.created``.

Invariants: ``msg`` is never modified (it stays the line as read, the evidence). A line without a
recognisable header returns ``None``; the caller tags it, nothing raises. RFC 3164 carries no year
and no zone: the zone is configured (``UTC``, ``Local``, ``+01:30`` or an IANA name) and the year
is inferred from the clock so that a December line read in January lands in the old year.

State: each parser owns one-entry caches because consecutive lines mostly share their minute:
the last timestamp text -> ``ts``; the last local minute -> its UTC text up to the minute (a line
of another second of that minute only appends its seconds); and the month its clock last read
(year inference). They belong to the task that runs the transform chain. A minute is cached only
when its first and last microsecond map onto one UTC minute second for second (not a minute with
a zone transition inside or an offset with seconds, like LMT): every other minute takes the exact
path, so the caches never change a result. ``IsoTimes`` is the same minute cache for RFC 3339
text; the ``json`` and ``shell`` parsers own one each.
"""

from __future__ import annotations

import re
import time
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import NamedTuple

from agent.compiled import load
from agent.record import Record

Clock = Callable[[], datetime]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_PRI = r"(?:<(?P<pri>\d{1,3})>)?"
# Possessive runs (``{1,64}+``): a shorter host or program would leave one of its own characters
# where a space, ``[`` or ``:`` must follow, so giving characters back never finds a match.
_PROG = r"(?P<prog>[^\s:\[\]]{1,64}+)(?:\[(?P<pid>\d{1,10})\])?: ?"
_RFC3164 = re.compile(
    _PRI + r"(?P<stamp>(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]?\d) (?P<time>\d\d:\d\d:\d\d)"
    r"(?:\.(?P<frac>\d{1,9}))?) (?:(?P<host>\S{1,255}+) )??" + _PROG + r"(?P<body>.*)",
    re.S,
)
_RFC3339 = re.compile(
    _PRI + r"(?P<stamp>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
    r" (?:(?P<host>\S{1,255}+) )??" + _PROG + r"(?P<body>.*)",
    re.S,
)
# Quoted strings unrolled (``[^"\\]*(?:\\.[^"\\]*)*``): the same language as a per-character
# alternation, without one regex branch per character.
_SD = r'(?P<sd>-|(?:\[[^\]"]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^\]"]*)*\])+)'
_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<ver>\d{1,2}) (?P<stamp>\S+) (?P<host>\S+) (?P<app>\S+)"
    r" (?P<procid>\S+) (?P<msgid>\S+) " + _SD + r"(?: (?P<body>.*))?",
    re.S,
)
_DAY = timedelta(days=1)
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")

# The groups of a BSD (RFC 3164) / RFC 3339 header: (pri, stamp, mon, day, time, frac, host, prog,
# pid, body) and (pri, stamp, host, prog, pid, body).
BsdGroups = tuple[str | None, str, str, str, str, str | None, str | None, str, str | None, str]
IsoGroups = tuple[str | None, str, str | None, str, str | None, str]


def split_bsd_py(line: str) -> BsdGroups | None:
    """``_RFC3164.match(line).groups()``, or None: the reference for the compiled ``split_bsd``
    (``_speedups.c``) and the fallback where it was not built."""
    m = _RFC3164.match(line)
    return None if m is None else m.groups()  # type: ignore[return-value]


def split_iso_py(line: str) -> IsoGroups | None:
    """``_RFC3339.match(line).groups()``, or None (as ``split_bsd_py``)."""
    m = _RFC3339.match(line)
    return None if m is None else m.groups()  # type: ignore[return-value]


def _compiled() -> tuple[Callable[[str], BsdGroups | None], Callable[[str], IsoGroups | None]]:
    module = load("agent.transforms._speedups")
    if module is None:
        return split_bsd_py, split_iso_py
    return module.split_bsd, module.split_iso


# Only for an exact str (the compiled ones refuse others): msg is one, from a decode or orjson.
split_bsd, split_iso = _compiled()


def speedups() -> bool:
    """Whether the compiled header split is in use."""
    return split_bsd is not split_bsd_py


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
    # isoformat pads the year to four digits like the rest; "+00:00" becomes "Z".
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _micros(frac: str | None) -> int:
    return int((frac or "0")[:6].ljust(6, "0"))


def minute_prefix(first: str | None, last: str | None) -> str | None:
    """The UTC text up to the minute (``YYYY-MM-DDTHH:MM:``) that every second of a local minute
    shares, from the exact ``ts`` of the minute's first and last microsecond; ``None`` when the
    minute does not map onto one UTC minute second for second (an offset with seconds, like
    LMT, or a zone transition inside the minute): such minutes are never cached."""
    if first is None or last is None or first[:17] != last[:17]:
        return None
    if first[17:] != "00.000000Z" or last[17:] != "59.999999Z":
        return None
    return first[:17]


def iso_to_utc(stamp: str, tz: tzinfo | None) -> str | None:
    """An RFC 3339 / ISO 8601 time (``T`` or space, any fraction, ``Z``/offset/none) as a record
    ``ts``; ``tz`` applies when it has no offset. ``None`` when it is not such a time, or one
    a record cannot hold (an offset of a day or more, a moment outside years 1-9999 in UTC)."""
    if len(stamp) < 19 or not stamp[:4].isdigit():
        return None
    body, frac, zone = stamp[:19], "", ""
    rest = stamp[19:]
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdecimal():  # what int() reads ("²" is a digit)
            end += 1
        frac, zone = rest[1:end], rest[end:]
    else:
        zone = rest
    try:
        moment = datetime.fromisoformat(body.replace(" ", "T"))
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
    except (ValueError, OverflowError, OSError):  # OSError: host local time out of range
        return None


_ISO_PARTS = re.compile(
    r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:)(\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:?\d\d|)", re.A
)
_BOUNDS = (ValueError, OverflowError, OSError)  # what the exact path may raise at the extremes


def seconds_text(sec: str, frac: str | None) -> str | None:
    """``SS.ffffffZ`` as ``format_utc`` writes a time with these second and fraction digits;
    ``None`` for a second that datetime rejects (60, 61 and up)."""
    if not sec.isascii():  # other Unicode decimal digits, which int() reads
        sec = f"{int(sec):02d}"
    if sec > "59":
        return None
    if frac is None:
        return sec + ".000000Z"
    if frac.isascii():
        return f"{sec}.{frac[:6].ljust(6, '0')}Z"
    return f"{sec}.{_micros(frac):06d}Z"


class IsoTimes:
    """``iso_to_utc`` with a one-minute cache: a time in the last minute seen (same text up to
    the minute, same zone text, same ``tz``) costs a few string operations. Text the cache does
    not cover (other shapes, non-ASCII digits) takes ``iso_to_utc`` as it is."""

    __slots__ = ("_head", "_prefix", "_tz", "_zone")

    def __init__(self) -> None:
        self._head = self._zone = self._prefix = ""
        self._tz: tzinfo | None = None

    def cached(self, tz: tzinfo | None) -> tuple[str, str, str] | None:
        """The minute cached for ``tz``: (text up to the minute, zone text, UTC prefix)."""
        if not self._head or tz is not self._tz:
            return None
        return self._head, self._zone, self._prefix

    def to_utc(self, stamp: str, tz: tzinfo | None) -> str | None:
        """The same result as ``iso_to_utc(stamp, tz)``."""
        m = _ISO_PARTS.fullmatch(stamp)
        if m is None:
            return iso_to_utc(stamp, tz)
        head, sec, frac, zone = m.groups()
        if head == self._head and zone == self._zone and tz is self._tz:
            tail = seconds_text(sec, frac)
            return None if tail is None else self._prefix + tail
        ts = iso_to_utc(stamp, tz)
        if ts is None:
            return None
        try:
            first = iso_to_utc(f"{head}00{zone}", tz)
            last = iso_to_utc(f"{head}59.999999{zone}", tz)
        except _BOUNDS:
            return ts
        prefix = minute_prefix(first, last)
        if prefix is not None and ts == f"{prefix}{seconds_text(sec, frac)}":
            self._head, self._zone, self._tz, self._prefix = head, zone, tz, prefix
        return ts


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SyslogParser:
    """Parses syslog headers; ``tz`` applies to times that carry no offset."""

    def __init__(self, tz: tzinfo | None = UTC, clock: Clock | None = None) -> None:
        self.tz = tz
        self.clock = clock or _utc_now
        # The system clock is read as time.time() where only the month matters (the year of a BSD
        # stamp): a fifth of the cost of datetime.now(UTC), once per new timestamp text.
        self._system_clock = clock is None
        self._cache_key = ""
        self._cache_ts = ""
        self._minute: tuple[object, ...] = ()  # (year, month, day, "HH:MM", tz)
        self._minute_ts = ""
        # The clock's (year, month) is the same in every zone while it reads within these bounds.
        self._month = (0, 0)
        self._month_from = self._month_until = datetime.min.replace(tzinfo=UTC)
        self._month_span = (0.0, 0.0)  # the same bounds as POSIX times, for the system clock
        self._iso = IsoTimes()

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
        exact = type(line) is str  # a subclass takes the regex, which slices it as re does
        if first.isdigit():
            iso = (split_iso if exact else split_iso_py)(line)
            return self._rfc3339(iso) if iso else None
        bsd = (split_bsd if exact else split_bsd_py)(line)
        return self._rfc3164(bsd) if bsd else None

    def fast_state(
        self, stamp: str | None = None, ts: str | None = None
    ) -> tuple[
        str, str, tuple[object, ...], str, tuple[int, int] | None, tuple[str, str, str] | None
    ]:
        """The caches as the compiled batch parser (``parse_batch``) reads them: the last
        timestamp text and its ``ts``, the last minute (year, month, day, "HH:MM", tz) and its
        UTC text up to the minute, the clock's (year, month) if the clock still reads inside
        the month it last read, else None (the minute cache is then not to be used there), and
        ``IsoTimes``' minute (its text up to the minute, zone text and UTC prefix) if it was
        cached for this parser's zone. ``stamp`` and its ``ts``, when given, are the last
        stamp the batch parser read: the stamp cache takes them first, as it would have from
        the Python path, so that a later line parsed here meets the same cache. A clock that
        fails leaves the minute cache unused (the Python path then meets the failure)."""
        if stamp is not None and ts is not None:
            self._cache_key, self._cache_ts = stamp, ts
        if self._system_clock:
            first, last = self._month_span
            inside = first <= time.time() < last
        else:
            try:
                now = self.clock()
                inside = now.tzinfo is UTC and self._month_from <= now < self._month_until
            except Exception:  # noqa: BLE001 - a test's clock; the Python path counts it
                inside = False
        month = self._month if inside else None
        iso = self._iso.cached(self.tz)
        return self._cache_key, self._cache_ts, self._minute, self._minute_ts, month, iso

    def apply(self, record: Record, head: Header) -> None:
        """Move ``head`` into ECS fields of ``record`` (``msg`` stays the whole line)."""
        ts, host, program, pid, _, pri, rfc5424 = head
        event = record.get("event")
        if not isinstance(event, dict):
            event = record["event"] = {}
        event["created"] = record.get("ts")
        record["ts"] = ts
        if host is not None:
            record["host"] = {"hostname": host}
        if program is not None:
            record["process"] = {"name": program} if pid is None else {"name": program, "pid": pid}
        if pri is not None or rfc5424 is not None:
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

    def _rfc3164(self, groups: BsdGroups) -> Header | None:
        pri, stamp, mon, day, hms, frac, host, prog, pid, body = groups
        if stamp != self._cache_key:
            month = _MONTHS.get(mon)
            if month is None:
                return None
            ts = self._naive_to_ts(month, int(day), hms, frac)
            if ts is None:
                return None
            self._cache_key, self._cache_ts = stamp, ts
        return _header(self._cache_ts, (host, prog, pid, body, pri))

    def _naive_to_ts(self, month: int, day: int, hms: str, frac: str | None) -> str | None:
        # The clock is read once per new timestamp text, for the year.
        if self._system_clock:
            seconds = time.time()
            first, last = self._month_span
            if first <= seconds < last:
                year, current = self._month
            else:
                year, current = self._read_month(datetime.fromtimestamp(seconds, UTC))
        else:
            now = self.clock()
            if now.tzinfo is UTC and self._month_from <= now < self._month_until:
                year, current = self._month
            else:
                year, current = self._read_month(now)
        if month > current + 1:  # e.g. a December line read in January
            year -= 1
        elif month == 1 and current == 12 and day == 1:  # our clock runs slightly behind
            year += 1
        minute = (year, month, day, hms[:5], self.tz)
        if minute != self._minute:
            return self._new_minute(minute, hms, frac)
        sec = hms[6:8]
        if frac is None and sec.isascii() and sec < "60":  # the usual BSD line
            return self._minute_ts + sec + ".000000Z"
        tail = seconds_text(sec, frac)
        return None if tail is None else self._minute_ts + tail

    def _read_month(self, now: datetime) -> tuple[int, int]:
        """The clock's year and month in ``tz``; remembers for how long they hold."""
        local = now.astimezone(self.tz)
        year, month = local.year, local.month
        if now.tzinfo is UTC and 1 < year < 9999:
            # A zone's offset is under a day: a day inside the month is that month anywhere.
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            self._month_from, self._month_until = start + _DAY, end - _DAY
            self._month_span = (self._month_from.timestamp(), self._month_until.timestamp())
            self._month = (year, month)
        return year, month

    def _new_minute(
        self, minute: tuple[int, int, int, str, object], hms: str, frac: str | None
    ) -> str | None:
        """The exact ``ts`` of a line in another minute; caches the minute when that is safe."""
        year, month, day, _, _ = minute
        hour, mins, second = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        ts = self._exact(year, month, day, hour, mins, second, _micros(frac))
        if ts is None:
            return None
        try:
            first = self._exact(year, month, day, hour, mins, 0, 0)
            last = self._exact(year, month, day, hour, mins, 59, 999_999)
        except _BOUNDS:
            return ts
        prefix = minute_prefix(first, last)
        if prefix is not None and ts == f"{prefix}{seconds_text(hms[6:8], frac)}":
            self._minute, self._minute_ts = minute, prefix
        return ts

    def _exact(self, *fields: int) -> str | None:
        year, month, day, hour, minute, second, micro = fields
        try:
            moment = datetime(year, month, day, hour, minute, second, micro, self.tz)
            return format_utc(moment)
        except ValueError:  # Feb 30, hour 25, Feb 29 in the wrong year
            return None
        except (OverflowError, OSError):  # Jan 1 of year 1 east of UTC (OSError: local time)
            return None

    def _rfc3339(self, groups: IsoGroups) -> Header | None:
        pri, stamp, host, prog, pid, body = groups
        if stamp != self._cache_key:
            ts = self._iso.to_utc(stamp, self.tz)
            if ts is None:
                return None
            self._cache_key, self._cache_ts = stamp, ts
        return _header(self._cache_ts, (host, prog, pid, body, pri))

    def _rfc5424(self, m: re.Match[str]) -> Header | None:
        pri, ver, stamp, host, app, procid, msgid, sd, body = m.groups()
        ts = self.clock().astimezone(UTC) if stamp == "-" else None
        text = format_utc(ts) if ts is not None else self._iso.to_utc(stamp, self.tz)
        if text is None:
            return None
        pid = int(procid) if procid != "-" and procid.isdigit() else None
        return Header(
            text,
            None if host == "-" else host,
            None if app == "-" else app,
            pid,
            body or "",
            int(pri),
            (msgid, sd, ver),
        )


def _header(ts: str, text: tuple[str | None, str, str | None, str, str | None]) -> Header:
    """A ``Header`` from a BSD / RFC 3339 match's host, program, pid, body and priority text."""
    host, prog, pid, body, pri = text
    # tuple.__new__ skips NamedTuple's generated __new__ (its argument handling costs more).
    return tuple.__new__(
        Header,
        (
            ts,
            host,
            prog,
            None if pid is None else int(pid),
            body,
            None if pri is None else int(pri),
            None,
        ),
    )
