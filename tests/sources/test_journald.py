"""The journald source against real journal files written in the test (systemd-journal-remote)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from agent.config import FileSourceConfig, JournaldSourceConfig, ParserConfig, parse_agent_config
from agent.errors import ConfigError
from agent.record import Record
from agent.sources import Checkpoint, Checkpoints
from agent.sources.journal import CURSOR_LOST, journal_key
from agent.sources.journald import JournaldSource
from agent.transforms import build
from tests.sources.journal_files import BOOT_ID, Journal, journal_remote
from tests.sources.tailing import GatedEmit
from tests.support import eventually

DEADLINE = 15.0


@pytest.fixture(scope="session", autouse=True)
def _journal_remote_installed() -> None:
    journal_remote()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal")


class Follow(GatedEmit):
    """A running journald source, what it emitted, and a gate to hold ``emit`` shut."""

    def __init__(self) -> None:
        super().__init__()
        self.source: JournaldSource | None = None

    @property
    def records(self) -> list[Record]:
        return [p.record for batch in self.batches for p in batch]

    @property
    def entries(self) -> list[Record]:
        return [r for r in self.records if "type" not in r]

    @property
    def msgs(self) -> list[str]:
        return [r["msg"] for r in self.entries]

    def last_checkpoint(self) -> Checkpoint:
        found = [p.checkpoint for batch in self.batches for p in batch if p.checkpoint]
        return found[-1]

    def status(self) -> dict[str, Any]:
        assert self.source is not None
        return self.source.status()

    async def wait_entries(self, count: int) -> None:
        await eventually(
            lambda: len(self.entries) >= count, timeout=DEADLINE, what=f"{count} entries"
        )


@contextlib.asynccontextmanager
async def following(
    config: JournaldSourceConfig, checkpoints: Checkpoints | None = None
) -> AsyncIterator[Follow]:
    follow = Follow()
    follow.source = JournaldSource("journal", config, checkpoints or {}, follow.emit, follow.stop)
    follow.task = asyncio.create_task(follow.source.run())
    try:
        yield follow
    finally:
        follow.stop.set()
        follow.gate.set()
        await asyncio.wait_for(follow.task, DEADLINE)


def config_for(journal: Journal, **options: Any) -> JournaldSourceConfig:
    settings: dict[str, Any] = {"since_boot": False, "retry_initial": 0.05, **options}
    return JournaldSourceConfig(directory=str(journal.directory), **settings)


def resume_from(cp: Checkpoint) -> dict[str, Checkpoint]:
    return {cp.key: cp}


def journalctl_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "journalctl"]


# --- records -------------------------------------------------------------------------------------


async def test_entry_fields_map_to_the_record(journal: Journal) -> None:
    journal.append(
        [
            {
                "MESSAGE": "Server listening on 0.0.0.0 port 22.",
                "SYSLOG_IDENTIFIER": "sshd",
                "_PID": "812",
                "_UID": "0",
                "_COMM": "sshd",
                "_SYSTEMD_UNIT": "ssh.service",
                "_HOSTNAME": "web-1",
                "SYSLOG_FACILITY": "4",
                "PRIORITY": "6",
            }
        ]
    )
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(1)
    (pending,) = [p for batch in follow.batches for p in batch]
    record = pending.record
    cursor = record["log"]["journal"]["cursor"]
    assert cursor.startswith("s=")
    assert record["src"] == "journal"
    assert record["msg"] == "Server listening on 0.0.0.0 port 22."
    assert record["ts"].endswith("Z")
    assert len(record["ts"]) == len("2024-01-01T00:00:00.000000Z")
    assert record["process"] == {"pid": 812, "name": "sshd", "user": {"id": "0"}}
    assert record["journald"] == {
        "unit": "ssh.service",
        "identifier": "sshd",
        "host": "web-1",
        "boot_id": BOOT_ID,
        "facility": 4,
        "priority": 6,
    }
    assert "tags" not in record
    key = journal_key(str(journal.directory), [])
    assert pending.checkpoint == Checkpoint("journal", key, 1, cursor)


async def test_realtime_timestamp_becomes_ts_to_the_microsecond(journal: Journal) -> None:
    journal.messages("one", "two")
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(2)
    expected = [
        datetime.fromtimestamp(t // 1_000_000, UTC).replace(microsecond=t % 1_000_000)
        for t in journal.realtimes
    ]
    assert [r["ts"] for r in follow.entries] == [
        e.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for e in expected
    ]


@pytest.mark.parametrize(
    ("message", "msg", "tags"),
    [
        (b"bin\x00ary\xff tail", "bin\x00ary\ufffd tail", ["invalid_utf8", "binary"]),
        (b"caf\xc3\xa9 \x07bell", "caf\u00e9 \x07bell", ["binary"]),
        (b"latin \xe9t\xe9", "latin \ufffdt\ufffd", ["invalid_utf8"]),
        ("first line\nsecond line", "first line\nsecond line", None),
        ("x" * 100_000, "x" * 100_000, None),  # over journalctl's 4096-byte JSON threshold
    ],
    ids=["nul-and-invalid", "control-byte", "latin1", "multi-line", "long"],
)
async def test_binary_and_long_messages_ship_decoded_and_flagged(
    journal: Journal, message: str | bytes, msg: str, tags: list[str] | None
) -> None:
    journal.append([{"MESSAGE": message, "SYSLOG_IDENTIFIER": "app"}])
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(1)
    (record,) = follow.entries
    assert record["msg"] == msg
    assert record.get("tags") == tags


async def test_auth_events_parse_as_for_the_same_syslog_line(journal: Journal) -> None:
    bodies = {
        "sshd": "Accepted publickey for alice from 10.0.0.7 port 51022 ssh2: ED25519 SHA256:abc",
        "sudo": "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u",
    }
    for program, body in bodies.items():
        journal.messages(body, SYSLOG_IDENTIFIER=program, _COMM=program, _PID="4242")
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(2)
    file_cfg = FileSourceConfig(paths=["/x"], parser=ParserConfig(format="auth"))
    chain = build("files", file_cfg)
    for record, (program, body) in zip(follow.entries, bodies.items(), strict=True):
        line = chain(
            {"ts": "", "src": "files", "msg": f"Nov 21 10:00:00 web-1 {program}[4242]: {body}"}
        )
        line["event"].pop("created")  # the read time the syslog header parser keeps
        for field in ("event", "user", "source", "system", "group"):
            assert record.get(field) == line.get(field), (program, field)
        assert record["event"]["outcome"] == "success"
    sudo = follow.entries[1]
    assert sudo["process"]["command_line"] == "/usr/bin/id -u"
    assert sudo["user"]["effective"]["name"] == "root"


async def test_auth_parsing_can_be_turned_off(journal: Journal) -> None:
    journal.messages(
        "Accepted password for bob from 10.0.0.8 port 2222 ssh2", SYSLOG_IDENTIFIER="sshd"
    )
    async with following(config_for(journal, auth=False)) as follow:
        await follow.wait_entries(1)
    assert "event" not in follow.entries[0]


async def test_own_unit_is_excluded_by_default(journal: Journal) -> None:
    journal.messages("agent log line", _SYSTEMD_UNIT="tailseal.service")
    journal.messages("sshd line", _SYSTEMD_UNIT="ssh.service")
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(1)
    assert follow.msgs == ["sshd line"]


async def test_matches_and_units_select_entries(journal: Journal) -> None:
    journal.messages("ssh", SYSLOG_IDENTIFIER="sshd", _SYSTEMD_UNIT="ssh.service")
    journal.messages("cron", SYSLOG_IDENTIFIER="CRON", _SYSTEMD_UNIT="cron.service")
    journal.messages("auth", SYSLOG_IDENTIFIER="sudo", SYSLOG_FACILITY="10")
    cfg = config_for(journal, matches=["SYSLOG_FACILITY=10", "+", "_SYSTEMD_UNIT=ssh.service"])
    async with following(cfg) as follow:
        await follow.wait_entries(2)
    assert follow.msgs == ["ssh", "auth"]
    async with following(config_for(journal, units=["cron.service"])) as follow:
        await follow.wait_entries(1)
    assert follow.msgs == ["cron"]


async def test_since_boot_first_start_skips_earlier_boots(tmp_path: Path) -> None:
    old = Journal(tmp_path, "old.journal", boot="0123456789abcdef0123456789abcdef")
    old.messages("previous boot")
    journal = Journal(tmp_path, "this.journal")  # later clock: this boot is the last one
    journal.messages("this boot")
    async with following(config_for(journal, since_boot=True)) as follow:
        await follow.wait_entries(1)
        journal.messages("later")
        await follow.wait_entries(2)
    assert follow.msgs == ["this boot", "later"]


# --- following, batching, stopping --------------------------------------------------------------


async def test_appends_while_following_arrive_in_order_in_bursts(journal: Journal) -> None:
    journal.messages(*(f"backlog {i}" for i in range(2000)))
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(2000)
        for round_ in range(3):
            journal.messages(*(f"live {round_}.{i}" for i in range(100)))
            await follow.wait_entries(2000 + 100 * (round_ + 1))
    expected = [f"backlog {i}" for i in range(2000)]
    expected += [f"live {r}.{i}" for r in range(3) for i in range(100)]
    assert follow.msgs == expected
    offsets = [p.checkpoint.offset for b in follow.batches for p in b if p.checkpoint]
    assert offsets == list(range(1, 2301))
    assert len(follow.batches) < 2300 / 20  # one emit per read burst, not per entry


async def test_final_sweep_ships_entries_written_before_the_stop(journal: Journal) -> None:
    journal.messages("first")
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(1)
        follow.gate.clear()  # the buffer is full: the source stops reading
        journal.messages("second")
        await asyncio.wait_for(follow.blocked.wait(), DEADLINE)
        journal.messages(*(f"late {i}" for i in range(50)))
        follow.stop.set()
        follow.gate.set()
    assert follow.msgs == ["first", "second", *(f"late {i}" for i in range(50))]
    assert follow.status()["state"] == "stopped"
    assert journalctl_children() == []  # killed and reaped: no zombies


# --- restarts and cursors ------------------------------------------------------------------------


async def test_restart_resumes_exactly_after_the_committed_cursor(journal: Journal) -> None:
    journal.messages(*(f"entry {i}" for i in range(10)))
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(10)
    committed = [p.checkpoint for b in follow.batches for p in b if p.checkpoint][5]
    journal.messages("entry 10")  # written while the agent was down
    async with following(config_for(journal), resume_from(committed)) as again:
        await again.wait_entries(5)
        journal.messages("entry 11")
        await again.wait_entries(6)
    assert again.msgs == [f"entry {i}" for i in range(6, 12)]
    assert [r.get("type") for r in again.records] == [None] * 6  # no gap
    assert again.last_checkpoint().offset == 12  # the entry counter continues


async def test_vacuumed_cursor_gives_a_gap_and_reads_what_is_left(journal: Journal) -> None:
    journal.messages("old 1", "old 2")
    async with following(config_for(journal)) as follow:
        await follow.wait_entries(2)
    committed = follow.last_checkpoint()
    journal.path.unlink()  # vacuumed while the agent was down
    Journal(journal.directory, "newer.journal").messages("new 1", "new 2")
    async with following(config_for(journal), resume_from(committed)) as again:
        await again.wait_entries(2)
    gap, *entries = again.records
    assert gap["type"] == "gap"
    assert gap["reason"] == CURSOR_LOST
    assert gap["gap"]["cursor"] == committed.path
    assert [r["msg"] for r in entries] == ["new 1", "new 2"]  # none skipped
    assert again.status()["gaps"] == 1


async def test_invalid_cursor_gives_a_gap_and_restarts_at_the_head(journal: Journal) -> None:
    journal.messages("a", "b")
    key = journal_key(str(journal.directory), [])
    broken = Checkpoint("journal", key, 7, "not-a-cursor")
    async with following(config_for(journal), resume_from(broken)) as follow:
        await follow.wait_entries(2)
        journal.messages("c")
        await follow.wait_entries(3)
    assert follow.records[0]["type"] == "gap"
    assert follow.records[0]["reason"] == CURSOR_LOST
    assert follow.msgs == ["a", "b", "c"]
    assert follow.last_checkpoint().offset == 10


# --- failures ------------------------------------------------------------------------------------


async def test_missing_journalctl_leaves_the_source_idle(journal: Journal, tmp_path: Path) -> None:
    journal.messages("never read")
    cfg = config_for(journal, journalctl=str(tmp_path / "no-such-journalctl"))
    async with following(cfg) as follow:
        await eventually(
            lambda: follow.status()["state"] == "unavailable", timeout=DEADLINE, what="idle"
        )
        assert "no-such-journalctl" in follow.status()["error"]
    assert follow.records == []
    assert follow.status()["restarts"] == 0  # no crash loop


async def test_unreadable_journal_is_retried_until_it_appears(tmp_path: Path) -> None:
    later = tmp_path / "later"
    cfg = JournaldSourceConfig(directory=str(later), since_boot=False, retry_initial=0.05)
    async with following(cfg) as follow:
        await eventually(lambda: follow.status()["restarts"] >= 2, timeout=DEADLINE, what="retries")
        assert follow.status()["state"] == "failing"
        assert "exited with" in follow.status()["error"]
        Journal(later).messages("finally")
        await follow.wait_entries(1)
    assert follow.msgs == ["finally"]


# --- configuration -------------------------------------------------------------------------------


def agent_config(source: dict[str, Any]) -> Any:
    sinks = {"c": {"type": "tailseal", "endpoint": "https://collector:8443"}}
    return parse_agent_config({"sources": {"j": {"type": "journald", **source}}, "sinks": sinks})


def test_journald_config_parses_with_defaults() -> None:
    config = agent_config({"units": ["sshd.service"], "matches": ["SYSLOG_FACILITY=10"]})
    source = config.sources["j"]
    assert isinstance(source, JournaldSourceConfig)
    assert source.exclude_units == ["tailseal.service"]
    assert source.since_boot is True
    assert msgspec.structs.asdict(source)["auth"] is True


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"matches": ["sshd"]}, "sources.j.matches[0]"),
        ({"directory": "/a", "files": ["/b"]}, "sources.j.directory"),
        ({"parser": {"format": "auth"}}, "sources.j.parser.format"),
        ({"paths": ["/var/log/x"]}, "sources.j.paths"),
        ({"retry_initial": 0}, "sources.j.retry_initial"),
    ],
)
def test_bad_journald_config_names_the_field(source: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        agent_config(source)
    assert raised.value.field == field
