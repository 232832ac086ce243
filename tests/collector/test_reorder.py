"""Batches that overtake the ones before them: an agent sends several at once (its sink's
``concurrency``), and the collector may have one read and parsed before the one before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from agent.collector.server import MAX_WAITING, MAX_WAITING_ALL, Collector
from tests.collector.chains import Chain, make_chain
from tests.collector.harness import (
    OPS_TOKEN,
    WEB_TOKEN,
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


Reply = tuple[int, dict[str, Any]]


def patient(
    tmp_path: Path, tls_files: TlsFiles, **overrides: Any
) -> AbstractAsyncContextManager[Running]:
    """A collector on loopback whose batches may wait an hour for the ones before them: a test
    sees a batch wait, or be answered at once, never a wait run out."""
    config = collector_config(tmp_path, tls_files, reorder_wait=3600.0, **overrides)
    return started(config, client_context(tls_files))


@asynccontextmanager
async def another_on_its_way(running: Running, token: str = OPS_TOKEN) -> AsyncIterator[None]:
    """A batch of another stream held back while the block runs: the batches of ``token`` are
    not alone (they may wait). Leaving the block lets it through, and it must be taken."""
    release = asyncio.Event()
    in_flight = server(running).in_flight
    body = held_back(make_chain(1).batch(1, 1), release)
    busy = asyncio.create_task(post(running, body, token=token))
    await eventually(
        lambda: server(running).in_flight > in_flight, timeout=10, what="a batch on its way"
    )
    try:
        yield
    finally:
        release.set()
    assert (await busy)[0] == 200


async def waiting(running: Running, body: bytes, token: str = OPS_TOKEN) -> asyncio.Task[Reply]:
    """POST ``body``, a batch ahead of the stream's head: its task, once it waits."""
    before = server(running).waiting
    task = asyncio.create_task(post(running, body, token=token))
    await eventually(lambda: server(running).waiting > before, timeout=10, what="it waiting")
    return task


async def answer_without_waiting(running: Running, body: bytes, token: str = OPS_TOKEN) -> Reply:
    """POST ``body`` and return the answer, failing if the batch waits instead."""
    waiting = server(running).waiting
    reply = asyncio.create_task(post(running, body, token=token))
    await eventually(
        lambda: reply.done() or server(running).waiting > waiting,
        timeout=10,
        what="an answer or a wait",
    )
    if not reply.done():
        reply.cancel()
        raise AssertionError("the batch waits")
    return reply.result()


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
    assert server(collector).busy_streams == 1

    release.set()

    assert await first == (200, {"acked": 3, "head": chain.head(3)})
    assert await second == (200, {"acked": 6, "head": chain.head(6)})
    assert await third == (200, {"acked": 9, "head": chain.head(9)})
    assert await stored(collector, chain) == chain.lines
    assert server(collector).waiting == 0
    assert server(collector).busy_streams == 0


async def test_a_stream_holds_no_lock_once_its_requests_end(collector: Running) -> None:
    # Every ephemeral host is a new stream: a lock kept per stream id ever seen would grow the
    # collector for as long as it runs.
    chains = [make_chain(5) for _ in range(20)]
    replies = await asyncio.gather(*(post(collector, chain.batch(1, 2)) for chain in chains))
    assert [status for status, _ in replies] == [200] * 20
    assert await post(collector, chains[0].batch(4, 5)) == (409, {"expected": 3})  # raised
    assert server(collector).busy_streams == 0


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
    async with patient(tmp_path, tls_files) as running:
        assert await post(running, chain.batch(1, 2)) == (200, {"acked": 2, "head": chain.head(2)})

        assert await post(running, chain.batch(4, 6)) == (409, {"expected": 3})
        assert server(running).waiting == 0


async def test_batches_waiting_on_one_stream_are_bounded(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # Each waiting batch holds its body: past MAX_WAITING, one more is answered at once.
    chain: Chain = make_chain(3 + 2 * (MAX_WAITING + 1))
    async with patient(tmp_path, tls_files) as running:
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


async def test_batches_waiting_in_all_streams_together_are_bounded(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # New stream ids cost nothing: past MAX_WAITING_ALL waiting in all, one more is answered
    # at once, though its own stream has none waiting.
    chains = [make_chain(1 + MAX_WAITING) for _ in range(MAX_WAITING_ALL // MAX_WAITING)]
    async with patient(tmp_path, tls_files) as running:
        async with another_on_its_way(running):
            later = [
                asyncio.create_task(post(running, chain.batch(seq, seq)))
                for chain in chains
                for seq in range(2, 2 + MAX_WAITING)
            ]
            await eventually(
                lambda: server(running).waiting == MAX_WAITING_ALL, timeout=20, what="all waiting"
            )

            assert await answer_without_waiting(running, make_chain(2).batch(2, 2)) == (
                409,
                {"expected": 1},
            )

            for chain in chains:
                assert (await post(running, chain.batch(1, 1)))[0] == 200
            assert [(await task)[0] for task in later] == [200] * MAX_WAITING_ALL
        for chain in chains:
            assert await stored(running, chain) == chain.lines


async def test_batches_waiting_hold_at_most_max_decompressed_bytes_in_all(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # Each waiting batch holds its decompressed body: two fit the bound, a third does not.
    chains = [make_chain(20) for _ in range(3)]
    bodies = [chain.batch(2, 20) for chain in chains]
    limit = len(bodies[0]) + len(bodies[1])
    async with (
        patient(tmp_path, tls_files, max_decompressed_bytes=limit) as running,
        another_on_its_way(running),
    ):
        later = [asyncio.create_task(post(running, body)) for body in bodies[:2]]
        await eventually(lambda: server(running).waiting == 2, timeout=10, what="two waiting")

        assert await answer_without_waiting(running, bodies[2]) == (409, {"expected": 1})

        for chain, task in zip(chains[:2], later, strict=True):
            assert (await post(running, chain.batch(1, 1)))[0] == 200
            assert await task == (200, {"acked": 20, "head": chain.head(20)})


async def test_a_token_not_allowed_for_the_stream_gets_403_without_waiting(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # It cannot take the waiting slots of a stream it may not write.
    chain = make_chain(31)
    async with patient(tmp_path, tls_files) as running:
        assert (await post(running, chain.batch(1, 2, host="db-1")))[0] == 200
        async with another_on_its_way(running, token=WEB_TOKEN):
            assert await answer_without_waiting(running, chain.batch(30, 31), token=WEB_TOKEN) == (
                403,
                {"error": "token 'web' may not send for host 'db-1'"},
            )


async def test_a_waiting_batch_gets_403_once_a_host_it_may_not_write_creates_the_stream(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    chain = make_chain(31)
    async with (
        patient(tmp_path, tls_files) as running,
        another_on_its_way(running, token=WEB_TOKEN),
    ):
        ahead = await waiting(running, chain.batch(30, 31), token=WEB_TOKEN)

        assert (await post(running, chain.batch(1, 2, host="db-1")))[0] == 200

        await eventually(ahead.done, timeout=10, what="the waiting batch answered")
        assert ahead.result() == (403, {"error": "token 'web' may not send for host 'db-1'"})


async def test_a_waiting_batch_is_answered_once_the_other_request_of_its_token_ends(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # Alone again, nothing can fill its hole: no need to wait out reorder_wait.
    chain = make_chain(6)
    async with patient(tmp_path, tls_files) as running:
        async with another_on_its_way(running):
            ahead = await waiting(running, chain.batch(4, 6))

        await eventually(ahead.done, timeout=10, what="the waiting batch answered")
        assert ahead.result() == (409, {"expected": 1})
        assert server(running).waiting == 0


async def test_stopping_answers_waiting_batches_at_once(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    chain = make_chain(6)
    async with patient(tmp_path, tls_files) as running:
        # Leaving the block: a body still arriving is still taken in, though the server stops.
        async with another_on_its_way(running):
            ahead = await waiting(running, chain.batch(4, 6))

            stopping = asyncio.create_task(server(running).stop())

            await eventually(ahead.done, timeout=10, what="the waiting batch answered")
            assert ahead.result() == (409, {"expected": 1})
        await stopping


async def test_waking_skips_a_stream_whose_requests_ended_meanwhile(collector: Running) -> None:
    # _wake_waiting walks a snapshot of the waiting streams and awaits each one's turn in
    # order; a later stream's last request may end meanwhile and take its turn away. That
    # interleaving cannot be driven from outside without sleeping, so the state it leaves is
    # set up here: a stream in the snapshot whose turn is gone. It raised KeyError (out of
    # stop(), before the store closed; out of the waker, leaving the others unwoken).
    collector_server = server(collector)
    chain = make_chain(3)
    collector_server._waiting["gone"] = 1
    try:
        await collector_server._wake_waiting()
    finally:
        del collector_server._waiting["gone"]
    assert await post(collector, chain.batch(1, 3)) == (200, {"acked": 3, "head": chain.head(3)})
