"""The compiled batch parser (``parse_batch`` in ``transforms/_speedups.c``): a batch parsed by
``TransformChain.apply`` must hold exactly the records the Python path makes one at a time
(``chain(record)``), for any line: the corpus, the benchmark's lines, and lines built from the
pieces the patterns turn on (each delimiter, the near misses, the limits, text that is not
printable ASCII). Where the compiled module is built, ``parse_batch`` must also do the common
lines itself: otherwise these tests would pass with a parser that hands everything back."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.record import Record
from agent.sources import Pending
from agent.transforms import TransformChain, build
from bench.run import auth_line
from tests.transforms.corpus import corpus, line_record, records
from tests.transforms.test_chain import source_config

try:
    from agent.transforms import _speedups  # type: ignore[attr-defined]

    COMPILED = True
    del _speedups
except ImportError:  # built without a compiler: apply takes the Python path, still compared
    COMPILED = False

needs_compiled = pytest.mark.skipif(not COMPILED, reason="agent.transforms._speedups not built")

MID_MONTH = datetime(2026, 11, 21, 12, tzinfo=UTC)
CLOCKS = [
    MID_MONTH,
    datetime(2026, 11, 30, 23, tzinfo=UTC),  # the month's last day: no month cache to trust
    datetime(2027, 1, 15, tzinfo=UTC),  # December lines belong to last year
    datetime(2026, 12, 15, tzinfo=UTC),  # "Jan  1" lines to next year
]


def chain_at(moment: datetime, fmt: str = "auth", **parser: str) -> TransformChain:
    config = source_config(format=fmt, timezone=parser.get("timezone", "UTC"))
    return build("t", config, clock=lambda: moment)


def both(
    made: list[Record], moment: datetime = MID_MONTH, fmt: str = "auth", **parser: str
) -> tuple[list[Record], list[Record]]:
    """``made`` through ``apply`` (one batch) and through ``chain(record)`` (one at a time), by
    two chains of the same config and clock; asserts their stats agree."""
    fast, reference = chain_at(moment, fmt, **parser), chain_at(moment, fmt, **parser)
    return compared(fast, reference, made)


def compared(
    fast: TransformChain, reference: TransformChain, made: list[Record]
) -> tuple[list[Record], list[Record]]:
    """Copies of ``made`` through ``fast.apply`` (one batch) and ``reference(record)`` (one at a
    time); asserts the two chains' stats agree."""
    batch, alone = copy.deepcopy(made), copy.deepcopy(made)
    fast.apply([Pending(record, None) for record in batch])
    for record in alone:
        reference(record)
    assert fast.stats == reference.stats
    return batch, alone


def assert_same(batch: list[Record], alone: list[Record]) -> None:
    for got, want in zip(batch, alone, strict=True):
        assert got == want, want.get("msg")
        # The same types too (1 == True and 1 == 1.0 in a dict compare).
        canonical = orjson.dumps(got, default=repr, option=orjson.OPT_SORT_KEYS)
        assert canonical == orjson.dumps(want, default=repr, option=orjson.OPT_SORT_KEYS)


def done_in_c(
    lines: list[str], moment: datetime = MID_MONTH, fmt: str = "auth", **parser: str
) -> list[str]:
    """The lines ``parse_batch`` does itself (the rest it hands to the slow path: here the
    chain itself, whose parser's caches the slow path fills, as in ``apply``)."""
    chain = chain_at(moment, fmt, **parser)
    handed: set[int] = set()

    def slow(record: Record) -> None:
        handed.add(id(record))
        chain(record)

    made = [line_record(line) for line in lines]
    parse_batch = getattr(chain.parser, "parse_batch")  # noqa: B009 - the syslog/auth parser's
    done = parse_batch(made, slow)
    assert done == len(lines) - len(handed)
    return [record["msg"] for record in made if id(record) not in handed]


def test_the_corpus_parses_the_same_in_a_batch() -> None:
    for name in ("test.log", "test.log.aligned-to-expected", "timestamp.log"):
        made = records(corpus("beats-system-auth", name))
        for zone in ("UTC", "-02:00", "Europe/Berlin"):
            assert_same(*both(made, timezone=zone))
        assert_same(*both(made, fmt="syslog"))


@needs_compiled
def test_the_corpus_common_lines_are_done_in_c() -> None:
    # Each of its lines is of another minute: twice each, the second is of a stamp just seen.
    lines = [r["msg"] for r in records(corpus("beats-system-auth", "test.log"))]
    done = done_in_c([line for line in lines for _ in range(2)])
    assert len(done) == len(set(done))  # never a minute's first line
    assert {line.split(": ", 1)[1][:12] for line in done} == {
        "Accepted pub",
        "Accepted pas",
        "Failed passw",
        "Invalid user",
        "Did not rece",
        "vagrant : TT",
        "     tsg : u",
    }


def bench_lines(count: int) -> list[str]:
    rng = random.Random(3)
    return [auth_line(i, rng) for i in range(count)]


@pytest.mark.parametrize("moment", CLOCKS)
def test_the_benchmark_lines_parse_the_same_in_a_batch(moment: datetime) -> None:
    assert_same(*both([line_record(line) for line in bench_lines(600)], moment))


@needs_compiled
def test_each_benchmark_shape_is_done_in_c() -> None:
    lines = bench_lines(600)
    done = done_in_c(lines)
    # A new minute's first line takes the Python path (it fills the minute cache); the rest of
    # each shape (login accepted, login failed, sudo, PAM session) is done in C.
    assert len(done) >= len(lines) - len(lines) // 60 - 1
    for shape in ("Accepted publickey", "Failed password", "COMMAND=", "session opened"):
        assert any(shape in line for line in done), shape


@needs_compiled
@pytest.mark.parametrize("zone", ["+00:00", "+01:00", "Z", ""])
def test_rfc3339_headers_are_done_in_c(zone: str) -> None:
    # rsyslog's high-precision format (Debian 12's default): every stamp differs; each minute's
    # first takes the Python path (it fills IsoTimes' minute), the rest are done in C.
    lines = [
        f"2026-11-21T10:{m:02d}:{s:02d}.{s * 16661:06d}{zone} web-1 "
        + shape.format(u=f"u{s}", p=40000 + s)
        for m in range(2)
        for s in range(0, 60, 7)
        for shape in BRUTE_FORCE
    ]
    assert len(done_in_c(lines)) == len(lines) - 2
    assert_same(*both([line_record(line) for line in lines]))
    assert_same(*both([line_record(line) for line in lines], timezone="Europe/Berlin"))


@needs_compiled
def test_syslog_format_headers_are_done_in_c() -> None:
    lines = [f"Nov 21 10:00:{s:02d} h cron[{s}]: anything at all" for s in range(60)]
    assert len(done_in_c(lines, fmt="syslog")) == 59  # all but the minute's first
    assert_same(*both([line_record(line) for line in lines], fmt="syslog"))


@needs_compiled
def test_outside_the_months_cache_only_cached_stamps_are_done_in_c() -> None:
    # On a month's last day the year is read from the clock each time (the Python path): only
    # a stamp seen just before (the stamp cache) is done in C.
    lines = [
        f"Nov 21 10:00:{s // 2:02d} h sshd[1]: Failed none for x from ::1 port 1" for s in range(8)
    ]
    done = done_in_c(lines, CLOCKS[1])
    assert done == lines[1::2]


@needs_compiled
@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (CLOCKS[2], "Dec 31 23:59"),  # read in January: last year's
        (CLOCKS[3], "Jan  1 00:00"),  # read on December 15th: next year's first day
        (CLOCKS[3], "Jan  2 00:00"),  # ... but not its second (this year's)
        (MID_MONTH, "Dec  1 00:00"),  # next month: this year's
        (MID_MONTH, "Jan  5 00:00"),
        (MID_MONTH, "Oct 31 23:59"),
    ],
)
def test_year_inference_is_done_in_c(moment: datetime, day: str) -> None:
    # The first line fills the minute cache; the second, of another second of that minute, is
    # done in C only if C infers the year the cache was filled with.
    lines = [f"{day}:{sec} h sshd[1]: Failed none for x from ::1 port 1" for sec in ("07", "08")]
    assert done_in_c(lines, moment) == lines[1:]
    assert_same(*both([line_record(line) for line in lines], moment))


H = "Nov 21 10:00:01 h "
EDGES = [
    # the lazy user: the first " from " that the rest matches after
    H + "sshd[1]: Accepted password for a from b from 1.2.3.4 port 22",
    H + "sshd[1]: Accepted password for a from 1.2.3.4 port 22 from 5.6.7.8 port 23",
    H + "sshd[1]: Failed password for invalid user from 1.2.3.4 port 22 ssh2",
    H + "sshd[1]: Failed password for invalid user  from 1.2.3.4 port 22 ssh2",
    H + "sshd[1]: Failed password for  from 1.2.3.4 port 22",
    H + "sshd[1]: Failed password for " + "u" * 256 + " from 1.2.3.4 port 22",
    H + "sshd[1]: Failed password for " + "u" * 257 + " from 1.2.3.4 port 22",
    H + "sshd[1]: Failed password for invalid user " + "u" * 256 + " from 1.2.3.4 port 22",
    # the address, port, ssh and signature
    H + "sshd[1]: Accepted publickey for a from " + "1" * 64 + " port 22",
    H + "sshd[1]: Accepted publickey for a from " + "1" * 65 + " port 22",
    H + "sshd[1]: Accepted publickey for a from fe80::1%eth0 port 22 ssh2",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 123456",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 00022 ssh",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22 ssh22",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22 ssh2: ",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22 ssh2: RSA x [preauth]",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22 ssh2 [preauth]",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22:x",
    H + "sshd[1]: Accepted  publickey for a from 1.2.3.4 port 22",
    H + "sshd[1]:    Accepted keyboard-interactive/pam for a from 1.2.3.4 port 22",
    H + "sshd-session[1]: Accepted publickey for a from 1.2.3.4 port 22",
    # the other sshd events
    H + "sshd[1]: Invalid user admin from 1.2.3.4 port 22",
    H + "sshd[1]: Invalid user  from 1.2.3.4",
    H + "sshd[1]: Invalid user a from b from 1.2.3.4 port 22",
    H + "sshd[1]: Invalid user a from  1.2.3.4",
    H + "sshd[1]: Invalid user a from 1.2.3.4 port 12345678901234567890",
    H + "sshd[1]: Invalid user a from 1.2.3.4 port 123456789012345678",
    H + "sshd[1]: Invalid user a from 1.2.3.4 port x",
    H + "sshd[1]: Invalid user " + "u" * 257 + " from 1.2.3.4",
    H + "sshd[1]: Did not receive identification string from 1.2.3.4 port 22",
    H + "sshd[1]: Did not receive identification string from 1.2.3.4",
    H + "sshd[1]: Did not receive identification string from ",
    H + "sshd[1]: Received disconnect from 1.2.3.4 port 22:11: Bye Bye [preauth]",
    H + "sshd[1]: Received disconnect from 1.2.3.4 port 1234567:11: x",
    H + "sshd[1]: Received signal 15; terminating.",
    H + "sshd[1]: Disconnected from invalid user admin 1.2.3.4 port 22 [preauth]",
    H + "sshd[1]: Disconnected from authenticating user root 1.2.3.4 port 22 [preauth]",
    H + "sshd[1]: Disconnected from user root 1.2.3.4 port 22",
    H + "sshd[1]: Disconnected from user a b 1.2.3.4 port 22",
    H + "sshd[1]: Disconnected from user  1.2.3.4 port 22",
    H + "sshd[1]: Disconnected from invalid port 22",
    H + "sshd[1]: Disconnected from user port 22",
    H + "sshd[1]: Disconnected from authenticating port 22",
    H + "sshd[1]: Disconnected from 1.2.3.4 port 22",
    H + "sshd[1]: Disconnected from " + "1" * 65 + " port 22",
    H + "sshd[1]: Disconnected from user " + "u" * 256 + " 1.2.3.4 port 22",
    H + "sshd[1]: Connection closed by 1.2.3.4 port 22 [preauth]",
    H + "sshd[1]: Connection reset by invalid user x 1.2.3.4 port 22",
    H + "sshd[1]: Connection closed by authenticating user root 1.2.3.4 port 22 [preauth]",
    H + "sshd[1]: Connection from 1.2.3.4 port 22 on 10.0.0.1 port 22",
    H + "sshd[1]: Connection closed by",
    H + "sshd[1]: Server listening on 0.0.0.0 port 22.",
    H + "sshd[1]: error: kex_exchange_identification: Connection closed by remote host",
    H + "sshd[1]: ",
    H + "sshd[1]:",
    # PAM authentication failures and other PAM lines
    H + "sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
    "ruser= rhost=1.2.3.4  user=root",
    H + "sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 rhost=1.2.3.4",
    H + "sshd[1]: pam_unix(sshd:auth): authentication failure; user=a user= ruser=b rhost=x rhost=",
    H + "sshd[1]: pam_unix(sshd:auth): authentication failure; a-user=x user=a=b logname=c",
    H + "sshd[1]: pam_unix(sshd:auth): authentication failure;logname=l",
    H + "sshd[1]: pam_unix(sshd:auth): check pass; user unknown",
    H + "sshd[1]: pam_unix(sshd:session): session opened for user (uid=0)",
    H + "sshd[1]: pam_systemd(sshd:session): new session 5 of user bob.",
    H + "su[1]: pam_unix(su:auth): authentication failure; logname=bob uid=1000 user=root",
    # PAM sessions
    H + "sshd[1]: pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
    H + "sshd[1]: pam_unix(sshd:session): session closed for user root",
    H + "sudo: pam_unix(sudo:session): session opened for user root(uid=0) by bob(uid=1000)",
    H + "sudo: pam_unix(sudo:session): session opened for user root(uid=0) by bob(uid=)",
    H + "sudo: pam_unix(sudo:session): session opened for user root(uid=x) by bob",
    H + "CRON[7]: pam_unix(cron:session): session opened for user root by (uid=0) and more",
    H + "CRON[7]: pam_unix(cron:session): session opened for user (uid=0)",
    H + "CRON[7]: pam_unix(cron:session): session half-open for user root",
    H + "CRON[7]: pam_unix(cron:session) session opened for user root",
    H + "CRON[7]: pam_unix(cr(on:session): session opened for user root",
    H + "login[7]: pam_unix(login:auth): authentication failure; logname= uid=0 user=root",
    H + "passwd[7]: pam_unix(passwd:chauthtok): password changed for bob",
    H + "chpasswd[7]: pam_unix(chpasswd:chauthtok): password for 'bob' changed",
    H + "sshd[1]: Invalid user a from  b from 1.2.3.4",
    H + "unknown[7]: pam_unix(x:session): session opened for user a",
    H + "unknown[7]: something else entirely",
    H + "su[7]: pam_unix(su:session): session opened for user root by bob(uid=1000)",
    # su
    H + "su[1]: (to root) alice on pts/0",
    H + "su[1]: FAILED SU (to root) alice on pts/0",
    H + "su[1]: Successful su for root by alice",
    H + "su[1]: FAILED su for root by alice",
    H + "su[1]: FAILED SUfor a by b",
    H + "su[1]: FAILED SU  for a by b",
    H + "su[1]: Successful su",
    H + "su[1]: (to root alice on pts/0",
    H + "su[1]: (to ) alice on pts/0",
    H + "su[1]: (to root)  alice on pts/0",
    H + "su[1]: (to root) alice on ",
    H + "su[1]: (to a b) c on d e",
    H + "su[1]: (to a)) c on d",
    H + "su[1]: for root by ",
    H + "su[1]: for  by alice",
    H + "su[1]: for root by alice and more",
    H + "su[1]: + pts/0 alice:root",
    H + "su: (to x) y on z",
    # systemd-logind
    H + "systemd-logind[1]: New session 5 of user alice.",
    H + "systemd-logind[1]: New session c1 of user gdm.",
    H + "systemd-logind[1]: New session  of user a.",
    H + "systemd-logind[1]: New session 5 of user .x",
    H + "systemd-logind[1]: New session 5 of user a.b c",
    H + "systemd-logind[1]: New session 5 of  user a",
    H + "systemd-logind[1]: Removed session 5.",
    H + "systemd-logind[1]: Removed session .",
    H + "systemd-logind[1]: Removed session 5x y",
    H + "systemd-logind[1]: Session 5 logged out. Waiting for processes to exit.",
    H + "systemd-logind[1]: Session 5 logged outx",
    H + "systemd-logind[1]: Session  logged out",
    H + "systemd-logind[1]: New seat seat0.",
    H + "systemd-logind[1]: pam_unix(x:session): session opened for user a",
    # sudo
    H + "sudo:    bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/ls -l",
    H + "sudo: bob : TTY=pts/0 ; TTY=pts/1 ; GROUP=ops ; ENV=A=B ; COMMAND=",
    H + "sudo: bob : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/x ; USER=root ; COMMAND=/x",
    H + "sudo: bob : user NOT in sudoers ; TTY=pts/0 ; PWD=/x ; USER=root",
    H + "sudo: bob : a ; b ; c ; d ; e ; f ; g ; h ; i ; TSID=1",
    H + "sudo: bob : TTY=pts/0 ; PWD=/x",
    H + "sudo: bob : ",
    H + "sudo: bob :x",
    H + "sudo: bob : TTY=pts/0 ;; PWD=/x ;  ; COMMAND=a ; b",
    H + "sudo:  : TTY=pts/0",
    H + "sudo: bob : TTY=pts/0  ; PWD=/x   ; USER=root  ; GROUP=g  ;   COMMAND=/bin/id  ",
    H + "sudo: bob :   user NOT in sudoers   ;  TTY=pts/0 ; COMMAND=/x",
    # headers the C path leaves to Python
    "<38>" + H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Nov 21 10:00:01.250 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Nov 21 10:00:60 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Nov  1 10:00:01 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Nov 01 10:00:02 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Feb 30 10:00:01 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Dec 31 23:59:59 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Jan  1 00:00:00 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "Nov 21 10:00:01 sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "2026-11-21T10:00:01Z h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "2026-11-21T10:00:02.5Z h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "2026-11-21T10:00:03.1234567Z h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "2026-11-21T10:00:04+01:00 h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "2026-11-21T10:00:59.999999Z h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "2026-11-21T10:00:60Z h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    "2026-02-30T10:00:01Z h sshd[1]: Accepted publickey for a from 1.2.3.4 port 22",
    H + "sshd[12345678901]: Accepted publickey for a from 1.2.3.4 port 22",
    H + "sshd[9999999999]: Accepted publickey for a from 1.2.3.4 port 22",
    H + "sshd[1]: Accepted publickey for \u00e9 from 1.2.3.4 port 22",
    H + "sshd[1]: Accepted publickey for a\tb from 1.2.3.4 port 22",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22\n",
    H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22 ssh2: \x00",
    H + "useradd[1]: new user: name=a, UID=1, GID=1, home=/a, shell=/bin/sh",
    "",
    "no header at all",
]


@pytest.mark.parametrize("moment", CLOCKS)
def test_edges_parse_the_same_in_a_batch(moment: datetime) -> None:
    # Each line alone after a line of its minute (the minute cache is then set), then all
    # together in one batch.
    for line in EDGES:
        warm = line_record(H + "sshd[1]: x")
        assert_same(*both([warm, line_record(line), line_record(line)], moment))
    assert_same(*both([line_record(line) for line in EDGES], moment))


BRUTE_FORCE = [  # an sshd brute force as auth.log records it (Debian 12), minute by minute
    "sshd[7]: Invalid user {u} from 203.0.113.9 port {p}",
    "sshd[7]: pam_unix(sshd:auth): check pass; user unknown",
    (
        "sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
        "ruser= rhost=203.0.113.9"
    ),
    "sshd[7]: Failed password for invalid user {u} from 203.0.113.9 port {p} ssh2",
    "sshd[7]: Received disconnect from 203.0.113.9 port {p}:11: Bye Bye [preauth]",
    "sshd[7]: Disconnected from invalid user {u} 203.0.113.9 port {p} [preauth]",
    "sshd[7]: Connection closed by authenticating user root 203.0.113.9 port {p} [preauth]",
    "sshd[7]: Did not receive identification string from 203.0.113.9 port {p}",
    "CRON[9]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
    "CRON[9]: pam_unix(cron:session): session closed for user root",
    "sudo:      bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/id",
    "sudo: pam_unix(sudo:session): session opened for user root(uid=0) by bob(uid=1000)",
]


def brute_force_lines() -> list[str]:
    """Two minutes of BRUTE_FORCE, a round every 5 seconds."""
    return [
        f"Nov 21 10:{m:02d}:{s:02d} web-1 " + shape.format(u=f"u{s}", p=40000 + s)
        for m in range(2)
        for s in range(0, 60, 5)
        for shape in BRUTE_FORCE
    ]


@needs_compiled
def test_a_brute_force_is_done_in_c_but_each_minutes_first_line() -> None:
    lines = brute_force_lines()
    done = done_in_c(lines)
    assert len(done) == len(lines) - 2
    assert_same(*both([line_record(line) for line in lines]))


@needs_compiled
def test_edges_done_in_c_are_the_ones_meant() -> None:
    lines = [H + "sshd[1]: x", *EDGES]
    done = set(done_in_c(lines))
    assert {
        H + "sshd[1]: " + body
        for body in (
            "Failed password for invalid user from 1.2.3.4 port 22 ssh2",
            "Invalid user a from  b from 1.2.3.4",  # the second " from ", an address after it
            "Disconnected from invalid port 22",  # "invalid " but no "user ": an address
            "Server listening on 0.0.0.0 port 22.",  # no pattern starts with "S"
            "pam_unix(sshd:auth): check pass; user unknown",
        )
    } <= done
    assert {
        H + "su[1]: (to root) alice on pts/0",
        H + "su[1]: FAILED su for root by alice",
        H + "su[1]: + pts/0 alice:root",  # none of its patterns: the header's fields
        H + "systemd-logind[1]: New session 5 of user alice.",
        H + "systemd-logind[1]: Session 5 logged out. Waiting for processes to exit.",
        H + "systemd-logind[1]: New seat seat0.",
    } <= done
    assert {
        H + "sshd[1]: Connection from 1.2.3.4 port 22 on 10.0.0.1 port 22",
        H + "sudo: bob : a ; b ; c ; d ; e ; f ; g ; h ; i ; TSID=1",  # > 8 errors
        H + "passwd[7]: pam_unix(passwd:chauthtok): password changed for bob",
        H + "chpasswd[7]: pam_unix(chpasswd:chauthtok): password for 'bob' changed",
    }.isdisjoint(done)
    assert not {line for line in done if not line.isascii() or not line.isprintable()}
    assert not {line for line in done if line.startswith("<")}
    iso = {line[:30] for line in done if line.startswith("2026")}
    assert iso == {"2026-11-21T10:00:02.5Z h sshd[", "2026-11-21T10:00:03.1234567Z h"}


def hostile_records() -> list[Record]:
    line = H + "sshd[1]: Accepted publickey for a from 1.2.3.4 port 22"

    class Text(str):
        __slots__ = ()

    class Fields(dict[str, object]):
        pass

    extra = line_record(line)
    extra["tags"] = ["t"]
    no_ts = line_record(line)
    del no_ts["ts"]
    no_ts["x"] = 1
    event = line_record(line)
    event["event"] = "not a dict"
    del event["src"]
    return [
        line_record(line),
        extra,
        no_ts,
        event,
        {**line_record(line), "msg": None},
        {**line_record(line), "msg": 5},
        {**line_record(line), "msg": line.encode()},
        {**line_record(line), "msg": Text(line)},
        Fields(line_record(line)),
        {"msg": line},
        {},
    ]


def test_hostile_records_parse_the_same_in_a_batch() -> None:
    assert_same(*both(hostile_records()))


PIECES = st.sampled_from(
    [
        "Accepted ",
        "Failed ",
        "publickey",
        "password",
        "keyboard-interactive/pam",
        " for ",
        "invalid user ",
        "alice",
        " from ",
        "1.2.3.4",
        "fe80::1%eth0",
        " port ",
        "22",
        "123456",
        " ssh2",
        " ssh",
        ": ",
        "RSA SHA256:abc",
        "[preauth]",
        "pam_unix(sshd:session): ",
        "pam_unix(sudo:session): ",
        "pam_systemd(cron:session): ",
        "pam_unix(login:auth): ",
        "session opened",
        "session closed",
        " for user ",
        "root",
        "(uid=0)",
        "(uid=)",
        " by ",
        "bob",
        "(uid=1000)",
        " : ",
        "TTY=pts/0",
        " ; ",
        "PWD=/x",
        "USER=root",
        "GROUP=ops",
        "COMMAND=/bin/ls -l",
        "ENV=A=B",
        "TSID=1",
        "=",
        "authentication failure",
        "Invalid user ",
        "Did not receive identification string from ",
        "Received disconnect from ",
        "Disconnected from ",
        "Connection closed by ",
        "Connection reset by ",
        "authenticating ",
        "user ",
        "user=",
        "ruser=",
        "rhost=",
        "logname=",
        "; ",
        "check pass",
        " ",
        "  ",
        "(",
        ")",
        ":",
        "x",
        "\t",
        "\u00e9",
        "\n",
        "\x00",
        # su and systemd-logind
        "FAILED SU",
        "FAILED su",
        "Successful su",
        "for ",
        "(to ",
        ") ",
        " on ",
        "pts/0",
        "New session ",
        "Removed session ",
        "Session ",
        " of user ",
        " logged out",
        "c1",
        ".",
    ]
)
HEADS = st.sampled_from(
    [
        "Nov 21 10:00:01 h ",
        "Nov 21 10:00:02 h ",
        "Nov 21 10:00:59 web-1 ",
        "Nov 21 10:01:00 h ",
        "Nov 21 10:00:01.5 h ",
        "Nov 21 10:00:61 h ",
        "Nov  1 10:00:01 h ",
        "Dec 31 23:59:59 h ",
        "Jan  1 00:00:00 h ",
        "Nox 21 10:00:01 h ",
        "<13>Nov 21 10:00:01 h ",
        "Nov 21 10:00:01 ",
        "2026-11-21T10:00:01Z h ",
        "2026-11-21T10:00:01.123456+00:00 h ",
        "2026-11-21T10:00:02.5+01:00 h ",
        "2026-11-21T10:00:03.1234567891+01:00 h ",
        "2026-11-21 10:00:04.123456789-0530 h ",
        "2026-11-21T10:00:05 h ",
        "2026-11-21T10:00:60.1Z h ",
        "2026-11-21T10:01:00.000001+00:00 h ",
        "2026-11-21T10:00:01.123456+00:00 ",
    ]
)
PROGRAMS = st.sampled_from(
    [
        "sshd",
        "sshd-session",
        "sudo",
        "su",
        "systemd-logind",
        "CRON",
        "login",
        "passwd",
        "useradd",
        "other",
        "x y",
    ]
)
PIDS = st.sampled_from(["", "[1]", "[42]", "[12345678901]", "["])
LINES = st.builds(
    lambda head, prog, pid, sep, body: head + prog + pid + sep + "".join(body),
    HEADS,
    PROGRAMS,
    PIDS,
    st.sampled_from([": ", ":", ":   ", " "]),
    st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=14),
)


@given(st.lists(LINES, min_size=1, max_size=12), st.sampled_from(CLOCKS))
@settings(max_examples=400, deadline=None)
def test_any_lines_parse_the_same_in_a_batch(lines: list[str], moment: datetime) -> None:
    assert_same(*both([line_record(line) for line in lines], moment))


@given(st.lists(LINES, min_size=1, max_size=12))
@settings(max_examples=100, deadline=None)
def test_any_lines_parse_the_same_in_a_batch_in_another_zone(lines: list[str]) -> None:
    made = [line_record(line) for line in lines]
    assert_same(*both(made, timezone="America/New_York"))
    assert_same(*both(made, fmt="syslog", timezone="+05:30"))


def test_a_slow_path_that_raises_stops_the_batch() -> None:
    # Only a failure to allocate (or a bug in the slow path, which _parse guards) can raise:
    # it comes out of parse_batch as it is, not swallowed.
    chain = chain_at(MID_MONTH)
    parse_batch: Callable[..., int] = getattr(chain.parser, "parse_batch")  # noqa: B009

    def slow(record: Record) -> None:
        raise RuntimeError("slow path failed")

    with pytest.raises(RuntimeError, match="slow path failed"):
        parse_batch([line_record("no header")], slow)


def test_the_stamp_cache_carries_over_batches_as_one_at_a_time() -> None:
    # The stamp cache holds the last line's stamp, whichever path parsed it: a stamp seen
    # again in the next batch, after the clock moved to another month, is taken from it on both
    # paths (an exact repeat: the cache never reads the clock). It was stale in a batch only.
    clock = [datetime(2027, 1, 15, tzinfo=UTC)]
    config = source_config(format="auth", timezone="UTC")
    fast, reference = (build("t", config, clock=lambda: clock[0]) for _ in range(2))
    line = "Mar  1 10:00:{} h sshd[1]: Failed none for x from ::1 port 1"
    batches = [([line.format("00"), line.format("01")], 1), ([line.format("00")], 3)]
    for lines, month in batches:
        clock[0] = datetime(2027, month, 15, tzinfo=UTC)
        assert_same(*compared(fast, reference, [line_record(text) for text in lines]))


def test_a_failing_clock_is_met_by_the_python_path() -> None:
    # A clock that raises (a test's) leaves the minute cache unused: the Python path meets the
    # failure and counts it as it does one at a time.
    def broken() -> datetime:
        raise RuntimeError("no clock")

    config = source_config(format="auth", timezone="UTC")
    fast, reference = build("t", config, clock=broken), build("t", config, clock=broken)
    assert_same(*compared(fast, reference, [line_record(line) for line in bench_lines(8)]))
    assert fast.stats.parser_errors == 8
