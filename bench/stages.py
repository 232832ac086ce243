"""CPU per line of each stage of the agent's hot path, in one process, without the event loop.

    python -m bench.stages [--scenario raw|auth|shell|api|all] [--lines 200000] [--profile FILE]

The end-to-end benchmark (``bench.run``) says how fast the agent ships; this says where its
CPU goes, with figures that hold still on a busy machine (process CPU time, not wall time). The
real code runs over the same generated input as ``bench.run``, one chunk at a time through every
stage as in the agent: the file source cutting a chunk into records (``TailedFile.read``), the
transform chain (parse + redact), the buffer writer (chain hash, frames, write, fsync), a sink's
reader and the sink's encoding (NDJSON + zstd). Each stage's CPU-µs per line are printed;
``--profile`` writes a cProfile of the whole run. What the event loop, threads, HTTP and TLS add
in the agent is not in these figures (``bench.run`` has it all). Not a test: figures depend on
the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.buffer.reader import BufferReader
from agent.buffer.wal import Buffer
from agent.config import BufferConfig, FileSourceConfig, TailsealSinkConfig, parse_agent_config
from agent.runtime import tune_gc
from agent.sinks.native import NativeSink
from agent.sources.file import cuts_runs
from agent.sources.tailed import TailedFile
from agent.transforms import build
from bench.run import SCENARIOS, generate

SINK = "bench"


def source_config(scenario: str, path: Path) -> FileSourceConfig:
    body = f'[sources.{scenario}]\ntype = "file"\npaths = ["{path}"]\n{SCENARIOS[scenario][1]}\n'
    body += '[sinks.bench]\ntype = "tailseal"\nendpoint = "https://127.0.0.1:1"\n'
    config = parse_agent_config(tomllib.loads(body), {})
    found = config.sources[scenario]
    assert isinstance(found, FileSourceConfig)
    return found


def run_stages(scenario: str, lines: int, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    log = work / "input.log"
    generate(log, SCENARIOS[scenario][0], lines)
    config = source_config(scenario, log)
    stat = log.stat()
    fd = os.open(log, os.O_RDONLY)
    tailed = TailedFile(
        scenario,
        config.max_line_bytes,
        config.fingerprint_bytes,
        str(log),
        f"{stat.st_dev}:{stat.st_ino}",
        fd,
        0,
        time.monotonic(),
    )
    tailed.runs = cuts_runs(config)  # as the file source sets it
    times: dict[str, float] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        started = time.process_time()
        yield
        times[name] = times.get(name, 0.0) + time.process_time() - started

    chain = build(scenario, config)
    buffer = Buffer.open(work / "state", BufferConfig(max_bytes=1 << 40), [SINK])
    reader = BufferReader(buffer, SINK)
    sink_config = TailsealSinkConfig(endpoint="https://127.0.0.1:1")
    sink = NativeSink(SINK, sink_config, buffer, {"name": "bench"}, asyncio.Event())
    most, size = sink_config.max_batch_records, sink_config.max_batch_bytes
    shipped = 0
    end: int | None = None
    more = True
    try:
        # One chunk at a time through every stage, as in the agent: only one chunk's records
        # are alive at once, so the garbage collector walks what it walks there (holding every
        # record of the run made the transforms stage look ~25% dearer than it is).
        while more:
            with stage("source"):
                batch, end, more = tailed.read(config.chunk_bytes, end)
            with stage("transforms"):
                batch = chain.apply(batch)
            with stage("buffer"):
                buffer._write(batch)
            del batch
            while True:
                with stage("reader"):
                    found = reader._read(most, size)
                if not found.count:
                    break
                shipped += found.count
                with stage("encode"):
                    sink._encode(found)
        os.close(fd)
        reader.close()
    finally:
        buffer.stop()
    per_line = {stage: round(seconds / lines * 1e6, 3) for stage, seconds in times.items()}
    return {
        "scenario": scenario,
        "lines": lines,
        "shipped": shipped,
        "cpu_us_per_line": per_line,
        "total_cpu_us_per_line": round(sum(times.values()) / lines * 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    tune_gc()  # as the agent's process does
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="tailseal-stages-") as tmp:
        for name in names:
            if profile is not None:
                profile.enable()
            result = run_stages(name, args.lines, Path(tmp) / name)
            if profile is not None:
                profile.disable()
            print(json.dumps(result))
    if profile is not None:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
