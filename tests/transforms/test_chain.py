"""The transform chain: config wiring, failure tagging, and no input ever raising."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import FileSourceConfig, ParserConfig, RedactConfig
from agent.sources import Checkpoint, Pending
from agent.transforms import build
from tests.transforms.corpus import line_record

FORMATS = ("none", "syslog", "auth", "access", "json", "auditd", "shell")


def source_config(
    patterns: tuple[str, ...] = (), redact: bool = True, **parser: Any
) -> FileSourceConfig:
    return FileSourceConfig(
        paths=["/x"],
        parser=msgspec.convert(parser, ParserConfig),
        redact=RedactConfig(enabled=redact, patterns=list(patterns)),
    )


def test_unparsable_line_ships_unchanged_and_tagged() -> None:
    chain = build("s", source_config(format="access"))
    record = chain(line_record("not an access log line"))
    assert record["msg"] == "not an access log line"
    assert record["tags"] == ["parse_failure"]
    assert chain.stats.parse_failures == 1


def test_apply_keeps_every_pending_and_its_checkpoint() -> None:
    chain = build("s", source_config(format="auth"))
    cp = Checkpoint("s", "k", 10)
    batch = [Pending(line_record("garbage"), cp), Pending(line_record("x password=hunter2"), None)]
    out = chain.apply(batch)
    assert [p.checkpoint for p in out] == [cp, None]
    assert "hunter2" not in out[1].record["msg"]
    assert chain.stats.redacted == 1


def test_redaction_disabled_leaves_secrets() -> None:
    chain = build("s", source_config(redact=False))
    assert chain(line_record("password=hunter2"))["msg"] == "password=hunter2"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), fmt=st.sampled_from(FORMATS))
def test_no_input_line_makes_any_parser_raise(data: bytes, fmt: str) -> None:
    chain = build("s", source_config(format=fmt))
    record = chain(line_record(data.decode(errors="replace")))
    assert isinstance(record["msg"], str)
    chain.flush(final=True)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(
        [
            "Feb 21 21:54:44 localhost sshd[3402]: ",
            "<34>1 2003-10-11T22:14:15.003Z h su - ID47 - ",
            "2019-06-14T10:40:20.912134 localhost sudo: ",
            "type=EXECVE msg=audit(1.1:1): ",
            '1.2.3.4 - - [20/May/2015:12:05:17 +0000] "GET / HTTP/1.1" 200 ',
            '{"cmd": ',
        ]
    ),
    tail=st.text(max_size=200),
    fmt=st.sampled_from(FORMATS),
)
def test_near_valid_lines_never_raise(prefix: str, tail: str, fmt: str) -> None:
    chain = build("s", source_config(format=fmt))
    record = chain(line_record(prefix + tail))
    assert record["src"] == "test"
    assert chain.stats.parser_errors == 0
