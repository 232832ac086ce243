"""Batches that overtake the ones before them: an agent sends several at once (its sink's
``concurrency``), and the collector may have one read and parsed before the one before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from agent.collector.server import MAX_WAITING, Collector
from tests.collector.chains import Chain, make_chain
from tests.collector.harness import (
    Running,
    client_context,
    collector_config,
    post,
    started,
    stored,
)
from tests.support import TlsFiles, eventually


def held_back(body: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    """``body`` sent in two pieces, the second once ``release`` is set: a batch still on its
    way while the ones after it arrive."""

    async def pieces() -> AsyncIterator[bytes]:
        yield body[:16]
        await release.wait()
        yield body[16:]

    return pieces()


def server(running: Running) -> Collector:
    assert running.collector is not None
    return running.collector


async def test_a_batch_that_overtakes_the_one_before_it_waits_for_it(collector: Running) -> None:
    chain = make_chain(9)
    release = asyncio.Event()
    first = asyncio.create_task(post(collector, held_back(chain.batch(1, 3), release)))
    await eventually(
        lambda: server(collector).in_flight == 1, timeout=10, what="the first batch on its way"
    )
    second = asyncio.create_task(post(collector, chain.batch(4, 6)))
    third = asyncio.create_task(post(collector, chain.batch(7, 9)))
    await eventually(
        lambda: server(collector).waiting == 2, timeout=10, what="the later batches waiting"
    )
    assert not second.done()

    release.set()

    assert await first == (200, {"acked": 3, "head": chain.head(3)})
    assert await second == (200, {"acked": 6, "head": chain.head(6)})
    assert await third == (200, {"acked": 9, "head": chain.head(9)})
    assert await stored(collector, chain) == chain.lines
    assert server(collector).waiting == 0


async def test_a_batch_still_ahead_after_reorder_wait_gets_409(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    chain = make_chain(6)
    config = collector_config(tmp_path, tls_files, reorder_wait=0.2)
    async with started(config, client_context(tls_files)) as running:
        release = asyncio.Event()
        first = asyncio.create_task(post(running, held_back(chain.batch(1, 3), release)))
        await eventually(lambda: server(running).in_flight == 1, timeout=10, what="the first batch")

        assert await post(running, chain.batch(4, 6)) == (409, {"expected": 1})

        release.set()
        assert await first == (200, {"acked": 3, "head": chain.head(3)})
        assert await post(running, chain.batch(4, 6)) == (200, {"acked": 6, "head": chain.head(6)})
        assert await stored(running, chain) == chain.lines


async def test_a_batch_ahead_with_no_other_batch_on_its_way_gets_409_at_once(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # Nothing could fill the hole: no wait, even with an hour to wait.
    chain = make_chain(6)
    config = collector_config(tmp_path, tls_files, reorder_wait=3600.0)
    async with started(config, client_context(tls_files)) as running:
        assert await post(running, chain.batch(1, 2)) == (200, {"acked": 2, "head": chain.head(2)})

        assert await post(running, chain.batch(4, 6)) == (409, {"expected": 3})
        assert server(running).waiting == 0


async def test_batches_waiting_on_one_stream_are_bounded(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # Each waiting batch holds its body: past MAX_WAITING, one more is answered at once.
    chain: Chain = make_chain(3 + 2 * (MAX_WAITING + 1))
    config = collector_config(tmp_path, tls_files, reorder_wait=3600.0)
    async with started(config, client_context(tls_files)) as running:
        release = asyncio.Event()
        first = asyncio.create_task(post(running, held_back(chain.batch(1, 3), release)))
        await eventually(lambda: server(running).in_flight == 1, timeout=10, what="the first batch")
        later = [
            asyncio.create_task(post(running, chain.batch(seq, seq + 1)))
            for seq in range(4, 4 + 2 * MAX_WAITING, 2)
        ]
        await eventually(
            lambda: server(running).waiting == MAX_WAITING, timeout=10, what="a full queue"
        )
        last = 4 + 2 * MAX_WAITING

        assert await post(running, chain.batch(last, last + 1)) == (409, {"expected": 1})

        release.set()
        assert (await first)[0] == 200
        assert [(await task)[0] for task in later] == [200] * MAX_WAITING
        assert await post(running, chain.batch(last, last + 1)) == (
            200,
            {"acked": last + 1, "head": chain.head(last + 1)},
        )
        assert await stored(running, chain) == chain.lines
