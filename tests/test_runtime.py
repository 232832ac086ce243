"""Process runtime settings: the allocator and the garbage collector."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from agent import runtime


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_settings_are_accepted_by_glibc() -> None:
    assert runtime.tune_malloc() is True


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
