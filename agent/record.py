"""Records and the hash chain.

A record is a flat-ish JSON object (``seq``, ``ts``, ``src``, ``msg``, ``log``, parsed ECS fields,
``tags``, ``h``). Special records carry ``type``: ``seal``, ``gap``, ``notice`` or ``alert``.

Chain: ``h = sha256(prev_h || canonical(record without h))`` over raw 32-byte digests, where
``canonical`` is orjson with sorted keys, and a stream's chain starts from
``sha256(b"tailseal/v1\\n" + stream_id)``. ``h`` is stored as lowercase hex. The buffer writer
assigns ``seq`` and ``h`` at commit; the collector and ``tailseal verify`` recompute them.

This module is pure (no I/O, no shared state) so that agent, collector and verifier share it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS_PREFIX = b"tailseal/v1\n"
DIGEST_BYTES = 32

Record = dict[str, Any]


# A stream id as the protocol allows it (and a safe directory name at the collector).
STREAM_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def genesis(stream_id: str) -> bytes:
    """The chain value that precedes seq 1 of ``stream_id``."""
    return hashlib.sha256(GENESIS_PREFIX + stream_id.encode()).digest()


def canonical(record: Record) -> bytes:
    """The canonical encoding of a record without its ``h`` (orjson, sorted keys)."""
    if "h" in record:
        record = {k: v for k, v in record.items() if k != "h"}
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def link(prev: bytes, record: Record) -> tuple[bytes, bytes]:
    """Chain ``record`` (which must not hold ``h``) after ``prev``.

    Returns the new digest and the record's wire form: its canonical JSON with ``"h"`` appended.
    Appending keeps the wire form a single encode: no second dumps of the whole record.
    """
    body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(prev + body).digest()
    if body == b"{}":
        return digest, b'{"h":"' + digest.hex().encode() + b'"}'
    return digest, body[:-1] + b',"h":"' + digest.hex().encode() + b'"}'


def expected_h(prev: bytes, record: Record) -> bytes:
    """The digest ``record`` must carry if it follows ``prev``."""
    return hashlib.sha256(prev + canonical(record)).digest()


def verifiable_h(prev: bytes, record: Record) -> bytes | None:
    """``expected_h``, or None when ``record`` has no canonical encoding (orjson refuses it,
    e.g. nested deeper than 255 levels): no ``h`` can verify it. For records from outside."""
    try:
        return expected_h(prev, record)
    except orjson.JSONEncodeError:
        return None


def now_rfc3339() -> str:
    """Current UTC time, RFC 3339 with microseconds (the record ``ts`` format)."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
