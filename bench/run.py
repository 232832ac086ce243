"""The project's benchmark: the real agent and collector as processes on loopback with TLS.

    python -m bench.run [--scenario raw|auth|shell|api|all] [--lines 500000] [--repeat 3]
                        [--rate 10000] [--latency-seconds 10] [--idle-seconds 60] [--json FILE]
                        [--cpu-affinity none|auto|LIST] [--sink S] [--source S] [--buffer S]

Per scenario (input generated here, realistic shapes): end-to-end lines/s from the input file
appearing beside a running agent until the collector holds every line, agent CPU-seconds per
million lines over that span (its start-up CPU is reported apart), agent peak RSS,
collector CPU-seconds, the bytes each wrote to disk per line (file pages dirtied, as the kernel
counts them for the storage layer: the agent's buffer, the collector's store), and the same
input through a plain read-and-split loop so the figure can be compared across machines as a
ratio; after each run, a write probe (CPU-seconds per GB written into a new file), the
machine's price of the writes that ratio does not see. Once per run: p50/p99 latency from a
line written to the collector holding it at a fixed rate, idle CPU and RSS after
--idle-seconds with no input, and the drain rate of a backlog after SIGTERM. Prints a table
and writes JSON. The agent runs with its defaults, but for ``--cpu-affinity`` (its
``cpu_affinity`` setting) and the settings given to ``--sink``, ``--source`` and ``--buffer``
(TOML lines, e.g. ``'read_chunk_bytes = 262144'``; repeatable), which the JSON records. An
agent that exits ends the run with its log.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.harness import AgentProcess, CollectorProcess, write_lines
from tests.support import make_tls_files

USERS = ["alice", "bob", "deploy", "root", "admin", "ci-runner"]
IPS = [f"203.0.113.{i}" for i in range(1, 60)] + [f"198.51.100.{i}" for i in range(1, 40)]


def auth_line(i: int, rng: random.Random) -> str:
    user, ip = rng.choice(USERS), rng.choice(IPS)
    kind = i % 4
    if kind == 0:
        return (
            f"Nov 21 10:{i // 60 % 60:02d}:{i % 60:02d} web-1 sshd[{2000 + i % 5000}]: "
            f"Accepted publickey for {user} from {ip} port {40000 + i % 20000} ssh2: "
            f"ED25519 SHA256:Zp3yq0f8vd2lL1k4x"
        )
    if kind == 1:
        return (
            f"Nov 21 10:{i // 60 % 60:02d}:{i % 60:02d} web-1 sshd[{2000 + i % 5000}]: "
            f"Failed password for invalid user {user} from {ip} port {40000 + i % 20000} ssh2"
        )
    if kind == 2:
        return (
            f"Nov 21 10:{i // 60 % 60:02d}:{i % 60:02d} web-1 sudo:    {user} : TTY=pts/0 ; "
            f"PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx"
        )
    return (
        f"Nov 21 10:{i // 60 % 60:02d}:{i % 60:02d} web-1 sshd[{2000 + i % 5000}]: "
        f"pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
    )


def auth_mixed_line(i: int, rng: random.Random) -> str:
    """auth.log as a host writes it around its logins: the ``auth`` lines, and as many again of
    systemd-logind sessions, su and cron's PAM sessions."""
    kind = i % 8
    if kind < 4:
        return auth_line(i, rng)
    head = f"Nov 21 10:{i // 60 % 60:02d}:{i % 60:02d} web-1 "
    user = rng.choice(USERS)
    if kind == 4:
        return head + f"systemd-logind[612]: New session {i % 9000} of user {user}."
    if kind == 5:
        return head + f"systemd-logind[612]: Removed session {i % 9000}."
    if kind == 6:
        return head + (
            f"CRON[{3000 + i % 5000}]: pam_unix(cron:session): session opened for user root"
            "(uid=0) by (uid=0)"
        )
    return head + f"su[{3000 + i % 5000}]: (to root) {user} on pts/{i % 8}"


def shell_line(i: int, rng: random.Random) -> str:
    user = rng.choice(USERS)
    return json.dumps(
        {
            "time": f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "user": user,
            "uid": 1000,
            "tty": "pts/0",
            "cwd": f"/home/{user}/src",
            "command": f"git log --oneline -n {i % 50}",
            "exit": i % 3,
            "session": f"s{i % 97}",
        }
    )


def api_line(i: int, rng: random.Random) -> str:
    ip, path = rng.choice(IPS), rng.choice(["/api/v1/orders", "/api/v1/users/42", "/healthz"])
    return (
        f'{ip} - - [21/Nov/2026:10:{i // 60 % 60:02d}:{i % 60:02d} +0000] "GET {path}?page='
        f'{i % 9} HTTP/1.1" {rng.choice([200, 200, 200, 304, 404])} {i % 9000} "-" '
        f'"Mozilla/5.0 (X11; Linux x86_64) curl/8.5.0"'
    )


def raw_line(i: int, rng: random.Random) -> str:
    return f"{i:09d} " + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789 ", k=220))


SCENARIOS: dict[str, tuple[Callable[[int, random.Random], str], str]] = {
    "raw": (raw_line, 'parser = { format = "none" }'),
    "auth": (auth_line, 'parser = { format = "auth" }'),
    "auth_mixed": (auth_mixed_line, 'parser = { format = "auth" }'),
    "shell": (shell_line, 'parser = { format = "shell" }'),
    "api": (api_line, 'parser = { format = "access" }'),
}


def generate(path: Path, make: Callable[[int, random.Random], str], count: int) -> int:
    rng = random.Random(7)
    size = 0
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, count, 10_000):
            chunk = "".join(make(i, rng) + "\n" for i in range(start, min(count, start + 10_000)))
            size += len(chunk.encode())
            out.write(chunk)
    return size


def baseline(path: Path) -> float:
    """Lines/s of a plain read-and-split loop over the same file (the machine's yardstick)."""
    started = time.perf_counter()
    count = 0
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            parts = (tail + chunk).split(b"\n")
            tail = parts.pop()
            count += len(parts)
    return count / (time.perf_counter() - started)


WRITE_PROBE_BYTES = 256 * 2**20


def write_probe(path: Path) -> float:
    """CPU-seconds per GB of a plain write loop into a new file (256 KiB writes, an fsync per
    4 MiB, as the buffer's group commits): the machine's cost of writing into pages it has not
    used lately. The read-and-split baseline does not show it, and on a VM whose host takes
    its guest's free memory back it can be most of the agent's kernel time (this VM warm: ~0.4;
    freshly booted, a like loop took ~2.3). Made after a run, so it perturbs none."""
    block = bytes(range(256)) * 1024
    started = time.thread_time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for written in range(len(block), WRITE_PROBE_BYTES + 1, len(block)):
            os.write(fd, block)
            if written % (4 * 2**20) == 0:
                os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    return (time.thread_time() - started) / (WRITE_PROBE_BYTES / 1e9)


class Sampler(threading.Thread):
    """Samples a process's RSS every 100 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.1):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return


def cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def disk_writes(pid: int) -> int | None:
    """Bytes the process has sent to the storage layer (``write_bytes`` of /proc/PID/io: each
    file page it dirtied, so a page appended to by two commits counts twice); None where the
    kernel does not count them."""
    try:
        return int(psutil.Process(pid).io_counters().write_bytes)
    except (AttributeError, psutil.AccessDenied):
        return None


def per_line(after: int | None, before: int | None, lines: int) -> int | None:
    return None if after is None or before is None else round((after - before) / lines)


# Settings of the measured agent other than its defaults (--cpu-affinity), as environment
# overrides; set once by main() before any run.
AGENT_ENV: dict[str, str] = {}
# More [sinks.central] settings of the measured agent (--sink), TOML lines; set once by main().
SINK_SETTINGS: list[str] = []
# More settings of the measured source (--source) and [buffer] (--buffer); set once by main().
SOURCE_SETTINGS: list[str] = []
BUFFER_SETTINGS: list[str] = []


@contextmanager
def rig(
    root: Path, scenario: str, extra_tables: str = ""
) -> Iterator[tuple[CollectorProcess, AgentProcess, Path]]:
    (root / "collector").mkdir(parents=True)
    (root / "agent").mkdir()
    (root / "logs").mkdir()
    collector = CollectorProcess(root / "collector", make_tls_files(root / "tls"))
    collector.start()
    agent = AgentProcess(
        root / "agent",
        collector,
        sources={scenario: [str(root / "logs" / "*.log")]},
        source_options="\n".join([SCENARIOS[scenario][1], *SOURCE_SETTINGS]),
        tables="\n".join(["[buffer]", "max_bytes = 8589934592", *BUFFER_SETTINGS, extra_tables]),
        poll_interval=None,  # measured as deployed: the agent's default
        env=dict(AGENT_ENV),
        extra="\n".join(SINK_SETTINGS),
    )
    try:
        yield collector, agent, root / "logs" / "input.log"
    finally:
        agent.cleanup()
        collector.stop()


def _check_running(agent: AgentProcess) -> None:
    """SystemExit with the agent's own words (a bad --source/--buffer/--sink setting, a crash)
    if it exited: the loops that wait for it would otherwise wait forever."""
    if agent.proc is not None and agent.proc.poll() is not None:
        raise SystemExit(f"the agent exited ({agent.proc.returncode}):\n{agent.log_tail()}")


def wait_status(
    agent: AgentProcess, until: Callable[[dict[str, Any]], bool] = lambda _: True
) -> None:
    """Return once the agent is up and ``until`` holds for its status."""
    while True:
        status = agent.status_or_none()
        if status is not None and until(status):
            return
        _check_running(agent)
        time.sleep(0.05)


def wait_held(
    collector: CollectorProcess, agent: AgentProcess, count: int, limit: float = 900
) -> int:
    """Wait until the collector holds ``count`` records; return when it came to: the newest
    change time (ns) of its streams' ``head.json``, which it renames into place once the
    records are fsynced (then fsyncs the directory and replies). Not when this poll noticed:
    polled every 50 ms (the poll runs on the cores it measures), that would add ~25 ms to a
    run on average, over 1% of a 500,000-line run. A file time is the kernel's coarse clock:
    measure the start with one too (see :func:`throughput`)."""
    deadline = time.monotonic() + limit
    while collector.held_on_disk() < count:
        _check_running(agent)
        if time.monotonic() > deadline:
            raise SystemExit(f"collector held {collector.held()} of {count} after {limit}s")
        time.sleep(0.05)
    return max(path.stat().st_ctime_ns for path in collector.storage.glob("streams/*/head.json"))


def throughput(scenario: str, lines: int, root: Path) -> dict[str, Any]:
    """The agent is started and up (its control socket answers) before the input appears: the
    file is made beside the log directory and renamed into it, as a rotation would. Lines/s and
    CPU per line are then the pipeline's, not its start-up's (imports and TLS set-up: a fixed
    ~1 CPU-s that a 500,000-line run would count as ~2 CPU-s per million); the start-up CPU is
    reported on its own."""
    with rig(root, scenario) as (collector, agent, log):
        staged = root / "input.staged"
        size = generate(staged, SCENARIOS[scenario][0], lines)
        base = baseline(staged)
        agent.start()
        assert agent.proc is not None
        assert collector.proc is not None
        sampler = Sampler(agent.proc.pid)
        sampler.start()
        wait_status(agent)
        startup_cpu = cpu(agent.proc.pid)
        agent_sys0 = float(psutil.Process(agent.proc.pid).cpu_times().system)
        collector_cpu0 = cpu(collector.proc.pid)
        agent_disk0, collector_disk0 = disk_writes(agent.proc.pid), disk_writes(collector.proc.pid)
        staged.rename(log)
        started = log.stat().st_ctime_ns  # the rename's time, on the clock of wait_held's
        elapsed = (wait_held(collector, agent, lines) - started) / 1e9
        agent_cpu = cpu(agent.proc.pid) - startup_cpu
        agent_sys = float(psutil.Process(agent.proc.pid).cpu_times().system) - agent_sys0
        collector_cpu = cpu(collector.proc.pid) - collector_cpu0
        agent_disk = per_line(disk_writes(agent.proc.pid), agent_disk0, lines)
        collector_disk = per_line(disk_writes(collector.proc.pid), collector_disk0, lines)
        sampler.halt.set()
        assert agent.terminate(timeout=120) == 0
    probe = write_probe(root / "write.probe")
    rate = lines / elapsed
    return {
        "scenario": scenario,
        "lines": lines,
        "mb": round(size / 1e6, 1),
        "seconds": round(elapsed, 2),
        "lines_per_s": round(rate),
        "agent_cpu_s_per_million": round(agent_cpu / lines * 1e6, 2),
        "agent_kernel_share": round(agent_sys / agent_cpu, 2),  # syscalls: I/O, fsync, futex
        "agent_startup_cpu_s": round(startup_cpu, 2),  # before the input appeared: not counted
        "agent_peak_rss_mb": round(sampler.peak / 2**20, 1),
        "collector_cpu_s": round(collector_cpu, 2),
        "agent_disk_bytes_per_line": agent_disk,  # its buffer's frames (and state files)
        "collector_disk_bytes_per_line": collector_disk,
        "baseline_lines_per_s": round(base),
        "ratio_to_baseline": round(rate / base, 4),
        "write_probe_cpu_s_per_gb": round(probe, 2),
    }


def latency(rate: int, seconds: float, root: Path) -> dict[str, Any]:
    """Lines written at ``rate``/s carry their index; the collector file is tailed for them."""
    with rig(root, "raw") as (collector, agent, log):
        log.touch()
        agent.start()
        wait_status(agent)
        written: dict[int, float] = {}
        seen: dict[int, float] = {}
        total = int(rate * seconds)
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(collector, seen, total, stop), daemon=True)
        watcher.start()
        tick = 0.01
        started = time.monotonic()
        for step in range(int(seconds / tick)):
            due = started + step * tick
            time.sleep(max(0.0, due - time.monotonic()))  # the writer's pacing: the workload
            batch = range(step * int(rate * tick), (step + 1) * int(rate * tick))
            now = time.monotonic()
            write_lines(log, [f"lat {i:09d} " + "x" * 200 for i in batch])
            written.update((i, now) for i in batch)
        watcher.join(timeout=60)
        stop.set()
        assert agent.terminate() == 0
    delays = sorted(seen[i] - written[i] for i in seen if i in written)
    return {
        "rate": rate,
        "lines": len(delays),
        "p50_ms": round(1000 * statistics.median(delays), 1),
        "p99_ms": round(1000 * delays[int(len(delays) * 0.99) - 1], 1),
        "max_ms": round(1000 * delays[-1], 1),
    }


def _watch(
    collector: CollectorProcess, seen: dict[int, float], total: int, stop: threading.Event
) -> None:
    offset = 0
    while len(seen) < total and not stop.is_set():
        for path in collector.storage.glob("streams/*/records.ndjson"):
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            now = time.monotonic()
            complete = data[: data.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.splitlines():
                at = line.find(b'"msg":"lat ')
                if at >= 0:
                    seen[int(line[at + 11 : at + 20])] = now
        time.sleep(0.005)


def idle(seconds: float, root: Path) -> dict[str, Any]:
    with rig(root, "raw") as (_, agent, log):
        log.touch()
        agent.start()
        assert agent.proc is not None
        wait_status(agent)
        time.sleep(5)  # start-up settles before the idle window
        before = cpu(agent.proc.pid)
        time.sleep(seconds)
        used = cpu(agent.proc.pid) - before
        rss = psutil.Process(agent.proc.pid).memory_info().rss
        assert agent.terminate() == 0
    return {
        "seconds": seconds,
        "cpu_percent": round(100 * used / seconds, 3),
        "rss_mb": round(rss / 2**20, 1),
    }


def drain(lines: int, root: Path) -> dict[str, Any]:
    with rig(root, "raw", "[shutdown]\ntimeout = 600\n") as (collector, agent, log):
        size = generate(log, raw_line, lines)
        port = collector.port
        collector.stop()
        agent.start()
        wait_status(agent, lambda status: status.get("last_seq", 0) >= lines)
        collector.start(port=port)
        assert agent.proc is not None
        started = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        code = agent.proc.wait(timeout=900)
        elapsed = time.monotonic() - started
        assert code == 0, agent.log_tail()
    return {
        "lines": lines,
        "mb": round(size / 1e6, 1),
        "seconds": round(elapsed, 2),
        "mb_per_s": round(size / 1e6 / elapsed, 1),
        "lines_per_s": round(lines / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all", "none"])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--drain-lines", type=int, default=300_000)
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--repeat", type=int, default=3, help="throughput runs per scenario (medians reported)"
    )
    parser.add_argument(
        "--cpu-affinity", default="", help="the agent's cpu_affinity (default: its own default)"
    )
    settings = {"sink": SINK_SETTINGS, "source": SOURCE_SETTINGS, "buffer": BUFFER_SETTINGS}
    examples = {"sink": "concurrency = 1", "source": "read_chunk_bytes = 262144"}
    examples["buffer"] = "max_commit_records = 20000"
    for name, example in examples.items():
        parser.add_argument(
            f"--{name}",
            action="append",
            default=[],
            metavar="SETTING",
            help=f"a {name} setting other than its default, as TOML (e.g. '{example}'); repeatable",
        )
    args = parser.parse_args()
    results: dict[str, Any] = {"throughput": []}
    for name, given in settings.items():
        if getattr(args, name):
            given.extend(getattr(args, name))
            results[name] = getattr(args, name)
    if args.cpu_affinity:
        AGENT_ENV["TAILSEAL_CPU_AFFINITY"] = json.dumps(args.cpu_affinity)
        results["cpu_affinity"] = args.cpu_affinity
    names = (
        list(SCENARIOS)
        if args.scenario == "all"
        else []
        if args.scenario == "none"
        else [args.scenario]
    )
    with tempfile.TemporaryDirectory(prefix="tailseal-bench-") as tmp:
        work = Path(tmp)
        for name in names:
            runs = []
            for attempt in range(args.repeat):
                root = work / f"t-{name}-{attempt}"
                runs.append(throughput(name, args.lines, root))
                print(json.dumps(runs[-1]))
                # Each run starts as the first does: with the files of the run before deleted.
                # Kept, they are GBs in long runs, and here (a VM whose host takes back the
                # guest's free memory) the next run's writes then go to pages the host must
                # map again: runs 2 and 3 at up to 20% less, agent and collector alike.
                shutil.rmtree(root)
            results["throughput"].append(summarize(runs))
        if args.latency_seconds > 0:
            results["latency"] = latency(args.rate, args.latency_seconds, work / "latency")
            print(json.dumps({"latency": results["latency"]}))
        if args.idle_seconds > 0:
            results["idle"] = idle(args.idle_seconds, work / "idle")
            print(json.dumps({"idle": results["idle"]}))
        if args.drain_lines > 0:
            results["drain"] = drain(args.drain_lines, work / "drain")
            print(json.dumps({"drain": results["drain"]}))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario's row: the median of each figure over the runs (as the issue's peer figures
    are medians of 3), the largest peak RSS (the target is a ceiling); every run kept."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, int | float) and key != "lines":
            row[key] = statistics.median(run[key] for run in runs)
    row["agent_peak_rss_mb"] = max(run["agent_peak_rss_mb"] for run in runs)
    row["runs"] = runs
    return row


def print_table(results: dict[str, Any]) -> None:
    columns = {
        "scenario": "scenario",
        "lines/s": "lines_per_s",
        "cpu-s/M": "agent_cpu_s_per_million",
        "rss MB": "agent_peak_rss_mb",
        "coll cpu": "collector_cpu_s",
        "disk B/ln": "agent_disk_bytes_per_line",
        "ratio": "ratio_to_baseline",
        "probe s/GB": "write_probe_cpu_s_per_gb",
    }
    print("\n" + " ".join(f"{c:>10}" for c in columns))
    for row in results["throughput"]:
        print(" ".join(f"{row[key]!s:>10}" for key in columns.values()))
    if "latency" in results:
        lat = results["latency"]
        print(f"latency at {lat['rate']}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
    if "idle" in results:
        print(f"idle: {results['idle']['cpu_percent']}% CPU, {results['idle']['rss_mb']} MB RSS")
    if "drain" in results:
        d = results["drain"]
        print(f"drain: {d['mb']} MB in {d['seconds']} s = {d['mb_per_s']} MB/s")


if __name__ == "__main__":
    main()
