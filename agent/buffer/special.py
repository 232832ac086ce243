"""The records the buffer writes itself: ``gap`` (accounted loss) and ``seal`` (clean end).

Pure builders; the writer task chains and commits them like any record.
"""

from __future__ import annotations

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
