"""The buffer directory's small state: the lock, the stream identity and the sink cursors.

Blocking helpers for ``Buffer.open`` and the ack path; each file is written atomically
(``agent/statefile``) and read defensively: an unusable cursor falls back to re-sending.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from pathlib import Path

from agent.buffer.segment import SEQ
from agent.errors import StateError
from agent.record import STREAM_ID, now_rfc3339
from agent.sources import Checkpoint
from agent.statefile import read_json, write_json

log = logging.getLogger("agent.buffer.wal")

STREAM = "stream.json"
LOCK = "lock"
CURSORS = "cursors"


def stream_id(directory: Path) -> str:
    """The stream this buffer's records form; created with the directory."""
    stream = read_json(directory / STREAM)
    if stream is None:
        stream = {"stream_id": str(uuid.uuid4()), "created": now_rfc3339()}
        write_json(directory / STREAM, stream)
    if not isinstance(stream, dict) or not isinstance(stream.get("stream_id"), str):
        raise StateError(f"{directory / STREAM}: no stream_id")
    value: str = stream["stream_id"]
    if not STREAM_ID.fullmatch(value):  # what the protocol allows: every batch would be refused
        raise StateError(
            f"{directory / STREAM}: stream_id {value[:80]!r} is not [A-Za-z0-9-]{{1,64}}"
        )
    return value


def lock(directory: Path) -> int:
    """flock the directory for this process; a second agent on it gets a clear error."""
    try:
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open lock file {directory / LOCK}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StateError(f"{directory} is in use by another tailseal agent") from exc
    return fd


def load_cursor(directory: Path, sink: str, base_seq: int, base_h: bytes) -> tuple[int, bytes]:
    """A sink's acked position; missing or unusable -> the oldest position still held."""
    path = directory / CURSORS / f"{sink}.json"
    try:
        raw = read_json(path)
    except StateError:
        raw = None
    if isinstance(raw, dict):
        acked = raw.get("acked")
        try:
            h = bytes.fromhex(raw["h"])
        except (KeyError, TypeError, ValueError):
            pass
        else:
            # An int (not a float orjson made of a huge one, not a bool), and a seq the
            # protocol can carry: past it the writer could never go on.
            if type(acked) is int and base_seq <= acked <= SEQ and len(h) == 32:
                return acked, h
    if path.exists():
        log.warning("cursor %s unusable; re-sending from the oldest record held", path)
    return base_seq, base_h


def save_cursor(directory: Path, sink: str, seq: int, h: bytes) -> None:
    write_json(directory / CURSORS / f"{sink}.json", {"acked": seq, "h": h.hex()})


def cp_dict(cp: Checkpoint) -> dict[str, object]:
    return {"source": cp.source, "key": cp.key, "offset": cp.offset, "path": cp.path}
