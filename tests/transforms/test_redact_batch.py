"""Batch redaction: the one-scan walk over a batch gives exactly what redacting record by record
gives, and a secret anywhere in a parsed field of a big batch is still found."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.record import Record
from agent.sources import Pending
from agent.transforms import build, suspects
from agent.transforms.redact import REDACTED, Redactor
from agent.transforms.redact_batch import may_hold, redact_records
from tests.transforms.corpus import line_record
from tests.transforms.test_chain import source_config
from tests.transforms.test_redact import ODD, TRIGGERISH, secret_lines

PATTERNS = ((), (r"employee_ssn=(?P<secret>\d{3}-\d{2}-\d{4})", r"internal-\w+"))

SURROGATES = st.sampled_from(["\ud800", "x\udfffy", "pass\udc80word=hunter2hunter2"])
TEXT = st.one_of(
    secret_lines().map(lambda case: case[0]),
    st.text(max_size=20),
    st.lists(st.one_of(st.text(max_size=8), TRIGGERISH, ODD, SURROGATES), max_size=5).map("".join),
    st.sampled_from(["password", "to\u212aen=hunter2hunter2", "employee_ssn=123-45-6789"]),
)
KEYS = st.sampled_from(["msg", "ts", "log", "tags", "type", "user", "password", "cmd", "x"])
VALUES = st.recursive(
    st.one_of(TEXT, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=10,
)


@st.composite
def records(draw: st.DrawFn) -> Record:
    """A record as a parser leaves it: msg (sometimes not a str), source keys, parsed fields
    (nested, any type, non-str keys now and then), sometimes a split part."""
    record: Record = {"ts": "t", "src": "s", "msg": draw(st.one_of(TEXT, st.none()))}
    log: dict[str, Any] = {"file": {"path": draw(st.sampled_from(["/a", "/b"]))}, "offset": 0}
    record["log"] = log
    tags = draw(st.sampled_from([None, ["parse_failure"], ["redacted"], ["split"]]))
    if tags is not None:
        record["tags"] = tags
        if "split" in tags:
            log["part"] = draw(st.integers(0, 2))
    for key, value in draw(st.dictionaries(KEYS, VALUES, max_size=4)).items():
        if key not in ("ts", "src", "msg", "log", "tags"):  # a parsed "type" is skipped too
            record[key] = value
    if draw(st.integers(0, 9)) == 0:
        record["odd"] = {7: draw(TEXT)}  # orjson cannot encode a non-str key
    return record


def canon(value: object) -> object:
    """``value`` with dict key order and the types of values made visible to ``==``."""
    if isinstance(value, dict):
        return [(canon(k), canon(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [canon(v) for v in value]
    return (type(value).__name__, value)


def one_by_one(batch: list[Record], patterns: tuple[str, ...], fields_from_msg: bool) -> int:
    """The reference: ``Redactor.record`` on each record in order; how many became tagged."""
    redactor = Redactor(patterns)
    count = 0
    for record in batch:
        had = "redacted" in record.get("tags", ())
        redactor.record(record, fields_from_msg=fields_from_msg)
        count += not had and "redacted" in record.get("tags", ())
    return count


@settings(max_examples=200, deadline=None)
@given(
    drawn=st.lists(records(), min_size=1, max_size=5),
    big=st.booleans(),
    patterns=st.sampled_from(PATTERNS),
    fields_from_msg=st.booleans(),
)
def test_batch_walk_equals_redacting_record_by_record(
    drawn: list[Record], big: bool, patterns: tuple[str, ...], fields_from_msg: bool
) -> None:
    """Small batches and ones past the Hyperscan threshold (``_SCAN_MIN`` msgs), with split
    parts (their carry runs through both in the same order), surrogates, the Kelvin sign,
    values orjson cannot encode and configured patterns (every value suspect)."""
    size = suspects._SCAN_MIN + 6 if big else len(drawn)
    batch = [copy.deepcopy(drawn[i % len(drawn)]) for i in range(size)]
    expected = copy.deepcopy(batch)
    count = one_by_one(expected, patterns, fields_from_msg)
    got = redact_records(Redactor(patterns), batch, fields_from_msg=fields_from_msg)
    assert canon(batch) == canon(expected)
    assert got == count


def test_secret_in_a_nested_parsed_field_of_a_big_batch_is_redacted_and_tagged() -> None:
    chain = build("s", source_config(format="json"))
    lines = [json.dumps({"n": i, "req": {"path": "/x", "headers": ["a", "b"]}}) for i in range(300)]
    lines[123] = json.dumps(
        {"n": 1, "req": {"headers": ["a", "Authorization: Bearer abcdefghijkl"]}}
    )
    out = chain.apply([Pending(line_record(line), None) for line in lines])
    record = out[123].record
    assert record["json"]["req"]["headers"] == ["a", f"Authorization: Bearer {REDACTED}"]
    assert "abcdefghijkl" not in record["msg"]
    assert record["tags"] == ["redacted"]
    assert chain.stats.redacted == 1
    assert all("tags" not in p.record for i, p in enumerate(out) if i != 123)


def test_a_separator_escaped_in_json_does_not_hide_a_parsed_secret() -> None:
    """A decoded field holds ``password<TAB>=...`` while the JSON text holds ``password\\t=``,
    which no prefilter matches: the JSON pre-check counts the word alone."""
    chain = build("s", source_config(format="json"))
    lines = [json.dumps({"n": i, "cmd": "ls"}) for i in range(100)]
    lines[42] = json.dumps({"n": 42, "cmd": 'login password\t="hunter2hunter2"'})
    lines[43] = json.dumps({"n": 43, "cmd": "auth password\t= hunter2hunter2"})
    out = chain.apply([Pending(line_record(line), None) for line in lines])
    for at in (42, 43):
        assert "hunter2" not in out[at].record["json"]["cmd"], out[at].record
        assert "redacted" in out[at].record["tags"]
    assert chain.stats.redacted == 2


def test_secret_in_a_field_parsed_from_a_suspect_msg_is_redacted_in_both() -> None:
    chain = build("s", source_config(format="auth"))
    sudo = (
        "Nov 21 10:00:01 web-1 sudo:    bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; "
        "COMMAND=/usr/bin/mysql -u root -pHunter2pw app"
    )
    clean = "Nov 21 10:00:02 web-1 sshd[22]: Accepted publickey for bob from 10.0.0.1 port 22 ssh2"
    batch = [Pending(line_record(clean), None) for _ in range(200)]
    batch[77] = Pending(line_record(sudo), None)
    out = chain.apply(batch)
    record = out[77].record
    assert "Hunter2pw" not in orjson.dumps(record).decode()
    assert record["process"]["command_line"].endswith(f"-p{REDACTED} app")
    assert "redacted" in record["tags"]
    assert chain.stats.redacted == 1


def test_fields_orjson_cannot_encode_are_still_walked() -> None:
    batch: list[Record] = [line_record(f"line {i}") for i in range(70)]
    batch[5]["x"] = {1: "password=hunter2hunter2"}  # a non-str key
    batch[9]["y"] = ["\ud800 token=abcdefghij"]  # a surrogate
    assert redact_records(Redactor(), batch, fields_from_msg=False) == 2
    assert batch[5]["x"] == {1: f"password={REDACTED}"}
    assert batch[9]["y"] == [f"\ud800 token={REDACTED}"]


def test_a_container_reachable_twice_is_redacted_as_a_walk_in_order_would() -> None:
    """The second path to an already redacted list sees the redacted values: nothing changes
    there, so only the first record is tagged (and counted)."""
    shared = ["password=hunter2hunter2", "ok"]
    batch: list[Record] = [line_record(f"line {i}") for i in range(3)]
    batch[0]["a"] = shared
    batch[2]["b"] = {"again": shared}
    assert redact_records(Redactor(), batch, fields_from_msg=False) == 1
    assert shared == [f"password={REDACTED}", "ok"]
    assert [r.get("tags") for r in batch] == [["redacted"], None, None]


JSON_VALUES = st.recursive(
    st.one_of(TEXT.filter(lambda t: not any(0xD800 <= ord(c) < 0xE000 for c in t)), st.integers()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


@settings(max_examples=500, deadline=None)
@given(objects=st.lists(JSON_VALUES, max_size=80))
def test_json_check_flags_every_object_holding_a_suspect_string(objects: list[Any]) -> None:
    """The pre-check that lets clean records skip the walk: a string inside is in the JSON text
    whatever orjson escapes (quotes, backslashes, control characters, none in a trigger)."""
    flags = may_hold(Redactor(), objects)
    for obj, flag in zip(objects, flags, strict=True):
        if any(map(suspects._suspect, strings(obj))):
            assert flag, obj


LINES = st.one_of(
    TEXT,
    TEXT.map(lambda t: json.dumps({"cmd": t, "user": "u", "nested": {"a": [t, 1]}})),
    TEXT.map(
        lambda t: json.dumps({"ts": "2026-01-01T00:00:00Z", "message": t}, ensure_ascii=False)
    ),
    TEXT.map(lambda t: f"Nov 21 10:00:01 web-1 sudo:    bob : TTY=pts/0 ; PWD=/ ; COMMAND={t}"),
    TEXT.map(lambda t: f"Nov 21 10:00:01 web-1 sshd[1]: Failed password for {t} from ::1 port 2"),
)


@settings(max_examples=150, deadline=None)
@given(
    drawn=st.lists(LINES, min_size=1, max_size=5),
    big=st.booleans(),
    fmt=st.sampled_from(["none", "syslog", "auth", "access", "json", "shell"]),
    patterns=st.sampled_from(PATTERNS),
)
def test_chain_apply_equals_the_chain_one_record_at_a_time(
    drawn: list[str], big: bool, fmt: str, patterns: tuple[str, ...]
) -> None:
    """``apply`` (parse all, then the batch walk) against calling the chain on each record
    (parse, then ``Redactor.record``): same records, same counters."""
    lines = [drawn[i % len(drawn)] for i in range(suspects._SCAN_MIN + 6 if big else len(drawn))]
    batch_chain = build("s", source_config(patterns, format=fmt))
    record_chain = build("s", source_config(patterns, format=fmt))
    out = batch_chain.apply([Pending(line_record(line), None) for line in lines])
    expected = [record_chain(line_record(line)) for line in lines]
    assert canon([p.record for p in out]) == canon(expected)
    assert batch_chain.stats == record_chain.stats
