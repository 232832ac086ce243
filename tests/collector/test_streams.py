"""``GET /v1/streams``: stream states (live, gap, sealed, silent) and the mTLS client identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trustme

from agent.config import TlsConfig
from tests.collector.chains import make_chain
from tests.collector.harness import (
    Running,
    client_context,
    collector_config,
    list_streams,
    post,
    started,
)
from tests.support import TlsFiles, eventually


async def stream_view(running: Running, stream: str) -> dict[str, Any]:
    views: list[dict[str, Any]] = (await list_streams(running))["streams"]
    (view,) = [s for s in views if s["stream"] == stream]
    return view


async def test_states_follow_the_records_held(collector: Running) -> None:
    live, gap, sealed = make_chain(4), make_chain(4, gap_at=2), make_chain(4, gap_at=2, seal=True)
    for chain in (live, gap, sealed):
        assert (await post(collector, chain.batch(1, 4)))[0] == 200

    views = {s["stream"]: s for s in (await list_streams(collector))["streams"]}

    assert (views[live.stream]["state"], views[live.stream]["gaps"]) == ("live", 0)
    assert (views[gap.stream]["state"], views[gap.stream]["gaps"]) == ("gap", 1)
    assert (views[sealed.stream]["state"], views[sealed.stream]["gaps"]) == ("sealed", 1)
    assert views[live.stream]["client"] is None  # no client certificate without mTLS


async def test_unsealed_stream_without_data_turns_silent_and_back_to_live(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    quiet, sealed = make_chain(6), make_chain(2, seal=True)
    config = collector_config(tmp_path, tls_files, silent_after=0.3)
    async with started(config, client_context(tls_files)) as running:
        await post(running, quiet.batch(1, 3))
        await post(running, sealed.batch(1, 2))
        assert (await stream_view(running, quiet.stream))["state"] == "live"

        async def is_silent() -> bool:
            return bool((await stream_view(running, quiet.stream))["state"] == "silent")

        await eventually(is_silent, timeout=10, what="the quiet stream to turn silent")
        assert (await stream_view(running, sealed.stream))["state"] == "sealed"

        await post(running, quiet.batch(4, 6))
        assert (await stream_view(running, quiet.stream))["state"] == "live"


async def test_mtls_client_identity_is_recorded_with_the_stream(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    client_ca = trustme.CA()
    client_ca_file = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    tls = TlsConfig(
        cert_file=str(tls_files.cert_file),
        key_file=str(tls_files.key_file),
        client_ca_file=str(client_ca_file),
    )
    with_cert = client_context(tls_files)
    client_ca.issue_cert("agent-1.example", common_name="agent-1").configure_cert(with_cert)
    chain = make_chain(3)

    async with started(collector_config(tmp_path, tls_files, tls=tls), with_cert) as running:
        await post(running, chain.batch(1, 3))

        view = await stream_view(running, chain.stream)

    assert view["client"] == {"cn": "agent-1", "san": ["DNS:agent-1.example"]}
    head = await running.store.head(chain.stream)
    assert head is not None
    assert head.client == view["client"]
