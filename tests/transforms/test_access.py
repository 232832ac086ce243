"""Access log parser: every line of the real 10,000-line Apache log, checked independently."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from agent.transforms import build
from tests.transforms.corpus import READ_TS, corpus, line_record, records
from tests.transforms.test_chain import source_config

# An independent, deliberately naive reading of each line: the quoted request and the two
# numbers after it. The parser under test uses its own, stricter expression.
NAIVE = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "(\S+) ([^"]*?)(?: HTTP/[\d.]+)?" (\d{3}) ')


def test_every_apache_corpus_line_parses_with_its_status_and_method() -> None:
    chain = build("api", source_config(format="access"))
    parsed = [chain(r) for r in records(corpus("elastic-examples-apache", "apache_logs"))]
    assert len(parsed) == 10_000
    statuses: Counter[int] = Counter()
    for record in parsed:
        naive = NAIVE.match(record["msg"])
        assert naive is not None, record["msg"]
        assert "parse_failure" not in record.get("tags", ()), record["msg"]
        assert record["http"]["request"]["method"] == naive[1]
        assert record["http"]["response"]["status_code"] == int(naive[3])
        assert record["url"]["original"] == naive[2]
        assert record["client"]["ip"] == record["msg"].split(" ", 1)[0]
        statuses[record["http"]["response"]["status_code"]] += 1
    # The corpus README's status counts.
    assert (statuses[200], statuses[304], statuses[404], statuses[301], statuses[206]) == (
        9126,
        445,
        213,
        164,
        45,
    )


def test_combined_line_maps_to_ecs_http_fields() -> None:
    line = (
        '83.149.9.216 - bob [17/May/2015:10:05:03 +0200] "GET /a/b.png?x=1 HTTP/1.1" 404 171717'
        ' "http://semicomplete.com/x" "Mozilla/5.0 (Macintosh)"'
    )
    record = build("api", source_config(format="access"))(line_record(line))
    assert record["ts"] == "2015-05-17T08:05:03.000000Z"
    assert record["user"] == {"name": "bob"}
    assert record["url"] == {"original": "/a/b.png?x=1", "path": "/a/b.png", "query": "x=1"}
    assert record["http"] == {
        "request": {"method": "GET", "referrer": "http://semicomplete.com/x"},
        "version": "1.1",
        "response": {"status_code": 404, "body": {"bytes": 171717}},
    }
    assert record["user_agent"] == {"original": "Mozilla/5.0 (Macintosh)"}
    assert record["event"]["outcome"] == "failure"
    assert record["event"]["created"] == "2026-01-01T00:00:00.000000Z"


def test_common_format_and_garbage_request_still_parse() -> None:
    chain = build("api", source_config(format="access"))
    common = chain(line_record('10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "-" 400 -'))
    assert common["http"]["response"] == {"status_code": 400}
    assert common["url"] == {"original": "-"}
    probe = chain(line_record('10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "\\x16\\x03\\x01" 400 0'))
    assert "parse_failure" not in probe.get("tags", ())


def test_every_second_of_a_cached_minute_equals_the_exact_conversion() -> None:
    chain = build("api", source_config(format="access"))
    zone = timezone(timedelta(hours=5, minutes=45))
    for second in [30, *range(62), *range(61, -1, -1)]:
        line = f'1.2.3.4 - - [31/Dec/2026:00:04:{second:02d} +0545] "GET / HTTP/1.1" 200 1'
        record = chain(line_record(line))
        try:
            moment = datetime(2026, 12, 31, 0, 4, second, tzinfo=zone)
        except ValueError:  # second 60, 61: the line parses, its time does not
            assert record["ts"] == READ_TS, second
            assert "created" not in record["event"]
        else:
            want = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            assert record["ts"] == want, second
            assert record["ts"].startswith("2026-12-30T18:19:")


@pytest.mark.parametrize(
    ("time", "want"),
    [
        ("17/May/2015:10:05:\u0665\u0665 +0000", "2015-05-17T10:05:55.000000Z"),  # Arabic-Indic
        ("17/May/2015:10:05:5x +0000", None),
        ("17/May/2015:10:05:\u00b2\u00b2 +0000", None),  # superscripts are digits, not decimals
        ("17/May/2015:10:05:07 -0000", "2015-05-17T10:05:07.000000Z"),
        ("17/May/2015:10:05:07 +0100", "2015-05-17T09:05:07.000000Z"),
    ],
)
def test_times_after_a_warm_minute(time: str, want: str | None) -> None:
    chain = build("api", source_config(format="access"))
    warm = chain(line_record('1.2.3.4 - - [17/May/2015:10:05:00 +0000] "GET / HTTP/1.1" 200 1'))
    assert warm["ts"] == "2015-05-17T10:05:00.000000Z"
    record = chain(line_record(f'1.2.3.4 - - [{time}] "GET / HTTP/1.1" 200 1'))
    assert record["ts"] == (want or READ_TS)


BS = "\\"  # one backslash


@pytest.mark.parametrize(
    ("tail", "url", "agent"),
    [
        (f'"GET /a{BS}"b HTTP/1.1" 200 1 "-" "UA {BS}"x{BS}""', f'/a{BS}"b', f'UA {BS}"x{BS}"'),
        (f'"a{BS}{BS}" 200 1 "r" "ua', f"a{BS}{BS}", "ua"),  # no closing quote on the agent
        (f'"-" 200 1 "r" "ua{BS}{BS}', "-", f"ua{BS}{BS}"),
        (f'"-" 200 1 "r" "ua{BS}', "-", "ua"),  # a lone trailing backslash escapes nothing
    ],
)
def test_escaped_quotes_and_backslashes_in_quoted_fields(tail: str, url: str, agent: str) -> None:
    record = build("api", source_config(format="access"))(
        line_record(f"1.2.3.4 - - [17/May/2015:10:05:00 +0000] {tail}")
    )
    assert "parse_failure" not in record.get("tags", ())
    assert record["url"]["original"] == url
    assert record["user_agent"]["original"] == agent


@pytest.mark.parametrize(
    "stamp",
    ["21/Nov/2026:10:00:00 +9999", "01/Jan/0001:00:00:00 +0100", "31/Dec/9999:23:59:59 -0100"],
)
def test_request_time_a_record_cannot_hold_keeps_the_read_time_and_never_raises(
    stamp: str,
) -> None:
    line = f'203.0.113.9 - - [{stamp}] "GET / HTTP/1.1" 200 12 "-" "curl/8"'
    chain = build("api", source_config(format="access"))
    record = chain(line_record(line))
    assert record["ts"] == READ_TS
    assert record["http"]["response"]["status_code"] == 200
    assert "parse_failure" not in record.get("tags", ())
    assert chain.stats.parser_errors == 0
