"""``tailseal status``'s text rendering of the agent's /status document."""

from __future__ import annotations

from typing import Any

from agent.status import render


def status(**sink: Any) -> dict[str, Any]:
    return {
        "phase": "running",
        "reason": "",
        "stream": "s-1",
        "last_seq": 30,
        "head": "ab" * 32,
        "buffer": {"bytes": 1024, "max_bytes": 4096, "blocked": False, "write_error": ""},
        "sources": {},
        "sinks": {
            "central": {
                "acked": 30,
                "backlog": 0,
                "batches_sent": 3,
                "last_error": "",
                "endpoint": "https://c",
                **sink,
            }
        },
    }


def test_a_healthy_sink_shows_no_quarantine() -> None:
    text = render(status(quarantined=0))
    assert "  central -> https://c: acked seq 30, backlog 0 records\n" in text + "\n"
    assert "QUARANTINED" not in text


def test_quarantined_records_and_the_reason_are_shown() -> None:
    text = render(status(quarantined=2, last_error="collector refused record 8 for good"))
    assert (
        "  central -> https://c: acked seq 30, backlog 0 records  QUARANTINED: 2 records"
        "  last error: collector refused record 8 for good"
    ) in text


def test_the_cpus_the_agent_may_run_on_are_shown_when_known() -> None:
    pinned = {**status(quarantined=0), "cpus": [1]}
    assert f"stream s-1  seq 30  head {'ab' * 8}  cpus 1\n" in render(pinned) + "\n"
    unknown = {**status(quarantined=0), "cpus": []}  # no sched_getaffinity on the platform
    assert "cpus" not in render(unknown)
