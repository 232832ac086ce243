"""The records the agent writes itself: ``gap`` (accounted loss), ``seal`` (clean end),
``notice`` (agent events), and the stand-in for a record the chain cannot encode.

Pure builders; the writer task chains and commits them like any record.
"""

from __future__ import annotations

import orjson

from agent.buffer.recovery import RecoveryReport
from agent.record import Record, now_rfc3339


def recovery_gap(report: RecoveryReport) -> Record:
    """Records lost at open: a corrupt tail quarantined, or a cursor ahead of the log."""
    return {
        "type": "gap",
        "ts": now_rfc3339(),
        "src": "tailseal",
        "reason": "buffer_corrupt" if report.quarantined else "buffer_lost",
        "msg": f"buffer recovery lost records from seq {report.lost_from_seq} "
        f"({report.lost_bytes} bytes quarantined)",
        "gap": {
            "from_seq": report.lost_from_seq,
            "to_seq": report.lost_to_seq or None,
            "quarantined": report.quarantined,
            "bytes": report.lost_bytes,
        },
    }


def drop_gap(first: int, last: int, max_bytes: int) -> Record:
    """Seqs ``first..last`` deleted unacknowledged because the buffer was full."""
    return {
        "type": "gap",
        "ts": now_rfc3339(),
        "src": "tailseal",
        "reason": "buffer_full",
        "msg": f"buffer full (max_bytes {max_bytes}): lost seq {first}-{last}",
        "gap": {"from_seq": first, "to_seq": last, "records": last - first + 1},
    }


def seal(reason: str, records: int, prev_seq: int) -> Record:
    """The last record of a clean run: the collector can tell it from a cut-off stream."""
    return {
        "type": "seal",
        "ts": now_rfc3339(),
        "src": "tailseal",
        "reason": reason,
        "msg": f"stream sealed: agent stopped ({reason})",
        "seal": {"records": records, "prev_seq": prev_seq},
    }


def notice(kind: str, msg: str, **detail: object) -> Record:
    """An agent event in the stream: a termination notice, a heartbeat."""
    return {
        "type": "notice",
        "ts": now_rfc3339(),
        "src": "tailseal",
        "msg": msg,
        "notice": {"kind": kind, **detail},
    }


def rejected_gap(sink: str, seq: int, error: str, kept: str) -> Record:
    """Seq ``seq`` refused for good by sink ``sink``'s collector, kept on the host at ``kept``."""
    return {
        "type": "gap",
        "ts": now_rfc3339(),
        "src": "tailseal",
        "reason": "collector_rejected",
        "msg": f"sink {sink}: the collector refused seq {seq} ({error}); kept in {kept}",
        "gap": {"from_seq": seq, "to_seq": seq, "records": 1, "sink": sink, "kept": kept},
    }


def unencodable(record: Record, error: str) -> Record:
    """Stand-in for ``record`` when its canonical encoding fails (orjson refuses it: nesting
    deeper than 255 levels, say — a transform's bug, never the line's fault). The line, its
    time, source and position ship; whatever a parser built is left out, and the record is
    tagged ``unencodable`` with the encoder's message."""
    kept: Record = {"seq": record.get("seq")}
    for key in ("ts", "src", "msg", "log"):
        if key in record and _encodes(record[key]):
            kept[key] = record[key]
    tags = record.get("tags")
    kept["tags"] = (
        [
            *(t for t in tags if isinstance(t, str)),
            "unencodable",
        ]
        if isinstance(tags, list)
        else ["unencodable"]
    )
    kept["error"] = {"message": f"record not encodable: {error}"}
    return kept


def _encodes(value: object) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return False
    return True
