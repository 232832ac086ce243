"""Termination notice watchers against a local metadata service with the real protocols."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.buffer import special
from agent.config import TerminationConfig
from agent.termination import watchers
from tests.support import eventually
from tests.termination.metadata import MetadataServer


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    with MetadataServer() as server:
        yield server


class Notices:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, kind: str, detail: dict[str, Any]) -> None:
        self.got.append((kind, detail))


async def test_ec2_spot_interruption_is_reported_once_with_imdsv2(
    metadata: MetadataServer,
) -> None:
    notices = Notices()
    watcher = watchers.Ec2Watcher(metadata.url, timeout=1.0)
    task = asyncio.create_task(watchers.watch(watcher, 0.05, notices))
    await eventually(lambda: len(metadata.state.requests) >= 6, timeout=10, what="polling")
    assert not notices.got
    metadata.state.spot_action = {"action": "terminate", "time": "2026-11-21T23:00:00Z"}
    await asyncio.wait_for(task, timeout=10)  # the watcher ends after its notice
    assert notices.got == [
        (
            "ec2-spot-interruption",
            {
                "platform": "ec2",
                "event": "spot-interruption",
                "action": "terminate",
                "time": "2026-11-21T23:00:00Z",
            },
        )
    ]
    # One token, reused: IMDSv2 tokens last hours.
    assert metadata.state.requests.count("PUT /latest/api/token") == 1


async def test_ec2_asg_lifecycle_terminated_is_a_notice(metadata: MetadataServer) -> None:
    notices = Notices()
    metadata.state.lifecycle = "Terminated"
    await asyncio.wait_for(
        watchers.watch(watchers.Ec2Watcher(metadata.url, 1.0), 0.05, notices), timeout=10
    )
    assert notices.got[0][0] == "ec2-asg-lifecycle"


async def test_ec2_expired_token_is_renewed(metadata: MetadataServer) -> None:
    watcher = watchers.Ec2Watcher(metadata.url, 1.0)
    async with aiohttp.ClientSession() as session:
        assert await watcher.check(session) is None
        metadata.state.tokens.clear()  # the service forgot our token
        metadata.state.lifecycle = "Terminated"
        notice = await watcher.check(session)
    assert notice is not None
    assert metadata.state.requests.count("PUT /latest/api/token") == 2


async def test_gcp_preemption_arrives_through_wait_for_change(metadata: MetadataServer) -> None:
    notices = Notices()
    task = asyncio.create_task(
        watchers.watch(watchers.GcpWatcher(metadata.url, 1.0), 0.05, notices)
    )
    await eventually(lambda: len(metadata.state.requests) >= 2, timeout=10, what="a held long poll")
    requests_before = len(metadata.state.requests)
    threading.Timer(0.3, metadata.state.preempt).start()
    await asyncio.wait_for(task, timeout=10)
    assert notices.got[0][0] == "gcp-preempted"
    # The notice came from the held request, not from a burst of polls.
    assert len(metadata.state.requests) == requests_before


async def test_azure_preempt_event_is_a_notice(metadata: MetadataServer) -> None:
    notices = Notices()
    task = asyncio.create_task(
        watchers.watch(watchers.AzureWatcher(metadata.url, 1.0), 0.05, notices)
    )
    metadata.state.azure_events = [
        {"EventId": "A1", "EventType": "Freeze", "Resources": ["vm1"]},
    ]
    await eventually(lambda: len(metadata.state.requests) >= 3, timeout=10, what="polling")
    assert not notices.got  # a freeze is not a termination
    metadata.state.azure_events.append(
        {"EventId": "A2", "EventType": "Preempt", "Resources": ["vm1"], "NotBefore": "soon"}
    )
    await asyncio.wait_for(task, timeout=10)
    kind, detail = notices.got[0]
    assert kind == "azure-preempt"
    assert detail["EventId"] == "A2"


async def test_missing_metadata_service_costs_one_timeout_then_the_watcher_stops() -> None:
    hole = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    port = hole.getsockname()[1]
    try:
        notices = Notices()
        started = time.monotonic()
        watcher = watchers.Ec2Watcher(f"http://127.0.0.1:{port}", timeout=0.5)
        await asyncio.wait_for(watchers.watch(watcher, 0.05, notices), timeout=10)
        elapsed = time.monotonic() - started
    finally:
        hole.close()
    assert not notices.got
    assert elapsed < 0.5 + 0.5, f"the absent service cost {elapsed:.2f}s"


def test_auto_enables_only_the_platform_the_dmi_names(tmp_path: Path) -> None:
    (tmp_path / "sys_vendor").write_text("Amazon EC2\n")
    (tmp_path / "product_name").write_text("m7g.large\n")
    built = watchers.build(TerminationConfig(), dmi=tmp_path)
    assert [w.kind for w in built] == ["ec2"]
    (tmp_path / "sys_vendor").write_text("Google\n")
    assert [w.kind for w in watchers.build(TerminationConfig(), dmi=tmp_path)] == ["gcp"]
    (tmp_path / "sys_vendor").write_text("QEMU\n")
    assert watchers.build(TerminationConfig(), dmi=tmp_path) == []
    forced = TerminationConfig(ec2="on", gcp="off", azure="on")
    assert [w.kind for w in watchers.build(forced, dmi=tmp_path)] == ["ec2", "azure"]


async def test_a_spot_action_keeps_only_its_documented_keys(metadata: MetadataServer) -> None:
    # The detail becomes the notice record's fields: "event" would overwrite the notice's
    # own, "msg" or "kind" collided with special.notice's arguments (TypeError, agent down).
    metadata.state.spot_action = {
        "action": "terminate",
        "time": "2026-11-21T23:00:00Z",
        "event": "nothing",
        "msg": "x",
        "kind": "y",
    }
    notices = Notices()
    watcher = watchers.Ec2Watcher(metadata.url, 1.0)
    await asyncio.wait_for(watchers.watch(watcher, 0.05, notices), timeout=10)

    kind, detail = notices.got[0]
    assert (kind, detail) == (
        "ec2-spot-interruption",
        {
            "platform": "ec2",
            "event": "spot-interruption",
            "action": "terminate",
            "time": "2026-11-21T23:00:00Z",
        },
    )
    record = special.notice(kind, f"termination notice: {kind}", **detail)
    assert record["notice"]["kind"] == kind


EVENTS = "/metadata/scheduledevents"
HOSTILE_AZURE = {
    "Events null": b'{"Events": null}',
    "Events a number": b'{"Events": 5}',
    "not UTF-8": b'{"Events": [{"EventType": "Pre\xffempt"}]}\xfe',
    # A notice, but in an answer no metadata service gives (padded with JSON whitespace, so
    # that even its first MAX_ANSWER_BYTES parse): not read whole, and not believed.
    "over the size limit": b'{"Events": [{"EventType": "Preempt"}]}'
    + b" " * watchers.MAX_ANSWER_BYTES,
}


@pytest.mark.parametrize("case", sorted(HOSTILE_AZURE))
async def test_an_answer_that_is_not_one_is_logged_and_polling_goes_on(
    metadata: MetadataServer, case: str
) -> None:
    metadata.state.raw[EVENTS] = (200, HOSTILE_AZURE[case], {})
    notices = Notices()
    task = asyncio.create_task(
        watchers.watch(watchers.AzureWatcher(metadata.url, 1.0), 0.05, notices)
    )
    await eventually(
        lambda: metadata.state.requests.count(f"GET {EVENTS}") >= 3 or task.done(),
        timeout=10,
        what="three polls",
    )
    assert not task.done()  # neither ended by the answer (agent down) nor switched off
    assert not notices.got
    del metadata.state.raw[EVENTS]
    metadata.state.azure_events = [{"EventId": "E", "EventType": "Preempt", "Resources": ["vm1"]}]
    await asyncio.wait_for(task, timeout=10)
    assert notices.got[0][0] == "azure-preempt"


async def test_a_poll_that_fails_for_any_other_reason_does_not_end_the_watcher() -> None:
    class Flaky:
        kind = "flaky"
        calls = 0

        async def check(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
            self.calls += 1
            if self.calls < 3:
                raise TypeError("'NoneType' object is not iterable")
            return {"platform": "flaky", "event": "gone"}

    notices = Notices()
    await asyncio.wait_for(watchers.watch(Flaky(), 0.01, notices), timeout=10)
    assert notices.got == [("flaky-gone", {"platform": "flaky", "event": "gone"})]


async def test_a_redirect_is_not_followed(metadata: MetadataServer) -> None:
    # Following it would send the IMDSv2 token elsewhere and take a notice from there.
    spot = "/latest/meta-data/spot/instance-action"
    metadata.state.raw[spot] = (302, b"", {"Location": f"{metadata.url}/elsewhere"})
    metadata.state.raw["/elsewhere"] = (200, b'{"action": "terminate"}', {})
    notices = Notices()
    task = asyncio.create_task(
        watchers.watch(watchers.Ec2Watcher(metadata.url, 1.0), 0.05, notices)
    )
    await eventually(
        lambda: metadata.state.requests.count(f"GET {spot}") >= 3, timeout=10, what="polling"
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not notices.got
    assert "GET /elsewhere" not in metadata.state.requests


async def test_an_azure_event_for_another_vm_is_not_this_ones(metadata: MetadataServer) -> None:
    # Every VM of an availability set or scale-set placement group sees the others' events.
    metadata.state.azure_events = [
        {"EventId": "O", "EventType": "Terminate", "Resources": ["other-vm"]},
    ]
    notices = Notices()
    task = asyncio.create_task(
        watchers.watch(watchers.AzureWatcher(metadata.url, 1.0), 0.05, notices)
    )
    await eventually(
        lambda: metadata.state.requests.count(f"GET {EVENTS}") >= 3, timeout=10, what="polling"
    )
    assert not notices.got
    metadata.state.azure_events.append(
        {"EventId": "T", "EventType": "Terminate", "Resources": ["other-vm", "vm1"]}
    )
    await asyncio.wait_for(task, timeout=10)
    assert notices.got[0][1]["EventId"] == "T"
    assert metadata.state.requests.count("GET /metadata/instance") == 1  # asked once
