"""Durable small state files: written tmp -> fsync -> rename -> fsync(dir), read defensively.

Every state file the agent or the collector keeps (stream identity, sink cursors, checkpoint
summaries, stream heads) goes through here, so a crash at any instant leaves either the old or
the new content, never a torn mix. Functions here block: call them from a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from agent.errors import StateError

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a regular file may take a short write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file whole."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, orjson.dumps(value, option=orjson.OPT_SORT_KEYS) + b"\n")


def read_json(path: Path) -> Any | None:
    """The JSON content of ``path``; None when it does not exist.

    A stale ``.tmp`` sibling (a crash before the rename) is removed: the rename never happened,
    so the old content is the committed one. Unparseable content raises ``StateError``.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        if tmp.exists():
            tmp.unlink()
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror}") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"state file {path} is not valid JSON: {exc}") from exc


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700; tighten it if it already exists. A file in
    its place, or no permission, is a StateError naming it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise StateError(f"cannot make state directory {path}: {exc.strerror or exc}") from exc
