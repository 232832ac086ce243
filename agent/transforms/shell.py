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
raises.

State: a one-minute timestamp cache (``IsoTimes``) per parser, owned by the task running the chain.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from agent.record import Record
from agent.transforms.fields import json_object
from agent.transforms.syslog import IsoTimes

_ACTIONS = {"command": "shell_command", "tamper": "shell_hook_tampered", "start": "shell_start"}


class ShellParser:
    """Maps hook lines to ECS process/user fields."""

    def __init__(self) -> None:
        self._times = IsoTimes()

    def __call__(self, record: Record) -> bool:
        data = json_object(record["msg"])
        if data is None:
            return False
        get = data.get
        proc: dict[str, Any] = {}
        cmd, cwd, shell, tty = get("cmd"), get("cwd"), get("shell"), get("tty")
        if isinstance(cmd, str):
            proc["command_line"] = cmd
        if isinstance(cwd, str):
            proc["working_directory"] = cwd
        _integer(get("exit"), proc, "exit_code")
        _integer(get("pid"), proc, "pid")
        if isinstance(shell, str):
            proc["name"] = shell
        if isinstance(tty, str):
            proc["tty"] = {"name": tty}
        user: dict[str, Any] = {}
        name, uid = get("user"), get("uid")
        if isinstance(name, str):
            user["name"] = name
        if isinstance(uid, (int, str)) and not isinstance(uid, bool):
            user["id"] = str(uid)
        kind = get("event", "command")
        action = _ACTIONS.get(kind, "shell_other") if isinstance(kind, str) else "shell_other"
        event: dict[str, Any] = {"category": ["process"], "type": ["start"], "action": action}
        code = proc.get("exit_code")
        if code is not None:
            event["outcome"] = "success" if code == 0 else "failure"
        ts = get("ts")
        stamp = self._times.to_utc(ts, UTC) if isinstance(ts, str) else None
        if stamp is not None:
            event["created"] = record.get("ts")
            record["ts"] = stamp
        record["event"] = event
        if proc:
            record["process"] = proc
        if user:
            record["user"] = user
        session = get("session")
        if isinstance(session, (str, int)) and not isinstance(session, bool):
            record["shell"] = {"session": str(session)}
        return True


def _integer(value: object, dst: dict[str, Any], name: str) -> None:
    """``dst[name]``: an integer, or the text of one (the hook writes what the shell gave it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        dst[name] = value
    elif isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 20:
        dst[name] = int(value)
