"""Process-wide runtime settings for the long-running commands (``run``, ``collector``).

The cyclic garbage collector: records, frames and batches are acyclic, yet CPython's default
thresholds (a young collection every 700 allocations, promoted survivors re-scanned in full
collections) make it walk every in-flight record again and again — at tens of thousands of
records per second that was the largest single cost of building records (bench/, issue #11).
Everything alive once startup is done (modules, config, compiled patterns) is frozen out of
collection, and the young generation is allowed to grow large before it is scanned. Cycles are
still collected: only less often.
"""

from __future__ import annotations

import gc

# A young collection per this many net container allocations (CPython's default is 700).
YOUNG_THRESHOLD = 50_000
# Collections of the older generations per collection of the younger one (defaults 10, 10).
OLDER_THRESHOLDS = (20, 50)


def tune_gc() -> None:
    """Freeze what startup allocated and raise the collection thresholds (idempotent)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
