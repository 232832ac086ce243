"""Collector lifecycle: start, graceful stop, restart, TLS modes, storage failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from agent.collector.server import serve
from agent.collector.storage import FileStreamStore, Skip, StreamHead, StreamState
from agent.config import TlsConfig
from tests.collector.chains import NDJSON, make_chain
from tests.collector.harness import (
    OPS_TOKEN,
    Running,
    assert_still_serving,
    client_context,
    collector_config,
    new_client,
    post,
    started,
)
from tests.support import TlsFiles, eventually


async def test_restarted_collector_keeps_streams_and_dedupes(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    chain = make_chain(6)
    config = collector_config(tmp_path, tls_files)
    for first, last, acked in [(1, 4, 4), (1, 6, 6), (3, 5, 6)]:
        async with started(config, client_context(tls_files)) as running:
            reply = await post(running, chain.batch(first, last))
        assert reply == (200, {"acked": acked, "head": chain.head(acked)})
    assert await FileStreamStore(config.storage_dir).read_records(chain.stream) == chain.lines


async def test_stop_lets_an_in_flight_batch_finish_and_turns_new_requests_away(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    chain, late = make_chain(20), make_chain(2)
    body = chain.batch(1, 20)
    rest_may_go = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:100]
        await rest_may_go.wait()
        yield body[100:]

    config = collector_config(tmp_path, tls_files)
    async with started(config, client_context(tls_files)) as running, new_client(running) as idle:
        server = running.collector
        assert server is not None
        batches, headers = f"{running.url}/v1/batches", {"Authorization": f"Bearer {OPS_TOKEN}"}
        async with idle.get(f"{running.url}/v1/streams", headers=headers) as reply:
            assert reply.status == 200  # leaves a kept-alive connection in the pool
        sending = asyncio.create_task(post(running, slow_body()))
        await eventually(lambda: server.in_flight == 1, timeout=10, what="the request to arrive")

        stopping = asyncio.create_task(server.stop())
        await eventually(
            lambda: refuses_connections(server.port), timeout=10, what="the listener to close"
        )
        headers["Content-Type"] = NDJSON
        async with idle.post(batches, data=late.batch(1, 2), headers=headers) as reply:
            assert (reply.status, reply.headers["Retry-After"]) == (503, "5")
        rest_may_go.set()

        assert await sending == (200, {"acked": 20, "head": chain.head(20)})
        await asyncio.wait_for(stopping, timeout=15)
    assert await running.store.read_records(chain.stream) == chain.lines
    assert await running.store.read_records(late.stream) == []


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # reached the backlog of a listener that is closing: look again
    writer.close()
    await writer.wait_closed()
    return False


class BrokenStore:
    """A StreamStore (a seam we own) whose appends to ``broken`` streams raise ``error``."""

    def __init__(self, inner: FileStreamStore, broken: set[str], error: Exception) -> None:
        self.inner, self.broken, self.error = inner, broken, error

    async def head(self, stream_id: str) -> StreamHead | None:
        return await self.inner.head(stream_id)

    async def append(
        self,
        stream_id: str,
        host: Mapping[str, Any],
        lines: Sequence[bytes],
        *,
        last_seq: int,
        head: str,
        state: StreamState,
        gaps: int = 0,
        client: Mapping[str, Any] | None = None,
        skip: Skip | None = None,
    ) -> StreamHead:
        if stream_id in self.broken:
            raise self.error
        return await self.inner.append(
            stream_id,
            host,
            lines,
            last_seq=last_seq,
            head=head,
            state=state,
            gaps=gaps,
            client=client,
            skip=skip,
        )

    async def list_streams(self) -> list[StreamHead]:
        return await self.inner.list_streams()

    async def read_records(
        self, stream_id: str, first_seq: int = 1, last_seq: int | None = None
    ) -> list[bytes]:
        return await self.inner.read_records(stream_id, first_seq, last_seq)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [(RuntimeError("a bug"), 500, None), (OSError(28, "No space left on device"), 503, "5")],
    ids=["bug", "disk-full"],
)
async def test_store_failure_gets_a_json_error_and_the_server_keeps_serving(
    tmp_path: Path, tls_files: TlsFiles, error: Exception, status: int, retry_after: str | None
) -> None:
    chain = make_chain(3)
    config = collector_config(tmp_path, tls_files)
    store = BrokenStore(FileStreamStore(config.storage_dir), {chain.stream}, error)
    headers = {"Authorization": f"Bearer {OPS_TOKEN}", "Content-Type": NDJSON}
    async with started(config, client_context(tls_files), store) as running:
        async with (
            new_client(running) as session,
            session.post(
                f"{running.url}/v1/batches", data=chain.batch(1, 3), headers=headers
            ) as reply,
        ):
            assert reply.status == status
            assert reply.headers.get("Retry-After") == retry_after
            assert "error" in await reply.json()
        await assert_still_serving(running)


async def test_stream_with_a_corrupt_head_gets_500_and_others_are_served(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    chain = make_chain(4)
    config = collector_config(tmp_path, tls_files)
    async with started(config, client_context(tls_files)) as running:
        await post(running, chain.batch(1, 2))
    (Path(config.storage_dir) / "streams" / chain.stream / "head.json").write_bytes(b"{")

    async with started(config, client_context(tls_files)) as running:
        status, reply = await post(running, chain.batch(3, 4))

        assert status == 500
        assert "error" in reply
        await assert_still_serving(running)


async def test_serve_writes_the_port_file_and_stops_when_told(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    port_file = tmp_path / "run" / "collector.port"
    port_file.parent.mkdir()
    config = collector_config(tmp_path, tls_files, port_file=str(port_file))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    await eventually(port_file.exists, timeout=10, what="the port file")
    port = int(port_file.read_text())
    running = Running(
        f"https://127.0.0.1:{port}",
        client_context(tls_files),
        FileStreamStore(config.storage_dir),
        None,
    )
    await assert_still_serving(running)

    stop.set()
    await asyncio.wait_for(task, timeout=15)

    assert await refuses_connections(port)


async def test_without_tls_the_collector_serves_plain_http(tmp_path: Path) -> None:
    async with started(collector_config(tmp_path, None), None) as running:
        assert running.url.startswith("http://")
        await assert_still_serving(running)


async def test_client_ca_requires_a_client_certificate(tmp_path: Path, tls_files: TlsFiles) -> None:
    client_ca = trustme.CA()
    client_ca_file = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    tls = TlsConfig(
        cert_file=str(tls_files.cert_file),
        key_file=str(tls_files.key_file),
        client_ca_file=str(client_ca_file),
    )
    with_cert = client_context(tls_files)
    client_ca.issue_cert("agent-1").configure_cert(with_cert)

    async with started(collector_config(tmp_path, tls_files, tls=tls), with_cert) as running:
        await assert_still_serving(running)
        without_cert = Running(running.url, client_context(tls_files), running.store, None)
        with pytest.raises(aiohttp.ClientError):
            await assert_still_serving(without_cert)
