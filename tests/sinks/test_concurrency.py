"""Several batches in flight at once (``concurrency``), answered in order, against a real
collector on loopback with real TLS."""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import orjson
import zstandard
from aiohttp import web

from agent.buffer.reader import Batch, BufferReader
from tests.sinks.test_native import (
    Rig,
    answering,
    assert_stored_in_order,
    rig,
    run_until,
    start_collector,
)
from tests.support import TlsFiles

__all__ = ["rig"]  # the fixture, shared with test_native


async def test_a_batch_refused_for_overtaking_the_one_before_it_is_sent_again(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    # A proxy holds the first batch back until the second has its answer from the collector:
    # with no batch before it on its way there, the second gets 409 "expected 1". The sink
    # asks again once the first is acked, instead of rewinding to a position it never left.
    collector, url = await start_collector(tmp_path, tls_files)
    answers: list[tuple[int, int]] = []  # (first_seq, status) as the collector answered
    overtaken = asyncio.Event()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        first_seq = orjson.loads(body.split(b"\n", 1)[0])["first_seq"]
        if first_seq == 1:
            await overtaken.wait()  # a batch after it got to the collector first
        headers = {k: request.headers[k] for k in ("Authorization", "Content-Type")}
        trust = ssl.create_default_context(cafile=str(tls_files.ca_file))
        connector = aiohttp.TCPConnector(ssl=trust)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(f"{url}/v1/batches", data=body, headers=headers) as reply,
        ):
            payload, status = await reply.read(), reply.status
        answers.append((first_seq, status))
        overtaken.set()
        return web.Response(status=status, body=payload, content_type="application/json")

    try:
        async with answering(forward) as port:
            await rig.commit(30)
            sink = rig.sink(
                f"http://127.0.0.1:{port}",
                tls_files,
                max_batch_records=10,
                compression="none",
                concurrency=2,
            )
            await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 30, "30 acked")
        await assert_stored_in_order(collector, rig, 30)
    finally:
        await collector.stop()
    assert answers[:2] == [(11, 409), (1, 200)]
    assert (11, 200) in answers
    # (the third batch may overtake the second's resend through the proxy too)
    assert sink.overtaken == sum(1 for _, status in answers if status == 409) >= 1
    assert (sink.relinks, sink.retries) == (0, {})  # not believed: no rewind, no retry


class Counting:
    """A proxy in front of the collector that counts the requests it holds at once."""

    def __init__(self, url: str, tls: TlsFiles, hold: int = 1, first: int = 1) -> None:
        self.url = url
        self.trust = ssl.create_default_context(cafile=str(tls.ca_file))
        self.now = 0
        self.most = 0
        self.hold = hold  # the batch starting at seq ``first`` waits for this many at once
        self.first = first
        self.enough = asyncio.Event()

    async def forward(self, request: web.Request) -> web.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        if self.now >= self.hold:
            self.enough.set()
        try:
            body = await request.read()
            if orjson.loads(body.split(b"\n", 1)[0])["first_seq"] == self.first:
                await self.enough.wait()
            headers = {k: request.headers[k] for k in ("Authorization", "Content-Type")}
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.trust)) as session,
                session.post(f"{self.url}/v1/batches", data=body, headers=headers) as reply,
            ):
                payload, status = await reply.read(), reply.status
            return web.Response(status=status, body=payload, content_type="application/json")
        finally:
            self.now -= 1


async def test_two_batches_at_a_time_by_default_and_more_while_draining(
    rig: Rig, tmp_path: Path, tls_files: TlsFiles
) -> None:
    collector, url = await start_collector(tmp_path, tls_files)
    try:
        # The first batch is held until a second one is in flight beside it; never a third.
        two = Counting(url, tls_files, hold=2)
        async with answering(two.forward) as port:
            await rig.commit(30)
            sink = rig.sink(
                f"http://127.0.0.1:{port}", tls_files, max_batch_records=5, compression="none"
            )
            await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 30, "30 acked")
        assert two.most == 2
        # Draining: the first batch is held until two more are in flight beside it.
        several = Counting(url, tls_files, hold=3, first=31)
        async with answering(several.forward) as port:
            await rig.commit(30, start=30)
            rig.drain.set()
            sink = rig.sink(
                f"http://127.0.0.1:{port}", tls_files, max_batch_records=5, compression="none"
            )
            await run_until(sink, lambda: rig.buffer.cursors["central"][0] == 60, "60 acked")
        assert 3 <= several.most <= 4  # drain_concurrency
        await assert_stored_in_order(collector, rig, 60)
    finally:
        await collector.stop()


async def test_batches_encoded_side_by_side_in_threads_each_decode_to_their_own(
    rig: Rig, tls_files: TlsFiles
) -> None:
    # A batch is encoded in a thread while others are (the next one, a split, a resend): each
    # body must still be its own batch. One zstd compressor shared by the threads broke them.
    await rig.commit(400)
    reader = BufferReader(rig.buffer, "central")
    batches: list[Batch] = []
    while len(batches) < 8:
        batch = await reader.next_batch(50, 1 << 20, 0)
        assert batch is not None
        batches.append(batch)
    reader.close()
    sink = rig.sink("https://127.0.0.1:1", tls_files, compression="zstd")
    expected = []
    for batch in batches:
        rest = zstandard.decompress(sink._encode(batch)[0]).partition(b"\n")[2]
        assert rest == b"".join(record + b"\n" for record in batch.records)
        expected.append(rest)

    def encode_all() -> list[bytes]:
        out = []
        for batch in batches * 10:
            body, encoding = sink._encode(batch)
            assert encoding == "zstd"
            out.append(zstandard.decompress(body).partition(b"\n")[2])
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: encode_all(), range(8)))
    assert all(result == expected * 10 for result in results)
