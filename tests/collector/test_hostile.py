"""Hostile and malformed requests: each is refused as the protocol says, and nothing else breaks."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest
import zstandard

from tests.collector.chains import Chain, make_chain
from tests.collector.harness import (
    MAX_BODY,
    WEB_TOKEN,
    Running,
    assert_still_serving,
    list_streams,
    post,
    stored,
)


def _bad_bodies() -> dict[str, bytes]:
    chain = make_chain(4)
    skipping = make_chain(5, stream=chain.stream)
    body = chain.batch(1, 3)
    header_end = body.index(b"\n")
    return {
        "not JSON at all": b"this is not a batch\n",
        "empty body": b"",
        "header only": body[: header_end + 1],
        "header not an object": b"[1, 2, 3]\n" + body[header_end + 1 :],
        "version 2": body.replace(b'"v":1', b'"v":2', 1),
        "stream id with a path": body.replace(chain.stream.encode(), b"../../etc", 1),
        "host without a name": body.replace(b'{"name":"web-1"}', b"{}", 1),
        "host name not a string": body.replace(b'"web-1"', b"7", 1),
        "first_seq zero": body.replace(b'"first_seq":1', b'"first_seq":0', 1),
        "last_seq below first_seq": chain.batch(3, 2, lines=chain.lines[2:3]),
        "count differs from header": chain.batch(1, 3, lines=chain.lines[:2]),
        "prev_h not hex": chain.batch(1, 3, prev_h="zz" * 32),
        "seqs not consecutive": chain.batch(1, 3, lines=[*chain.lines[:2], skipping.line(4)]),
        "record not JSON": chain.batch(1, 3, lines=[*chain.lines[:2], b'{"seq": 3, "ms']),
        "record not an object": chain.batch(1, 3, lines=[*chain.lines[:2], b"[3]"]),
        "record without h": chain.batch(1, 1, lines=[b'{"seq":1,"msg":"x"}']),
    }


BAD_BODIES = _bad_bodies()


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_malformed_batch_gets_400_with_an_error(collector: Running, case: str) -> None:
    status, reply = await post(collector, BAD_BODIES[case])

    assert status == 400
    assert isinstance(reply["error"], str)
    assert (await list_streams(collector))["streams"] == []
    await assert_still_serving(collector)


@pytest.mark.parametrize("token", [None, "wrong-secret", ""], ids=["missing", "unknown", "empty"])
async def test_missing_or_unknown_token_gets_401(collector: Running, token: str | None) -> None:
    chain = make_chain(2)

    status, reply = await post(collector, chain.batch(1, 2), token=token)

    assert status == 401
    assert "error" in reply
    assert await stored(collector, chain) == []
    await assert_still_serving(collector)


async def test_token_for_web_hosts_gets_403_for_a_db_host(collector: Running) -> None:
    chain = make_chain(2)

    status, reply = await post(collector, chain.batch(1, 2, host="db-1"), token=WEB_TOKEN)

    assert status == 403
    assert "db-1" in reply["error"]
    assert await stored(collector, chain) == []
    await assert_still_serving(collector)


async def test_token_from_a_file_may_send_for_a_matching_host(collector: Running) -> None:
    chain = make_chain(2)

    reply = await post(collector, chain.batch(1, 2, host="web-7"), token=WEB_TOKEN)

    assert reply == (200, {"acked": 2, "head": chain.head(2)})


async def test_wrong_content_type_gets_415(collector: Running) -> None:
    chain = make_chain(2)

    status, _ = await post(collector, chain.batch(1, 2), content_type="application/json")

    assert status == 415
    assert await stored(collector, chain) == []
    await assert_still_serving(collector)


async def test_unknown_content_encoding_gets_415(collector: Running) -> None:
    chain = make_chain(2)

    status, _ = await post(collector, chain.batch(1, 2), encoding="br")

    assert status == 415
    assert await stored(collector, chain) == []
    await assert_still_serving(collector)


async def test_content_length_over_the_maximum_gets_413(collector: Running) -> None:
    body = make_chain(1).batch(1, 1) + b" " * MAX_BODY

    status, _ = await post(collector, body)

    assert status == 413
    await assert_still_serving(collector)


async def test_chunked_body_over_the_maximum_gets_413(collector: Running) -> None:
    chain = make_chain(1)

    async def chunks() -> AsyncIterator[bytes]:
        yield chain.batch(1, 1)
        for _ in range(8):
            yield b" " * (MAX_BODY // 4)

    status, _ = await post(collector, chunks())

    assert status == 413
    assert await stored(collector, chain) == []
    await assert_still_serving(collector)


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=9)
    return zstandard.ZstdCompressor(level=19).compress(body)


def bomb(chain: Chain) -> bytes:
    """A batch header followed by 16 MiB of padding (compresses to a few kilobytes)."""
    return chain.batch(1, 1) + b" " * (16 * 1024 * 1024)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_body_inflating_beyond_the_maximum_gets_413(
    collector: Running, encoding: str
) -> None:
    chain = make_chain(1)
    body = compress(bomb(chain), encoding)
    assert len(body) < MAX_BODY

    status, _ = await post(collector, body, encoding=encoding)

    assert status == 413
    assert await stored(collector, chain) == []
    await assert_still_serving(collector)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_compressed_batch_is_accepted(collector: Running, encoding: str) -> None:
    chain = make_chain(50)
    body = compress(chain.batch(1, 50), encoding)

    reply = await post(collector, body, encoding=encoding)

    assert reply == (200, {"acked": 50, "head": chain.head(50)})
    assert await stored(collector, chain) == chain.lines


async def test_corrupt_compressed_body_gets_400(collector: Running) -> None:
    status, _ = await post(collector, b"\x28\xb5\x2f\xfd garbage", encoding="zstd")

    assert status == 400
    await assert_still_serving(collector)
