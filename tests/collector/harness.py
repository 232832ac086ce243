"""A real collector on a loopback port, and a client that talks to it like an agent."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.collector.server import Collector
from agent.collector.storage import FileStreamStore, StreamStore
from agent.config import CollectorConfig, TlsConfig, TokenConfig
from tests.collector.chains import NDJSON, Chain, make_chain
from tests.support import TlsFiles

OPS_TOKEN = "ops-secret"
WEB_TOKEN = "web-secret"
MAX_BODY = 64 * 1024
MAX_DECOMPRESSED = 256 * 1024


@dataclass
class Running:
    """Where a collector listens, how to trust it, its store, and the collector if in-process."""

    url: str
    ssl: ssl.SSLContext | None
    store: StreamStore
    collector: Collector | None


def collector_config(
    tmp_path: Path, tls_files: TlsFiles | None, **overrides: Any
) -> CollectorConfig:
    token_file = tmp_path / "web.token"
    token_file.write_text(WEB_TOKEN + "\n")
    tls = None
    if tls_files is not None:
        tls = TlsConfig(cert_file=str(tls_files.cert_file), key_file=str(tls_files.key_file))
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "storage_dir": str(tmp_path / "collector"),
        "tls": tls,
        "tokens": [
            TokenConfig(name="ops", token=OPS_TOKEN),
            TokenConfig(name="web", token_file=str(token_file), hosts=["web-*"]),
        ],
        "max_body_bytes": MAX_BODY,
        "max_decompressed_bytes": MAX_DECOMPRESSED,
    }
    settings.update(overrides)
    return CollectorConfig(**settings)


def client_context(tls_files: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files.ca_file))


@asynccontextmanager
async def started(
    config: CollectorConfig, client_ssl: ssl.SSLContext | None, store: StreamStore | None = None
) -> AsyncIterator[Running]:
    """A collector on a loopback port for the duration of the block."""
    store = store or FileStreamStore(config.storage_dir)
    server = Collector(config, store)
    port = await server.start()
    scheme = "https" if config.tls else "http"
    try:
        yield Running(f"{scheme}://127.0.0.1:{port}", client_ssl, store, server)
    finally:
        await server.stop()


def new_client(running: Running) -> aiohttp.ClientSession:
    """A fresh client with its own connections (TLS trusting the test CA when there is TLS)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=running.ssl or False))


async def post(
    running: Running,
    body: bytes | AsyncIterator[bytes],
    *,
    token: str | None = OPS_TOKEN,
    content_type: str = NDJSON,
    encoding: str = "identity",
) -> tuple[int, dict[str, Any]]:
    """POST a batch from a fresh client (its own connection); returns status and JSON reply."""
    headers = {"Content-Type": content_type, "Content-Encoding": encoding}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        new_client(running) as session,
        session.post(f"{running.url}/v1/batches", data=body, headers=headers) as reply,
    ):
        return reply.status, await reply.json(content_type=None)


async def list_streams(running: Running, token: str = OPS_TOKEN) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        new_client(running) as session,
        session.get(f"{running.url}/v1/streams", headers=headers) as reply,
    ):
        assert reply.status == 200
        listing: dict[str, Any] = await reply.json()
        return listing


async def assert_still_serving(running: Running) -> None:
    """A well-behaved client on a new connection is served normally."""
    chain = make_chain(3)
    assert await post(running, chain.batch(1, 3)) == (200, {"acked": 3, "head": chain.head(3)})


async def stored(running: Running, chain: Chain) -> list[bytes]:
    return await running.store.read_records(chain.stream)


async def raw_request(
    running: Running, head: bytes, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send a hand-written request (``head`` without its blank line) and ``body``, then wait for
    the reply: its status, headers (lower-case names) and body. A ``body`` shorter than the
    declared length leaves the upload stalled. For requests aiohttp would not send."""
    host, port = running.url.rsplit("/", 1)[-1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=running.ssl, server_hostname=host if running.ssl else None
    )
    try:
        writer.write(head.rstrip(b"\r\n") + b"\r\n\r\n" + body)
        await writer.drain()
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        length = int(headers.get("content-length", "0"))
        return int(status_line.split()[1]), headers, await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def batch_request_head(length: int, *, token: str = OPS_TOKEN, encoding: str = "identity") -> bytes:
    return (
        f"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {NDJSON}\r\nContent-Encoding: {encoding}\r\nContent-Length: {length}"
    ).encode()
