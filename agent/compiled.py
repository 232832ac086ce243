"""The optional C module ``agent._speedups`` (``agent/_speedups.c``), or None.

It is built by ``pip install`` where a C compiler and the OpenSSL and zlib headers are at hand,
and skipped (the install goes on) where not. Its functions stand in for Python ones that stay
as the reference and the fallback: ``buffer.chain.link_py``, ``buffer.segment.parse_run_py``
and ``collector.batch.verify_wire_py``. Setting
``TAILSEAL_PURE_PYTHON`` (to anything) runs the Python ones even where it was built.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("TAILSEAL_PURE_PYTHON"):
        return None
    try:
        from agent import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _speedups
    return module


MODULE = _load()
