"""The collector over real HTTPS on loopback: acks, dedupe, linking, stream listing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.collector.chains import make_chain, tampered
from tests.collector.harness import (
    WEB_TOKEN,
    Running,
    assert_still_serving,
    client_context,
    collector_config,
    list_streams,
    new_client,
    post,
    started,
    stored,
)
from tests.support import TlsFiles


async def test_valid_batch_is_stored_and_acked_with_its_head(collector: Running) -> None:
    chain = make_chain(5)

    reply = await post(collector, chain.batch(1, 5))

    assert reply == (200, {"acked": 5, "head": chain.head(5)})
    assert await stored(collector, chain) == chain.lines


async def test_batches_continue_a_stream(collector: Running) -> None:
    chain = make_chain(9)
    await post(collector, chain.batch(1, 4))

    reply = await post(collector, chain.batch(5, 9))

    assert reply == (200, {"acked": 9, "head": chain.head(9)})
    assert await stored(collector, chain) == chain.lines


async def test_replayed_batch_is_acked_again_and_stored_once(collector: Running) -> None:
    chain = make_chain(4)
    first = await post(collector, chain.batch(1, 4))

    again = await post(collector, chain.batch(1, 4))

    assert again == first == (200, {"acked": 4, "head": chain.head(4)})
    assert await stored(collector, chain) == chain.lines


async def test_batch_older_than_the_head_is_acked_with_the_current_head(collector: Running) -> None:
    chain = make_chain(8)
    await post(collector, chain.batch(1, 8))

    reply = await post(collector, chain.batch(2, 3))

    assert reply == (200, {"acked": 8, "head": chain.head(8)})


async def test_overlapping_batch_stores_each_seq_once(collector: Running) -> None:
    chain = make_chain(15)
    await post(collector, chain.batch(1, 10))

    reply = await post(collector, chain.batch(5, 15))

    assert reply == (200, {"acked": 15, "head": chain.head(15)})
    assert await stored(collector, chain) == chain.lines


async def test_concurrent_batches_of_one_stream_store_each_seq_once(collector: Running) -> None:
    chain = make_chain(30)

    replies = await asyncio.gather(
        *(post(collector, chain.batch(1, last)) for last in (10, 30, 20, 30, 10))
    )

    assert all(status == 200 for status, _ in replies)
    assert await stored(collector, chain) == chain.lines


async def test_batch_beyond_the_held_seq_gets_409_with_the_expected_seq(
    collector: Running,
) -> None:
    chain = make_chain(20)
    await post(collector, chain.batch(1, 10))

    reply = await post(collector, chain.batch(12, 20))

    assert reply == (409, {"expected": 11})
    assert await stored(collector, chain) == chain.lines[:10]


async def test_new_stream_not_starting_at_seq_1_gets_409_expecting_1(collector: Running) -> None:
    chain = make_chain(6)

    assert await post(collector, chain.batch(4, 6)) == (409, {"expected": 1})
    assert await stored(collector, chain) == []


async def test_batch_whose_prev_h_is_not_the_held_head_gets_409(collector: Running) -> None:
    chain = make_chain(10)
    await post(collector, chain.batch(1, 5))

    reply = await post(collector, chain.batch(6, 10, prev_h="ab" * 32))

    assert reply == (409, {"expected": 6})
    assert await stored(collector, chain) == chain.lines[:5]


async def test_batch_from_a_forked_chain_gets_409(collector: Running) -> None:
    held = make_chain(5, seal=True)
    fork = make_chain(10, stream=held.stream)  # equal to held up to seq 4, differs at 5
    await post(collector, held.batch(1, 5))

    reply = await post(collector, fork.batch(6, 10))

    assert reply == (409, {"expected": 6})
    assert await stored(collector, held) == held.lines


async def test_new_stream_must_start_from_its_genesis_value(collector: Running) -> None:
    chain = make_chain(3)

    reply = await post(collector, chain.batch(1, 3, prev_h="00" * 32))

    assert reply == (409, {"expected": 1})
    assert await stored(collector, chain) == []


async def test_overlapping_batch_from_a_forked_chain_gets_409(collector: Running) -> None:
    held = make_chain(10, seal=True)
    fork = make_chain(12, stream=held.stream)  # equal to held up to seq 9, differs at 10

    await post(collector, held.batch(1, 10))
    reply = await post(collector, fork.batch(8, 12))

    assert reply == (409, {"expected": 11})
    assert await stored(collector, held) == held.lines


async def test_record_with_tampered_msg_is_rejected_and_nothing_is_stored(
    collector: Running,
) -> None:
    chain = make_chain(5)
    lines = list(chain.lines)
    lines[2] = tampered(lines[2], msg="Accepted password for root")

    status, reply = await post(collector, chain.batch(1, 5, lines=lines))

    assert status == 400
    assert "3" in reply["error"]
    assert await stored(collector, chain) == []
    await assert_still_serving(collector)


async def test_stream_listing_shows_last_seq_and_state(collector: Running) -> None:
    live = make_chain(3)
    sealed = make_chain(4, seal=True)
    await post(collector, live.batch(1, 3))
    await post(collector, sealed.batch(1, 4, host="db-1"))

    listing = await list_streams(collector)

    summary = {
        entry["stream"]: (entry["host"], entry["last_seq"], entry["head"], entry["state"])
        for entry in listing["streams"]
    }
    assert summary == {
        live.stream: ({"name": "web-1"}, 3, live.head(3), "live"),
        sealed.stream: ({"name": "db-1"}, 4, sealed.head(4), "sealed"),
    }
    assert all(isinstance(entry["updated"], str) for entry in listing["streams"])


async def test_stream_listing_shows_only_hosts_the_token_may_send_for(collector: Running) -> None:
    web, db = make_chain(1), make_chain(1)
    await post(collector, web.batch(1, 1, host="web-1"))
    await post(collector, db.batch(1, 1, host="db-1"))

    listing = await list_streams(collector, token=WEB_TOKEN)

    assert [entry["stream"] for entry in listing["streams"]] == [web.stream]


async def test_a_stream_recovered_without_its_head_file_goes_on_with_its_own_token(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    # A head file lost in a crash (or never written: ENOSPC on a stream's first append) leaves
    # the stream's host unknown. The token restricted to web-* hosts that wrote it must still
    # be able to go on, and the next batch names the host again.
    chain = make_chain(4)
    config = collector_config(tmp_path, tls_files)
    async with started(config, client_context(tls_files)) as running:
        assert (await post(running, chain.batch(1, 2), token=WEB_TOKEN))[0] == 200
    (tmp_path / "collector" / "streams" / chain.stream / "head.json").unlink()

    async with started(config, client_context(tls_files)) as running:
        reply = await post(running, chain.batch(3, 4), token=WEB_TOKEN)
        listing = await list_streams(running, token=WEB_TOKEN)

    assert reply == (200, {"acked": 4, "head": chain.head(4)})
    assert [(e["stream"], e["host"], e["last_seq"]) for e in listing["streams"]] == [
        (chain.stream, {"name": "web-1"}, 4)
    ]


async def test_stream_listing_needs_a_token(collector: Running) -> None:
    async with (
        new_client(collector) as session,
        session.get(f"{collector.url}/v1/streams") as reply,
    ):
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == "Bearer"


async def test_unknown_path_gets_a_json_404(collector: Running) -> None:
    async with (
        new_client(collector) as session,
        session.get(f"{collector.url}/v2/anything") as reply,
    ):
        assert reply.status == 404
        assert "error" in await reply.json()
