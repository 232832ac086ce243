"""Hash-chained records and batch bodies for collector tests, built with the agent's own encoder."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import orjson

from agent.record import Record, genesis, link

NDJSON = "application/x-ndjson"


def new_stream_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Chain:
    """Records 1..n of one stream: ``lines[i]`` is seq ``i + 1`` on the wire, ``hashes[i]`` is
    h(i) (``hashes[0]`` is the genesis value)."""

    stream: str
    lines: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)

    def line(self, seq: int) -> bytes:
        return self.lines[seq - 1]

    def head(self, seq: int) -> str:
        return self.hashes[seq].hex()

    def batch(
        self,
        first: int,
        last: int,
        *,
        host: str = "web-1",
        prev_h: str | None = None,
        lines: list[bytes] | None = None,
    ) -> bytes:
        """The NDJSON body for seqs ``first..last`` (or the given ``lines`` under that header)."""
        header = {
            "v": 1,
            "stream": self.stream,
            "host": {"name": host},
            "first_seq": first,
            "last_seq": last,
            "prev_h": self.head(first - 1) if prev_h is None else prev_h,
        }
        body = self.lines[first - 1 : last] if lines is None else lines
        return b"\n".join([orjson.dumps(header), *body]) + b"\n"


def make_chain(
    count: int,
    *,
    stream: str | None = None,
    seal: bool = False,
    gap_at: int = 0,
    gap_range: tuple[int, int] | None = None,
) -> Chain:
    """A chain of ``count`` auth-log records; with ``seal`` the last one is a seal record, with
    ``gap_at`` the record at that seq is a gap record (accounting for ``gap_range``, if given)."""
    chain = Chain(stream or new_stream_id())
    prev = genesis(chain.stream)
    chain.hashes.append(prev)
    for seq in range(1, count + 1):
        record: Record = {
            "seq": seq,
            "ts": f"2024-05-01T12:00:{seq % 60:02d}.000000Z",
            "src": "auth",
            "msg": f"sshd[{1000 + seq}]: Accepted publickey for alice from 10.0.0.5 port 50022",
            "log": {"file": {"path": "/var/log/auth.log"}, "offset": seq * 120},
            "tags": [],
        }
        if seq == gap_at:
            lost: dict[str, int] = {"bytes": 99}
            if gap_range is not None:
                lost.update(from_seq=gap_range[0], to_seq=gap_range[1])
            record = {"seq": seq, "type": "gap", "reason": "buffer_lost", "gap": lost}
        if seal and seq == count:
            record = {"seq": seq, "type": "seal", "reason": "shutdown", "last_seq": seq - 1}
        prev, wire = link(prev, record)
        chain.lines.append(wire)
        chain.hashes.append(prev)
    return chain


def tampered(line: bytes, **changes: object) -> bytes:
    """``line`` with fields changed but its old ``h`` kept (so it no longer verifies)."""
    record = orjson.loads(line)
    record.update(changes)
    return orjson.dumps(record)
