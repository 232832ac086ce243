"""Access log parser: every line of the real 10,000-line Apache log, checked independently."""

from __future__ import annotations

import re
from collections import Counter

from agent.transforms import build
from tests.transforms.corpus import corpus, line_record, records
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
