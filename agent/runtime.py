"""Process-wide runtime settings for the long-running commands (``run``, ``collector``).

The cyclic garbage collector: records, frames and batches are acyclic, yet CPython's default
thresholds (a young collection every 700 allocations, promoted survivors re-scanned in full
collections) make it walk in-flight records again and again. Everything alive once startup is
done (modules, config, compiled patterns) is frozen out of collection, and the young generation
may grow large before it is scanned. Cycles are still collected: only less often.

The C allocator (glibc): every thread that allocates gets its own malloc arena (up to 8 per
core), and memory freed into an arena rarely goes back to the OS. The agent hands reads, parsing,
commits and compression to worker threads, so under load its RSS grew by an arena per thread
(bench/: peak RSS 190-280 MB on raw lines; 77 MB with one arena). One arena, and fixed mmap and
trim thresholds, so how much freed memory the heap keeps is bounded rather than raised by each
big buffer. Elsewhere (musl) this is a no-op.

The mmap threshold is 2 MiB: a request body, its TLS records and a read chunk (each up to about
``max_batch_bytes``, 1.5 MiB by default, below the threshold on purpose) are taken from the heap
and reused there. At 256 KiB they were each
mapped fresh and unmapped when freed, and the agent took a page fault per 4 KiB of every copy of
a body (zstd's pieces joined, aiohttp's join with the headers, the TLS bytes): 53,000 faults/s,
31% of its CPU in the kernel at 230,000 raw lines/s. The heap gives memory back on its own only
once 4 MiB lie free at its top (the trim threshold); freed buffers below a live allocation stay
resident, so after a burst an agent could keep most of its peak. ``trim_malloc`` gives back
every free page of the heap: the agent calls it when it goes idle (with its heartbeat).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

# A young collection per this many net container allocations (CPython's default is 700).
YOUNG_THRESHOLD = 50_000
# Collections of the older generations per collection of the younger one (defaults 10, 10).
OLDER_THRESHOLDS = (20, 50)

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 2 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024


def tune_gc() -> None:
    """Freeze what startup allocated and raise the collection thresholds (idempotent)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


@functools.cache
def _libc_function(name: str) -> Any:
    """The C library's function ``name`` (ctypes), or None where there is none (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None
    return getattr(libc, name, None)


def tune_malloc() -> bool:
    """One malloc arena, fixed mmap and trim thresholds (glibc); False where that is not possible.
    Call before worker threads start: arenas are made when a thread first allocates."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = all(
        mallopt(param, value)
        for param, value in (
            (M_ARENA_MAX, 1),
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        )
    )
    if not done:
        log.debug("mallopt refused the allocator settings")
    return done


def trim_malloc() -> bool:
    """Give every free page of the heap back to the OS (glibc's ``malloc_trim(0)``); blocking
    (it walks the heap: milliseconds). False where there is no such call."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
