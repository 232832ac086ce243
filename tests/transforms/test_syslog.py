"""Syslog headers: RFC 3164 year inference and zones, RFC 5424, RFC 3339 high precision."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest

from agent.transforms import build
from agent.transforms.syslog import IsoTimes, SyslogParser, iso_to_utc, parse_timezone
from tests.transforms.corpus import line_record
from tests.transforms.test_chain import source_config


def at(text: str) -> SyslogParser:
    moment = datetime.fromisoformat(text)
    return SyslogParser(UTC, clock=lambda: moment)


def test_december_line_read_in_january_belongs_to_the_old_year() -> None:
    head = at("2025-01-02T00:00:05+00:00").header("Dec 31 23:59:58 h cron[1]: x")
    assert head is not None
    assert head.ts == "2024-12-31T23:59:58.000000Z"


def test_january_line_read_on_new_years_eve_belongs_to_the_new_year() -> None:
    head = at("2024-12-31T23:59:59+00:00").header("Jan  1 00:00:01 h cron[1]: x")
    assert head is not None
    assert head.ts == "2025-01-01T00:00:01.000000Z"


def test_configured_zone_applies_to_zoneless_times() -> None:
    moment = datetime(2024, 7, 1, tzinfo=UTC)
    parser = SyslogParser(parse_timezone("Europe/Berlin"), clock=lambda: moment)
    head = parser.header("Jul  1 12:00:00 h sshd[9]: x")
    assert head is not None
    assert head.ts == "2024-07-01T10:00:00.000000Z"  # CEST = UTC+2


def test_rfc5424_header_with_structured_data() -> None:
    line = '<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 ID7 [a@1 k="v\\]"] hi'
    head = at("2024-01-01T00:00:00+00:00").header(line)
    assert head is not None
    assert (head.ts, head.host, head.program, head.pid, head.body) == (
        "2003-08-24T12:14:15.000003Z",
        "192.0.2.1",
        "myproc",
        8710,
        "hi",
    )
    assert head.pri == 165
    assert head.rfc5424 == ("ID7", '[a@1 k="v\\]"]', "1")


def test_rfc3339_high_precision_keeps_microseconds_and_offset() -> None:
    head = at("2024-01-01T00:00:00+00:00").header("2019-06-14T13:01:15.4123456+01:30 h pam: y")
    assert head is not None
    assert head.ts == "2019-06-14T11:31:15.412345Z"


def test_header_without_hostname_and_with_priority() -> None:
    head = at("2024-03-01T00:00:00+00:00").header("<38>Feb 29 10:00:00 sshd[1]: ok")
    assert head is not None
    assert (head.host, head.program, head.pid, head.pri) == (None, "sshd", 1, 38)


@pytest.mark.parametrize("line", ["", "Feb 30 10:00:00 h x: y", "Foo 1 10:00:00 h x: y", "<>"])
def test_non_headers_are_none(line: str) -> None:
    assert at("2024-01-01T00:00:00+00:00").header(line) is None


def test_unknown_timezone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        parse_timezone("Mars/Olympus")


# Minute caches (SyslogParser, IsoTimes): every second of a cached minute must equal the exact
# conversion, including minutes at DST changes, a 30-minute DST shift, offsets with seconds (LMT)
# and transitions in the middle of a minute.
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ZONE_MINUTES = [
    ("America/New_York", datetime(2026, 3, 8, 1, 59)),  # last minute before the gap
    ("America/New_York", datetime(2026, 3, 8, 2, 30)),  # inside the gap
    ("America/New_York", datetime(2026, 3, 8, 3, 0)),
    ("America/New_York", datetime(2026, 11, 1, 1, 30)),  # ambiguous: fold 0, EDT
    ("America/New_York", datetime(2026, 11, 1, 2, 0)),
    ("Europe/London", datetime(2026, 3, 29, 1, 0)),
    ("Europe/London", datetime(2026, 10, 25, 1, 59)),
    ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 15)),  # half-hour gap
    ("Australia/Lord_Howe", datetime(2026, 4, 5, 1, 45)),  # half-hour fold
    ("America/New_York", datetime(1883, 11, 18, 12, 3)),  # LMT (-4:56:02) ends at 12:03:58
    ("Africa/Monrovia", datetime(1972, 1, 7, 0, 44)),  # -0:44:30 ends: gap until 00:44:30
    ("Europe/Amsterdam", datetime(1937, 6, 30, 23, 59)),  # +0:19:32
    ("+05:45", datetime(2026, 12, 31, 23, 59)),
]


def exact_ts(moment: datetime) -> str:
    """The conversion the caches must reproduce, straight from datetime."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds_of(minute: datetime, tz: tzinfo | None) -> list[tuple[int, str | None]]:
    out: list[tuple[int, str | None]] = []
    for second in range(62):
        try:
            moment = minute.replace(second=second, microsecond=250_000, tzinfo=tz)
        except ValueError:  # 60, 61: never a time, cached minute or not
            out.append((second, None))
        else:
            out.append((second, exact_ts(moment)))
    return out


def bsd_line(minute: datetime, second: int) -> str:
    month = MONTH_NAMES[minute.month - 1]
    return f"{month} {minute.day:2d} {minute:%H:%M}:{second:02d}.25 h sshd[1]: x"


@pytest.mark.parametrize(("zone", "minute"), ZONE_MINUTES)
@pytest.mark.parametrize("first", [0, 31, 59])
def test_every_second_of_a_cached_minute_equals_the_exact_conversion(
    zone: str, minute: datetime, first: int
) -> None:
    tz = parse_timezone(zone)
    read_at = minute.replace(hour=12, minute=0, tzinfo=UTC)
    parser = SyslogParser(tz, clock=lambda: read_at)
    expected = dict(seconds_of(minute, tz))
    order = [first, *range(62), *range(61, -1, -1)]
    for second in order:
        head = parser.header(bsd_line(minute, second))
        assert (head.ts if head else None) == expected[second], (zone, minute, second)


@pytest.fixture
def host_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("host_in_new_york")
@pytest.mark.parametrize("minute", [datetime(2026, 3, 8, 2, 30), datetime(2026, 11, 1, 1, 59)])
def test_local_zone_minute_cache_follows_the_host_rules(minute: datetime) -> None:
    read_at = minute.replace(hour=12, minute=0, tzinfo=UTC)
    parser = SyslogParser(parse_timezone("Local"), clock=lambda: read_at)
    for second, want in [*seconds_of(minute, None), *reversed(seconds_of(minute, None))]:
        head = parser.header(bsd_line(minute, second))
        assert (head.ts if head else None) == want, second


def test_year_is_inferred_per_line_even_within_one_cached_minute() -> None:
    reads = iter([datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)])
    parser = SyslogParser(UTC, clock=lambda: next(reads))
    first = parser.header("Mar  1 00:00:01 h cron[1]: x")
    second = parser.header("Mar  1 00:00:02 h cron[1]: x")
    assert first is not None
    assert second is not None
    assert first.ts == "2025-03-01T00:00:01.000000Z"  # March read in January: last year's
    assert second.ts == "2026-03-01T00:00:02.000000Z"  # read in February: this year's


def test_clock_is_read_once_per_new_timestamp_text() -> None:
    reads: list[datetime] = []

    def clock() -> datetime:
        reads.append(datetime(2026, 5, 1, tzinfo=UTC))
        return reads[-1]

    parser = SyslogParser(UTC, clock=clock)
    for line in ["Apr 30 10:00:01 h x: a", "Apr 30 10:00:01 h x: b", "Apr 30 10:00:02 h x: c"]:
        assert parser.header(line) is not None
    assert len(reads) == 2


ISO_ZONES: dict[str, tzinfo | None] = {
    "": None,  # the configured zone applies
    "Z": UTC,
    "+05:45": timezone(timedelta(hours=5, minutes=45)),
    "-0330": timezone(-timedelta(hours=3, minutes=30)),
}


@pytest.mark.parametrize(("zone", "minute"), ZONE_MINUTES)
@pytest.mark.parametrize("suffix", ISO_ZONES)
def test_iso_minute_cache_equals_the_exact_conversion(
    zone: str, minute: datetime, suffix: str
) -> None:
    tz = parse_timezone(zone)
    stamp_tz = tz if suffix == "" else ISO_ZONES[suffix]
    expected = dict(seconds_of(minute, stamp_tz))
    times = IsoTimes()
    for second in [31, *range(62), *range(61, -1, -1)]:
        stamp = f"{minute:%Y-%m-%dT%H:%M}:{second:02d}.250{suffix}"
        assert times.to_utc(stamp, tz) == expected[second], stamp
        assert times.to_utc(stamp, tz) == iso_to_utc(stamp, tz)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-05-01T10:00:07.1234567Z",  # fraction cut to microseconds, not rounded
        "2026-05-01 10:00:08",
        "2026-05-01T10:00:\u0660\u0669Z",  # other decimal digits: the exact path decides
        "2026-05-01T10:00:09.",
        "2026-05-01T10:00:09+1",
        "2026-05-01T10:00:60Z",
        "2026-02-30T10:00:00Z",
    ],
)
def test_iso_minute_cache_after_a_warm_minute_matches_iso_to_utc(stamp: str) -> None:
    times = IsoTimes()
    assert times.to_utc("2026-05-01T10:00:00Z", UTC) == "2026-05-01T10:00:00.000000Z"
    assert times.to_utc(stamp, UTC) == iso_to_utc(stamp, UTC)


def test_cached_minute_reads_other_decimal_digits_in_seconds_like_the_exact_path() -> None:
    parser = SyslogParser(UTC, clock=lambda: datetime(2026, 5, 1, tzinfo=UTC))
    assert parser.header("May  1 10:00:00 h x: warm") is not None
    head = parser.header("May  1 10:00:\u0665\u0665.5 h x: y")  # Arabic-Indic 55
    assert head is not None
    assert head.ts == "2026-05-01T10:00:55.500000Z"
    assert parser.header("May  1 10:00:\u0666\u0660 h x: y") is None  # 60


@pytest.mark.parametrize(
    "line",
    [
        "<13>1 2026-11-21T10:00:00+24:00 host app - - - an offset of a whole day",
        "2026-11-21T10:00:00.1\u00b23Z host prog: a superscript digit in the fraction",
        "0001-01-01T00:00:00+01:00 host prog: before year 1 in UTC",
        "9999-12-31T23:59:59-01:00 host prog: after year 9999 in UTC",
    ],
)
def test_times_a_record_cannot_hold_are_not_a_header_and_never_raise(line: str) -> None:
    assert at("2026-11-21T10:00:00").header(line) is None
    chain = build("s", source_config(format="syslog"))
    record = chain(line_record(line))
    assert record["msg"] == line
    assert "parse_failure" in record["tags"]
    assert chain.stats.parser_errors == 0  # a bad time is the input's fault, not a parser bug


@pytest.mark.parametrize("zone", ["UTC", "Local", "+05:45", "-11:00", "America/New_York"])
def test_the_system_clock_gives_the_years_an_injected_clock_gives(zone: str) -> None:
    """The default clock is read as time.time() (bounds as POSIX times); an injected one as a
    datetime: every month and day of a BSD line gets the same year and time either way."""
    tz = parse_timezone(zone)
    system = SyslogParser(tz)
    injected = SyslogParser(tz, clock=lambda: datetime.now(UTC))
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    checked = 0
    for month in months:
        for day in (1, 2, 15, 28, 29, 30, 31):
            for second in (0, 1):
                line = f"{month} {day:2d} 10:00:{second:02d} host prog: text"
                mine, theirs = system.header(line), injected.header(line)
                assert (mine.ts if mine else None) == (theirs.ts if theirs else None), line
                checked += mine is not None
    assert checked > 150  # not only invalid dates
    this_year = datetime.now(UTC).astimezone(tz).year
    head = system.header(datetime.now(UTC).astimezone(tz).strftime("%b %d %H:%M:%S h p: x"))
    assert head is not None
    assert head.ts.startswith(str(this_year))
