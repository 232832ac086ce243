"""Runs of plain lines (``PlainRun``) through the transform chain: a clean run stays a run, and
what the chain hands on stands for exactly the records it would have made of the lines one by
one: the same values, tags and counts, in the same order."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.sources import Item, Pending, PlainRun, materialize, record_count
from agent.transforms import build, suspects
from tests.transforms.test_chain import source_config
from tests.transforms.test_redact import AWSISH, GATEDISH, TRIGGERISH, secret_lines

TS = "2026-12-07T02:04:31.123456Z"
SCANNER = suspects._BatchScanner()

ASCII_LINE = st.lists(
    st.one_of(
        st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=12),
        TRIGGERISH,
        AWSISH,
        GATEDISH.filter(str.isascii),
        secret_lines().map(lambda case: case[0]).filter(str.isascii),
    ),
    max_size=5,
).map(lambda parts: "".join(parts).replace("\n", " "))


def run_of(lines: list[str], lead: bytes = b"") -> PlainRun:
    data = lead + "".join(line + "\n" for line in lines).encode("ascii")
    return PlainRun(data, len(lead), len(data), 500, TS, "app", "1:2", "/var/log/app.log")


def flagged_spans(
    run: PlainRun, lines: list[str]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (start, newline) of each of ``run``'s ``lines``, and of those ``_suspects`` flags."""
    starts, at = [], run.begin
    for line in lines:
        starts.append((at, at + len(line)))
        at += len(line) + 1
    flags = suspects._suspects(lines)
    return starts, [span for span, flag in zip(starts, flags, strict=True) if flag]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(ASCII_LINE, min_size=1, max_size=90), lead=st.sampled_from([b"", b"x\n"]))
def test_the_spans_of_a_run_are_the_lines_the_batch_check_flags(
    lines: list[str], lead: bytes
) -> None:
    """Found in place by the scanner, and by the fallback for few lines: the same lines as
    ``_suspects`` flags over the lines as strs."""
    run = run_of(lines, lead)
    starts, flagged = flagged_spans(run, lines)
    assert SCANNER.spans(run.data, run.begin, run.end) == flagged
    assert suspects.Suspects().spans(run.data, run.begin, run.end, run.count) == flagged
    assert suspects.every_line(run.data, run.begin, run.end) == starts


# The gates' pieces (suspects._GATES): each word a gate starts with, the quotes and backslash
# it may take, every ASCII character re's \s matches (\x1c-\x1f too) and the separators.
GATE_LINE = st.lists(
    st.sampled_from(
        [
            *("pass", "PassWord", "passwd", "passphrase", "secret", "KEY", "token", "api_key"),
            *("private", "curl", "docker", "login", "-u", "podman"),
            *('"', "'", "\\", ":", "=", " ", "\t", "\x0b", "\x0c", "\r", "\x1c", "\x1d"),
            *("\x1e", "\x1f", "x", "Failed password for"),
        ]
    ),
    max_size=8,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(lines=st.lists(GATE_LINE, min_size=1, max_size=80))
def test_the_gates_in_the_scan_flag_the_lines_the_gates_confirm(lines: list[str]) -> None:
    """The scanner matches the gates itself (``suspects._line_gate``), a line at a time as re
    does in its lowered text: a separator after any of re's ASCII spaces, never across lines."""
    run = run_of(lines)
    assert SCANNER.spans(run.data, run.begin, run.end) == flagged_spans(run, lines)[1]


def as_records(batch: Sequence[Item]) -> list[tuple[Any, Any]]:
    return [(p.record, p.checkpoint) for p in materialize(batch)]


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.lists(ASCII_LINE, min_size=1, max_size=80), min_size=1, max_size=3),
    patterns=st.sampled_from([(), (r"internal-\w+",)]),
    fmt=st.sampled_from(["none", "syslog"]),
)
@example(chunks=[["ok", "password=hunter2", "ok"]], patterns=(), fmt="none")
def test_a_run_through_the_chain_stands_for_the_records_redacted_one_by_one(
    chunks: list[list[str]], patterns: tuple[str, ...], fmt: str
) -> None:
    config = source_config(patterns, format=fmt)
    by_run, by_record = build("app", config), build("app", config)
    batch: list[Item] = [run_of(lines) for lines in chunks]
    records = materialize(batch)
    out = by_run.apply(batch)
    assert as_records(out) == as_records(by_record.apply(records))
    assert record_count(out) == len(records)
    assert by_run.stats == by_record.stats
    if fmt == "none" and not patterns:  # a run stays one where no line of it is suspect
        clean = [not any(suspects._suspects(lines)) for lines in chunks]
        kept = [item for item in out if isinstance(item, PlainRun) and item.begin == 0]
        assert sum(clean) <= len(kept)


def test_a_suspect_line_is_taken_out_of_its_run_and_redacted() -> None:
    chain = build("app", source_config())
    out = chain.apply([run_of(["before", "export PASSWORD=hunter2", "after", "more"])])
    assert [type(item).__name__ for item in out] == ["PlainRun", "Pending", "PlainRun"]
    middle = out[1]
    assert isinstance(middle, Pending)
    assert middle.record["msg"] == "export PASSWORD=[REDACTED]"
    assert middle.record["tags"] == ["redacted"]
    assert middle.record["log"]["offset"] == 500 + len("before\n")
    assert (chain.stats.redacted, chain.stats.records) == (1, 4)


def test_a_run_holding_only_clean_lines_is_handed_on_as_it_is() -> None:
    chain = build("app", source_config())
    run = run_of([f"line {i} ok" for i in range(200)])
    assert chain.apply([run]) == [run]
    assert chain.stats.records == 200


def test_msg_bytes_metric_counts_a_runs_lines() -> None:
    from agent.pipeline import _msg_bytes

    run = run_of(["abc", "de", ""])
    assert _msg_bytes([run, Pending({"msg": "xyz"}, None)]) == 5 + 3
    assert _msg_bytes(materialize([run])) == 5


@given(
    lines=st.lists(st.text(alphabet="ab ", max_size=30), min_size=1, max_size=20),
    picks=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3)), max_size=40),
    lead=st.sampled_from([b"", b"x\n"]),
)
def test_hits_are_looked_at_once_per_line(
    lines: list[str], picks: list[tuple[int, int]], lead: bytes
) -> None:
    """``_by_line`` gives each line that hits fall in once, with the words of all of them: a
    long line full of one word is looked for and checked once, not once per hit (which made a
    1 MiB line of "pass " or "AKIA " take minutes)."""
    data = lead + "".join(line + "\n" for line in lines).encode()
    begin, end = len(lead), len(data)
    inside = [at for at in range(end - begin) if data[begin + at] != 10]
    found = [(inside[at % len(inside)], word) for at, word in picks] if inside else []
    expected: dict[tuple[int, int], set[int]] = {}
    for at, word in found:
        start = data.rfind(b"\n", begin, begin + at) + 1 or begin
        expected.setdefault((start, data.index(b"\n", begin + at)), set()).add(word)
    got = list(suspects._by_line(data, begin, end, found))
    assert [(start, stop) for start, stop, _ in got] == sorted(expected)
    assert {(start, stop): words for start, stop, words in got} == expected
