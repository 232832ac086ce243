"""Hostile and malformed requests: each is refused as the protocol says, and nothing else breaks."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zstandard

from agent.collector.verify import verify_path
from agent.config import MiB, TokenConfig
from tests.collector.chains import Chain, make_chain
from tests.collector.harness import (
    MAX_BODY,
    OPS_TOKEN,
    WEB_TOKEN,
    Running,
    assert_still_serving,
    batch_request_head,
    client_context,
    collector_config,
    list_streams,
    post,
    raw_request,
    started,
    stored,
)
from tests.support import TlsFiles, eventually


def _bad_bodies() -> dict[str, bytes]:
    chain = make_chain(4)
    skipping = make_chain(5, stream=chain.stream)
    body = chain.batch(1, 3)
    deep = chain.lines[2][:-1] + b',"zz":' + b"[" * 300 + b"]" * 300 + b"}"
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
        # msgspec searches patterns: "$" alone also matched before a final newline.
        "stream id ending in a newline": body.replace(
            chain.stream.encode(), chain.stream.encode() + b"\\n", 1
        ),
        "prev_h ending in a newline": chain.batch(1, 3, prev_h=chain.head(0) + "\n"),
        "header nested past the decoder's limit": body.replace(
            b'{"name":"web-1"}', b'{"name":"web-1","x":' + b"[" * 30000 + b"]" * 30000 + b"}", 1
        ),
        "seqs not consecutive": chain.batch(1, 3, lines=[*chain.lines[:2], skipping.line(4)]),
        "record not JSON": chain.batch(1, 3, lines=[*chain.lines[:2], b'{"seq": 3, "ms']),
        "record not an object": chain.batch(1, 3, lines=[*chain.lines[:2], b"[3]"]),
        "record without h": chain.batch(1, 1, lines=[b'{"seq":1,"msg":"x"}']),
        # orjson reads 1024 levels but encodes 255: no canonical form, so no h can verify.
        "record nested past the canonical encoding": chain.batch(
            1, 3, lines=[*chain.lines[:2], deep]
        ),
    }


BAD_BODIES = _bad_bodies()


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_malformed_batch_gets_400_with_an_error(collector: Running, case: str) -> None:
    status, reply = await post(collector, BAD_BODIES[case])

    assert status == 400
    assert isinstance(reply["error"], str)
    if case == "record nested past the canonical encoding":
        assert reply["error"].startswith("record 3: h does not verify: no canonical encoding")
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


@pytest.mark.parametrize("method", ["POST /v1/batches", "GET /v1/streams"])
async def test_token_that_is_not_utf8_gets_401(collector: Running, method: str) -> None:
    chain = make_chain(2)
    body = chain.batch(1, 2) if method.startswith("POST") else b""
    head = (
        f"{method} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode() + b"Authorization: Bearer ops-\xff\xfe"

    status, _, reply = await raw_request(collector, head, body)

    assert status == 401
    assert b"unknown token" in reply
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


# --- abuse at the transport level: declared sizes, bombs at scale, slow uploads, floods -----------


async def assert_storage_intact(running: Running, chain: Chain) -> None:
    """``chain`` (stored before the abuse) is still exactly there and verifies offline."""
    assert await stored(running, chain) == chain.lines
    (report,) = [r for r in verify_path(storage_of(running)) if r.stream == chain.stream]
    assert report.ok(allow_unsealed=True), report.findings


def storage_of(running: Running) -> Path:
    assert running.collector is not None
    return Path(running.collector.config.storage_dir)


async def test_declared_one_gigabyte_body_gets_413_before_any_body_is_read(
    collector: Running,
) -> None:
    held = make_chain(3)
    await post(collector, held.batch(1, 3))

    status, _, reply = await asyncio.wait_for(
        raw_request(collector, batch_request_head(1024**3), b'{"v":1'), timeout=10
    )

    assert status == 413
    assert b"exceeds" in reply
    await assert_storage_intact(collector, held)
    await assert_still_serving(collector)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_ten_megabyte_body_inflating_beyond_the_limit_gets_413(
    tmp_path: Path, tls_files: TlsFiles, encoding: str
) -> None:
    chain, held = make_chain(1), make_chain(3)
    # 9 MiB that does not compress, then 100 MiB that compresses to almost nothing.
    body = compress(chain.batch(1, 1) + os.urandom(9 * MiB) + bytes(100 * MiB), encoding)
    assert 9 * MiB < len(body) < 11 * MiB
    config = collector_config(
        tmp_path, tls_files, max_body_bytes=16 * MiB, max_decompressed_bytes=64 * MiB
    )
    async with started(config, client_context(tls_files)) as running:
        await post(running, held.batch(1, 3))

        status, _, reply = await raw_request(
            running, batch_request_head(len(body), encoding=encoding), body
        )

        assert status == 413
        assert b"decompressed body exceeds" in reply
        assert await stored(running, chain) == []
        await assert_storage_intact(running, held)
        await assert_still_serving(running)


async def test_slow_loris_upload_gets_408_while_other_clients_are_served(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    chain, held = make_chain(5), make_chain(3)
    body = chain.batch(1, 5)
    config = collector_config(tmp_path, tls_files, body_timeout=1.0)
    async with started(config, client_context(tls_files)) as running:
        await post(running, held.batch(1, 3))
        started_at = time.monotonic()
        slow = asyncio.create_task(
            raw_request(running, batch_request_head(len(body)), body[: len(body) // 2])
        )
        server = running.collector
        assert server is not None
        await eventually(lambda: server.in_flight == 1, timeout=10, what="the slow upload")

        await assert_still_serving(running)  # while the slow upload hangs

        status, _, reply = await asyncio.wait_for(slow, timeout=10)
        assert status == 408
        assert b"not received within 1 s" in reply
        assert time.monotonic() - started_at >= 1.0
        assert await stored(running, chain) == []
        await assert_storage_intact(running, held)
        await assert_still_serving(running)


async def test_token_over_its_rate_limit_gets_429_and_other_tokens_are_served(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    limited = TokenConfig(
        name="web", token=WEB_TOKEN, hosts=["web-*"], rate_limit_batches_per_second=0.01, burst=2
    )
    config = collector_config(
        tmp_path, tls_files, tokens=[TokenConfig(name="ops", token=OPS_TOKEN), limited]
    )
    chain = make_chain(3)
    async with started(config, client_context(tls_files)) as running:
        assert (await post(running, chain.batch(1, 1), token=WEB_TOKEN))[0] == 200
        assert (await post(running, chain.batch(2, 2), token=WEB_TOKEN))[0] == 200

        status, headers, reply = await raw_request(
            running, batch_request_head(len(chain.batch(3, 3)), token=WEB_TOKEN), chain.batch(3, 3)
        )

        assert status == 429
        assert int(headers["retry-after"]) >= 1
        assert b"rate limit" in reply
        assert await stored(running, chain) == chain.lines[:2]
        await assert_still_serving(running)  # the ops token has no limit


async def test_token_cannot_extend_a_stream_held_for_a_host_it_may_not_send_for(
    collector: Running,
) -> None:
    db_stream = make_chain(6)
    await post(collector, db_stream.batch(1, 3, host="db-1"))  # the ops token may send for db-1

    status, reply = await post(collector, db_stream.batch(4, 6, host="web-1"), token=WEB_TOKEN)

    assert status == 403
    assert "db-1" in reply["error"]
    assert await stored(collector, db_stream) == db_stream.lines[:3]
    assert (await list_streams(collector))["streams"][0]["host"] == {"name": "db-1"}
    await assert_still_serving(collector)
