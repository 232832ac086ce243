"""``/metrics``: the agent's counters in the Prometheus text format (prometheus-client).

Components keep plain counters of their own (a source's records in, a sink's records acked and
retries, the buffer's stats); this collector reads them when Prometheus scrapes, so the hot
path pays for an integer increment, never for a metrics library call. Process figures come
from psutil. Names follow Prometheus conventions (``_total``, ``_bytes``, ``_seconds``).
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from agent.pipeline import Agent

PREFIX = "tailseal_"


class AgentMetrics(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.process = psutil.Process()

    def collect(self) -> Iterator[Metric]:
        yield from self._sources()
        yield from self._sinks()
        yield from self._buffer()
        yield from self._process()

    def _sources(self) -> Iterator[Metric]:
        families = {
            "records": CounterMetricFamily(
                PREFIX + "source_records", "Records read by a source", labels=["source"]
            ),
            "bytes": CounterMetricFamily(
                PREFIX + "source_bytes", "Message bytes read by a source", labels=["source"]
            ),
            "parse_failures": CounterMetricFamily(
                PREFIX + "parse_failures", "Records a parser could not read", labels=["source"]
            ),
            "redactions": CounterMetricFamily(
                PREFIX + "redactions", "Records with a secret redacted", labels=["source"]
            ),
        }
        for name, transformed in self.agent.transforms.items():
            stats = transformed.chain.stats
            families["records"].add_metric([name], transformed.records_in)
            families["bytes"].add_metric([name], transformed.bytes_in)
            families["parse_failures"].add_metric([name], stats.parse_failures)
            families["redactions"].add_metric([name], stats.redacted)
        yield from families.values()

    def _sinks(self) -> Iterator[Metric]:
        records = CounterMetricFamily(
            PREFIX + "sink_records", "Records acknowledged by a sink's collector", labels=["sink"]
        )
        size = CounterMetricFamily(
            PREFIX + "sink_bytes",
            "Record bytes acknowledged by a sink's collector",
            labels=["sink"],
        )
        retries = CounterMetricFamily(
            PREFIX + "sink_retries", "Attempts retried, by reason", labels=["sink", "reason"]
        )
        relinks = CounterMetricFamily(
            PREFIX + "sink_relinks",
            "409 answers: the collector held another chain position (resent, fork or gap)",
            labels=["sink"],
        )
        overtaken = CounterMetricFamily(
            PREFIX + "sink_overtaken",
            "409 answers to a batch sent while batches before it were in flight (asked again)",
            labels=["sink"],
        )
        quarantined = CounterMetricFamily(
            PREFIX + "sink_quarantined_records",
            "Records the collector refused for good, kept in state_dir/quarantine (a gap each)",
            labels=["sink"],
        )
        backlog = GaugeMetricFamily(
            PREFIX + "sink_backlog_records",
            "Committed records not yet acknowledged",
            labels=["sink"],
        )
        latency = HistogramMetricFamily(
            PREFIX + "sink_ack_latency_seconds",
            "From a batch's first send to its acknowledgement",
            labels=["sink"],
        )
        buffer = self.agent.buffer
        for sink in self.agent.sinks:
            records.add_metric([sink.name], sink.records_acked)
            size.add_metric([sink.name], sink.bytes_acked)
            for reason, count in sink.retries.items():
                retries.add_metric([sink.name, reason], count)
            relinks.add_metric([sink.name], sink.relinks)
            overtaken.add_metric([sink.name], sink.overtaken)
            quarantined.add_metric([sink.name], sink.quarantined)
            backlog.add_metric([sink.name], buffer.backlog(sink.name) if buffer else 0)
            latency.add_metric([sink.name], sink.ack_latency.cumulative(), sink.ack_latency.sum)
        yield from (records, size, retries, relinks, overtaken, quarantined, backlog, latency)

    def _buffer(self) -> Iterator[Metric]:
        buffer = self.agent.buffer
        if buffer is None:
            return
        stats = buffer.stats
        yield _gauge("buffer_bytes", "Bytes of segment files on disk", buffer.total_bytes())
        yield _gauge("buffer_segments", "Segment files on disk", len(buffer.segments))
        unacked = buffer.last_seq - min((c for c, _ in buffer.cursors.values()), default=0)
        yield _gauge("buffer_unacked_records", "Records some sink has not acked", unacked)
        yield _gauge(
            "buffer_oldest_unacked_age_seconds",
            "Age of the oldest record some sink has not acked (segment start)",
            buffer.oldest_unacked_age(),
        )
        yield _counter("buffer_records", "Records committed to the buffer", stats.records)
        yield _counter("buffer_written_bytes", "Bytes committed to the buffer", stats.bytes)
        yield _counter(
            "buffer_dropped_records", "Records dropped unacked (drop_oldest)", stats.dropped_records
        )
        yield _counter("buffer_write_errors", "Failed buffer writes (retried)", stats.write_errors)
        yield _counter("gaps", "Gap records written (accounted loss)", stats.gaps)
        yield _counter(
            "buffer_unencodable_records",
            "Records whose parsed fields could not be encoded (shipped without them)",
            stats.unencodable,
        )
        yield _gauge(
            "buffer_blocked", "1 while the buffer is full and waits for acks", buffer.blocked
        )

    def _process(self) -> Iterator[Metric]:
        with self.process.oneshot():
            cpu = self.process.cpu_times()
            yield _gauge("process_rss_bytes", "Resident memory", self.process.memory_info().rss)
            yield _counter("process_cpu_seconds", "User and system CPU time", cpu.user + cpu.system)
            yield _gauge("process_open_fds", "Open file descriptors", self.process.num_fds())


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=float(value))


def registry_for(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentMetrics(agent))
    return registry
