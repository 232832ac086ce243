"""Auth events: who logged in, who became whom, who changed which account.

Role: the second stage of the ``auth`` parser, after the syslog header. ``parse_auth(program,
body, record)`` dispatches on the program name (one dict lookup, so lines of other programs cost
nothing more), sshd bodies on their first letter (only patterns whose first word starts with it
are tried), and sets ECS fields: ``event.category/type/action/outcome``, ``user.name``,
``user.effective.name``, ``user.target.*``, ``group.*``, ``source.ip/port``,
``process.command_line``, ``process.working_directory``; the sudo tty goes to ``process.tty.name``
(ECS has no tty name field).

Invariants: returns whether the body was recognised; an unrecognised body of a known program is
not an error (the record still has its header fields). Never raises on any string. No state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agent.record import Record
from agent.transforms.fields import put

_U = r"(?P<user>.{0,256}?)"
_FROM = r"(?P<ip>[0-9A-Fa-f.:%\w-]{1,64}) port (?P<port>\d{1,5})"
_SSHD = [
    (
        re.compile(
            r"(?P<event>Accepted|Failed) (?P<method>[\w/-]+) for (?P<invalid>invalid user )?"
            + _U
            + r" from "
            + _FROM
            + r"(?: ssh\d?)?(?:: (?P<sig>.*))?$"
        ),
        "login",
    ),
    (re.compile(r"Invalid user " + _U + r" from (?P<ip>\S+)(?: port (?P<port>\d+))?"), "invalid"),
    (
        re.compile(
            r"Did not receive identification string from (?P<ip>\S+)(?: port (?P<port>\d+))?"
        ),
        "dropped",
    ),
    (
        re.compile(
            r"(?:Received disconnect|Disconnected) from (?:(?:authenticating |invalid )?user "
            + _U
            + r" )?"
            + _FROM
        ),
        "disconnect",
    ),
    (
        re.compile(
            r"Connection (?P<how>closed|reset) by (?:(?:authenticating |invalid )?user "
            + _U
            + r" )?"
            + _FROM
        ),
        "closed",
    ),
    (
        re.compile(r"Connection from " + _FROM + r" on (?P<lip>\S+) port (?P<lport>\d+)"),
        "connect",
    ),
]
# The letter each pattern's first word starts with: a body is tried only against the patterns
# of its own first letter, in the order of _SSHD.
_SSHD_FIRST = {
    "login": "AF",
    "invalid": "I",
    "dropped": "D",
    "disconnect": "RD",
    "closed": "C",
    "connect": "C",
}
_NO_USER = frozenset(("dropped", "connect"))
_SSHD_EVENTS = {  # kind -> event.category, event.type, event.action, event.outcome
    "invalid": ("authentication", "info", "invalid_user", "failure"),
    "dropped": ("network", "connection", "ssh_dropped_connection", "failure"),
    "connect": ("network", "connection", "ssh_connection", "success"),
    "disconnect": ("session", "end", "ssh_disconnect", "unknown"),
    "closed": ("session", "end", "ssh_closed", "unknown"),
}
_SSHD_BY_FIRST = {c: [(p, k) for p, k in _SSHD if c in _SSHD_FIRST[k]] for c in "AFIDRC"}
_PAM = re.compile(r"pam_(?P<mod>\w+)\((?P<svc>[^:()]+):(?P<kind>\w+)\): (?P<rest>.*)", re.S)
_PAM_SESSION = re.compile(
    r"session (?P<state>opened|closed) for user (?P<user>[^\s(]+)(?:\(uid=\d+\))?"
    r"(?: by (?P<by>[^\s(]*)(?:\(uid=(?P<uid>\d+)\))?)?"
)
_PAM_KV = re.compile(r"(\w+)=(\S*)")
_SUDO_KEYS = frozenset(("TTY", "PWD", "USER", "GROUP", "ENV", "CHROOT", "CWD"))
_SUDO = re.compile(r"\s*(?P<user>\S+) : (?P<rest>.*)", re.S)
_NEW_USER = re.compile(
    r"new user: name=(?P<name>[^,]+), UID=(?P<uid>\d+), GID=(?P<gid>\d+), home=(?P<home>[^,]*),"
    r" shell=(?P<shell>[^,]*)"
)
_NEW_GROUP = re.compile(
    r"(?:new group|group added to \S+): name=(?P<name>[^,]+)(?:, GID=(?P<gid>\d+))?"
)
_QUOTED = re.compile(r"'([^']*)'")
_LOGIND = re.compile(
    r"(?:New session (?P<new>\S+) of user (?P<user>[^\s.]+)|Removed session (?P<removed>[^\s.]+)"
    r"|Session (?P<out>\S+) logged out)"
)
_SU = re.compile(
    r"(?:(?P<fail>FAILED SU|FAILED su)|Successful su)? ?(?:for (?P<to1>\S+) by (?P<by1>\S+)"
    r"|\(to (?P<to2>[^)]+)\) (?P<by2>\S+) on (?P<tty>\S+))"
)


def _node(parent: dict[str, object], key: str) -> dict[str, object]:
    """``parent[key]``, a dict, created (or replacing a non-dict) the way ``put`` does."""
    child = parent.get(key)
    if not isinstance(child, dict):
        child = parent[key] = {}
    return child


def _system_auth(record: Record, name: str) -> dict[str, object]:
    """``record["system"]["auth"][name]``, created on the way like ``put``."""
    if "system" not in record:  # the usual case: the whole path at once
        node: dict[str, object] = {}
        record["system"] = {"auth": {name: node}}
        return node
    return _node(_node(_node(record, "system"), "auth"), name)


def _event(record: Record, category: str, etype: str, action: str, outcome: str) -> None:
    event = record.get("event")
    if not isinstance(event, dict):
        event = record["event"] = {}
    event["category"] = [category]
    event["type"] = [etype]
    event["action"] = action
    event["outcome"] = outcome


def _source(record: Record, ip: str | None, port: str | None) -> None:
    if ip:
        record["source"] = {"ip": ip, "port": int(port)} if port else {"ip": ip}


def _sshd(body: str, record: Record) -> bool:
    if body.startswith("pam_"):
        return _pam(body, record)
    for pattern, kind in _SSHD_BY_FIRST.get(body[:1], ()):
        m = pattern.match(body)
        if m is None:
            continue
        if kind == "login":  # the commonest sshd line: its groups in one call, not by name
            _login(m.groups(), record)
        else:
            ip, port = m.group("ip", "port")  # every pattern has both (groupdict costs more)
            _source(record, ip, port)
            if kind not in _NO_USER and (user := m["user"]):
                _node(record, "user")["name"] = user
            _event(record, *_SSHD_EVENTS[kind])
        if body.endswith("[preauth]"):
            _system_auth(record, "ssh")["preauth"] = True
        return True
    return False


def _login(groups: tuple[str | Any, ...], record: Record) -> None:
    """An "Accepted/Failed <method> for ..." line: the groups of its pattern, in order."""
    event, method, invalid, user, ip, port, sig = groups
    _source(record, ip, port)
    if user:
        _node(record, "user")["name"] = user
    ok = event == "Accepted"
    _event(
        record,
        "authentication",
        "start" if ok else "info",
        "ssh_login",
        "success" if ok else "failure",
    )
    ssh = _system_auth(record, "ssh")
    ssh["method"] = method
    if sig:
        ssh["signature"] = sig
    if invalid:
        ssh["invalid_user"] = True


def _sudo(body: str, record: Record) -> bool:
    if body.startswith("pam_"):
        return _pam(body, record)
    m = _SUDO.match(body)
    if m is None:
        return False
    user, rest = m.groups()
    _node(record, "user")["name"] = user
    command = None
    at = rest.find("COMMAND=")
    if at >= 0:
        command, rest = rest[at + 8 :], rest[:at]
    fields: dict[str, str] = {}
    errors: list[str] = []
    for part in rest.split(" ; "):
        text = part.strip()
        key, eq, value = text.partition("=")
        if eq and key in _SUDO_KEYS:
            fields[key] = value
        elif text:
            errors.append(text)
    error = " ; ".join(errors)
    if command is not None:
        fields["COMMAND"] = command
    elif not error:
        return False
    _sudo_fields(record, fields)
    if error:
        _node(record, "error")["message"] = error
    _event(record, "process", "start", "sudo_command", "failure" if error else "success")
    return True


def _sudo_fields(record: Record, fields: dict[str, str]) -> None:
    tty, pwd, command = fields.get("TTY"), fields.get("PWD"), fields.get("COMMAND")
    if tty is not None or pwd is not None or command is not None:
        process = _node(record, "process")
        if tty is not None:
            _node(process, "tty")["name"] = tty
        if pwd is not None:
            process["working_directory"] = pwd
        if command is not None:
            process["command_line"] = command
    if "USER" in fields:
        _node(_node(record, "user"), "effective")["name"] = fields["USER"]
    if "GROUP" in fields:
        _node(_node(record, "group"), "effective")["name"] = fields["GROUP"]


def _pam(body: str, record: Record) -> bool:
    m = _PAM.match(body)
    if m is None:
        return False
    module, service, _, rest = m.groups()
    pam = _system_auth(record, "pam")
    pam["module"] = f"pam_{module}"
    pam["service"] = service
    s = _PAM_SESSION.match(rest)
    if s is not None:
        state, name, by, uid = s.groups()
        opened = state == "opened"
        _event(
            record,
            "session",
            "start" if opened else "end",
            "session_opened" if opened else "session_closed",
            "success",
        )
        user = _node(record, "user")
        if by:
            user["name"] = by
            _node(user, "effective")["name"] = name
            if uid:
                user["id"] = uid
        else:
            user["name"] = name
        return True
    if rest.startswith("authentication failure"):
        kv = dict(_PAM_KV.findall(rest))
        name = kv.get("user") or kv.get("ruser") or kv.get("logname")
        if name:
            _node(record, "user")["name"] = name
        _source(record, kv.get("rhost"), None)
        _event(record, "authentication", "info", "authentication_failure", "failure")
        return True
    if rest.startswith(("password changed for ", "password for ")):
        put(record, "user.target.name", rest.split()[-1].strip("'"))
        _event(record, "iam", "change", "password_changed", "success")
        return True
    return False


def _account(body: str, record: Record) -> bool:
    if body.startswith("pam_"):
        return _pam(body, record)
    m = _NEW_USER.match(body)
    if m is not None:
        put(record, "user.target.name", m["name"])
        put(record, "user.target.id", m["uid"])
        put(record, "user.target.group.id", m["gid"])
        put(record, "user.target.home", m["home"])
        put(record, "user.target.shell", m["shell"])
        _event(record, "iam", "creation", "user_created", "success")
        return True
    g = _NEW_GROUP.match(body)
    if g is not None:
        put(record, "group.name", g["name"])
        if g["gid"]:
            put(record, "group.id", g["gid"])
        _event(record, "iam", "creation", "group_created", "success")
        return True
    return _account_change(body, record)


_CHANGES: list[tuple[str, str, str, str]] = [
    # body prefix, action, ECS event.type, which quoted names mean (user/group)
    ("delete user ", "user_deleted", "deletion", "user"),
    ("removed group ", "group_deleted", "deletion", "group"),
    ("removed shadow group ", "group_deleted", "deletion", "group"),
    ("group ", "group_deleted", "deletion", "group"),  # groupdel: group 'x' removed
    ("add ", "user_added_to_group", "change", "user,group"),
    ("delete ", "user_removed_from_group", "change", "user,group"),
    ("change user ", "user_changed", "change", "user"),
    ("lock user ", "user_locked", "change", "user"),
    ("unlock user ", "user_unlocked", "change", "user"),
    ("changed password expiry for ", "password_expiry_changed", "change", "user"),
]


def _account_change(body: str, record: Record) -> bool:
    for prefix, action, etype, names in _CHANGES:
        if not body.startswith(prefix):
            continue
        quoted = _QUOTED.findall(body)
        if not quoted and names != "user":
            return False
        if names == "group" and quoted:
            put(record, "group.name", quoted[0])
        elif names == "user,group" and len(quoted) >= 2:
            put(record, "user.target.name", quoted[0])
            put(record, "group.name", quoted[1])
        else:
            words = body[len(prefix) :].split(maxsplit=1)
            if not quoted and not words:
                return False
            put(record, "user.target.name", quoted[0] if quoted else words[0].rstrip("."))
        if action == "user_changed" and "shell" in body:
            action = "user_shell_changed"  # noqa: PLW2901 - the refined name of this match
        _event(record, "iam", etype, action, "success")
        return True
    return False


def _su(body: str, record: Record) -> bool:
    if body.startswith("pam_"):
        return _pam(body, record)
    m = _SU.match(body)
    if m is None:
        return False
    put(record, "user.name", m["by1"] or m["by2"])
    put(record, "user.effective.name", m["to1"] or m["to2"])
    if m["tty"]:
        put(record, "process.tty.name", m["tty"])
    _event(record, "authentication", "start", "su", "failure" if m["fail"] else "success")
    return True


def _logind(body: str, record: Record) -> bool:
    m = _LOGIND.match(body)
    if m is None:
        return False
    if m["new"]:
        put(record, "user.name", m["user"])
        _event(record, "session", "start", "logind_session_new", "success")
    else:
        _event(record, "session", "end", "logind_session_removed", "success")
    put(record, "system.auth.session.id", m["new"] or m["removed"] or m["out"])
    return True


def _pam_only(body: str, record: Record) -> bool:
    return body.startswith("pam_") and _pam(body, record)


PROGRAMS: dict[str, Callable[[str, Record], bool]] = {
    "sshd": _sshd,
    "sshd-session": _sshd,
    "sudo": _sudo,
    "su": _su,
    "useradd": _account,
    "userdel": _account,
    "usermod": _account,
    "groupadd": _account,
    "groupdel": _account,
    "groupmod": _account,
    "gpasswd": _account,
    "passwd": _pam_only,
    "chpasswd": _pam_only,
    "chage": _account,
    "systemd-logind": _logind,
    "login": _pam_only,
    "cron": _pam_only,
    "CRON": _pam_only,
    "systemd": _pam_only,
}


# For the compiled batch parser (``transforms._speedups.parse_batch``): which handler a program
# has, as 1 (sshd), 2 (sudo), 3 (PAM only), 4 (su), 5 (systemd-logind) or 0 (another: always
# parsed here). A program not listed is PAM only, as ``parse_auth`` has it.
_CODES: dict[Callable[[str, Record], bool], int] = {
    _sshd: 1,
    _sudo: 2,
    _pam_only: 3,
    _su: 4,
    _logind: 5,
}
PROGRAM_CODES = {name: _CODES.get(handler, 0) for name, handler in PROGRAMS.items()}


def parse_auth(program: str | None, body: str, record: Record) -> bool:
    """Set the auth event fields of ``record`` from ``body``; whether it was recognised."""
    handler = PROGRAMS.get(program or "")
    if handler is not None:
        return handler(body, record)
    return _pam_only(body, record)
