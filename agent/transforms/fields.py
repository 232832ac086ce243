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


# Parsed JSON nested deeper than this is not taken apart. The chain's canonical encoding
# (orjson) stops at 255 levels and the record adds its own; real logs stay under ~20 (the depth
# Elasticsearch maps by default), so 64 leaves room without shipping what cannot be hashed.
MAX_JSON_DEPTH = 64


def json_object(text: Any) -> dict[str, Any] | None:
    """``text`` decoded as a JSON object; None when it is not one (the parser's "not mine"),
    or when it nests containers more than ``MAX_JSON_DEPTH`` deep."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    # Each level of nesting needs its own "{" or "[": fewer of them than the limit (the common
    # line, two C-speed counts) cannot be too deep, and only the rest is walked.
    opens = text.count("{") + text.count("[") if isinstance(text, str) else MAX_JSON_DEPTH + 1
    if opens > MAX_JSON_DEPTH and _deeper_than(data, MAX_JSON_DEPTH):
        return None
    return data


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels inside ``value`` (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
