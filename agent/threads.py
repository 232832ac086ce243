"""Hand-offs from the event loop to worker threads that a cancellation cannot outrun.

``asyncio.to_thread`` returns at once when the awaiting task is cancelled, while the thread goes
on running: a file source, a journald decoder or a sink's buffer reader could then be mutated
by a worker after its owner moved on (repositioned the reader, closed the descriptors, returned
from ``run()``). ``in_thread`` is ``to_thread`` whose cancellation waits for the thread to finish
before it propagates. No state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def in_thread(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args, **kwargs)`` in a worker thread; if cancelled, returns only once it ended."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise
