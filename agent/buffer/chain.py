"""The buffer writer's per-record loop: seq, canonical encoding, chain hash, frame.

``link`` runs once per commit (or per segment of it) and sets the writer's cost per line. It is
compiled (``compiled.py``) where the package was built with a C compiler and the OpenSSL and
zlib headers (``tailseal version`` says whether it runs); ``link_py`` is the same loop in
Python: the reference the tests hold the compiled one to, byte for byte, and the fallback where
it was not built. Both produce exactly ``segment.encode``'s bare frames: a record's canonical
JSON, which readers give back in ``record.link``'s wire form.

``link(items, start, seq, prev, room, used, limit, one, dumps, option, cp_prefix, on_error,
out, run_type, encoded_type)`` walks ``items[start:]`` (``Pending``; ``run_type``: a
``PlainRun``, standing for its lines' records; ``encoded_type``: an ``EncodedRun``, records a
parser wrote as JSON), giving each record ``seq`` + 1, + 2, ... and chaining it after ``prev``.
It stops

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
``(next, at, size, count, head, checkpoints, segment_full)``: the index to go on from, and when it
stopped inside the run there, where in its data it stopped (``run.after(at)`` is what is left;
else 0); the length of the frames in ``out``, how many records they hold (seqs ``seq`` + 1 ..
``seq`` + count), the chain head after them (``prev`` when none), and the checkpoints the records
carry: one per run, its last line's (``run.checkpoint_at``), since only the last one of a
(source, key) counts. The loop makes no Python object per record: sinks read the records back
from the frames (``segment.parse_run``). ``dumps``/``option`` are orjson's; a record it refuses (a
``TypeError``) is replaced by ``on_error(record, exc)``, which returns the canonical encoding to
chain instead. ``cp_prefix(source, key, path)`` gives a checkpoint's JSON up to its offset; it
must be a pure function: the compiled loop asks again only when those objects change (a chunk's
records share them). A checkpoint whose prefix is that of the one framed before it in the same
call is written compact, as its offset's digits (``segment.COMPACT``): a call's frames go to one
segment and are written together, so the whole one a compact checkpoint stands on is always
before it in the file.

A run's lines are encoded by the compiled loop without making their records: ``run.head`` +
offset + ``},"msg":`` + the line as a JSON string + ``,"seq":`` + seq + ``run.tail``, which is
orjson's encoding of the record ``run.records()`` makes (tests hold them equal on every byte a
line can hold). Its lines must be ASCII (ValueError), as the file source makes them.

An encoded run's records are framed as they are in its blob, each with ``"seq":N,`` put in its
place (``EncodedRun.canonical``); they carry the checkpoints their heads give, and the run its
last framed record's. A blob that does not hold whole records, or a record that is not a JSON
object, is refused (ValueError); that the JSON is canonical is the parser's promise
(``transforms/_speedups.c``: ``encode_run``, held to orjson's encoding by the tests).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from agent.buffer.segment import BARE, BODY_HEAD, COMPACT, HEADER, MAX_CHECKPOINT, SEQ
from agent.compiled import MODULE
from agent.sources import Checkpoint, EncodedRun, Item, Pending, PlainRun

Dumps = Callable[..., bytes]
CpPrefix = Callable[[str, str, str], bytes]
OnError = Callable[[dict[str, Any], TypeError], bytes]
Linked = tuple[int, int, int, int, bytes, list[Checkpoint], bool]
Link = Callable[
    [
        Sequence[Item],  # a list for the compiled one
        int,
        int,
        bytes,
        int,
        int,
        int,
        bool,
        Dumps,
        int,
        CpPrefix,
        OnError,
        bytearray,
        type[PlainRun],
        type[EncodedRun],
    ],
    Linked,
]


class _Frames:
    """What one ``link_py`` call made so far: the frames, the chain head and seq."""

    def __init__(  # noqa: PLR0917 -- link's arguments, passed on
        self,
        seq: int,
        prev: bytes,
        used: int,
        limit: int,
        dumps: Dumps,
        option: int,
        cp_prefix: CpPrefix,
        on_error: OnError,
    ) -> None:
        self.seq, self.prev, self.used, self.limit = seq, prev, used, limit
        self.dumps, self.option, self.cp_prefix, self.on_error = dumps, option, cp_prefix, on_error
        self.frames: list[bytes] = []
        self.count = 0
        self.cps: list[Checkpoint] = []
        self.size = 0
        self.written: bytes | None = None  # the prefix of the last checkpoint framed

    def add(self, record: dict[str, Any], cp: Checkpoint | None) -> bool:
        """Frame ``record`` as the next seq; False (nothing made) if it does not fit the
        segment."""
        record["seq"] = self.seq + 1
        try:
            canonical = self.dumps(record, option=self.option)  # never b"{}": it holds "seq"
        except TypeError as exc:  # orjson.JSONEncodeError: must not stop the writer
            canonical = self.on_error(record, exc)
        if len(canonical) < 3 or canonical[0] != 0x7B or canonical[-1] != 0x7D:  # "{", "}"
            # The frame is bare: readers put h in before the closing brace (segment.dress).
            raise ValueError("canonical encoding is not a JSON object other than {}")
        return self.frame(canonical, cp)

    def frame(self, canonical: bytes, cp: Checkpoint | None) -> bool:
        """Frame ``canonical`` (a record's canonical JSON, its seq the next) as ``add``."""
        seq = self.seq + 1
        if seq > SEQ:  # the seq word's top bit is BARE's
            raise OverflowError("seq past 2**63 - 1")
        digest = hashlib.sha256(self.prev + canonical).digest()
        prefix, cp_bytes, cp_len = b"", b"", 0
        if cp is not None:
            prefix = self.cp_prefix(cp.source, cp.key, cp.path)
            if prefix == self.written:  # the checkpoint before had the same: its digits do
                cp_bytes = str(cp.offset).encode()
                cp_len = len(cp_bytes) | COMPACT
            else:
                cp_bytes = prefix + str(cp.offset).encode() + b"}"
                cp_len = len(cp_bytes)
            if len(cp_bytes) > MAX_CHECKPOINT:
                raise ValueError(f"checkpoint longer than {MAX_CHECKPOINT} bytes")
        body = BODY_HEAD.pack(seq | BARE, digest, cp_len) + cp_bytes + canonical  # no h: bare
        frame = HEADER.pack(len(body), zlib.crc32(body)) + body
        in_segment = self.used + self.size
        if in_segment > 0 and in_segment + len(frame) > self.limit:
            return False
        if cp is not None:
            self.written = prefix
        self.seq, self.prev = seq, digest
        self.frames.append(frame)
        self.count += 1
        self.size += len(frame)
        return True

    def add_run(self, run: PlainRun, room: int, one: bool) -> tuple[int, bool, bool]:
        """Frame ``run``'s lines while they fit (as ``link``); returns where in its data it
        stopped, whether to stop, and whether the segment is full."""
        if not run.data[run.begin : run.end].isascii():
            raise ValueError("a run's lines must be ASCII")
        at = run.begin
        for line in run.records():  # a line's record: the reference for the compiled loop
            if room - self.size <= 0:
                return self._ran(run, at), True, False
            if not self.add(line.record, line.checkpoint):
                return self._ran(run, at), True, True
            at += len(line.record["msg"]) + 1
            if one:
                return self._ran(run, at), True, False
        return self._ran(run, at), False, False

    def add_encoded(self, run: EncodedRun, room: int, one: bool) -> tuple[int, bool, bool]:
        """Frame ``run``'s records while they fit (as ``add_run``); returns where in its blob
        it stopped, whether to stop, and whether the segment is full."""
        at, last = run.begin, -1
        stop = full = False
        while at < run.end:
            if room - self.size <= 0:  # before the head is read, as the compiled loop
                stop = True
                break
            start, split, end, cp = run.span_at(at)
            canonical = run.canonical(start, split, end, self.seq + 1)
            if not (canonical.startswith(b"{") and canonical.endswith(b"}")):
                raise ValueError("an encoded run's record is not a JSON object")
            if not self.frame(canonical, run.checkpoint(cp)):
                stop = full = True
                break
            at, last = end, cp
            if one:
                stop = True
                break
        if last >= 0:  # the last record's checkpoint stands for the run's
            self.cps.append(run.checkpoint(last))
        return at, stop, full

    def _ran(self, run: PlainRun, at: int) -> int:
        if at > run.begin:  # the last line's checkpoint stands for the run's
            self.cps.append(run.checkpoint_at(at))
        return at


def link_py(  # noqa: PLR0917 -- positional, as the compiled link() it stands for
    items: Sequence[Item],
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
    run_type: type[PlainRun],
    encoded_type: type[EncodedRun],
) -> Linked:
    """The reference loop (see the module docstring)."""
    if len(prev) != 32:
        raise ValueError("prev must be 32 bytes")
    if start < 0:  # not an index from the end: items before it were committed already
        raise ValueError("start must not be negative")
    if type(out) is not bytearray:  # a subclass may have a __buffer__ of its own (3.12+)
        raise TypeError("out must be a bytearray (not a subclass)")
    made = _Frames(seq, prev, used, limit, dumps, option, cp_prefix, on_error)
    index, at = start, 0
    segment_full = stop = False
    # Exported while the loop runs, as the compiled loop holds it: code it calls back gets
    # BufferError if it resizes out, in both.
    with memoryview(out):
        while index < len(items) and not stop:
            item = items[index]
            if type(item) is encoded_type:
                at, stop, segment_full = made.add_encoded(item, room, one)
                run: PlainRun | EncodedRun = item
            elif type(item) is not run_type:
                pending = cast(Pending, item)
                if room - made.size <= 0:
                    break
                if not made.add(pending.record, pending.checkpoint):
                    segment_full = True
                    break
                if pending.checkpoint is not None:
                    made.cps.append(pending.checkpoint)
                index += 1
                stop = one
                continue
            else:
                run = item
                at, stop, segment_full = made.add_run(run, room, one)
            if at < run.end:  # stopped inside the run (or before it): go on from ``at``
                at = 0 if at == run.begin else at
                break
            index, at = index + 1, 0
    data = b"".join(made.frames)
    if len(out) < len(data):
        out.extend(bytes(len(data) - len(out)))
    out[: len(data)] = data
    return index, at, len(data), made.count, made.prev, made.cps, segment_full


link: Link = link_py if MODULE is None else MODULE.link
