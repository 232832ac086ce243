"""Interactive shell commands from the profile.d hook (packaging/profile.d/tailseal.sh).

Role: the ``shell`` parser. The hook appends one JSON object per interactive command to a spool
file that a file source tails: ``{"ts", "user", "uid", "tty", "cwd", "cmd", "exit", "session",
"shell", "pid", "event"}``. This maps it to ECS: ``process.command_line``,
``process.working_directory``, ``process.exit_code``, ``process.pid``, ``process.name`` (the
shell), ``process.tty.name``, ``user.name``/``user.id``, ``event.action`` (``shell_command``, or
``shell_hook_tampered`` when the hook reports that its own variables were changed) and
``shell.session``; the hook's time becomes ``ts``.

Invariants: the spool file is written by the users themselves, so every field is untrusted text:
nothing is evaluated, wrong types are skipped, and a non-JSON line is a ``parse_failure``. Never
raises. No state.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from agent.record import Record
from agent.transforms.fields import json_object
from agent.transforms.syslog import iso_to_utc

_ACTIONS = {"command": "shell_command", "tamper": "shell_hook_tampered", "start": "shell_start"}


class ShellParser:
    """Maps hook lines to ECS process/user fields."""

    def __call__(self, record: Record) -> bool:
        data = json_object(record["msg"])
        if data is None:
            return False
        proc: dict[str, Any] = {}
        _copy(data, "cmd", proc, "command_line", str)
        _copy(data, "cwd", proc, "working_directory", str)
        _copy(data, "exit", proc, "exit_code", int)
        _copy(data, "pid", proc, "pid", int)
        _copy(data, "shell", proc, "name", str)
        tty = data.get("tty")
        if isinstance(tty, str):
            proc["tty"] = {"name": tty}
        user: dict[str, Any] = {}
        _copy(data, "user", user, "name", str)
        uid = data.get("uid")
        if isinstance(uid, int | str) and not isinstance(uid, bool):
            user["id"] = str(uid)
        kind = data.get("event", "command")
        action = _ACTIONS.get(kind, "shell_other") if isinstance(kind, str) else "shell_other"
        event: dict[str, Any] = {"category": ["process"], "type": ["start"], "action": action}
        if isinstance(proc.get("exit_code"), int):
            event["outcome"] = "success" if proc["exit_code"] == 0 else "failure"
        ts = data.get("ts")
        stamp = iso_to_utc(ts, UTC) if isinstance(ts, str) else None
        if stamp is not None:
            event["created"] = record.get("ts")
            record["ts"] = stamp
        record["event"] = event
        if proc:
            record["process"] = proc
        if user:
            record["user"] = user
        session = data.get("session")
        if isinstance(session, str | int) and not isinstance(session, bool):
            record["shell"] = {"session": str(session)}
        return True


def _copy(src: dict[str, Any], key: str, dst: dict[str, Any], name: str, kind: type) -> None:
    value = src.get(key)
    if isinstance(value, kind) and not isinstance(value, bool):
        dst[name] = value
    elif kind is int and isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 20:
        dst[name] = int(value)
