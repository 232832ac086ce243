"""The shared real-world corpus (``<repo>/../shared/corpus``) and records made from its files.

Missing corpus is a failure, not a skip: the oracle tests are the point of these tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.record import Record

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
READ_TS = "2026-01-01T00:00:00.000000Z"


def corpus(*parts: str) -> Path:
    """A corpus file or directory; fails the test with a clear message when it is absent."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"corpus file {path} is missing: clone shared/ beside the repo ({CORPUS})")
    return path


def records(path: Path, src: str = "test") -> list[Record]:
    """One record per line, as the file source makes them (``log.offset`` = line start)."""
    out: list[Record] = []
    offset = 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    for raw in lines:
        msg = raw.decode(errors="replace")
        log = {"file": {"path": str(path)}, "offset": offset}
        out.append({"ts": READ_TS, "src": src, "msg": msg, "log": log})
        offset += len(raw) + 1
    return out


def line_record(msg: str, src: str = "test") -> Record:
    return {"ts": READ_TS, "src": src, "msg": msg, "log": {"file": {"path": "/t"}, "offset": 0}}
