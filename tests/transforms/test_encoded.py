"""Runs of lines through the syslog and auth parsers: the lines the compiled ``encode_run`` does
itself go on as ``EncodedRun``s, their records written as canonical JSON without being made.

The oracle is the Python path, one record at a time: the run's records (``PlainRun.records``,
the file source's cut), each through ``chain(record)`` (parse, then redact). What ``apply`` hands
on must link (both ``link``s) to exactly the frames, chain head and checkpoints those records
link to, and the two chains' stats must agree: for the corpus, the benchmark's lines, the
parsers' edge cases and any line built from the pieces the patterns turn on. Where the module is
built, the common lines must be encoded: otherwise these tests would pass with a parser that
hands every line back."""

from __future__ import annotations

import string
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.buffer import segment
from agent.buffer.chain import link_py
from agent.sources import EncodedRun, Item, Pending, PlainRun
from agent.transforms import TransformChain
from tests.buffer.test_chain import COMPILED as COMPILED_LINK
from tests.buffer.test_runs import whole
from tests.transforms.corpus import corpus, records
from tests.transforms.test_auth_batch import (
    CLOCKS,
    EDGES,
    LINES,
    MID_MONTH,
    H,
    bench_lines,
    brute_force_lines,
    chain_at,
    needs_compiled,
)
from tests.transforms.test_redact import secret_lines

TS = "2026-12-07T02:04:31.123456Z"
PATH = "/var/log/auth.log"


def run_of(lines: list[str], lead: bytes = b"", source: str = "auth", path: str = PATH) -> PlainRun:
    data = lead + "".join(line + "\n" for line in lines).encode("ascii")
    return PlainRun(data, len(lead), len(data), 700, TS, source, "1:2", path)


def runnable(line: str) -> str:
    """``line`` as a run can hold it: ASCII, no line break (the file source cuts those)."""
    return line.encode("ascii", "replace").decode().replace("\n", " ").replace("\r", " ")


def through_both(
    run: PlainRun, moment: datetime = MID_MONTH, fmt: str = "auth", **parser: str
) -> list[Item]:
    """``run`` through ``apply`` and its records through ``chain(record)`` one at a time, by two
    chains of the same config and clock; asserts they link alike (both links) and count alike.
    Returns what ``apply`` made."""
    fast, reference = chain_at(moment, fmt, **parser), chain_at(moment, fmt, **parser)
    return compared(fast, reference, run)


def compared(fast: TransformChain, reference: TransformChain, run: PlainRun) -> list[Item]:
    made = fast.apply([run])
    alone: list[Item] = []
    for pending in run.records():
        reference(pending.record)
        alone.append(pending)
    assert fast.stats == reference.stats
    for link in (link_py, *([] if COMPILED_LINK is None else [COMPILED_LINK])):
        frames, count, head, cps = whole(link, made)
        r_frames, r_count, r_head, r_cps = whole(link_py, alone)
        assert (count, head) == (r_count, r_head)
        if frames != r_frames:  # the first record that differs, readably
            got = segment.parse_run(frames, 1 << 30)
            want = segment.parse_run(r_frames, 1 << 30)
            for mine, theirs in zip(got.records, want.records, strict=True):
                assert mine == theirs
        assert frames == r_frames
        assert cps[-1] == r_cps[-1]  # one checkpoint per run: the last line's stands
    return made


def encoded(made: list[Item]) -> int:
    """How many records ``made`` holds encoded."""
    return sum(item.count for item in made if isinstance(item, EncodedRun))


def test_the_corpus_encodes_as_its_records_parse() -> None:
    for name in ("test.log", "test.log.aligned-to-expected", "timestamp.log"):
        lines = [runnable(r["msg"]) for r in records(corpus("beats-system-auth", name))]
        for zone in ("UTC", "-02:00", "Europe/Berlin"):
            through_both(run_of(lines), timezone=zone)
        through_both(run_of(lines), fmt="syslog")


@pytest.mark.parametrize("moment", CLOCKS)
def test_the_benchmark_lines_encode_as_their_records_parse(moment: datetime) -> None:
    through_both(run_of(bench_lines(600), lead=b"Nov 21 10:00:00 h partial\n"), moment)


@needs_compiled
def test_the_benchmark_lines_are_encoded_but_each_minutes_first() -> None:
    lines = bench_lines(600)
    made = through_both(run_of(lines))
    assert encoded(made) >= len(lines) - len(lines) // 60 - 1
    slow = [item.record["msg"] for item in made if isinstance(item, Pending)]
    assert len(slow) == len(lines) - encoded(made)
    assert {msg[10:16] for msg in slow} <= {f"{minute:02d}:00 " for minute in range(60)}


@needs_compiled
def test_a_brute_force_is_encoded_but_each_minutes_first_line() -> None:
    lines = brute_force_lines()
    made = through_both(run_of(lines))
    assert encoded(made) == len(lines) - 2


@pytest.mark.parametrize("moment", CLOCKS)
def test_edges_encode_as_their_records_parse(moment: datetime) -> None:
    lines = [runnable(line) for line in EDGES]
    for line in lines:
        through_both(run_of([H + "sshd[1]: x", line, line]), moment)
    through_both(run_of([H + "sshd[1]: x", *lines]), moment)


@needs_compiled
def test_quotes_and_backslashes_are_escaped_in_every_field() -> None:
    odd = 'a"b\\c'
    lines = [
        H + "sshd[1]: x",
        H + f"sshd[1]: Accepted password for {odd} from 1.2.3.4 port 22 ssh2: RSA {odd}",
        H + f'sudo: {odd} : TTY=pts/"0 ; PWD=/h\\"x ; USER={odd} ; GROUP={odd} ; COMMAND="\\"',
        H + f"sudo: {odd} : bad {odd} ; worse ; TTY=x",
        H
        + f"sshd[1]: pam_unix(sshd:session): session opened for user {odd}(uid=0) by {odd}(uid=1)",
        H + f"sshd[1]: pam_unix(sshd:auth): authentication failure; rhost={odd} user={odd}",
        'Nov 21 10:00:01 h"\\ x"\\y[1]: anything',
    ]
    made = through_both(run_of(lines, source='a"ü\\', path='/var/"log"/\\é.log'))
    assert encoded(made) == len(lines) - 1


@needs_compiled
def test_lines_parse_batch_leaves_to_python_are_records_in_their_place() -> None:
    lines = [
        H + "sshd[1]: x",
        H + "sshd[1]: Accepted publickey for a\tb from 1.2.3.4 port 22",  # a tab: not printable
        H + "sshd[1]: Connection from 1.2.3.4 port 22 on 10.0.0.1 port 22",  # left to Python
        "<38>" + H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",  # a priority
        H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22\x7f",  # DEL
        H + "sshd[1]: Failed none for x from ::1 port 1",
    ]
    made = through_both(run_of(lines))
    kinds = [type(item).__name__ for item in made]
    assert kinds == ["Pending", "Pending", "Pending", "Pending", "Pending", "EncodedRun"]


@needs_compiled
def test_lines_that_may_hold_a_secret_are_redacted_records() -> None:
    line = H + "sshd[1]: Failed none for x from ::1 port 1"
    secret = (
        H
        + "sudo: bob : TTY=pts/0 ; PWD=/x ; USER=root ; COMMAND=/bin/login password=hunter2hunter2"
    )
    made = through_both(run_of([line, line, secret, line]))
    assert [type(item).__name__ for item in made] == [
        "Pending",
        "EncodedRun",
        "Pending",
        "EncodedRun",
    ]
    redacted = made[2]
    assert isinstance(redacted, Pending)
    assert "hunter2" not in str(redacted.record)
    assert "redacted" in redacted.record["tags"]


@given(
    st.lists(LINES.map(runnable), min_size=1, max_size=12),
    st.sampled_from(CLOCKS),
    st.sampled_from([b"", b"x\n"]),
)
@settings(max_examples=300, deadline=None)
def test_any_lines_encode_as_their_records_parse(
    lines: list[str], moment: datetime, lead: bytes
) -> None:
    through_both(run_of([H + "sshd[1]: x", *lines], lead), moment)


@given(st.lists(LINES.map(runnable), min_size=1, max_size=12))
@settings(max_examples=80, deadline=None)
def test_any_lines_encode_as_their_records_parse_in_another_zone(lines: list[str]) -> None:
    through_both(run_of(lines), timezone="America/New_York")
    through_both(run_of(lines), fmt="syslog", timezone="+05:30")


@given(
    st.lists(
        st.one_of(
            LINES.map(runnable),
            secret_lines().map(lambda case: runnable(case[0])),
            st.text(alphabet=string.printable, max_size=40).map(runnable),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=150, deadline=None)
def test_any_lines_with_secrets_encode_as_their_records_redact(lines: list[str]) -> None:
    through_both(run_of([H + "sshd[1]: x", *(H + "sshd[1]: " + line for line in lines)]))


@needs_compiled
def test_secret_lines_in_a_long_run_are_found_by_the_scan_and_redacted() -> None:
    # 64 lines and more: the redactor's Hyperscan scan finds them in place (``spans``).
    lines = bench_lines(300)
    secret = H + "sudo: bob : TTY=pts/0 ; USER=root ; COMMAND=/bin/login password=hunter2hunter2"
    key = H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22 ssh2: aws key AKIA" + "Z" * 16
    for at in (0, 61, 150, 299):
        lines.insert(at, secret if at % 2 else key)
    made = through_both(run_of(lines))
    taken = [item.record for item in made if isinstance(item, Pending) and "tags" in item.record]
    assert len(taken) == 4
    assert all("redacted" in record["tags"] for record in taken)
    assert "hunter2" not in str(taken)
    assert "AKIA" + "Z" * 16 not in str(taken)


@needs_compiled
@pytest.mark.parametrize("odd", ['"', "\\", "~", " ", "\x7f", "\x01", "\t"])
def test_a_character_anywhere_in_a_long_field_encodes_as_its_record_parses(odd: str) -> None:
    """The encoder checks lines printable and copies strings 16 bytes at a time: ``odd`` at
    every place of a user name and a message up to three blocks long. Printable lines are
    encoded (but the minute's first); a DEL or a control character leaves its line to Python."""
    lines = []
    for at in range(48):
        text = "u" * at + odd + "v" * (47 - at)
        lines.append(H + f"sshd[1]: Accepted password for {text} from 1.2.3.4 port 22 ssh2")
        lines.append(H + f"sshd[1]: {text}")
    made = through_both(run_of(lines))
    assert encoded(made) == (len(lines) - 1 if odd.isprintable() else 0)
