"""Syslog headers: RFC 3164 year inference and zones, RFC 5424, RFC 3339 high precision."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.transforms.syslog import SyslogParser, parse_timezone


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
