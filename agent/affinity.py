"""CPU affinity: keep the agent's threads on one CPU (``cpu_affinity``), or on the CPUs given.

Why: the agent runs Python in one thread at a time (the GIL), spread over the event loop and
its worker threads (reads, transforms, commits, encoding). When they run on different CPUs,
every hand-off of the GIL wakes a thread on another CPU, and each record's objects move between
CPU caches as it passes from stage to stage. On a 2-core VM (issue #11, bench.run medians of 3)
one CPU saved 4-13% of the agent's CPU per line (raw 5.40 agent CPU-seconds per million lines
against 5.82, api 11.88 against 13.58), single runs up to ~20%. What runs without the GIL (zstd,
fsync, TLS) loses the second CPU, which costs less than that at the default compression level,
except when a backlog is shipped with no new input: so the drain gets every CPU back.

Settings:
* ``"none"`` (the default): the OS places the threads, as for any process.
* ``"auto"``: one CPU, chosen among those the process may use (its affinity at start, e.g. a
  container's cpuset): the least busy at start; every ``FOLLOW_INTERVAL`` seconds the agent moves
  to another CPU when what else runs on its own keeps it busier, by ``MARGIN``, than that one.
  In drain mode (a stop, a termination notice) the threads get all those CPUs back: then the
  backlog's shipping rate matters, not the CPU per line.
* a CPU list, ``"0"``, ``"2,3"``, ``"0-3"`` (as taskset takes it) or ``[0, 1]``: the threads may
  run on those CPUs; an error at start if none of them is available to the process.

Linux only (``sched_setaffinity``, ``/proc``); elsewhere "auto" and CPU lists are ignored with a
warning. Where ``/proc/stat`` does not list every CPU the process may use (LXCFS numbers a
container's CPUs from 0), its load figures cannot be trusted and "auto" leaves placement to the OS.
If the agent's CPUs are changed from outside (taskset, a cpuset update, a CPU going offline),
"auto" leaves them so and stops following. Threads inherit the affinity of the thread that
starts them, and every thread of the agent descends from the main thread; ``pin`` still sets it
on every thread that exists.

State: an ``Affinity`` belongs to the agent process's main task; ``follow`` is its only task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError

log = logging.getLogger(__name__)

FOLLOW_INTERVAL = 10.0  # seconds between looks at the CPUs' load ("auto")
MARGIN = 0.25  # a move needs the other CPU idler than our own is busy with others by this much
START_SAMPLE = 0.1  # seconds of load measured at start to choose the first CPU
MAX_CPU = 4095  # the highest CPU number a list may name (the kernel's default NR_CPUS is lower)

TASKS = Path("/proc/self/task")  # one entry per thread of this process
_LIST = re.compile(r"[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*")

Setting = str | list[int]
# /proc/stat per CPU: cpu -> (busy, total) jiffies
Stat = dict[int, tuple[int, int]]


def parse(setting: Setting) -> str | frozenset[int]:
    """``"none"``, ``"auto"`` or the set of CPUs a list names; ValueError saying what is wrong."""
    if isinstance(setting, list):
        if not setting:
            raise ValueError("an empty CPU list: name at least one CPU, or use 'none'")
        cpus = frozenset(setting)
    elif setting in ("none", "auto"):
        return setting
    elif _LIST.fullmatch(setting):
        cpus = frozenset()
        for part in setting.split(","):
            first, _, last = part.partition("-")
            low, high = int(first), int(last or first)
            if low > high:
                raise ValueError(f"the range {part!r} runs backwards")
            if high > MAX_CPU:
                raise ValueError(f"CPU {high} is past the highest CPU number ({MAX_CPU})")
            cpus |= frozenset(range(low, high + 1))
    else:
        raise ValueError(
            f"{setting!r} is not 'none', 'auto' or a CPU list such as '0', '2,3' or '0-3'"
        )
    if min(cpus) < 0 or max(cpus) > MAX_CPU:
        raise ValueError(f"CPU numbers go from 0 to {MAX_CPU}")
    return cpus


def read_stat(path: str = "/proc/stat") -> Stat:
    """Busy and total jiffies of each CPU that is online (busy: all but idle and iowait)."""
    out: Stat = {}
    with Path(path).open(encoding="ascii") as stat:
        for line in stat:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu":
                continue
            ticks = [int(v) for v in rest.split()]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            out[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def busy_between(before: Stat, after: Stat) -> dict[int, float]:
    """The share of time each CPU online in both was busy between the two readings."""
    share: dict[int, float] = {}
    for cpu, (busy, total) in after.items():
        if cpu in before:
            was_busy, was_total = before[cpu]
            elapsed = total - was_total
            share[cpu] = (busy - was_busy) / elapsed if elapsed > 0 else 0.0
    return share


def choose(current: int | None, busy: dict[int, float], own: float, allowed: frozenset[int]) -> int:
    """The CPU to run on: the least busy allowed one, counting on our own CPU only what others
    run there (``own``: the share of it the agent used). We stay unless another is idler than
    that by ``MARGIN``, so the agent does not wander between CPUs that are about as busy."""
    known = sorted(cpu for cpu in allowed if cpu in busy)
    if not known:
        return current if current is not None else min(allowed)
    best = min(known, key=lambda cpu: (busy[cpu], cpu))
    if current is None or current not in busy:
        return best
    others_here = max(busy[current] - own, 0.0)
    return best if busy[best] + MARGIN < others_here else current


def pin(cpus: frozenset[int]) -> int:
    """Restrict every thread of this process to ``cpus``; how many threads were set."""
    done = 0
    for task in TASKS.iterdir():
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)
            done += 1
    return done


@dataclass
class Affinity:
    """The agent's ``cpu_affinity`` in effect."""

    setting: Setting = "none"
    stat: Callable[[], Stat] = read_stat
    interval: float = FOLLOW_INTERVAL
    cpu: int | None = None  # "auto": the CPU the agent runs on
    allowed: frozenset[int] = field(default_factory=frozenset)

    @property
    def auto(self) -> bool:
        return self.setting == "auto" and self.cpu is not None

    def start(self) -> None:
        """Apply the setting; ConfigError if a CPU list names no CPU this process may use. Where
        the OS refuses (a sandbox may deny sched_setaffinity) or /proc/stat cannot be read, the
        agent runs on as with "none", saying so: placement is an optimisation, never a reason
        not to ship."""
        mode = parse(self.setting)
        if mode == "none":
            return
        if not hasattr(os, "sched_setaffinity") or not TASKS.is_dir():
            log.warning("cpu_affinity %r: not supported on this platform; ignored", self.setting)
            return
        self.allowed = frozenset(os.sched_getaffinity(0))
        if isinstance(mode, frozenset):
            usable = mode & self.allowed
            if not usable:
                raise ConfigError(
                    "cpu_affinity",
                    f"none of CPUs {_text(mode)} is available to this process "
                    f"(it may use {_text(self.allowed)})",
                )
            try:
                pin(usable)
            except OSError as exc:
                self._refused(exc)
                return
            log.info("cpu_affinity: threads run on CPUs %s", _text(usable))
            return
        if len(self.allowed) == 1:
            log.info("cpu_affinity auto: the process may use one CPU only (%s)", *self.allowed)
            return
        try:
            before = self.stat()
            if not self.allowed <= before.keys():
                log.warning(
                    "cpu_affinity auto: /proc/stat does not show CPUs %s as this process sees them"
                    " (a container's own view, as LXCFS gives); placement is left to the OS",
                    _text(self.allowed),
                )
                return
            time.sleep(START_SAMPLE)
            self._move(choose(None, busy_between(before, self.stat()), 0.0, self.allowed))
        except (OSError, ValueError, IndexError) as exc:  # ValueError, IndexError: odd /proc/stat
            self._refused(exc)

    async def follow(self, drain: asyncio.Event) -> None:
        """With "auto": every ``interval`` s, move to a CPU idler than ours. Once ``drain`` is
        set (a stop, a termination notice), give the threads back every CPU they were allowed
        and return: a backlog to ship before the host goes away drains faster when compression
        and TLS can use the other CPUs (bench.run drain: 61.7 MB/s spread, 50.5 on one CPU).
        Never raises for the OS's sake (it runs in the agent's task group): a failure to read
        the load or to move ends the following where the threads are."""
        if not self.auto:
            return
        try:
            outside = await self._follow(drain)
        except (OSError, ValueError, IndexError) as exc:
            log.warning("cpu_affinity auto: stopped following the load (%s)", exc)
            outside = False
        if not drain.is_set():
            await drain.wait()
        if outside:  # someone else placed the threads (taskset, a cpuset change): theirs to keep
            return
        try:
            pin(self.allowed)
        except OSError as exc:
            self._refused(exc)
            return
        self.cpu = None
        log.info("cpu_affinity auto: draining; threads may run on CPUs %s", _text(self.allowed))

    async def _follow(self, drain: asyncio.Event) -> bool:
        """Follow the load until ``drain``; True if it stopped because the threads' affinity was
        changed from outside (then it is left as it is)."""
        before, own_before, at = self.stat(), time.process_time(), time.monotonic()
        while not drain.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain.wait(), self.interval)
            if drain.is_set():
                return False
            actual = frozenset(os.sched_getaffinity(0))
            if self.cpu is None or actual != {self.cpu}:
                log.warning(
                    "cpu_affinity auto: the agent was placed on CPUs %s from outside (an operator,"
                    " a cpuset change, a CPU going offline); it stays there, no longer following",
                    _text(actual),
                )
                self.cpu = None
                return True
            now, own_now, at_now = self.stat(), time.process_time(), time.monotonic()
            own = (own_now - own_before) / max(at_now - at, 1e-9)
            chosen = choose(self.cpu, busy_between(before, now), own, self.allowed)
            if chosen != self.cpu:
                self._move(chosen)
            before, own_before, at = now, own_now, at_now
        return False

    def _refused(self, exc: BaseException) -> None:
        log.warning(
            "cpu_affinity %r: cannot be applied (%s); threads run where the OS puts them",
            self.setting,
            exc,
        )
        self.cpu = None

    def _move(self, cpu: int) -> None:
        threads = pin(frozenset((cpu,)))
        if self.cpu is None:
            log.info("cpu_affinity auto: %d threads run on CPU %d", threads, cpu)
        else:
            log.info("cpu_affinity auto: CPU %d is busy with other work; now on %d", self.cpu, cpu)
        self.cpu = cpu


def _text(cpus: frozenset[int]) -> str:
    """CPUs as a short list, "0-3,6"."""
    parts: list[str] = []
    for cpu in sorted(cpus):
        if parts and cpu - 1 == int(parts[-1].rpartition("-")[2]):
            parts[-1] = f"{parts[-1].partition('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)
