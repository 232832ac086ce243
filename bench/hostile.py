"""Redaction's worst cases: how long one hostile line takes, per shape, at a given size.

    python -m bench.hostile [--bytes 1048576]

Anyone who can write a log line (``logger``, a failed login's user name, a request path) can
send the agent a line built to make a regular expression slow: a rule that backtracks, or that
rescans the rest of the line from each of many start positions, turns one line of
``max_line_bytes`` (1 MiB by default) into seconds or minutes of CPU while every other line
waits. This runs ``Redactor.text`` on lines that repeat what each rule looks for (its trigger,
the start of its pattern, its separators, quotes and escapes) and prints milliseconds per
line, one JSON object per shape (``cpu_ms``). ``run_ms`` is the whole transform chain of a raw
source on the line as a raw source hands it on: in a run of plain lines after 64 short ones,
which finds the suspect lines in place (``Suspects.spans``) before redacting them. ``auditd_ms``
is an auditd source's chain on an event whose EXECVE arguments repeat a shape, in one record or
in many (each record's arguments are redacted as a command line with the event's before them).
Not a test: figures depend on the machine; a shape far above the others points at a rule to fix
(a linear rule costs tens of ms per MiB here).
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import cycle

from agent.config import FileSourceConfig, ParserConfig, RedactConfig
from agent.record import Record
from agent.sources import Pending, PlainRun
from agent.transforms import build
from agent.transforms.redact import Redactor

# Each repeated (and cut) to the line size.
SHAPES = {
    "jwt starts": "eyJ",
    "jwt segments": "eyJab.eyJ",
    "mysql words": "mysql ",
    "mysql and -p": "mysql x -p ",
    "-p": " -p",
    "aws key prefix": "AKIA",
    "url credentials": "://a:",
    "bearer": "bearer ",
    "basic": "basic ",
    "authorization": "authorization: ",
    "password=": "password=",
    "pass": "pass",
    "github token prefix": "ghp_",
    "private key header": "-----BEGIN RSA PRIVATE KEY-----",
    "--password": "--password ",
    "sshpass -p": "sshpass -p ",
    "slack token prefix": "xoxb-",
    "aws secret key": "aws_secret_key=",
    "quoted value": 'token="',
    "escaped quoted value": 'token=\\"',
    "escaped backslashes": "\\\\\\",
    "quotes": "\"'",
    "env password": "PGPASSWORD=",
    "env name run": "A_PASSWOR",
    "api-key header": "x-api-key: ",
    "docker login -p": "docker login -p ",
    "redis-cli -a": "redis-cli -a ",
    "curl -u": "curl -u a:",
    "options alone": " -u -p -a",
}


# auditd: arguments repeated (one EXECVE record of the whole size, or an event of records of
# about 7.5 KB each, as the kernel cuts them) after the command; each redacted as a command line.
ARGV_SHAPES = {
    "argv mysql -p": ("mysql", "-p"),
    "argv curl -u": ("curl", "-u", "a:"),
    "argv quoted": ("sshpass", "-p", "a b"),
    "argv one letter": ("x",),
    "argv every one a secret": ("mysql", "-pS3cret"),
}


def line(shape: str, size: int) -> str:
    return (shape * (size // len(shape) + 1))[:size]


def execve_lines(words: tuple[str, ...], size: int, record_bytes: int) -> list[str]:
    """EXECVE records of one event: the command ``words[0]``, then ``words[1:]`` over and over
    (in hex, as auditd writes an argument with a space), to ``size`` bytes of arguments."""
    head = "type=EXECVE msg=audit(1.5:7):"
    rest = cycle(words[1:] or words)
    lines: list[str] = []
    values = [f"a0={words[0].encode().hex()}"]
    length = total = len(values[0])
    index = 1
    while total < size:
        values.append(f"a{index}={next(rest).encode().hex()}")
        length += len(values[-1]) + 1
        total += len(values[-1]) + 1
        index += 1
        if length >= record_bytes:
            lines.append(" ".join([head, *values]))
            values, length = [], 0
    if values:
        lines.append(" ".join([head, *values]))
    return lines


def audit_rows(size: int) -> None:
    config = FileSourceConfig(
        paths=["/x"],
        parser=ParserConfig(format="auditd"),
        redact=RedactConfig(enabled=True),
    )
    for name, words in ARGV_SHAPES.items():
        for layout, record_bytes in (("one record", size), ("7.5 KB records", 7500)):
            records = execve_lines(words, size, record_bytes)
            batch = [Pending(_record(text), None) for text in records]
            chain = build("audit", config)
            started = time.process_time()
            chain.apply(batch)
            chain.flush(final=True)
            ms = (time.process_time() - started) * 1000
            row = {"shape": f"{name}, {layout}", "bytes": sum(map(len, records))}
            print(json.dumps(row | {"records": len(records), "auditd_ms": round(ms, 1)}))


def _record(text: str) -> Record:
    return {"ts": "2026-01-01T00:00:00.000000Z", "src": "audit", "msg": text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1 << 20, help="line size (default 1 MiB)")
    args = parser.parse_args()
    redactor = Redactor()
    config = FileSourceConfig(paths=["/x"], redact=RedactConfig(enabled=True))
    short = b"".join(b"short line %d\n" % i for i in range(64))
    for name, shape in SHAPES.items():
        text = line(shape, args.bytes)
        started = time.process_time()
        redactor.text(text, suspect=True)
        ms = (time.process_time() - started) * 1000
        data = short + text.encode() + b"\n"
        run = PlainRun(data, 0, len(data), 0, "2026-01-01T00:00:00.000000Z", "raw", "k", "/x")
        chain = build("raw", config)
        started = time.process_time()
        chain.apply([run])
        run_ms = (time.process_time() - started) * 1000
        row = {"shape": name, "bytes": len(text), "cpu_ms": round(ms, 1)}
        print(json.dumps(row | {"run_ms": round(run_ms, 1)}))
    audit_rows(args.bytes)


if __name__ == "__main__":
    main()
