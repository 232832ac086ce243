"""auditd parser: go-libaudit's golden files and reassembler results are the oracle."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.record import Record
from agent.sources import Pending
from agent.transforms import build
from agent.transforms.auditd import AuditParser
from tests.transforms.corpus import corpus, line_record
from tests.transforms.test_chain import source_config

# Syscall numbers -> names differ per arch (ENRICHED logs name them); go-libaudit moves the rule
# ``key`` out of ``data`` into its event tags.
NOT_NORMALISED = {"syscall", "key"}


def audit_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().split("\n") if line.strip()]


def yaml_tests(path: Path) -> dict[str, list[str]]:
    """The ``tests:`` map of go-libaudit's aucoalesce YAML (block scalars of record lines)."""
    tests: dict[str, list[str]] = {}
    name = ""
    for line in path.read_text().split("\n"):
        if (
            line.startswith("  ")
            and not line.startswith("   ")
            and line.rstrip().endswith((": |", ": >", ": |-", ": >-"))
        ):
            name = line.strip().rsplit(":", 1)[0].strip("'\"")
            tests[name] = []
        elif name and line.startswith("    ") and line.strip():
            tests[name].append(line.strip().rstrip("'"))
    return tests


SECRET = "hunter2secret"
SECRET_HEX = SECRET.encode().hex().upper()


def _hex(text: str) -> str:
    return text.encode().hex().upper()


HEX_SECRET_LINES = [
    f'type=EXECVE msg=audit(1.5:9): argc=2 a0="mysql" a1={_hex("--password=" + SECRET)}',
    "type=PROCTITLE msg=audit(1.5:9): proctitle=" + _hex("mysql\0-u\0root\0--password=" + SECRET),
    (
        'type=USER_CMD msg=audit(1.6:10): pid=5 uid=0 auid=1000 msg=\'cwd="/root" '
        f'cmd={_hex("mysql --password=" + SECRET)} exe="/usr/bin/sudo" res=success\''
    ),
]


@pytest.mark.parametrize("line", HEX_SECRET_LINES, ids=["execve", "proctitle", "user_cmd"])
def test_a_secret_in_a_hex_value_is_redacted_in_msg_too(line: str) -> None:
    # Redaction saw only the decoded field: the line's hex kept the secret, one unhexlify away.
    chain = build("audit", source_config(format="auditd"))
    [record, *_] = [p.record for p in chain.apply([Pending(line_record(line), None)])]
    assert "redacted" in record["tags"]
    assert SECRET not in str(record)
    assert SECRET_HEX not in record["msg"]
    assert "--password=[REDACTED]" in record["msg"]


def test_hex_values_show_decoded_in_msg_and_the_rest_of_the_line_is_kept() -> None:
    line = HEX_SECRET_LINES[1]
    record = line_record(line)
    AuditParser()(record)
    assert record["msg"] == (
        f'type=PROCTITLE msg=audit(1.5:9): proctitle="mysql -u root --password={SECRET}"'
    )
    plain = 'type=EXECVE msg=audit(1.5:9): argc=2 a0="ls" a1="-la" saddr=0200A'
    record = line_record(plain)
    AuditParser()(record)
    assert record["msg"] == plain  # nothing hex-encoded: the line as it was


def test_hex_values_of_real_audit_logs_leave_msg() -> None:
    # go-libaudit's sample logs: each EXECVE argument and proctitle in hex shows decoded.
    seen = 0
    for path in sorted(corpus("go-libaudit", "auparse").glob("*.log")):
        for line in audit_lines(path):
            pattern = r"\b(a\d+|proctitle)=((?:[0-9A-F]{2})+)(?=[\s']|$)"
            if "type=EXECVE" not in line and "type=PROCTITLE" not in line:
                continue
            record = line_record(line)
            AuditParser()(record)
            for key, hexed in re.findall(pattern, line):
                seen += 1
                assert f"{key}={hexed}" not in record["msg"], (path.name, line)
                assert f'{key}="' in record["msg"]
    assert seen >= 3, seen  # the corpus does hold hex values: the check above ran


def feed(parser: AuditParser, lines: list[str]) -> tuple[list[Record], list[Record]]:
    """Parse ``lines``; returns the per-line records and the coalesced/lost ones (final flush)."""
    parsed, made = [], []
    for line in lines:
        record = line_record(line)
        assert parser(record), line
        parsed.append(record)
        made += parser.take()
    made += parser.expire(final=True)
    return parsed, made


def ms(ts: str) -> datetime:
    """A time at millisecond precision (go-libaudit's golden times trim trailing zeros)."""
    moment = datetime.fromisoformat(ts)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@pytest.mark.parametrize(
    "name",
    ["audit-rhel6", "audit-ubuntu14", "audit-ubuntu16", "audit-ubuntu17", "test2", "test3"],
)
def test_auparse_records_match_go_libaudit_golden(name: str) -> None:
    path = corpus("go-libaudit", "auparse", f"{name}.log")
    golden = json.loads(path.with_name(f"{name}.log.golden").read_text())
    parsed, _ = feed(AuditParser(), audit_lines(path))
    assert len(parsed) == len(golden)
    for record, want in zip(parsed, golden, strict=True):
        audit = record["auditd"]
        assert audit["record_type"].lower() == want["record_type"]
        assert audit["sequence"] == want["sequence"]
        assert ms(record["ts"]) == ms(want["@timestamp"])
        expected = {k: v for k, v in want["data"].items() if k not in NOT_NORMALISED}
        ours = {k: v for k, v in audit["data"].items() if k not in NOT_NORMALISED}
        assert ours == expected, want["raw_msg"]


AUCOALESCE = [
    "random-internet",
    "rhel-7-linux-3.10.0",
    "ubuntu-16.04-linux-4.13.0",
    "ubuntu-16.10-linux-4.8.0",
    "ubuntu-17.04-linux-4.10.0",
    "ubuntu-20.04.6-linux-5.15.0-1034-gcp",
    "ubuntu-21.10-linux-5.13",
    "ubuntu-24.04-linux-6.8.0",
]


def check_event(event: Record, want: dict[str, Any]) -> None:
    assert event["auditd"]["sequence"] == want["sequence"]
    assert ms(event["ts"]) == ms(want["@timestamp"])
    if want.get("result") in ("success", "fail"):
        assert event["event"]["outcome"] == (
            "success" if want["result"] == "success" else "failure"
        )
    proc, gproc = event.get("process", {}), want.get("process", {})
    for ours, theirs in (("pid", "pid"), ("name", "name"), ("executable", "exe")):
        if theirs in gproc:
            assert str(proc.get(ours)) == gproc[theirs], theirs
    if "ppid" in gproc:
        assert str(proc["parent"]["pid"]) == gproc["ppid"]
    if "args" in gproc:
        assert proc["args"] == gproc["args"]
    if "cwd" in gproc:
        assert proc["working_directory"] == gproc["cwd"]
    uid = want.get("user", {}).get("ids", {}).get("uid")
    if uid is not None:
        assert event["user"]["id"] == uid


@pytest.mark.parametrize("name", AUCOALESCE)
def test_aucoalesce_events_match_go_libaudit_golden(name: str) -> None:
    path = corpus("go-libaudit", "aucoalesce", f"{name}.yaml")
    golden = json.loads(path.with_name(f"{name}.json.golden").read_text())
    tests = yaml_tests(path)
    assert len(tests) == len(golden)
    for case in golden:
        _, made = feed(AuditParser(), tests[case["test_name"]])
        events = [r for r in made if "audit_event" in r["tags"]]
        assert len(events) == 1, case["test_name"]
        check_event(events[0], case["event"])


SEQUENCES = {
    "normal": (0, [(58, 2), (59, 5), (60, 5), (61, 4), (62, 1)]),
    "lost_messages": (9, [(49, 2), (59, 5), (60, 5), (61, 4), (62, 1)]),
    "out_of_order": (0, [(58, 2), (59, 5), (60, 5), (61, 4), (62, 1)]),
    "rollover": (0, [(4294967294, 1), (4294967295, 1), (0, 1), (1, 1), (2, 1)]),
}


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_reassembler_matches_go_libaudit_sequence_results(name: str) -> None:
    dropped, events = SEQUENCES[name]
    lines = audit_lines(corpus("go-libaudit", "sequence", f"{name}.log"))
    _, made = feed(AuditParser(), lines)
    got = sorted(
        (r["auditd"]["sequence"], r["auditd"]["records"])
        for r in made
        if "audit_event" in r["tags"]
    )
    assert got == sorted(events)
    lost = [r for r in made if "audit_lost" in r["tags"]]
    assert sum(r["auditd"]["lost"] for r in lost) == dropped
    if dropped:
        assert lost[0]["auditd"]["sequence"] == {"first": 50, "last": 58}


def test_eoe_completes_an_event_without_waiting() -> None:
    parser = AuditParser(timeout=3600)
    for line in (
        'type=SYSCALL msg=audit(1.5:7): syscall=59 success=yes pid=3 exe="/bin/ls" comm="ls"',
        'type=EXECVE msg=audit(1.5:7): argc=2 a0="ls" a1_len=6 a1[0]=2D6C ',
        "type=EXECVE msg=audit(1.5:7): a1[1]=6168 a1[2]=7A",
        "type=EOE msg=audit(1.5:7): ",
    ):
        parser(line_record(line))
    (event,) = parser.take()
    assert event["process"]["args"] == ["ls", "-lahz"]
    assert event["process"]["command_line"] == "ls -lahz"


def test_timed_out_event_is_released_by_expire() -> None:
    now = [100.0]
    parser = AuditParser(timeout=2.0, clock=lambda: now[0])
    parser(line_record('type=SYSCALL msg=audit(1.5:7): syscall=2 success=no exit=-2 comm="x"'))
    assert parser.expire() == []
    now[0] += 2.5
    (event,) = parser.expire()
    assert event["event"]["outcome"] == "failure"


def test_enriched_format_fields_after_the_group_separator() -> None:
    line = (
        "type=SYSCALL msg=audit(1.5:7): arch=c000003e syscall=59 success=yes auid=1000"
        ' key=(null)\x1dARCH=x86_64 SYSCALL=execve AUID="vagrant" UID="root"'
    )
    record = line_record(line)
    assert AuditParser()(record)
    assert record["auditd"]["enriched"] == {
        "ARCH": "x86_64",
        "SYSCALL": "execve",
        "AUID": "vagrant",
        "UID": "root",
    }
    assert record["auditd"]["data"]["result"] == "success"


def test_hex_encoded_proctitle_and_user_cmd_decode() -> None:
    record = line_record("type=PROCTITLE msg=audit(1.5:8): proctitle=6C73002D6C61")
    AuditParser()(record)
    assert record["auditd"]["data"]["proctitle"] == "ls -la"


def test_hex_values_show_decoded_in_their_places_when_values_repeat() -> None:
    # One pass over the line: each hex value is decoded where it stands, in order.
    values = ["ls", "-la", "ls", "ls", "x y"]
    line = "type=EXECVE msg=audit(1.5:9): argc=5 " + " ".join(
        f"a{i}={v.encode().hex()}" for i, v in enumerate(values)
    )
    record = line_record(line)
    AuditParser()(record)
    shown = " ".join(f'a{i}="{v}"' for i, v in enumerate(values))
    assert record["msg"] == f"type=EXECVE msg=audit(1.5:9): argc=5 {shown}"
