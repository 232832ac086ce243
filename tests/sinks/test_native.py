"""The native sink against a real collector on loopback with real TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import zstandard
from aiohttp import web

from agent.buffer import segment
from agent.buffer.reader import HEAD_ROOM, Batch, BufferReader
from agent.buffer.wal import Buffer
from agent.collector.server import Collector
from agent.collector.verify import StreamReport, verify_stream
from agent.config import BufferConfig, CollectorConfig, TailsealSinkConfig, TlsConfig, TokenConfig
from agent.sinks import native
from agent.sinks.native import NativeSink
from agent.sources import Pending
from tests.support import TlsFiles, eventually

TOKEN = "sink-test-token"


class Rig:
    """A buffer with its writer running, and a way to run a sink against it."""

    def __init__(self, buffer: Buffer, writer: asyncio.Task[None]) -> None:
        self.buffer = buffer
        self.writer = writer
        self.drain = asyncio.Event()

    async def commit(self, n: int, start: int = 0) -> None:
        target = self.buffer.last_seq + n
        await self.buffer.emit(
            [Pending({"msg": f"line {i}"}, None) for i in range(start, start + n)]
        )
        async with self.buffer.changed:
            await self.buffer.changed.wait_for(lambda: self.buffer.last_seq >= target)

    def sink(self, endpoint: str, tls: TlsFiles, **overrides: object) -> NativeSink:
        config = TailsealSinkConfig(
            endpoint=endpoint,
            ca_file=str(tls.ca_file),
            token=str(overrides.pop("token", TOKEN)),
            backoff_initial=0.01,
            backoff_max=0.05,
            linger=0,
            **overrides,  # type: ignore[arg-type]
        )
        return NativeSink("central", config, self.buffer, {"name": "sink-host"}, self.drain)

    async def acked(self) -> int:
        return self.buffer.cursors["central"][0]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", BufferConfig(), ["central"])
    rig = Rig(buffer, asyncio.create_task(buffer.run()))
    yield rig
    if not rig.writer.done():
        await buffer.close("test")
        await rig.writer
    await asyncio.to_thread(buffer.stop)


async def start_collector(tmp_path: Path, tls: TlsFiles, **limits: int) -> tuple[Collector, str]:
    config = CollectorConfig(
        port=0,
        storage_dir=str(tmp_path / "collector"),
        tls=TlsConfig(cert_file=str(tls.cert_file), key_file=str(tls.key_file)),
        tokens=[TokenConfig(name="t", token=TOKEN)],
        **limits,  # type: ignore[arg-type]
    )
    collector = Collector(config)
    port = await collector.start()
    return collector, f"https://127.0.0.1:{port}"


async def assert_stored_in_order(collector: Collector, rig: Rig, count: int) -> None:
    """The collector holds the ``count`` records ``Rig.commit`` made, in order."""
    lines = await collector.store.read_records(rig.buffer.stream_id)
    assert [orjson.loads(line)["msg"] for line in lines] == [f"line {i}" for i in range(count)]


@contextlib.asynccontextmanager
async def answering(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[int]:
    """A plain-HTTP server on a loopback port answering POST /v1/batches with ``handler``
    (a proxy, a broken collector); yields its port."""
    app = web.Application()
    app.router.add_post("/v1/batches", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def seal_and_ship(
    rig: Rig, collector: Collector, sink: NativeSink
) -> tuple[list[dict[str, Any]], StreamReport]:
    """Close the buffer (its seal committed), ship the rest with ``sink`` in drain mode; the
    records the collector holds, and ``tailseal verify``'s report of the stream."""
    await rig.buffer.close("test")
    await rig.writer
    rig.drain.set()
    await asyncio.wait_for(sink.run(), timeout=30)
    stream = rig.buffer.stream_id
    lines = await collector.store.read_records(stream)
    report = verify_stream(Path(collector.config.storage_dir) / "streams" / stream)
    return [orjson.loads(line) for line in lines], report


async def run_until(sink: NativeSink, condition: object, what: str) -> None:
    task = asyncio.create_task(sink.run())
    try:
        await eventually(condition, timeout=20, what=what)  # type: ignore[arg-type]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# (concurrency, records a batch, batches): 4 in flight side by side, answered and acked in order
@pytest.mark.parametrize("shape", [(1, 500, 3), (4, 7, 172)], ids=["one", "four"])
async def test_records_are_shipped_and_acked_in_order(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles, shape: tuple[int, int, int]
) -> None:
    concurrency, per_batch, batches = shape
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(1200)
        sink = rig.sink(url, tls_files, max_batch_records=per_batch, concurrency=concurrency)
        await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 1200, "1200 acked")
        assert sink.batches_sent == batches  # every cursor saved once
        await assert_stored_in_order(collector, rig, 1200)
    finally:
        await collector.stop()
    assert (sink.relinks, sink.retries, sink.quarantined, sink.records_acked) == (0, {}, 0, 1200)


@pytest.mark.parametrize(
    ("compression", "level"),
    [("zstd", None), ("zstd", -7), ("zstd", 19), ("gzip", None), ("gzip", 9), ("none", None)],
)
async def test_each_compression_is_accepted(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles, compression: str, level: int | None
) -> None:
    """600 records a batch: zstd bodies are fed to the compressor 256 records at a time."""
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(1200)
        sink = rig.sink(
            url, tls_files, compression=compression, compression_level=level, max_batch_records=600
        )
        await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 1200, "1200 acked")
        assert sink.batches_sent == 2
        await assert_stored_in_order(collector, rig, 1200)
    finally:
        await collector.stop()


async def test_sink_returns_once_closed_buffer_is_fully_acked(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(10)
        await rig.buffer.close("test")
        await rig.writer
        rig.drain.set()
        await asyncio.wait_for(rig.sink(url, tls_files).run(), timeout=20)
        assert rig.buffer.cursors["central"][0] == 11  # ten records and the seal
        heads = await collector.store.list_streams()
        assert heads[0].state == "sealed"
    finally:
        await collector.stop()


async def test_collector_outage_is_retried_until_it_comes_back(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    collector, url = await start_collector(tmp_path, tls_files)
    await collector.stop()  # the port is now closed: connection refused
    await rig.commit(20)
    sink = rig.sink(url, tls_files)
    task = asyncio.create_task(sink.run())
    try:
        await eventually(lambda: "cannot reach" in sink.last_error, timeout=20, what="a retry")
        assert rig.buffer.cursors["central"][0] == 0
        port = int(url.rsplit(":", 1)[1])
        config = collector.config
        revived = Collector(
            CollectorConfig(
                host=config.host,
                port=port,
                storage_dir=config.storage_dir,
                tls=config.tls,
                tokens=config.tokens,
            )
        )
        await revived.start()
        await eventually(lambda: rig.buffer.cursors["central"][0] == 20, timeout=20, what="ack")
        await revived.stop()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# Bytes that are not UTF-8 raised UnicodeDecodeError out of the sink's creation (at start,
# at a reload) and of the re-read after a 401: now an empty token, reported, read again.
@pytest.mark.parametrize("first", [b"stale-token\n", b"\xff\xfe not text"], ids=["stale", "binary"])
async def test_token_file_is_reread_after_401(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles, first: bytes
) -> None:
    collector, url = await start_collector(tmp_path, tls_files)
    token_file = tmp_path / "token"
    token_file.write_bytes(first)
    try:
        await rig.commit(5)
        sink = rig.sink(url, tls_files, token="", token_file=str(token_file))
        task = asyncio.create_task(sink.run())
        await eventually(lambda: "401" in sink.last_error, timeout=20, what="a 401")
        token_file.write_text(TOKEN + "\n")
        await eventually(lambda: rig.buffer.cursors["central"][0] == 5, timeout=20, what="ack")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await collector.stop()


async def test_batch_over_collector_body_limit_is_split(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    collector, url = await start_collector(tmp_path, tls_files, max_body_bytes=8000)
    try:
        await rig.commit(400)
        sink = rig.sink(url, tls_files, compression="none")
        await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 400, "400 acked")
        assert sink.batches_sent > 2
        lines = await collector.store.read_records(rig.buffer.stream_id)
        assert len(lines) == 400
    finally:
        await collector.stop()


async def test_lost_cursor_resends_and_collector_dedupes(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(30)
        sink = rig.sink(url, tls_files, max_batch_records=7)
        await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 30, "30 acked")
        rig.buffer.cursors["central"] = (0, rig.buffer.base_h)  # as if the cursor file was lost
        again = rig.sink(url, tls_files, max_batch_records=7)
        await run_until(again, lambda: rig.buffer.cursors["central"][0] == 30, "30 re-acked")
        lines = await collector.store.read_records(rig.buffer.stream_id)
        assert len(lines) == 30
    finally:
        await collector.stop()


async def test_busy_collector_retry_after_is_honoured(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles, unused_tcp_port: int
) -> None:
    """A stand-in collector answers 503 + Retry-After twice, then proxies to the real one."""
    collector, url = await start_collector(tmp_path, tls_files)
    answers: list[float] = []
    ctx = ssl.create_default_context(cafile=str(tls_files.ca_file))

    async def busy(request: web.Request) -> web.StreamResponse:
        answers.append(asyncio.get_running_loop().time())
        if len(answers) <= 2:
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0.3"})
        headers = {k: request.headers[k] for k in ("Authorization", "Content-Type")}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url + "/v1/batches", data=await request.read(), headers=headers, ssl=ctx
            ) as resp,
        ):
            return web.Response(body=await resp.read(), status=resp.status)

    app = web.Application()
    app.router.add_post("/v1/batches", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    try:
        await rig.commit(3)
        sink = rig.sink(f"http://127.0.0.1:{unused_tcp_port}", tls_files, compression="none")
        await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 3, "3 acked")
        assert len(answers) == 3
        assert answers[1] - answers[0] >= 0.3
        assert answers[2] - answers[1] >= 0.3
    finally:
        await runner.cleanup()
        await collector.stop()


async def test_chain_fork_is_reported_and_records_are_kept(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """A collector holding a different chain for the stream answers 409 at our own first seq."""
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(5)
        sink = rig.sink(url, tls_files)
        await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 5, "5 acked")
        # Restore-from-image in miniature: another buffer dir with the same stream id whose
        # records differ, so its seq 5 has another hash than the one the collector holds.
        await rig.buffer.close("test")
        await rig.writer
        await asyncio.to_thread(rig.buffer.stop)
        clone = tmp_path / "clone"
        (clone / "buffer").mkdir(parents=True)
        stream = (tmp_path / "state" / "buffer" / "stream.json").read_bytes()
        (clone / "buffer" / "stream.json").write_bytes(stream)
        other = await asyncio.to_thread(Buffer.open, clone, BufferConfig(), ["central"])
        forked = Rig(other, asyncio.create_task(other.run()))
        await forked.commit(7, start=100)
        forked.buffer.cursors["central"] = (5, (await _hash_of(forked, 5)))
        sink = forked.sink(url, tls_files)
        await run_until(sink, lambda: "chain fork" in sink.last_error, "the fork to be reported")
        assert forked.buffer.cursors["central"][0] == 5
        await other.close("test")
        await forked.writer
        await asyncio.to_thread(other.stop)
        assert len(await collector.store.read_records(other.stream_id)) == 5
    finally:
        await collector.stop()


async def _hash_of(rig: Rig, seq: int) -> bytes:
    reader = BufferReader(rig.buffer, "central")
    try:
        assert await asyncio.to_thread(reader.rewind, seq)
        return reader.position_h
    finally:
        reader.close()


async def test_records_dropped_by_a_full_buffer_are_declared_and_verify_as_accounted(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    config = BufferConfig(segment_bytes=4096, max_bytes=3 * 4096, when_full="drop_oldest")
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", config, ["central"])
    rig = Rig(buffer, asyncio.create_task(buffer.run()))
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(5)
        sink = rig.sink(url, tls_files)
        await run_until(sink, lambda: buffer.cursors["central"][0] == 5, "first records acked")
        for i in range(30):  # the collector is "unreachable": nothing ships, segments drop
            await rig.commit(20, start=100 + i * 20)
        assert buffer.stats.dropped_records > 0
        await buffer.close("test")
        await rig.writer
        rig.drain.set()
        await asyncio.wait_for(rig.sink(url, tls_files).run(), timeout=30)
        assert buffer.cursors["central"][0] == buffer.last_seq
        report = verify_stream(tmp_path / "collector" / "streams" / buffer.stream_id)
    finally:
        await collector.stop()
        await asyncio.to_thread(buffer.stop)
    kinds = {f.kind for f in report.findings}
    assert "skip" in kinds
    assert report.ok(allow_unsealed=False), report.findings
    assert report.sealed


async def test_collector_that_lost_records_gets_them_again_despite_read_ahead(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """A second collector (its storage empty, as after a restore) answers 409 "expected 1" to a
    sink that already holds the next batch read ahead from segment files: the read-ahead is
    dropped, the sink rewinds, and every record arrives once, in order, sealed."""
    config = BufferConfig(segment_bytes=4096)
    # A second sink that never acks keeps every segment, so all of them can be sent again.
    sinks = ["central", "idle"]
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", config, sinks)
    rig = Rig(buffer, asyncio.create_task(buffer.run()))
    first, url = await start_collector(tmp_path / "first", tls_files)
    try:
        await rig.commit(40)
        sink = rig.sink(url, tls_files, max_batch_records=7)
        await run_until(sink, lambda: buffer.cursors["central"][0] == 40, "40 acked")
    finally:
        await first.stop()
    second, url = await start_collector(tmp_path / "second", tls_files)
    try:
        await rig.commit(60, start=40)
        await buffer.close("test")
        await rig.writer
        rig.drain.set()
        again = rig.sink(url, tls_files, max_batch_records=7)
        await asyncio.wait_for(again.run(), timeout=30)
        assert again.retries == {}  # a 409 is a relink, not a retry
        assert again.relinks == 1  # a stale read-ahead would be refused too
        assert buffer.cursors["central"][0] == buffer.last_seq == 101  # 100 records + the seal
        lines = await second.store.read_records(buffer.stream_id)
        report = verify_stream(tmp_path / "second" / "collector" / "streams" / buffer.stream_id)
    finally:
        await second.stop()
        await asyncio.to_thread(buffer.stop)
    records = [orjson.loads(line) for line in lines]
    assert [r["msg"] for r in records[:100]] == [f"line {i}" for i in range(100)]
    assert [r["seq"] for r in records] == list(range(1, 102))
    assert records[-1]["type"] == "seal"
    assert report.ok(allow_unsealed=False), report.findings
    assert report.sealed


def _tamper(state: Path, seqs: set[int]) -> None:
    """Change a letter of each record in ``seqs`` on disk (``h`` kept, frame crc made right
    again): the buffer reads them back as they are, and no collector can verify them."""
    for _, path in segment.list_segments(state / "buffer"):
        data = bytearray(path.read_bytes())
        start = 0
        for scanned in segment.scan(path).frames:
            frame = segment.parse_frame(data, start)  # its checkpoint as stored (maybe compact)
            assert frame is not None
            assert frame.end == scanned.end
            if frame.seq in seqs:
                # The frame is bare (the writer's): its record without the h the read put in.
                canonical = frame.record[: -segment.DRESSING - 1] + b"}"
                record = canonical.replace(b'"line ', b'"LINE ', 1)
                cp, compact = frame.checkpoint, frame.compact
                encoded = segment.encode(frame.seq, frame.h, cp, record, compact=compact, bare=True)
                assert len(encoded) == frame.end - start
                data[start : frame.end] = encoded
            start = frame.end
        path.write_bytes(bytes(data))


async def test_records_the_collector_refuses_are_quarantined_and_the_rest_ships(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """A record that can never verify (changed on disk after its h) gets a 400 naming it: the
    records before it ship, it is kept in state_dir/quarantine and accounted by a gap record,
    and the stream goes on after it instead of retrying forever. Consecutive refusals (8, 9)
    are declared as one gap; so is the stream's very first record."""
    config = BufferConfig()
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", config, ["central"])
    rig = Rig(buffer, asyncio.create_task(buffer.run()))
    refused = {1, 8, 9, 15}
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(20)
        await asyncio.to_thread(_tamper, tmp_path / "state", refused)
        sink = rig.sink(url, tls_files, max_batch_records=5)
        # 20 records + a gap record for each refused one.
        await run_until(sink, lambda: buffer.cursors["central"][0] == 24, "all but 4 shipped")
        assert sink.quarantined == 4
        assert sink.retries == {}  # a refusal by seq is not retried
        records, report = await seal_and_ship(rig, collector, rig.sink(url, tls_files))
    finally:
        await collector.stop()
        await asyncio.to_thread(buffer.stop)
    held = [r["seq"] for r in records]
    assert held == [s for s in range(1, 26) if s not in refused]  # 20 + 4 gaps + the seal
    gaps = [r for r in records if r.get("type") == "gap"]
    assert sorted(g["gap"]["from_seq"] for g in gaps) == sorted(refused)
    assert {g["reason"] for g in gaps} == {"collector_rejected"}
    assert records[-1]["type"] == "seal"
    kept = sorted((tmp_path / "state" / "quarantine" / "central").iterdir())
    assert [int(p.stem) for p in kept] == sorted(refused)
    for path in kept:
        entry = orjson.loads(path.read_bytes())
        assert entry["error"] == f"record {entry['seq']}: h does not verify"
        assert orjson.loads(entry["record"])["msg"] == f"LINE {entry['seq'] - 1}"
        assert entry["stream"] == buffer.stream_id
        assert {g["gap"]["kept"] for g in gaps if g["gap"]["from_seq"] == entry["seq"]} == {
            str(path)
        }
    assert sorted((f.kind, f.seq, f.last_seq) for f in report.findings) == [
        *(("gap", seq, seq) for seq in range(21, 25)),  # the gap records themselves
        ("skip", 1, 1),
        ("skip", 8, 9),
        ("skip", 15, 15),
    ]
    assert report.ok(allow_unsealed=False)
    assert report.sealed


@pytest.mark.parametrize(
    ("compression", "limits", "error"),
    [
        ("none", {"max_body_bytes": 8000}, "body exceeds 8000 bytes"),
        ("zstd", {"max_decompressed_bytes": 8000}, "decompressed body exceeds 8000 bytes"),
    ],
)
async def test_a_single_record_too_large_for_the_collector_is_quarantined(
    tmp_path: Path,
    tls_files: TlsFiles,
    compression: str,
    limits: dict[str, int],
    error: str,
) -> None:
    """A record the collector refuses as too large even alone (413 to a batch of one) cannot be
    split further: it is kept in state_dir/quarantine and accounted by a gap record, and the
    records after it ship. Before, the sink raised and took the agent down with it, and every
    restart met the same record: nothing after it ever shipped."""
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", BufferConfig(), ["central"])
    rig = Rig(buffer, asyncio.create_task(buffer.run()))
    collector, url = await start_collector(tmp_path, tls_files, **limits)
    huge = "x" * 20_000
    try:
        await rig.commit(5)
        await buffer.emit([Pending({"msg": huge}, None)])
        await rig.commit(5, start=5)  # seqs 7-11; the gap record will be 12
        sink = rig.sink(url, tls_files, compression=compression)
        # 11 records + the gap record for seq 6.
        await run_until(sink, lambda: buffer.cursors["central"][0] == 12, "all but seq 6")
        assert sink.quarantined == 1
        assert sink.retries == {}
        final = rig.sink(url, tls_files, compression=compression)
        records, report = await seal_and_ship(rig, collector, final)
    finally:
        await collector.stop()
        await asyncio.to_thread(buffer.stop)
    assert [r["seq"] for r in records] == [s for s in range(1, 14) if s != 6]
    assert [r["msg"] for r in records[:10]] == [f"line {i}" for i in range(10)]
    gap = records[10]
    assert (gap["type"], gap["reason"], gap["gap"]["from_seq"]) == ("gap", "collector_rejected", 6)
    assert error in gap["msg"]
    kept = orjson.loads(await asyncio.to_thread(Path(gap["gap"]["kept"]).read_bytes))
    assert (kept["seq"], kept["status"], kept["error"]) == (6, 413, error)
    assert orjson.loads(kept["record"])["msg"] == huge
    assert sorted((f.kind, f.seq) for f in report.findings) == [("gap", 12), ("skip", 6)]
    assert report.ok(allow_unsealed=False)
    assert report.sealed


async def test_a_gap_record_refused_as_too_large_is_retried_not_quarantined(
    rig: Rig, tls_files: TlsFiles
) -> None:
    """A collector (or a proxy before it) whose limit refuses every record: the first record is
    quarantined, but its gap record is not (that would commit another gap, without end); it is
    retried with backoff under the reason "too_large", the sink keeps running, nothing else is
    skipped and the gap record stays in the buffer."""
    answers: list[bytes] = []

    async def refuse(request: web.Request) -> web.Response:
        answers.append(await request.read())
        return web.Response(status=413, text="<html>413 Request Entity Too Large</html>")

    async with answering(refuse) as port:
        await rig.commit(1)
        sink = rig.sink(f"http://127.0.0.1:{port}", tls_files, compression="none")
        await run_until(sink, lambda: sink.retries.get("too_large", 0) >= 3, "gap retried")
        assert sink.quarantined == 1
        assert "gap record seq 2" in sink.last_error
        assert "as too large" in sink.last_error
        assert await rig.acked() == 0
        assert rig.buffer.last_seq == 2  # the record and its gap: no gap of the gap
        kept = rig.buffer.directory.parent / "quarantine" / "central" / f"{1:020d}.json"
        entry = orjson.loads(kept.read_bytes())
        assert (entry["status"], entry["error"]) == (413, "request body too large")
        # Every request after the quarantine carried the gap record alone.
        assert all(b'"type":"gap"' in body for body in answers[1:])


async def test_a_refusal_that_names_no_record_of_the_batch_is_retried(
    rig: Rig, tls_files: TlsFiles
) -> None:
    """Only a 400 naming a record of the batch quarantines it; any other 400 (a proxy, a header
    the collector dislikes) is retried as before: records are kept, not skipped."""
    answers: list[int] = []

    async def refuse(request: web.Request) -> web.Response:
        answers.append(len(answers))
        error = "bad batch header: nope" if len(answers) % 2 else "record 999: not here"
        return web.json_response({"error": error}, status=400)

    async with answering(refuse) as port:
        await rig.commit(3)
        sink = rig.sink(f"http://127.0.0.1:{port}", tls_files, compression="none")
        await run_until(sink, lambda: len(answers) >= 4, "four refusals")
        assert sink.quarantined == 0
        assert sink.retries["rejected"] >= 3
        assert await rig.acked() == 0
        assert not (rig.buffer.directory.parent / "quarantine").exists()


@pytest.mark.parametrize("count", [1, 255, 256, 257, 1000])
async def test_zstd_body_is_one_sized_frame_of_the_plain_body(
    rig: Rig, tls_files: TlsFiles, count: int
) -> None:
    """The zstd body (the header line and the batch's body fed in two pieces) decodes to
    exactly the plain NDJSON body and declares its size in one frame (what the collector's
    one-shot path takes)."""
    records = [orjson.dumps({"msg": f"line {i}", "seq": i + 1}) for i in range(count)]
    batch = Batch.of(1, bytes(32), records, [bytes(32)] * count, gap=(0, 0))
    zstd_sink = rig.sink("https://127.0.0.1:9", tls_files, compression="zstd")
    plain_sink = rig.sink("https://127.0.0.1:9", tls_files, compression="none")
    body, encoding = zstd_sink._encode(batch)
    plain, _ = plain_sink._encode(batch)
    assert encoding == "zstd"
    assert plain.count(b"\n") == count + 1
    assert plain.endswith(b"\n")
    assert zstandard.frame_content_size(body) == len(plain)
    assert zstandard.ZstdDecompressor().decompress(body, allow_extra_data=False) == plain


@pytest.mark.parametrize("host_bytes", [10, HEAD_ROOM])
async def test_a_read_batch_encodes_to_its_header_line_and_records(
    rig: Rig, tls_files: TlsFiles, host_bytes: int
) -> None:
    """A batch as the reader makes it (its header is written into the room before its
    records, unless it is too long for it): every codec, and the same batch encoded again,
    decode to exactly the header line and the records; the records are left as they were."""
    await rig.commit(300)
    reader = BufferReader(rig.buffer, "central")
    batch = await reader.next_batch(1000, 1 << 20, linger=0)
    reader.close()
    assert batch is not None
    assert batch.head_room == HEAD_ROOM
    records = bytes(batch.ndjson)
    decode: dict[str, Callable[[bytes], bytes]] = {
        "zstd": zstandard.ZstdDecompressor().decompress,
        "gzip": gzip.decompress,
        "none": bytes,
    }
    plains = set()
    for compression, decoded in decode.items():
        sink = rig.sink("https://127.0.0.1:9", tls_files, compression=compression)
        sink.host = {"name": "h" * host_bytes}
        for _ in range(2):
            body, encoding = sink._encode(batch)
            assert encoding == ("identity" if compression == "none" else compression)
            plain = decoded(body)
            line, rest = plain.split(b"\n", 1)
            assert orjson.loads(line)["host"] == sink.host
            assert (orjson.loads(line)["first_seq"], rest) == (1, records)
            plains.add(plain)
    assert len(plains) == 1
    assert batch.ndjson == records
    assert batch.size == len(records) - 300


@pytest.mark.parametrize(("compression", "fast", "small"), [("zstd", -7, 19), ("gzip", 1, 9)])
async def test_compression_level_is_applied(
    rig: Rig, tls_files: TlsFiles, compression: str, fast: int, small: int
) -> None:
    """The configured level reaches the codec: the fastest level packs the same body less."""
    records = [
        orjson.dumps({"msg": f"GET /api/items/{i % 97} 200", "seq": i + 1}) for i in range(3000)
    ]
    batch = Batch.of(1, bytes(32), records, [bytes(32)] * 3000)
    bodies = {}
    for level in (fast, small):
        sink = rig.sink(
            "https://127.0.0.1:9", tls_files, compression=compression, compression_level=level
        )
        bodies[level], _ = sink._encode(batch)
    plain, _ = rig.sink("https://127.0.0.1:9", tls_files, compression="none")._encode(batch)
    assert len(bodies[fast]) > len(bodies[small])
    decode = zstandard.ZstdDecompressor().decompress if compression == "zstd" else gzip.decompress
    assert decode(bodies[fast]) == decode(bodies[small]) == plain


def _header(body: bytes) -> dict[str, Any]:
    header: dict[str, Any] = orjson.loads(body.split(b"\n", 1)[0])
    return header


def _ok(body: bytes) -> web.Response:
    """The answer of a collector that took ``body``: acked its last seq, with its last h."""
    last = orjson.loads(body.rstrip(b"\n").rsplit(b"\n", 1)[1])
    return web.json_response({"acked": _header(body)["last_seq"], "head": last["h"]})


@pytest.mark.parametrize("expected", [0, -3, 11, 150], ids=["zero", "negative", "next", "far"])
async def test_a_409_expecting_a_seq_outside_the_batch_is_retried_not_believed(
    rig: Rig, tls_files: TlsFiles, expected: int
) -> None:
    # 1..10 sent: a collector asks for a seq of the batch or one before it. "Expecting 150"
    # had the sink ack 149 and the buffer delete records 11..107 never sent; "expecting 0"
    # made a gap header from seq 0 that every collector refuses, for good.
    answers: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.Response:
        answers.append(_header(await request.read()))
        return web.json_response({"expected": expected}, status=409)

    async with answering(answer) as port:
        await rig.commit(200)
        sink = rig.sink(
            f"http://127.0.0.1:{port}",
            tls_files,
            compression="none",
            max_batch_records=10,
            concurrency=1,
        )
        await run_until(sink, lambda: len(answers) >= 3, "three answers")
    assert sink.retries["rejected"] >= 2
    assert await rig.acked() == 0
    assert rig.buffer.base_seq == 0
    assert [(h["first_seq"], h["last_seq"], h.get("gap")) for h in answers[:3]] == [
        (1, 10, None)
    ] * 3


async def test_409_after_409_is_asked_again_with_backoff_and_reported(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # A collector that takes 1..100, then answers every batch "expected 1" (an older one that
    # refuses declared gaps, a broken proxy). With most of 1..100 deleted here once acked, the sink
    # declared a gap from 1, was refused, and declared it again: a hot loop, unreported.
    config = BufferConfig(segment_bytes=4096)
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", config, ["central"])
    small = Rig(buffer, asyncio.create_task(buffer.run()))
    answers: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        answers.append(_header(body))
        if len(answers) <= 2:  # the first ack's segments are deleted by the second's answer
            return _ok(body)
        return web.json_response({"expected": 1}, status=409)

    try:
        async with answering(answer) as port:
            await small.commit(200)
            sink = small.sink(
                f"http://127.0.0.1:{port}",
                tls_files,
                compression="none",
                max_batch_records=50,
                concurrency=1,
            )
            await run_until(sink, lambda: len(answers) >= 7, "seven answers")
    finally:
        await buffer.close("test")
        await small.writer
        await asyncio.to_thread(buffer.stop)
    assert buffer.base_seq > 0  # acked, whole segments of them deleted
    assert all(h.get("gap") for h in answers[3:])  # the gap from 1, declared again and again
    assert "collector answered 409" in sink.last_error
    assert "times in a row" in sink.last_error


async def test_a_409_inside_the_batch_acks_nothing_until_a_batch_links(
    rig: Rig, tls_files: TlsFiles
) -> None:
    # The reference collector answers "expected k" inside a batch only when its record k - 1
    # differs (a fork); acking up to k - 1 on its word released exactly the differing records.
    answers: list[tuple[int, int]] = []

    async def answer(request: web.Request) -> web.Response:
        header = _header(await request.read())
        answers.append((header["first_seq"], header["last_seq"]))
        return web.json_response({"expected": 6}, status=409)

    async with answering(answer) as port:
        await rig.commit(10)
        sink = rig.sink(f"http://127.0.0.1:{port}", tls_files, compression="none")
        await run_until(sink, lambda: "chain fork" in sink.last_error, "the fork reported")
    assert answers[:2] == [(1, 10), (6, 10)]  # resent from 6, which does not link: a fork
    assert await rig.acked() == 0


async def test_a_200_with_another_head_for_the_last_seq_is_a_fork_not_an_ack(
    rig: Rig, tls_files: TlsFiles
) -> None:
    async def answer(request: web.Request) -> web.Response:
        header = _header(await request.read())
        return web.json_response({"acked": header["last_seq"], "head": "ab" * 32})

    async with answering(answer) as port:
        await rig.commit(5)
        sink = rig.sink(f"http://127.0.0.1:{port}", tls_files, compression="none")
        await run_until(sink, lambda: sink.retries.get("fork", 0) >= 2, "two refusals")
    assert "chain fork" in sink.last_error
    assert await rig.acked() == 0


async def test_an_answer_over_the_reply_limit_is_not_read_and_not_believed(
    rig: Rig, tls_files: TlsFiles
) -> None:
    # A valid ack padded with JSON whitespace past the limit: read whole, it was believed (and
    # a 400 MB answer cost the agent ~1 GB of memory).
    answers: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        ok = _ok(await request.read())
        answers.append(len(answers))
        assert isinstance(ok.body, bytes)
        padded = ok.body + b" " * native.MAX_REPLY_BYTES
        return web.Response(body=padded, content_type="application/json")

    async with answering(answer) as port:
        await rig.commit(3)
        sink = rig.sink(f"http://127.0.0.1:{port}", tls_files, compression="none")
        await run_until(sink, lambda: len(answers) >= 3, "three answers")
    assert sink.retries["unacked"] >= 2
    assert await rig.acked() == 0


async def test_a_refused_record_that_cannot_be_kept_is_held_not_skipped(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # state_dir/quarantine unwritable (here: a file where the directory goes): the error ended
    # sink.run(), so the agent, and every restart alike. The record is held until it can be
    # kept, then quarantined as usual and the rest ships.
    buffer = await asyncio.to_thread(Buffer.open, tmp_path / "state", BufferConfig(), ["central"])
    rig = Rig(buffer, asyncio.create_task(buffer.run()))
    blocker = tmp_path / "state" / "quarantine"
    blocker.write_text("not a directory")
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        await rig.commit(6)
        await asyncio.to_thread(_tamper, tmp_path / "state", {4})
        sink = rig.sink(url, tls_files, max_batch_records=10)
        await run_until(sink, lambda: "cannot keep it" in sink.last_error, "the refusal held")
        assert await rig.acked() == 3
        assert sink.quarantined == 0
        blocker.unlink()
        await run_until(sink, lambda: buffer.cursors["central"][0] == 7, "the rest shipped")
        assert sink.quarantined == 1
    finally:
        await collector.stop()
        if not rig.writer.done():
            await buffer.close("test")
            await rig.writer
        await asyncio.to_thread(buffer.stop)
    assert [int(p.stem) for p in (blocker / "central").iterdir()] == [4]


async def test_a_ca_file_not_there_yet_is_reported_and_tried_again(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    # A reload naming a CA file that is not there (or a secret mounted late): creating the TLS
    # context raised out of sink.run() and ended the agent, before any seal.
    collector, url = await start_collector(tmp_path, tls_files)
    later = tmp_path / "mounted-later" / "ca.pem"
    config = TailsealSinkConfig(
        endpoint=url, ca_file=str(later), token=TOKEN, backoff_initial=0.01, backoff_max=0.05
    )
    sink = NativeSink("central", config, rig.buffer, {"name": "sink-host"}, rig.drain)
    try:
        await rig.commit(3)
        task = asyncio.create_task(sink.run())
        await eventually(lambda: sink.retries.get("tls", 0) >= 2, timeout=20, what="retries")
        assert "cannot set up TLS with ca_file" in sink.last_error
        assert not task.done()
        later.parent.mkdir()
        later.write_bytes(tls_files.ca_file.read_bytes())
        await eventually(lambda: rig.buffer.cursors["central"][0] == 3, timeout=20, what="acked")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await collector.stop()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date gone by: no wait of its own
        ("in a while", None),
        (None, None),
    ],
)
def test_retry_after_takes_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    assert native._retry_after(header) == seconds


def test_retry_after_as_a_date_ahead_is_the_seconds_until_it() -> None:
    # A proxy may send an HTTP-date (RFC 9110 10.2.3); it was ignored, the backoff used instead.
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=120)
    got = native._retry_after(email.utils.format_datetime(when, usegmt=True))
    assert got is not None
    assert 110 <= got <= 120
