"""The reload plan: which sources and sinks change, what needs a restart."""

from __future__ import annotations

from typing import Any

from agent import reload
from agent.config import parse_agent_config


def config(**changes: Any) -> Any:
    base: dict[str, Any] = {
        "state_dir": "/var/lib/tailseal",
        "sources": {
            "auth": {"type": "file", "paths": ["/var/log/auth.log"]},
            "app": {"type": "file", "paths": ["/var/log/app.log"]},
        },
        "sinks": {"central": {"type": "tailseal", "endpoint": "https://c:8443"}},
    }
    base.update(changes)
    return parse_agent_config(base, environ={})


def test_plan_names_added_changed_and_removed_components() -> None:
    old = config()
    new = config(
        sources={
            "auth": {"type": "file", "paths": ["/var/log/auth.log", "/var/log/secure"]},
            "api": {"type": "file", "paths": ["/var/log/api.log"]},
        },
        sinks={
            "central": {"type": "tailseal", "endpoint": "https://c:8443"},
            "backup": {"type": "tailseal", "endpoint": "https://b:8443"},
        },
    )
    plan = reload.plan(old, new)
    assert list(plan.sources_added) == ["api"]
    assert list(plan.sources_changed) == ["auth"]
    assert plan.sources_removed == ["app"]
    assert list(plan.sinks_added) == ["backup"]
    assert not plan.sinks_changed
    assert not plan.sinks_removed
    assert not plan.restart_needed
    assert "sources added api" in plan.summary()


def test_process_level_settings_wait_for_a_restart() -> None:
    old = config()
    new = config(state_dir="/srv/tailseal", buffer={"fsync": "always"}, heartbeat=30)
    plan = reload.plan(old, new)
    assert plan.restart_needed == ["state_dir", "heartbeat", "buffer"]
    merged = reload.merged(old, new)
    assert merged.state_dir == "/var/lib/tailseal"
    assert merged.buffer.fsync == "batch"
    assert reload.plan(old, old).summary() == "no source or sink changed"
