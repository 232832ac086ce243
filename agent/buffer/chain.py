"""The buffer writer's per-record loop: seq, canonical encoding, chain hash, wire form, frame.

``link`` runs once per commit (or per segment of it) and sets the writer's cost per line. It is
compiled (``compiled.py``) where the package was built with a C compiler and the OpenSSL and
zlib headers (``tailseal version`` says whether it runs); ``link_py`` is the same loop in
Python: the reference the tests hold the compiled one to, byte for byte, and the fallback where
it was not built. Both produce exactly ``segment.encode``'s frames and ``record.link``'s wire forms.

``link(items, start, seq, prev, room, used, limit, one, dumps, option, cp_prefix, on_error,
out)`` walks ``items[start:]`` (``Pending``), giving each record ``seq`` + 1, + 2, ... and
chaining it after ``prev``. It stops

* before a record once the frames made reach ``room`` bytes (``room`` - made <= 0);
* before a record whose frame would take the active segment past ``limit`` bytes, unless the
  segment (``used`` bytes so far, plus the frames made) is empty: ``segment_full`` is then True
  and the caller starts a segment and calls again from ``next``;
* after one record if ``one`` (fsync = "always": one commit per record);
* at the end of ``items``.

It writes the frames made at the start of ``out``, a ``bytearray`` the caller keeps from commit to
commit (grown when they do not fit, never shrunk: a fresh buffer per commit cost the writer a
page fault per 4 KiB of frames, twice with the copy into ``bytes``); not a subclass, whose
``__buffer__`` could hand the compiled loop other memory. Both loops hold ``out`` exported while
they run, so code they call back cannot resize it (BufferError). It returns
``(next, size, entries, checkpoints, segment_full)``: the index to go on from, the length of the
frames in ``out``, the hot tail's ``(seq, h, wire)`` per record and the checkpoints the records
carry. ``dumps``/``option`` are orjson's; a record it refuses (a ``TypeError``) is replaced by
``on_error(record, exc)``, which returns the canonical encoding to chain instead.
``cp_prefix(source, key, path)`` gives a checkpoint's JSON up to its offset; it must be a pure
function: the compiled loop asks again only when those objects change (a chunk's records share
them).
"""

from __future__ import annotations

import hashlib
import zlib
from binascii import hexlify
from collections.abc import Callable
from typing import Any

from agent.buffer.memory import Entry
from agent.buffer.segment import BODY_HEAD, HEADER
from agent.compiled import MODULE
from agent.sources import Checkpoint, Pending

Dumps = Callable[..., bytes]
CpPrefix = Callable[[str, str, str], bytes]
OnError = Callable[[dict[str, Any], TypeError], bytes]
Linked = tuple[int, int, list[Entry], list[Checkpoint], bool]
Link = Callable[
    [list[Pending], int, int, bytes, int, int, int, bool, Dumps, int, CpPrefix, OnError, bytearray],
    Linked,
]


def link_py(  # noqa: PLR0917 -- positional, as the compiled link() it stands for
    items: list[Pending],
    start: int,
    seq: int,
    prev: bytes,
    room: int,
    used: int,
    limit: int,
    one: bool,
    dumps: Dumps,
    option: int,
    cp_prefix: CpPrefix,
    on_error: OnError,
    out: bytearray,
) -> Linked:
    """The reference loop (see the module docstring)."""
    if len(prev) != 32:
        raise ValueError("prev must be 32 bytes")
    if start < 0:  # not an index from the end: items before it were committed already
        raise ValueError("start must not be negative")
    if type(out) is not bytearray:  # a subclass may have a __buffer__ of its own (3.12+)
        raise TypeError("out must be a bytearray (not a subclass)")
    frames: list[bytes] = []
    entries: list[Entry] = []
    cps: list[Checkpoint] = []
    size = 0
    sha, crc, pack_head, pack_body = (
        hashlib.sha256,
        zlib.crc32,
        HEADER.pack,
        BODY_HEAD.pack,
    )
    index = start
    segment_full = False
    # Exported while the loop runs, as the compiled loop holds it: code it calls back gets
    # BufferError if it resizes out, in both.
    with memoryview(out):
        while index < len(items):
            if room - size <= 0:
                break
            item = items[index]
            record = item.record
            record["seq"] = seq + 1
            try:
                canonical = dumps(record, option=option)  # never b"{}": it holds "seq"
            except TypeError as exc:  # orjson.JSONEncodeError: must not stop the writer
                canonical = on_error(record, exc)
            digest = sha(prev + canonical).digest()
            wire = canonical[:-1] + b',"h":"' + hexlify(digest) + b'"}'
            cp = item.checkpoint
            cp_bytes = (
                b""
                if cp is None
                else cp_prefix(cp.source, cp.key, cp.path) + str(cp.offset).encode() + b"}"
            )
            body = pack_body(seq + 1, digest, len(cp_bytes)) + cp_bytes + wire
            frame = pack_head(len(body), crc(body)) + body
            if used + size > 0 and used + size + len(frame) > limit:
                segment_full = True
                break
            seq += 1
            prev = digest
            frames.append(frame)
            entries.append((seq, digest, wire))
            if cp is not None:
                cps.append(cp)
            size += len(frame)
            index += 1
            if one:
                break
    data = b"".join(frames)
    if len(out) < len(data):
        out.extend(bytes(len(data) - len(out)))
    out[: len(data)] = data
    return index, len(data), entries, cps, segment_full


link: Link = link_py if MODULE is None else MODULE.link
