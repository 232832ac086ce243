"""The optional C modules (``agent/_speedups.c``, ``agent/sources/_speedups.c``,
``agent/transforms/_speedups.c``), or None.

They are built by ``pip install`` where a C compiler and the OpenSSL and zlib headers are at hand,
and skipped (the install goes on) where not. Their functions stand in for Python ones that stay
as the reference and the fallback: ``buffer.chain.link_py``, ``buffer.segment.parse_run_py``,
``collector.batch.verify_wire_py``, ``sources.tailed.cut_plain_py`` and
``transforms.syslog.split_bsd_py``/``split_iso_py``, and the ``syslog``/``auth`` parsers' commonest
lines (``transforms._speedups.parse_batch``, for the chain's parse of a record at a time, and
``encode_run``, which writes a run's lines' records as JSON without making them). Setting
``TAILSEAL_PURE_PYTHON`` (to anything) runs the Python ones even where they were built.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """The compiled module ``name``; None where it was not built or TAILSEAL_PURE_PYTHON is set."""
    if os.environ.get("TAILSEAL_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


MODULE = load("agent._speedups")
