"""cpu_affinity: the setting's forms, the load figures read from /proc/stat, and the policy that
chooses and follows one CPU. (tests/e2e/test_affinity.py checks a real agent's threads.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent import affinity
from agent.affinity import MARGIN, busy_between, choose, parse, read_stat
from agent.config import parse_agent_config
from agent.errors import ConfigError
from tests.test_config import VALID


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("none", "none"),
        ("auto", "auto"),
        ("0", frozenset({0})),
        ("2,3", frozenset({2, 3})),
        ("0-3", frozenset({0, 1, 2, 3})),
        ("0-1,6,8-9", frozenset({0, 1, 6, 8, 9})),
        ("5-5", frozenset({5})),
        ([1, 0, 1], frozenset({0, 1})),
    ],
)
def test_settings_that_parse(setting: str | list[int], expected: object) -> None:
    assert parse(setting) == expected


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("", "not 'none', 'auto' or a CPU list"),
        ("Auto", "not 'none', 'auto' or a CPU list"),
        ("0,", "not 'none', 'auto' or a CPU list"),
        ("0,,1", "not 'none', 'auto' or a CPU list"),
        ("-1", "not 'none', 'auto' or a CPU list"),
        ("0 1", "not 'none', 'auto' or a CPU list"),
        ("\u0661", "not 'none', 'auto' or a CPU list"),  # a digit to int(), not to us
        ("3-1", "runs backwards"),
        ("4096", "past the highest CPU number"),
        ("0-99999999999999999999", "past the highest CPU number"),
        ([], "empty CPU list"),
        ([-1], "from 0 to 4095"),
        ([4096], "from 0 to 4095"),
    ],
)
def test_settings_refused_say_why(setting: str | list[int], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse(setting)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('cpu_affinity = "auto"', "auto"),
        ('cpu_affinity = "0-1"', "0-1"),
        ("cpu_affinity = [0, 1]", [0, 1]),
        ("", "none"),
    ],
)
def test_config_takes_the_setting(line: str, expected: object) -> None:
    config = parse_agent_config(tomllib.loads(line + "\n" + VALID), {})
    assert config.cpu_affinity == expected


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('cpu_affinity = "fast"', "cpu_affinity: 'fast' is not 'none', 'auto' or a CPU list"),
        ("cpu_affinity = []", "cpu_affinity: an empty CPU list"),
        ("cpu_affinity = 3", "cpu_affinity"),
        ('cpu_affinity = ["0"]', "cpu_affinity"),
    ],
)
def test_config_refuses_bad_settings_naming_the_key(line: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_agent_config(tomllib.loads(line + "\n" + VALID), {})


def test_an_environment_override_sets_it() -> None:
    config = parse_agent_config(tomllib.loads(VALID), {"TAILSEAL_CPU_AFFINITY": "[2, 3]"})
    assert config.cpu_affinity == [2, 3]


def test_read_stat_takes_each_online_cpu(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  10 0 10 100 5 0 0 0 0 0\n"
        "cpu0 4 1 5 50 2 1 1 1 7 0\n"  # guest (7) is already in user: not counted twice
        "cpu3 1 0 0 90 0 0 0 0 0 0\n"  # CPUs 1-2 offline: ids are the names, not positions
        "intr 12345 1 2\n"
        "ctxt 999\n"
    )
    assert read_stat(str(stat)) == {0: (13, 65), 3: (1, 91)}


def test_read_stat_reads_this_machine() -> None:
    stat = read_stat()
    assert stat
    assert all(0 <= busy <= total for busy, total in stat.values())


def test_busy_between_is_the_share_of_each_interval() -> None:
    before = {0: (100, 1000), 1: (50, 1000), 2: (0, 0)}
    after = {0: (150, 1100), 1: (50, 1100), 2: (0, 0), 3: (5, 10)}
    assert busy_between(before, after) == {0: 0.5, 1: 0.0, 2: 0.0}


ALL = frozenset({0, 1, 2, 3})


@pytest.mark.parametrize(
    ("current", "busy", "own", "expected"),
    [
        (None, {0: 0.9, 1: 0.2, 2: 0.5, 3: 0.2}, 0.0, 1),  # start: least busy, lowest on a tie
        (None, {0: 0.0, 1: 0.0}, 0.0, 0),
        (None, {7: 0.0}, 0.0, 0),  # nothing known about the allowed CPUs: the lowest
        (1, {0: 0.1, 1: 1.0, 2: 0.6, 3: 0.6}, 0.95, 1),  # busy with us alone: stay
        (1, {0: 0.1, 1: 1.0, 2: 0.6, 3: 0.6}, 0.3, 0),  # others take 0.7 here: move
        (1, {0: 0.3, 1: 0.8, 2: 0.9, 3: 0.9}, 0.3, 1),  # 0.3 + margin is not under 0.5
        (2, {0: 0.0, 1: 0.0, 3: 0.0}, 0.5, 0),  # our CPU went offline: the least busy
    ],
)
def test_choose_moves_only_to_a_clearly_idler_cpu(
    current: int | None, busy: dict[int, float], own: float, expected: int
) -> None:
    assert choose(current, busy, own, ALL) == expected


def test_choose_stays_within_the_allowed_cpus() -> None:
    busy = {0: 0.0, 1: 1.0, 2: 1.0}
    assert choose(1, busy, 0.0, frozenset({1, 2})) == 1
    assert choose(None, busy, 0.0, frozenset({2})) == 2
    assert MARGIN > 0


def test_cpu_lists_are_written_short() -> None:
    assert affinity._text(frozenset({0, 1, 2, 3, 6, 8, 9})) == "0-3,6,8-9"
    assert affinity._text(frozenset({5})) == "5"


def run_script(script: str, *cpus: int) -> list[str]:
    """Run ``script`` in a fresh interpreter (its pinning must not touch the test process)
    with ``cpus`` as arguments; its output lines."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, cpus)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


# Scripts wait for what the follower says (its log lines), not for time to pass.
SAID = """
class Said(logging.Handler):
    def __init__(self, words, event):
        super().__init__()
        self.words, self.event = words, event

    def emit(self, record):
        if self.words in record.getMessage():
            self.event.set()  # the follower logs from the event loop's own thread
"""

FOLLOW = (
    """
import asyncio, itertools, logging, os, sys, threading
from agent.affinity import Affinity
"""
    + SAID
    + """

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
a, b = int(sys.argv[1]), int(sys.argv[2])
readings = [
    {a: (0, 100), b: (0, 100)},
    {a: (0, 200), b: (100, 200)},  # at start: b busy, a idle
    {a: (0, 300), b: (100, 300)},
    {a: (100, 400), b: (100, 400)},  # then others keep a busy while b idles
]
stat = itertools.chain(readings, itertools.repeat(readings[-1]))
affinity = Affinity("auto", stat=lambda: next(stat), interval=0.01)
affinity.start()
print("started on", affinity.cpu, flush=True)
worker = threading.Thread(target=threading.Event().wait, args=(30,), daemon=True)
worker.start()  # a thread from before the move: it moves too

def threads() -> str:
    tasks = os.listdir("/proc/self/task")
    on = sorted({c for t in tasks for c in os.sched_getaffinity(int(t))})
    return f"threads {len(tasks)} on {on}"

async def main() -> None:
    drain, moved = asyncio.Event(), asyncio.Event()
    logging.getLogger("agent.affinity").addHandler(Said("now on", moved))
    follow = asyncio.create_task(affinity.follow(drain))
    await asyncio.wait_for(moved.wait(), 30)
    print("moved:", threads(), flush=True)
    drain.set()
    await follow
    print("drained:", threads(), flush=True)

asyncio.run(main())
"""
)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_auto_follows_to_an_idler_cpu_with_every_thread_and_lets_go_to_drain() -> None:
    """The real start and follow loop, fed /proc/stat readings in which the first CPU turns busy
    with other work: the agent's threads, older ones included, move to the idle one; in drain
    mode they may run on every CPU again."""
    cpus = sorted(os.sched_getaffinity(0))
    a, b = cpus[0], cpus[-1]
    out = run_script(FOLLOW, a, b)
    assert f"cpu_affinity auto: 1 threads run on CPU {a}" in out
    assert f"started on {a}" in out
    assert f"cpu_affinity auto: CPU {a} is busy with other work; now on {b}" in out
    assert f"moved: threads 2 on [{b}]" in out
    # drain mode: the threads get back every CPU the process was allowed at start
    assert out[-1] == f"drained: threads 2 on {cpus}"
    assert (
        f"cpu_affinity auto: draining; threads may run on CPUs {affinity._text(frozenset(cpus))}"
        in out
    )


def test_auto_runs_on_unpinned_when_the_load_cannot_be_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def unreadable() -> affinity.Stat:
        raise PermissionError(13, "Permission denied", "/proc/stat")

    before = os.sched_getaffinity(0)
    chosen = affinity.Affinity("auto", stat=unreadable)
    with caplog.at_level("WARNING", logger="agent.affinity"):
        chosen.start()  # no exception: placement is an optimisation
    assert not chosen.auto
    assert os.sched_getaffinity(0) == before
    assert "cannot be applied" in caplog.text
    assert "Permission denied" in caplog.text


FAILING_FOLLOW = """
import asyncio, itertools, logging, os, sys
from agent.affinity import Affinity

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
a, b = int(sys.argv[1]), int(sys.argv[2])
readings = iter([{a: (0, 100), b: (0, 100)}, {a: (0, 200), b: (100, 200)}])

def stat():
    try:
        return next(readings)
    except StopIteration:
        raise OSError(5, "Input/output error") from None

affinity = Affinity("auto", stat=stat, interval=0.01)
affinity.start()

async def main() -> None:
    drain = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, drain.set)
    await affinity.follow(drain)  # must not raise: it runs in the agent's task group

asyncio.run(main())
print("allowed", sorted(os.sched_getaffinity(0)))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_a_failing_load_reading_ends_the_following_not_the_agent() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    out = run_script(FAILING_FOLLOW, cpus[0], cpus[-1])
    assert "cpu_affinity auto: stopped following the load ([Errno 5] Input/output error)" in out
    assert out[-1] == f"allowed {cpus}"  # the drain still gave every CPU back


OUTSIDE = (
    """
import asyncio, itertools, logging, os, sys
from agent.affinity import Affinity
"""
    + SAID
    + """

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
a, b = int(sys.argv[1]), int(sys.argv[2])
quiet = {a: (0, 100), b: (0, 100)}
readings = itertools.chain([quiet, {a: (0, 200), b: (100, 200)}], itertools.repeat(quiet))
affinity = Affinity("auto", stat=lambda: next(readings), interval=0.01)
affinity.start()

async def main() -> None:
    drain, noticed = asyncio.Event(), asyncio.Event()
    logging.getLogger("agent.affinity").addHandler(Said("from outside", noticed))
    follow = asyncio.create_task(affinity.follow(drain))
    os.sched_setaffinity(0, {b})  # an operator's taskset, a cpuset change
    await asyncio.wait_for(noticed.wait(), 30)
    drain.set()
    await follow

asyncio.run(main())
print("after the drain", sorted(os.sched_getaffinity(0)))
"""
)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_auto_leaves_a_placement_made_from_outside_alone() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    a, b = cpus[0], cpus[-1]
    out = run_script(OUTSIDE, a, b)
    assert f"cpu_affinity auto: 1 threads run on CPU {a}" in out
    assert any(f"placed on CPUs {b} from outside" in line for line in out), out
    assert out[-1] == f"after the drain [{b}]"  # not given every CPU back: not ours to undo


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell")
def test_auto_leaves_placement_to_the_os_where_proc_stat_numbers_cpus_its_own_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = os.sched_getaffinity(0)
    renumbered = affinity.Affinity("auto", stat=lambda: {0: (0, 100)})  # as LXCFS shows CPU 0
    with caplog.at_level("WARNING", logger="agent.affinity"):
        renumbered.start()
    assert not renumbered.auto
    assert os.sched_getaffinity(0) == before
    assert "does not show CPUs" in caplog.text
