"""Config reload (SIGHUP): what changes between the running config and a re-read one.

Sources and sinks are reloadable: each named table is added, removed, changed (restarted with
its new settings) or left alone. Everything else (state_dir, buffer, shutdown, control,
termination, enrich, host_name, heartbeat) shapes the process itself and takes effect after a
restart; the reload names each such change and keeps the running value. Pure functions; the
supervisor applies the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from agent.config import AgentConfig, SinkConfig, SourceConfig

RESTART_ONLY = (
    "state_dir",
    "host_name",
    "heartbeat",
    "cpu_affinity",
    "buffer",
    "shutdown",
    "control",
    "termination",
    "enrich",
)


@dataclass
class Plan:
    sources_added: dict[str, SourceConfig] = field(default_factory=dict)
    sources_changed: dict[str, SourceConfig] = field(default_factory=dict)
    sources_removed: list[str] = field(default_factory=list)
    sinks_added: dict[str, SinkConfig] = field(default_factory=dict)
    sinks_changed: dict[str, SinkConfig] = field(default_factory=dict)
    sinks_removed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("sources added", list(self.sources_added)),
                ("sources changed", list(self.sources_changed)),
                ("sources removed", self.sources_removed),
                ("sinks added", list(self.sinks_added)),
                ("sinks changed", list(self.sinks_changed)),
                ("sinks removed", self.sinks_removed),
            )
            if names
        ]
        return "; ".join(parts) or "no source or sink changed"


def plan(old: AgentConfig, new: AgentConfig) -> Plan:
    result = Plan()
    for name, config in new.sources.items():
        if name not in old.sources:
            result.sources_added[name] = config
        elif config != old.sources[name]:
            result.sources_changed[name] = config
    result.sources_removed = [name for name in old.sources if name not in new.sources]
    for name, sink in new.sinks.items():
        if name not in old.sinks:
            result.sinks_added[name] = sink
        elif sink != old.sinks[name]:
            result.sinks_changed[name] = sink
    result.sinks_removed = [name for name in old.sinks if name not in new.sinks]
    result.restart_needed = [f for f in RESTART_ONLY if getattr(old, f) != getattr(new, f)]
    return result


def merged(old: AgentConfig, new: AgentConfig) -> AgentConfig:
    """The config now in effect: the new sources and sinks, the old everything else."""
    return msgspec.structs.replace(old, sources=new.sources, sinks=new.sinks)
