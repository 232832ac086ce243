"""Parser throughput, lines per second, one parser (plus redaction) at a time on one core.

Run manually: ``.venv/bin/python bench/parsers.py [seconds-per-case]``. Input is the shared
corpus (``<repo>/../shared/corpus``), repeated; each case builds the same chain the agent builds
(``agent.transforms.build``) and times it over fresh copies of file-source-shaped records. Not a
test: figures depend on the machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent.config import FileSourceConfig, ParserConfig, RedactConfig
from agent.record import Record
from agent.transforms import build

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def lines(*parts: str) -> list[str]:
    return [line for line in CORPUS.joinpath(*parts).read_text().split("\n") if line]


def auth_lines() -> list[str]:
    base = lines("beats-system-auth", "test.log")
    head = "Mar  3 10:00:01 h "
    extra = [
        head + "sshd[1]: Connection closed by authenticating user root 5.6.7.8 port 4 [preauth]",
        head + "sshd[1]: pam_unix(sshd:session): session opened for user bob(uid=1000) by (uid=0)",
        head + "systemd-logind[5]: New session 12 of user bob.",
        head + "CRON[9]: pam_unix(cron:session): session closed for user root",
    ]
    return base + extra


Format = Literal["none", "syslog", "auth", "access", "json", "auditd", "shell"]
CASES: dict[str, tuple[Format, Callable[[], list[str]]]] = {
    "none (redaction only)": ("none", lambda: lines("elastic-examples-apache", "apache_logs")),
    "syslog": ("syslog", auth_lines),
    "auth": ("auth", auth_lines),
    "access": ("access", lambda: lines("elastic-examples-apache", "apache_logs")),
    "auditd": (
        "auditd",
        lambda: [
            line
            for name in ("test2", "test3", "audit-rhel6", "audit-ubuntu16")
            for line in lines("go-libaudit", "auparse", f"{name}.log")
        ],
    ),
    "json": (
        "json",
        lambda: [
            f'{{"time": "2024-05-01T10:00:0{i % 10}Z", "message": "req {i}", "status": 200,'
            f' "path": "/api/v1/items/{i}", "user": "u{i % 7}"}}'
            for i in range(1000)
        ],
    ),
    "shell": (
        "shell",
        lambda: [
            '{"ts":"2026-01-01T00:00:00+0000","user":"bob","uid":1000,"tty":"/dev/pts/0",'
            f'"cwd":"/home/bob","cmd":"git status {i}","exit":0,"hist":{i},"session":"3",'
            '"shell":"bash","pid":77,"event":"command"}'
            for i in range(1000)
        ],
    ),
}


def measure(fmt: Format, text: list[str], seconds: float, *, redact: bool) -> float:
    config = FileSourceConfig(
        paths=["/x"], parser=ParserConfig(format=fmt), redact=RedactConfig(enabled=redact)
    )
    chain = build("bench", config)
    log = {"file": {"path": "/x"}, "offset": 0}
    done, elapsed = 0, 0.0
    while elapsed < seconds:
        batch: list[Record] = [
            {"ts": "2026-01-01T00:00:00.000000Z", "src": "bench", "msg": m, "log": dict(log)}
            for m in text
        ]
        start = time.perf_counter()
        for record in batch:
            chain(record)
        elapsed += time.perf_counter() - start
        done += len(batch)
    chain.flush(final=True)
    return done / elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    print(f"{'parser':24} {'lines/s':>12} {'+redaction':>12}")
    for name, (fmt, source) in CASES.items():
        text = source()
        bare = measure(fmt, text, seconds, redact=False) if fmt != "none" else float("nan")
        full = measure(fmt, text, seconds, redact=True)
        print(f"{name:24} {bare:12,.0f} {full:12,.0f}")


if __name__ == "__main__":
    main()
