"""ECS field access on records: set nested fields by dotted name, add tags.

Records carry parsed fields as nested dicts (``{"user": {"name": "root"}}``), the way ECS
documents nest them, so ``user.name`` is ``record["user"]["name"]``. The helpers here mutate the
record they are given; a transform owns the record while it runs (no other task holds it), so no
copying is needed. No module state.
"""

from __future__ import annotations

from typing import Any

import orjson

from agent.record import Record


def put(record: Record, dotted: str, value: Any) -> None:
    """Set ``record[a][b][c] = value`` for ``dotted = "a.b.c"``, creating the dicts on the way."""
    *parents, leaf = dotted.split(".")
    node = record
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def get(record: Record, dotted: str) -> Any:
    """The value at ``dotted``, or ``None`` when any part of the path is missing."""
    node: Any = record
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def tag(record: Record, name: str) -> None:
    """Add ``name`` to the record's ``tags`` once."""
    tags = record.get("tags")
    if tags is None:
        record["tags"] = [name]
    elif name not in tags:
        tags.append(name)


def json_object(text: Any) -> dict[str, Any] | None:
    """``text`` decoded as a JSON object; None when it is not one (the parser's "not mine")."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
