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
which finds the suspect lines in place (``Suspects.spans``) before redacting them. Not a test:
figures depend on the machine; a shape far above the others points at a rule to fix (a linear
rule costs tens of ms per MiB here).
"""

from __future__ import annotations

import argparse
import json
import time

from agent.config import FileSourceConfig, RedactConfig
from agent.sources import PlainRun
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


def line(shape: str, size: int) -> str:
    return (shape * (size // len(shape) + 1))[:size]


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


if __name__ == "__main__":
    main()
