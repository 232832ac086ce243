"""JSON-lines parser and the transform config section."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from agent.config import parse_agent_config
from agent.errors import ConfigError
from agent.transforms import build
from agent.transforms.fields import MAX_JSON_DEPTH
from tests.transforms.corpus import READ_TS, line_record
from tests.transforms.test_chain import source_config


def test_json_line_fields_go_under_json_and_time_becomes_ts() -> None:
    chain = build("api", source_config(format="json", timestamp_field="t", message_field="m.text"))
    record = chain(
        line_record('{"t": "2024-05-01T10:00:00.5+02:00", "m": {"text": "hi"}, "ts": 1}')
    )
    assert record["ts"] == "2024-05-01T08:00:00.500000Z"
    assert record["message"] == "hi"
    assert record["json"]["ts"] == 1  # a line cannot overwrite the record's own keys
    assert record["event"]["created"] == "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("value", "ts"),
    [(1714557600, "2024-05-01T10:00:00.000000Z"), (1714557600123, "2024-05-01T10:00:00.123000Z")],
)
def test_epoch_seconds_and_milliseconds(value: int, ts: str) -> None:
    record = build("api", source_config(format="json"))(line_record(f'{{"time": {value}}}'))
    assert record["ts"] == ts


@pytest.mark.parametrize("line", ["[1, 2]", '{"time": ', "plain text"])
def test_non_object_lines_are_parse_failures(line: str) -> None:
    record = build("api", source_config(format="json"))(line_record(line))
    assert record["tags"] == ["parse_failure"]
    assert record["msg"] == line


def nested(depth: int, opener: str = "{") -> str:
    """A JSON object line whose containers nest ``depth`` levels deep."""
    inner = "".join('{"a":' if (opener == "{" or i == 0) else "[" for i in range(depth - 1))
    closers = "".join("}" if (opener == "{" or i == 0) else "]" for i in range(depth - 1))
    return inner + "{}" + closers[::-1]


@pytest.mark.parametrize("opener", ["{", "["])
def test_json_nested_deeper_than_the_limit_ships_unparsed(opener: str) -> None:
    chain = build("api", source_config(format="json"))
    kept = chain(line_record(nested(MAX_JSON_DEPTH, opener)))
    assert "parse_failure" not in kept.get("tags", [])
    orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)  # the chain can hash what was parsed
    for depth in (MAX_JSON_DEPTH + 1, 300, 1000, 1100):  # 255-1024: orjson reads, cannot write
        line = nested(depth, opener)
        record = chain(line_record(line))
        assert record["tags"] == ["parse_failure"], depth
        assert record["msg"] == line
        assert "json" not in record
        orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def test_many_brackets_but_shallow_json_is_parsed() -> None:
    line = orjson.dumps({"list": [[i] for i in range(200)], "m": "{[" * 50}).decode()
    record = build("api", source_config(format="json"))(line_record(line))
    assert "tags" not in record
    assert record["json"]["list"][199] == [199]


def agent_config(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": {"auth": {"type": "file", "paths": ["/var/log/auth.log"], **source}},
        "sinks": {"c": {"type": "tailseal", "endpoint": "https://c"}},
    }


def test_parser_and_redact_sections_load_from_toml_shape() -> None:
    config = parse_agent_config(
        agent_config(
            {
                "parser": {"format": "auth", "timezone": "Europe/Berlin"},
                "redact": {"patterns": [r"ssn=(?P<secret>\d+)"]},
            }
        ),
        environ={},
    )
    source = config.sources["auth"]
    assert source.parser.format == "auth"
    chain = build("auth", source)
    assert "123" not in chain(line_record("x ssn=123"))["msg"]


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"parser": {"timezone": "Mars/Base"}}, "sources.auth.parser.timezone"),
        ({"redact": {"patterns": ["("]}}, "sources.auth.redact.patterns[0]"),
        ({"parser": {"format": "xml"}}, "sources.auth.parser.format"),
    ],
)
def test_bad_transform_config_names_the_field(source: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(agent_config(source), environ={})
    assert field in str(info.value)


def test_zoneless_times_in_one_minute_across_a_dst_fold_match_the_exact_conversion() -> None:
    chain = build(
        "api", source_config(format="json", timestamp_field="t", timezone="Europe/London")
    )
    zone = ZoneInfo("Europe/London")
    for second in [7, *range(62)]:
        stamp = f"2026-10-25T01:59:{second:02d}.5"
        record = chain(line_record(f'{{"t": "{stamp}"}}'))
        if second > 59:
            assert record["ts"] == READ_TS  # not a time: the read time stays
            continue
        moment = datetime(2026, 10, 25, 1, 59, second, 500_000, tzinfo=zone)  # fold 0: BST
        assert record["ts"] == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert record["ts"].startswith("2026-10-25T00:59:")
