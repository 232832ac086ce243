"""The native sink: ships batches to a tailseal collector over HTTPS (docs/protocol.md).

Up to ``concurrency`` batches are in flight at once, ``drain_concurrency`` while draining (the
collector waits for the batches before one that overtook them); their answers are taken in
order, so the cursor advances strictly in order; the next batch is read and encoded meanwhile. A
batch is acked in the buffer only after the collector answered 200 with ``acked >= last_seq``
(it fsynced them). Every failure is retried with capped, jittered backoff, with one exception: a
record the collector refuses by seq (``400 {"error": "record n: ..."}``: it can never verify) is
quarantined — kept in ``state_dir/quarantine/<sink>/``, accounted by a ``gap`` record and
declared as a gap, so the records after it are not held up forever. Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import gzip
import logging
import re
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import zstandard

from agent.buffer import special
from agent.buffer.reader import Batch, BufferReader
from agent.buffer.wal import Buffer
from agent.config import TailsealSinkConfig
from agent.errors import RetryableError, StateError
from agent.record import now_rfc3339
from agent.retry import Backoff
from agent.sources import Pending
from agent.statefile import make_private_dir, write_json
from agent.telemetry import Histogram
from agent.threads import in_thread

log = logging.getLogger(__name__)

ACK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DRAIN_RETRY = 0.25  # longest pause between attempts while draining
ENCODINGS = {"zstd": "zstd", "gzip": "gzip", "none": "identity"}
# A collector's 400 that names the record it refuses (docs/protocol.md, checks 9 and 11).
_RECORD_ERROR = re.compile(r"record (\d+): ")
# A collector's answer is a line of JSON; more is not one (a proxy's page, a hostile peer), and
# must not be read whole into an agent with a memory limit.
MAX_REPLY_BYTES = 64 * 1024


class NativeSink:
    def __init__(
        self,
        name: str,
        config: TailsealSinkConfig,
        buffer: Buffer,
        host: dict[str, Any],
        drain: asyncio.Event,
    ) -> None:
        self.name = name
        self.config = config
        self.buffer = buffer
        self.host = host
        self.drain = drain
        self.url = config.endpoint.rstrip("/") + "/v1/batches"
        self.backoff = Backoff(config.backoff_initial, config.backoff_max)
        self.batches_sent = 0
        self.records_acked = 0
        self.bytes_acked = 0
        # by reason: network, busy, auth, rejected, unacked, too_large
        self.retries: dict[str, int] = {}
        self.relinks = 0  # 409s: the collector held another position in the chain
        self._relink_streak = 0  # 409s since the collector last took a batch
        self.overtaken = 0  # 409s to a batch sent behind others (perhaps too early): asked again
        self.quarantined = 0  # records the collector refused for good, kept on disk
        self._gap_records: set[asyncio.Task[None]] = set()  # quarantine gaps on their way in
        # The cursor of the last batch the collector took, being saved while the next is sent.
        self._acking: asyncio.Task[None] | None = None
        self.ack_latency = Histogram(ACK_LATENCY_BUCKETS)
        self.last_error = ""
        self._token = self._read_token()
        # Level 1: a little larger than 3 on log text, and much cheaper per batch.
        level = config.compression_level
        self._zstd_level = 1 if level is None else level
        # One compressor per thread: batches are encoded in threads side by side (the next
        # batch, a split, a resend), and a ZstdCompressor is not safe to share between them.
        self._zstd_local = threading.local()
        self._gzip_level = 1 if level is None else level

    async def run(self) -> None:
        """Ship until the buffer is closed and everything in it is acknowledged.

        Up to ``concurrency`` batches are in flight at once, ``drain_concurrency`` while
        draining (the next one is read and encoded meanwhile); their answers are taken in order,
        so cursors only move on: a batch's cursor is saved (while later batches fly) only after
        every batch before it was acked. A batch the collector refused by order (409) while
        batches before it were still on their way is sent again once, first in line, before the
        refusal is believed; any other refusal cancels the batches after it and repositions the
        reader.
        """
        context = await self._tls()
        reader = BufferReader(self.buffer, self.name)
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout)
        limit = max(4, self.config.concurrency, self.config.drain_concurrency)
        connector = aiohttp.TCPConnector(ssl=context, limit=limit)
        flights: deque[_Flight] = deque()
        ahead: asyncio.Task[_Encoded | None] | None = None
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                ahead = asyncio.create_task(self._next(reader))
                while flights or ahead is not None:
                    room = ahead is not None and len(flights) < self._concurrency()
                    waits: set[asyncio.Future[Any]] = {flights[0].task} if flights else set()
                    if room and ahead is not None:
                        waits.add(ahead)
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    if flights and flights[0].task.done():
                        refused = await self._answered(session, flights)
                        if refused is None:
                            continue
                        await self._acked()  # the cursor is where the reader goes back from
                        if ahead is not None:  # what was read ahead is not what comes next
                            await _settle(ahead)
                        await self._refused(reader, refused)
                        ahead = asyncio.create_task(self._next(reader))
                    elif room and ahead is not None and ahead.done():
                        current = ahead.result()
                        if current is None:
                            ahead = None
                            continue
                        ahead = asyncio.create_task(self._next(reader))
                        flying = asyncio.create_task(self._deliver(session, current))
                        flights.append(_Flight(flying, behind=bool(flights)))
            await self._acked()
        finally:
            for flight in flights:
                await _settle(flight.task)
            if ahead is not None:
                await _settle(ahead)
            if self._acking is not None:  # stopped: a cursor not saved means sending again
                await _settle(self._acking)
            reader.close()
            for task in list(self._gap_records):  # the writer has ended: they cannot land
                task.cancel()

    async def _tls(self) -> ssl.SSLContext | bool:
        """The TLS context, once it can be made. A CA file missing or unreadable (a config
        reload, a secret not mounted yet) is reported and tried again with backoff: raised,
        it ended the agent, a reload's included, before any seal."""
        while True:
            try:
                return self._ssl_context()
            except (OSError, ssl.SSLError) as exc:
                self.last_error = f"cannot set up TLS with ca_file {self.config.ca_file!r}: {exc}"
            self.retries["tls"] = self.retries.get("tls", 0) + 1
            delay = self.backoff.next()
            log.error("sink %s: %s; retrying in %.1fs", self.name, self.last_error, delay)
            await self._pause(delay)

    def _concurrency(self) -> int:
        """Batches that may be in flight now: more while draining (no time to lose)."""
        config = self.config
        return config.drain_concurrency if self.drain.is_set() else config.concurrency

    async def _answered(
        self, session: aiohttp.ClientSession, flights: deque[_Flight]
    ) -> _Relink | _Quarantine | None:
        """Take the answer of the first of ``flights`` (done): what the collector refused, for
        the reader to be repositioned after (the flights after it are cancelled then)."""
        flight = flights.popleft()
        refused = await self._landed(flight.task.result())
        if refused is None:
            return None
        if flight.behind and isinstance(refused, _Relink):
            # Answered while batches before it were on their way: maybe too early. Asked
            # again, now first in line.
            self.overtaken += 1
            resend = self._resend(session, refused.batch)
            flights.appendleft(_Flight(asyncio.create_task(resend), behind=False))
            return None
        for later in flights:  # they follow what the collector refused
            await _settle(later.task)
        flights.clear()
        return refused

    async def _landed(self, delivered: _Delivered) -> _Relink | _Quarantine | None:
        """Save the cursor after each part of a delivery the collector took, one save at a time
        and in order (each runs while what follows is sent); what it refused, if anything."""
        for part in delivered.acked:
            await self._acked()
            self._acking = asyncio.create_task(self._ack(part))
        return delivered.refused

    async def _refused(self, reader: BufferReader, refused: _Relink | _Quarantine) -> None:
        """Reposition ``reader`` after the collector refused a batch (nothing is in flight)."""
        if isinstance(refused, _Quarantine):
            await self._quarantine(reader, refused)
            return
        self.relinks += 1
        self._relink_streak += 1
        if refused.expected == refused.batch.first_seq:
            await self._forked(reader, refused.batch)
            return
        if self._relink_streak > 1:
            # 409 after 409 with nothing taken between: a collector that will not take what it
            # asks for (an older one refusing declared gaps, a broken proxy) is asked again
            # with backoff, not in a hot loop.
            self.last_error = (
                f"collector answered 409 {self._relink_streak} times in a row "
                f"(expects seq {refused.expected})"
            )
            log.error("sink %s: %s", self.name, self.last_error)
            await self._pause(self.backoff.next())
        await self._relink(reader, refused.expected)

    async def _resend(self, session: aiohttp.ClientSession, batch: Batch) -> _Delivered:
        return await self._deliver(session, await self._encoded(batch))

    async def _encoded(self, batch: Batch) -> _Encoded:
        """``batch`` with its body, encoded in a thread."""
        body, encoding = await in_thread(self._encode, batch)
        return _Encoded(batch, body, encoding)

    async def _next(self, reader: BufferReader) -> _Encoded | None:
        """The next batch, encoded; None once the buffer is closed and everything was read."""
        batch = await reader.next_batch(
            self.config.max_batch_records,
            self.config.max_batch_bytes,
            self.config.linger,
            self.drain,
        )
        return None if batch is None else await self._encoded(batch)

    async def _deliver(self, session: aiohttp.ClientSession, first: _Encoded) -> _Delivered:
        """Ship ``first`` (split in halves while the collector finds it too large); the parts
        the collector took, and what ended the delivery early, if anything: a 409 with what the
        collector expects instead, or a record it refuses for good (after the records before
        it are shipped). Saving cursors is the caller's: deliveries run side by side."""
        pending = [first]
        acked: list[_Acked] = []
        while pending:
            current = pending.pop(0)
            batch = current.batch
            started = time.monotonic()
            try:
                await self._post(session, current)
            except _TooLargeError as too_large:
                if batch.count == 1:
                    # No split can help: the collector will never take this record as it is
                    # (a line near max_line_bytes against a smaller body limit). Like a record
                    # it refuses by seq, it is kept here and accounted by a gap record, so the
                    # records after it still ship.
                    return _Delivered(acked, _Quarantine(batch, 413, too_large.error))
                pending[:0] = [await self._encoded(half) for half in batch.split()]
                continue
            except _RelinkError as relink:
                return _Delivered(acked, _Relink(relink.expected, batch))
            except _RejectedError as rejected:
                if rejected.seq == batch.first_seq:
                    return _Delivered(acked, _Quarantine(batch, rejected.status, rejected.error))
                # The records before it are fine: ship them, then the rest starts with it.
                parts = batch.split(rejected.seq - batch.first_seq)
                pending[:0] = [await self._encoded(part) for part in parts]
                continue
            self.backoff.reset()
            self._relink_streak = 0
            # Not the batch itself: its records need not stay in memory while the cursor is saved.
            acked.append(_Acked(batch.last_seq, batch.last_h, batch.count, batch.size, started))
        return _Delivered(acked, None)

    async def _ack(self, part: _Acked) -> None:
        """Save the cursor after a batch the collector holds (the buffer retries a failed save
        until it is durable); count it."""
        await self.buffer.ack(self.name, part.seq, part.h)
        self.ack_latency.observe(time.monotonic() - part.started)
        self.batches_sent += 1
        self.records_acked += part.records
        self.bytes_acked += part.size

    async def _acked(self) -> None:
        """Wait for the cursor save in progress, if any."""
        if self._acking is not None:
            acking, self._acking = self._acking, None
            await acking

    async def _quarantine(self, reader: BufferReader, refused: _Quarantine) -> None:
        """Keep the refused record on disk, account for it with a ``gap`` record and go on
        after it (the next batch declares the gap, so it links without the record)."""
        batch = refused.batch
        seq = batch.first_seq
        path = await in_thread(self._try_keep, refused)
        if not isinstance(path, Path):
            # Not kept, so not skipped: held and asked again (the collector refuses it again)
            # until it can be kept. Raised, it ended the agent, and every restart alike.
            self.last_error = (
                f"collector refused record {seq} for good ({refused.status}: {refused.error}); "
                f"cannot keep it in quarantine ({path}): holding it and retrying"
            )
            log.error("sink %s: %s", self.name, self.last_error)
            reader.seek(seq - 1, batch.prev_h)
            await self._pause(self.backoff.next())
            return
        self.quarantined += 1
        self.last_error = (
            f"collector refused record {seq} for good ({refused.status}: {refused.error}); "
            f"kept in {path}"
        )
        log.error("sink %s: %s", self.name, self.last_error)
        reader.skip_rejected(batch)
        self.buffer.stats.gaps += 1
        gap = special.rejected_gap(self.name, seq, refused.error, str(path))
        # Not awaited here: with a full buffer the writer waits for this sink's acks.
        task = asyncio.create_task(self.buffer.emit([Pending(gap, None)]))
        self._gap_records.add(task)
        task.add_done_callback(self._gap_records.discard)

    def _try_keep(self, refused: _Quarantine) -> Path | OSError | StateError:
        try:
            return self._keep(refused)
        except (OSError, StateError) as exc:  # StateError: its directory cannot be made
            return exc

    def _keep(self, refused: _Quarantine) -> Path:
        """Blocking: write the refused record to ``state_dir/quarantine/<sink>/<seq>.json``."""
        batch = refused.batch
        directory = self.buffer.directory.parent / "quarantine" / self.name
        make_private_dir(directory)
        path = directory / f"{batch.first_seq:020d}.json"
        kept: dict[str, Any] = {
            "sink": self.name,
            "stream": self.buffer.stream_id,
            "seq": batch.first_seq,
            "h": batch.hashes[0].hex(),
            "status": refused.status,
            "error": refused.error,
            "at": now_rfc3339(),
        }
        try:
            kept["record"] = batch.records[0].decode()
        except UnicodeDecodeError:  # a frame damaged on disk: the bytes as they are
            kept["record_hex"] = batch.records[0].hex()
        write_json(path, kept)
        return path

    async def _forked(self, reader: BufferReader, batch: Batch) -> None:
        """The collector holds seq ``first_seq - 1`` with another hash: our chain forked from
        its copy (e.g. a state directory restored from an image). Resending cannot fix that;
        keep the records, report loudly and retry slowly so an operator can act."""
        self.last_error = (
            f"chain fork: collector's record {batch.first_seq - 1} of stream "
            f"{self.buffer.stream_id} differs from this buffer's"
        )
        log.error("sink %s: %s; holding records and retrying", self.name, self.last_error)
        reader.seek(batch.first_seq - 1, batch.prev_h)
        await self._pause(self.backoff.next())

    async def _relink(self, reader: BufferReader, expected: int) -> None:
        """The collector holds up to ``expected - 1``: continue from there (resend or skip)."""
        if not await in_thread(reader.rewind, expected - 1):
            if reader.declare_gap_from(expected):
                # Deleted here unacknowledged (drop_oldest): the next batch declares the gap.
                log.warning(
                    "sink %s: seqs from %d were dropped here; declaring a gap", self.name, expected
                )
                return
            self.last_error = f"collector expects seq {expected}, which this buffer no longer holds"
            log.error("sink %s: %s", self.name, self.last_error)
            await self._pause(self.backoff.next())
            return
        # Not acked here: the collector's word that it holds up to ``expected - 1`` is no
        # proof that it holds these records (the reference collector says so inside a batch
        # only when its hashes differ: a fork). The next batch links to them, or is refused.
        log.warning("sink %s: collector expects seq %d; continuing from there", self.name, expected)

    async def _post(self, session: aiohttp.ClientSession, encoded: _Encoded) -> int:
        """Send a batch until the collector takes it; returns the acked seq."""
        while True:
            try:
                return await self._attempt(session, *encoded)
            except RetryableError as exc:
                self.last_error = str(exc)
                self.retries[exc.reason] = self.retries.get(exc.reason, 0) + 1
                delay = self.backoff.next(exc.retry_after)
                log.warning("sink %s: %s; retrying in %.1fs", self.name, exc, delay)
                await self._pause(delay)

    async def _attempt(
        self, session: aiohttp.ClientSession, batch: Batch, body: bytes, encoding: str
    ) -> int:
        headers = {
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": encoding,
            "Authorization": f"Bearer {self._token}",
        }
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                payload = await resp.content.read(MAX_REPLY_BYTES + 1)
                if len(payload) > MAX_REPLY_BYTES:  # read no further: not a collector's answer
                    payload = b""
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"cannot reach collector: {exc!r}", reason="network") from exc
        return self._interpret(batch, status, payload, retry_after)

    def _interpret(
        self, batch: Batch, status: int, payload: bytes, retry_after: float | None
    ) -> int:
        reply = _json(payload)
        if status == 200:
            acked = reply.get("acked")
            if type(acked) is not int or acked < batch.last_seq:
                raise RetryableError(
                    f"collector answered 200 without acking seq {batch.last_seq}: {reply}",
                    reason="unacked",
                )
            head = reply.get("head")
            if acked == batch.last_seq and isinstance(head, str) and head != batch.last_h.hex():
                # It holds this seq with another hash (a fork: a state directory restored
                # from an image): acking would release records it does not hold.
                raise RetryableError(
                    f"chain fork: collector's record {acked} of stream {self.buffer.stream_id} "
                    f"has head {str(head)[:64]!r}, this buffer's {batch.last_h.hex()}",
                    reason="fork",
                )
            return acked
        expected = reply.get("expected")
        if status == 409 and type(expected) is int:
            if not 1 <= expected <= batch.last_seq:
                # A collector asks for a seq of this batch or one before it; beyond, it would
                # hold records it was never sent, and skipping to there would lose them.
                raise RetryableError(
                    f"collector answered 409 expecting seq {expected} for seqs "
                    f"{batch.first_seq}-{batch.last_seq}",
                    reason="rejected",
                )
            raise _RelinkError(expected)
        if status == 413:
            reason = str(reply.get("error") or "request body too large")
            if batch.count == 1 and _json(batch.records[0]).get("type") == "gap":
                # Quarantining a gap record would commit another one: retried instead, loudly.
                raise RetryableError(
                    f"collector refuses gap record seq {batch.first_seq} "
                    f"({len(batch.records[0])} bytes) as too large ({reason}): its body limit "
                    "is too small for any record",
                    reason="too_large",
                )
            raise _TooLargeError(reason)
        if status in (401, 403):
            self._token = self._read_token()
            raise RetryableError(
                f"collector refused credentials ({status}): {reply.get('error')}", reason="auth"
            )
        if status in (429, 503):
            raise RetryableError(f"collector busy ({status})", retry_after, reason="busy")
        error = reply.get("error")
        if status == 400 and isinstance(error, str):
            named = _RECORD_ERROR.match(error)
            if named and batch.first_seq <= int(named[1]) <= batch.last_seq:
                raise _RejectedError(int(named[1]), status, error)
        # 400 and anything else: never dropped silently; retried with backoff and reported.
        raise RetryableError(
            f"collector answered {status}: {reply.get('error', payload[:200])!r}", reason="rejected"
        )

    async def _pause(self, delay: float) -> None:
        """Back off before a retry; drain mode (shutdown or termination notice) cuts the wait
        short, because the host may be gone before a long backoff ends."""
        if self.drain.is_set():
            await asyncio.sleep(min(delay, DRAIN_RETRY))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain.wait(), delay)

    def _encode(self, batch: Batch) -> tuple[bytes, str]:
        """The request body: the header line, then the batch's records, compressed."""
        header = {
            "v": 1,
            "stream": self.buffer.stream_id,
            "host": self.host,
            "first_seq": batch.first_seq,
            "last_seq": batch.last_seq,
            "prev_h": batch.prev_h.hex(),
        }
        if batch.gap is not None:  # seqs this buffer no longer has: see docs/protocol.md
            header["gap"] = {"from_seq": batch.gap[0], "to_seq": batch.gap[1]}
        line = orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE)
        room = batch.head_room
        body: bytes | memoryview
        if self.config.compression == "none":
            return b"".join([line, batch.ndjson]), ENCODINGS["none"]
        if len(line) > room:
            body = b"".join([line, batch.ndjson])
        else:
            # Written into the room the reader left before the records: the same bytes for a
            # batch every time it is encoded, and not a copy of its records (a copy of the
            # whole batch was ~1.5 % of the agent's CPU on raw lines).
            body = memoryview(batch.body)[room - len(line) :]
            body[: len(line)] = line
        if self.config.compression == "zstd":
            return self._zstd(body), ENCODINGS["zstd"]
        return gzip.compress(body, compresslevel=self._gzip_level), ENCODINGS["gzip"]

    def _zstd(self, body: bytes | memoryview) -> bytes:
        """``body`` as one zstd frame that declares its size (the collector's one-shot path),
        compressed at once. (Fed to a stream in two pieces, header and records, zstd copied them
        into its window and compressed the records against the header as an external
        dictionary: ~15% more CPU than this one join.)"""
        compressor = getattr(self._zstd_local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._zstd_level)
            self._zstd_local.compressor = compressor
        compressed: bytes = compressor.compress(body)
        return compressed

    def _read_token(self) -> str:
        if not self.config.token_file:
            return self.config.token
        try:
            return Path(self.config.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            problem = exc.strerror
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
        log.error(
            "sink %s: cannot read token file %s: %s", self.name, self.config.token_file, problem
        )
        return ""

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self.config.endpoint.startswith("https://"):
            return False
        ctx = ssl.create_default_context(cafile=self.config.ca_file or None)
        if not self.config.tls_verify:
            log.warning("sink %s: TLS verification is disabled", self.name)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class _Encoded(NamedTuple):
    batch: Batch
    body: bytes
    encoding: str  # the Content-Encoding of body


class _Quarantine(NamedTuple):
    batch: Batch  # its first record is the one the collector refuses
    status: int
    error: str  # the collector's reason


class _Relink(NamedTuple):
    expected: int  # the seq the collector asked for (409)
    batch: Batch  # the batch it refused


class _Acked(NamedTuple):
    """A batch (or part of one) the collector took: its cursor is to be saved."""

    seq: int  # its last
    h: bytes  # its last record's
    records: int
    size: int  # bytes
    started: float  # monotonic time its delivery started


class _Delivered(NamedTuple):
    acked: list[_Acked]  # in order
    refused: _Relink | _Quarantine | None  # what ended the delivery early


class _Flight(NamedTuple):
    task: asyncio.Task[_Delivered]
    behind: bool  # sent while batches before it were in flight: a 409 may have come too early


async def _settle(task: asyncio.Task[Any]) -> None:
    """Cancel a read-ahead (or a cursor save) and wait until it has ended (its file read and
    encoding run in threads that a cancellation waits for): the reader is then free to be
    repositioned."""
    task.cancel()
    try:
        await asyncio.wait([task])
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise
    if not task.cancelled():
        task.exception()  # seen: a read that failed is done again from the new position


class _TooLargeError(Exception):
    """413: the batch is too large for the collector (``error``: its reason)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class _RelinkError(Exception):
    def __init__(self, expected: int) -> None:
        super().__init__(expected)
        self.expected = expected


class _RejectedError(Exception):
    """The collector refuses record ``seq`` of the batch for good (a 400 that names it)."""

    def __init__(self, seq: int, status: int, error: str) -> None:
        super().__init__(error)
        self.seq = seq
        self.status = status
        self.error = error


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds, or an HTTP-date (RFC 9110
    10.2.3; a proxy may send one); None if it is neither."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": a time in UTC without a stated zone
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(0.0, seconds)  # NaN too: max keeps 0.0, and the backoff its jitter
