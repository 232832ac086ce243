"""Command arguments are redacted as one command line: ``Redactor.argv`` and the auditd parser.

A rule such as ``mysql -p<pw>`` or ``curl -u user:pw`` needs the command before its option, and
auditd logs a command as separate arguments (EXECVE ``aN``, proctitle's NUL-separated argv): each
string alone shows no secret. These tests feed commands as argv and hold every output to carry
none of the secret."""

from __future__ import annotations

import shlex
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.record import Record
from agent.sources import Pending
from agent.transforms import build
from agent.transforms.auditd import AuditParser
from agent.transforms.redact import REDACTED, Redactor
from tests.transforms.corpus import corpus, line_record
from tests.transforms.test_chain import source_config
from tests.transforms.test_redact import leaks, secret_lines

PW = "S3cr3tPw9x"


def _hex(text: str) -> str:
    return text.encode().hex().upper()


# (argv, the secret): forms the rules know only from the order of the arguments
ARGV_SECRETS = [
    (["mysql", "-u", "root", f"-p{PW}", "app"], PW),
    (["mariadb", f"-p{PW} with spaces"], f"{PW} with spaces"),
    (["curl", "-s", "-u", f"ci:{PW}", "https://x"], PW),
    (["curl", "-u", f"ci:{PW} two words;&|x", "https://x"], f"{PW} two words;&|x"),
    (["curl", "--user", f"ci:{PW}"], PW),
    (["docker", "login", "-u", "bob", "-p", PW, "registry.example"], PW),
    (["helm", "registry", "login", "-p", f"{PW} b", "r.io"], f"{PW} b"),
    (["redis-cli", "-a", PW, "ping"], PW),
    (["sshpass", "-p", f"{PW} x", "ssh", "host"], f"{PW} x"),
    (["psql", "--password", f"{PW} 'q'"], f"{PW} 'q'"),
]
ARGV_IDS = [argv[0] + "-" + str(i) for i, (argv, _) in enumerate(ARGV_SECRETS)]


def _pieces(secret: str) -> list[str]:
    """The secret's words (a rule may have masked the first and not the rest)."""
    return [word for word in secret.replace(";&|", " ").split() if len(word) >= 2]


def _no_secret(text: str, secret: str) -> None:
    for word in _pieces(secret):
        assert word not in text, (word, text)


@pytest.mark.parametrize(("argv", "secret"), ARGV_SECRETS, ids=ARGV_IDS)
def test_argv_masks_a_secret_only_the_order_of_the_arguments_shows(
    argv: list[str], secret: str
) -> None:
    redactor = Redactor()
    assert all(redactor.text(arg) == arg for arg in argv[:-1] if secret not in arg)
    masked = redactor.argv([[arg] for arg in argv])
    assert masked is not None
    flat = [piece for arg in masked for piece in arg]
    assert len(flat) == len(argv)
    _no_secret(" ".join(flat), secret)
    # only the argument that held the secret changed, and its option or user stayed
    for before, after in zip(argv, flat, strict=True):
        if secret in before:
            assert after == before.replace(secret, REDACTED)
        else:
            assert after == before


@pytest.mark.parametrize(
    "argv",
    [
        ["mysql", "-p", "app"],  # -p alone asks for the password
        ["ls", "-la", "/var/log"],
        ["curl", "-H", "Accept: */*", "https://x"],
        ["docker", "run", "-p", "8080:80", "nginx"],
        ["redis-server", "-a", "x"],
        ["grep", "-u", "a:b"],
        [],
    ],
)
def test_argv_leaves_commands_without_a_secret_alone(argv: list[str]) -> None:
    assert Redactor().argv([[arg] for arg in argv]) is None


def _chunks(data: st.DataObject, arg: str) -> list[str]:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arg) - 1)), max_size=3)))
    bounds = [0, *[c for c in cuts if c < len(arg)], len(arg)]
    return [arg[a:b] for a, b in pairwise(bounds)] or [""]


@settings(max_examples=500, deadline=None)
@given(case=secret_lines(), data=st.data())
@example(case=("mysql -h db -p'S3cretOne S3cretTwo' app", ["S3cretOne", "S3cretTwo"]), data=None)
def test_no_secret_survives_in_a_command_logged_as_argv(
    case: tuple[str, list[str]], data: st.DataObject | None
) -> None:
    # Every known secret shape, as the shell would have split it, each argument maybe logged in
    # chunks (auditd's aN[i]): argv and then each string alone, as the chain does.
    line, pieces = case
    try:
        argv = shlex.split(line)
    except ValueError:
        return  # not a command the shell would run
    args = [_chunks(data, arg) if data is not None else [arg] for arg in argv]
    redactor = Redactor()
    masked = redactor.argv(args) or args
    assert [len(arg) for arg in masked] == [len(arg) for arg in args]
    out = " ".join("".join(redactor.text(piece) for piece in arg) for arg in masked)
    assert not leaks(out, [p for p in pieces if p in " ".join(argv)], " ".join(argv)), out


@settings(max_examples=500, deadline=None)
@given(case=secret_lines())
def test_secrets_are_where_text_replaces(case: tuple[str, list[str]]) -> None:
    # The spans Redactor.secrets finds are what Redactor.text masks, for text with no escaped
    # quote (the only thing text reads differently).
    line, _ = case
    redactor = Redactor()
    spans = redactor.secrets(line)
    masked, done = "", 0
    for start, end in spans:
        assert done <= start < end <= len(line)
        masked += line[done:start] + REDACTED
        done = end
    assert masked + line[done:] == redactor.text(line)


# --- the auditd parser, through the chain ---------------------------------------------------


def _execve(seq: int, argv: list[str], *, hexed: bool) -> str:
    values = " ".join(
        f"a{i}={_hex(arg)}" if hexed else f'a{i}="{arg}"' for i, arg in enumerate(argv)
    )
    return f"type=EXECVE msg=audit(1.5:{seq}): argc={len(argv)} {values}"


def _run(lines: list[str], *, redact: bool = True) -> tuple[list[Record], int]:
    chain = build("audit", source_config(redact=redact, format="auditd"))
    out = chain.apply([Pending(line_record(line), None) for line in lines])
    out += chain.flush(final=True)
    return [p.record for p in out], chain.stats.redacted


@pytest.mark.parametrize(
    ("argv", "secret", "hexed"),
    [
        pytest.param(argv, secret, hexed, id=f"{name}-{'hex' if hexed else 'quoted'}")
        for (argv, secret), name in zip(ARGV_SECRETS, ARGV_IDS, strict=True)
        for hexed in (False, True)
        # auditd writes an argument with a space or a quote in hex
        if hexed or not any(c in secret for c in " \"'")
    ],
)
def test_execve_and_proctitle_arguments_are_redacted_as_one_command(
    argv: list[str], secret: str, hexed: bool
) -> None:
    lines = [
        'type=SYSCALL msg=audit(1.5:7): syscall=59 success=yes pid=3 exe="/usr/bin/x" comm="x"',
        _execve(7, argv, hexed=hexed),
        "type=PROCTITLE msg=audit(1.5:7): proctitle=" + _hex("\0".join(argv)),
        "type=EOE msg=audit(1.5:7): ",
    ]
    records, redacted = _run(lines)
    execve, proctitle, event = records[1], records[2], records[4]
    for record in records:
        _no_secret(str(record), secret)
    assert "redacted" in execve["tags"]
    assert "redacted" in proctitle["tags"]
    assert "redacted" in event["tags"]
    assert redacted == 3
    assert event["process"]["args"] == [a.replace(secret, REDACTED) for a in argv]
    assert event["process"]["command_line"] == " ".join(event["process"]["args"])
    assert event["process"]["title"] == event["process"]["command_line"]
    shown = [f'a{i}="{a.replace(secret, REDACTED)}"' for i, a in enumerate(argv)]
    assert execve["msg"].endswith(f"argc={len(argv)} " + " ".join(shown))
    assert proctitle["msg"].endswith(f'proctitle="{event["process"]["title"]}"')


def test_an_argument_chunked_over_two_execve_records_is_redacted_in_each() -> None:
    # A long argument comes as aN[i] chunks, which may go on in the event's next EXECVE record;
    # here the secret itself is cut, and its command is in the first record only.
    arg = f"-p{PW}"
    lines = [
        f'type=EXECVE msg=audit(1.5:7): argc=2 a0="mysql" a1_len={len(arg)} a1[0]={_hex(arg[:5])}',
        f"type=EXECVE msg=audit(1.5:7): a1[1]={_hex(arg[5:])}",
        "type=EOE msg=audit(1.5:7): ",
    ]
    records, redacted = _run(lines)
    first, second, event = records[0], records[1], records[3]
    # the cut token goes whole in the first record (its argument goes on in the next)
    assert first["auditd"]["data"]["a1[0]"] == REDACTED
    assert second["auditd"]["data"]["a1[1]"] == REDACTED
    assert second["msg"].endswith(f'a1[1]="{REDACTED}"')
    assert event["process"]["args"] == ["mysql", f"{REDACTED}{REDACTED}"]
    assert all("redacted" in r["tags"] for r in (first, second, event))
    assert redacted == 3
    for record in records:
        assert PW[:3] not in str(record)
        assert PW[3:] not in str(record)


def test_events_keep_their_own_arguments() -> None:
    # Another event's EXECVE (other seq, or the same seq at another time) is no context.
    lines = [
        'type=EXECVE msg=audit(1.5:7): argc=1 a0="mysql"',
        f'type=EXECVE msg=audit(1.5:8): a1="-p{PW}"',
        f'type=EXECVE msg=audit(1.6:7): a1="-p{PW}"',
    ]
    records, redacted = _run(lines)
    assert redacted == 0
    assert [r["auditd"]["data"].get("a1") for r in records[:3]] == [None, f"-p{PW}", f"-p{PW}"]


def test_arguments_stay_as_logged_when_redaction_is_off() -> None:
    argv = ["mysql", f"-p{PW}"]
    records, redacted = _run([_execve(7, argv, hexed=True)], redact=False)
    assert records[0]["auditd"]["data"] == {"argc": "2", "a0": "mysql", "a1": f"-p{PW}"}
    assert "tags" not in records[0]
    assert redacted == 0


def test_a_hostile_proctitle_is_read_as_it_comes() -> None:
    # Not hex, odd-length hex, one argument with NULs only, a NUL-less quoted title.
    for title in ('"mysql -pS3cr3tPw9x"', "ABC", _hex("\0\0\0"), _hex("mysql\0\0-p" + PW)):
        records, _ = _run([f"type=PROCTITLE msg=audit(1.5:7): proctitle={title}"])
        assert PW not in str(records[0]), title


def test_real_audit_logs_parse_the_same_with_argument_redaction() -> None:
    # go-libaudit's sample logs hold no secret: redacting arguments changes nothing in them.
    lines = 0
    for path in sorted(Path(corpus("go-libaudit")).rglob("*.log")):
        plain, redacting = AuditParser(), AuditParser(redact_argv=Redactor().argv)
        for line in path.read_text().split("\n"):
            if line.strip():
                a, b = line_record(line), line_record(line)
                assert plain(a) == redacting(b)
                assert a == b, line
                lines += 1
        assert plain.expire(final=True) == redacting.expire(final=True)
    assert lines >= 80


def test_an_unquoted_argument_is_masked_in_msg_too() -> None:
    # auditd quotes an argument or writes it in hex; a line that does neither is still masked
    # (the masked value shown quoted, as the parser shows values).
    line = f"type=EXECVE msg=audit(1.5:7): argc=3 a0=mysql a1=-p{PW} a2=-p{PW}"
    record = _run([line])[0][0]
    assert record["msg"] == (
        f'type=EXECVE msg=audit(1.5:7): argc=3 a0=mysql a1="-p{REDACTED}" a2="-p{REDACTED}"'
    )
    assert record["auditd"]["data"]["a2"] == f"-p{REDACTED}"


@pytest.mark.parametrize(
    ("script", "secret", "cut_after"),
    [
        ("git clone https://ci:tokPART1tokPART2@git.example/r.git", "tokPART1tokPART2", 8),
        (
            "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYab; aws s3 ls",
            "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYab",
            20,
        ),
        ("mysql -u root -pS3cr3tPw9xS3cr3tPw9x db", "S3cr3tPw9xS3cr3tPw9x", 10),
    ],
    ids=["url", "aws-secret-key", "mysql"],
)
def test_a_secret_the_kernel_cut_between_two_records_leaks_from_neither(
    script: str, secret: str, cut_after: int
) -> None:
    # A long argument goes on in the next EXECVE record (aN[i] chunks). Shapes that need the
    # whole value (a URL's "@", a key's 40 characters) cannot match in the first record: the
    # token at the cut is masked there, and the one that goes on in the next.
    script = "x" * 40 + " " + script
    cut = script.index(secret) + cut_after
    lines = [
        (
            f'type=EXECVE msg=audit(1.5:7): argc=3 a0="bash" a1="-c" a2_len={len(script)}'
            f" a2[0]={_hex(script[:cut])}"
        ),
        f"type=EXECVE msg=audit(1.5:7): a2[1]={_hex(script[cut:])}",
        "type=EOE msg=audit(1.5:7): ",
    ]
    records, redacted = _run(lines)
    for record in records:
        assert secret[:cut_after] not in str(record), record
        assert secret[cut_after:] not in str(record), record
    assert records[0]["auditd"]["data"]["a2[0]"].startswith("x" * 40 + " ")  # the rest stays
    assert redacted == 3


def test_an_argument_whole_in_its_record_keeps_its_last_token() -> None:
    # a2_len says the chunks are all there: nothing is cut, nothing more is masked
    script = "echo hello world"
    line = (
        f'type=EXECVE msg=audit(1.5:7): argc=3 a0="bash" a1="-c" a2_len={len(script)}'
        f" a2[0]={_hex(script[:6])} a2[1]={_hex(script[6:])}"
    )
    records, redacted = _run([line])
    assert records[0]["auditd"]["data"]["a2[1]"] == script[6:]
    assert redacted == 0


def test_a_widened_secret_covers_the_secrets_inside_it() -> None:
    # mysql's -p value is the whole argument; a bearer token inside it is found too, and its
    # span must not bring back what the widened one covers.
    masked = Redactor().argv([["mysql"], ["-pS3c r3t Bearer abcdefghijk!TAILSECRET"]])
    assert masked == [["mysql"], [f"-p{REDACTED}"]]


def test_escaped_quotes_are_read_by_argv_as_text_reads_them() -> None:
    argv = ["curl", "-u", '\\"bob:pw word\\"', "https://x"]
    line = "type=EXECVE msg=audit(1.5:10): argc=4 " + " ".join(
        f"a{i}={_hex(a)}" for i, a in enumerate(argv)
    )
    records, _ = _run([line, "type=EOE msg=audit(1.5:10): "])
    for record in records:
        assert "pw word" not in str(record)
        assert "pw" not in str(record.get("process", {}).get("args", []))


@settings(max_examples=400, deadline=None)
@given(case=secret_lines())
def test_secrets_are_where_text_replaces_in_json_escaped_text(case: tuple[str, list[str]]) -> None:
    # The line as a JSON string holds it: quotes and backslashes escaped. Redactor.secrets
    # reads them as text does (one character each) and gives spans of the escaped text.
    line = case[0].replace("\\", "\\\\").replace('"', '\\"')
    redactor = Redactor()
    masked, done = "", 0
    for start, end in redactor.secrets(line):
        masked += line[done:start] + REDACTED
        done = end
    assert masked + line[done:] == redactor.text(line)


def test_a_time_past_year_9999_still_parses_and_redacts_the_arguments() -> None:
    # A parser error ships the line as it came, where alone no rule sees a1="-p..." as mysql's.
    line = f'type=EXECVE msg=audit(999999999999.5:7): argc=2 a0="mysql" a1="-p{PW}"'
    [record] = _run([line])[0][:1]
    assert PW not in str(record)
    assert "parse_failure" not in record["tags"]
    assert record["ts"] == line_record(line)["ts"]  # the time it was read


def test_the_last_chunk_of_an_argument_keeps_its_last_token_after_a_masked_one() -> None:
    # Its chunks' lengths as logged add up to aN_len: nothing goes on after it, though the
    # first chunk was masked to another length.
    key = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYab"
    script = f"export AWS_SECRET_ACCESS_KEY={key}; aws s3 ls"
    cut = script.index(key) + 20
    lines = [
        (
            f'type=EXECVE msg=audit(1.5:8): argc=3 a0="sh" a1="-c" a2_len={len(script)}'
            f" a2[0]={_hex(script[:cut])}"
        ),
        f"type=EXECVE msg=audit(1.5:8): a2[1]={_hex(script[cut:])}",
        "type=EOE msg=audit(1.5:8): ",
    ]
    records, _ = _run(lines)
    assert records[1]["auditd"]["data"]["a2[1]"] == f"{REDACTED} aws s3 ls"
    assert key[:20] not in str(records)
    assert key[20:] not in str(records)
