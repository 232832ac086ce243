"""Process runtime settings: the allocator and the garbage collector."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from agent import runtime
from agent.config import TailsealSinkConfig


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_settings_are_accepted_by_glibc() -> None:
    assert runtime.tune_malloc() is True


# In a child: mallinfo2() after tune_malloc(), holding a body-sized bytes object and after
# freeing it. hblks counts mmapped chunks; keepcost is the free space at the heap's top.
MALLINFO = """
import ctypes, ctypes.util
from agent import runtime
from agent.config import TailsealSinkConfig
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Info
assert runtime.tune_malloc()
before = libc.mallinfo2()
body = bytes(1_500_000)
held = libc.mallinfo2()
del body
freed = libc.mallinfo2()
print(held.hblks - before.hblks, freed.keepcost >= 1_500_000)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_request_body_comes_from_the_heap_and_stays_there_when_freed() -> None:
    """A 1.5 MB body is not mapped for itself (each fresh mapping cost a page fault per 4 KiB
    of it), and freeing it does not give it back to the OS, so the next body reuses it."""
    out = subprocess.run(
        [sys.executable, "-c", MALLINFO], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["0", "True"]


# In a child: a burst of body-sized buffers, each followed by a small allocation that outlives
# it (so the heap's top never frees up), then freed; what the process's resident set lost from
# the burst's peak to after trim_malloc(). Without the trim the freed buffers stay resident (the
# trim threshold only releases the heap's top). Measured from the peak, not from just before the
# trim: where earlier imports (asyncio, msgspec) left free chunks for the small allocations, the
# buffers sit at the heap's top and free() already gives them back.
BURST = """
import os
from agent import runtime
from agent.config import TailsealSinkConfig
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
assert runtime.tune_malloc()
bodies, kept = [], []
for i in range(30):
    bodies.append(b"x" * (1_000_000 + i))
    kept.append(b"y" * (2_000 + i))  # over 512 bytes: from malloc, not pymalloc
peak = resident()
del bodies
assert runtime.trim_malloc()
print(peak - resident())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_an_idle_agent_gives_back_what_a_burst_freed() -> None:
    """30 MB of freed bodies stay resident under the small allocations made after them, until
    trim_malloc (which the agent calls at its first idle heartbeat)."""
    released = int(
        subprocess.run(
            [sys.executable, "-c", BURST], capture_output=True, text=True, check=True
        ).stdout
    )
    assert released > 20 * 2**20, f"{released / 2**20:.1f} MiB released"


def test_gc_thresholds_and_freeze_in_a_fresh_process() -> None:
    """In a child, so this test run's own collector is left as it is."""
    code = (
        "import gc; from agent import runtime; runtime.tune_gc();"
        "print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")[0]
    assert (
        out == f"({runtime.YOUNG_THRESHOLD}, {', '.join(map(str, runtime.OLDER_THRESHOLDS))}) True"
    )


def test_a_default_batch_body_stays_under_the_mmap_threshold() -> None:
    """The sink's body (records, a newline each, the header line) and zstd's input, a copy of
    it, are below the threshold with the default limits, so the heap reuses them: a full batch
    passes max_batch_bytes by its last record only, here a 64 KiB one (a long log line; a
    line near max_line_bytes makes a batch that maps its memory, correct but slower)."""
    sink = TailsealSinkConfig(endpoint="https://127.0.0.1:1")
    last_record, header = 64 * 1024, 4096
    body = sink.max_batch_bytes + last_record + sink.max_batch_records + header
    assert body < runtime.MMAP_THRESHOLD_BYTES
