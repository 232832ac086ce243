"""auditd: record parsing, multi-record coalescing and lost-record detection.

Role: the ``auditd`` parser. Every line of audit.log stays its own record (so every line is
durable with its checkpoint, DESIGN.md contract 2) and gets ``auditd.record_type``,
``auditd.sequence``, ``event.id`` (``ts:seq``), ``ts`` (the audit time) and ``auditd.data``: the
key=value fields with quotes removed, hex-encoded values decoded, the nested ``msg='...'`` of
user-space records flattened, ``subj`` split into ``subj_user/role/domain/level/category``, SELinux
``avc: denied { perm }`` into ``seresult``/``seperms``, ``res``/``success`` into ``result``
(``success``/``fail``), ``auid``/``ses`` 4294967295 into ``unset`` and ``?``/``(null)`` dropped, as
go-libaudit normalises them. The ENRICHED format's fields after the 0x1d separator go to
``auditd.enriched``. Not normalised: syscall/arch/errno/signal names (the ENRICHED format carries
the names), and ``saddr`` stays hex. In ``msg`` too, every hex value that was decoded is shown
decoded and quoted (``a1="--password=..."``, NULs of ``proctitle`` as spaces), so that redaction,
which runs on ``msg`` after parsing, sees a secret the line carried in hex.

Command arguments: when the source redacts, a command's EXECVE arguments (with those of the
event's earlier EXECVE records before them) and a PROCTITLE's NUL-separated argv are redacted as
one command line (``Redactor.argv``) before anything else sees them, in ``auditd.data`` and in
``msg`` alike, and the record is tagged ``redacted``: ``a0="mysql" a1="-pS3cret"`` holds a secret
that neither string shows alone. The event's ``process.args``, ``command_line`` and ``title`` are
made from the redacted values (the event is tagged ``redacted`` too).

Coalescing: the records of one event (same ``audit(ts:seq)``) are also gathered by the reassembler
into one extra ``audit_event`` record with ECS fields (``process.*`` with EXECVE arguments
reassembled, including ``aN[i]`` chunks, ``user.*``, ``file.path``, ``event.outcome``). An event
is complete on EOE, on a single-record (user-space) type, after ``timeout`` seconds or when more
than ``max_in_flight`` events are open. A gap in the sequence (modulo 2**32, so a wrap is not a
gap) that no open event fills produces an ``audit_lost`` record with the count.

Modules: a record's fields are parsed and shown by ``audit_fields.py``, its arguments redacted by
``audit_argv.py``; this one reads the header and reassembles events.

State: the reassembler's open events and last released sequence belong to the task that runs the
source's chain. Time comes from an injectable monotonic clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.record import Record
from agent.transforms.audit_argv import RedactArgv, arg_slots, redact_argv
from agent.transforms.audit_fields import KV, decode, parse_fields, rewrite, shown
from agent.transforms.fields import tag
from agent.transforms.syslog import format_utc

_HEADER = re.compile(
    r"(?:node=(?P<node>\S+) )?type=(?P<type>\w+)"
    r" msg=audit\((?P<sec>\d{1,12})\.(?P<ms>\d{1,9}):(?P<seq>\d{1,20})\): ?(?P<body>.*)",
    re.S,
)
# User-space records (auditd types 1100-1299 and 2100-2999) are whole events by themselves;
# kernel records wait for their EOE, for the timeout or for the in-flight limit.
_USER_SPACE = (
    "USER_",
    "CRED_",
    "CRYPTO_",
    "ADD_",
    "DEL_",
    "GRP_",
    "CHGRP_",
    "ROLE_",
    "ACCT_",
    "DAEMON_",
    "SERVICE_",
    "SYSTEM_",
    "VIRT_",
    "RESP_",
    "LABEL_",
    "ANOM_LOGIN",
    "ANOM_ROLE",
    "ANOM_AMTU",
    "ANOM_RBAC",
    "ANOM_CRYPTO",
    "ANOM_EXEC",
    "ANOM_MK_EXEC",
    "ANOM_ADD_ACCT",
    "ANOM_DEL_ACCT",
    "ANOM_MOD_ACCT",
    "MAC_CHECK",
    "TRUSTED_APP",
    "USYS_CONFIG",
    "SOFTWARE_UPDATE",
    "LOGIN",
    "TEST",
    "AVC_PATH",
)
_SEQ_MOD = 1 << 32


@dataclass(slots=True)
class _Event:
    sequence: int
    stamp: str  # "sec.ms", the event id's time part
    ts: str
    opened: float
    records: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    complete: bool = False
    masked: bool = False  # some record's arguments had a secret masked
    logged: dict[str, int] = field(default_factory=dict)  # aN[i] -> its length as logged


class AuditParser:
    """Parses audit records and reassembles events; ``take()`` returns the finished ones.

    ``redact_argv`` (``Redactor.argv``, when the source redacts): EXECVE arguments and
    ``proctitle`` are redacted as one command line before anything else sees them (see
    ``redact_argv``)."""

    def __init__(
        self,
        timeout: float = 2.0,
        max_in_flight: int = 500,
        clock: Callable[[], float] = time.monotonic,
        redact_argv: RedactArgv | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.redact_argv = redact_argv
        self._open: dict[int, _Event] = {}
        self._last: int | None = None  # highest sequence released so far
        self._ready: list[Record] = []

    def __call__(self, record: Record) -> bool:
        m = _HEADER.match(record["msg"])
        if m is None:
            return False
        rtype, seq = m["type"], int(m["seq"]) % _SEQ_MOD
        body, _, enriched = m["body"].partition("\x1d")
        decoded: list[tuple[str, str]] = []
        data = parse_fields(body, rtype, decoded)
        stamp = f"{m['sec']}.{m['ms']}"
        # Before the arguments are redacted: nothing after that may fail (a parser error ships
        # the line as it came, and alone no rule sees a0="mysql" a1="-pS3cret").
        ts = _audit_ts(m["sec"], m["ms"]) or str(record.get("ts"))
        changed: dict[str, str] = {}
        event = self._open.get(seq)
        if event is not None and event.stamp != stamp:
            event = None  # another event: no context
        logged = event.logged if event is not None else {}
        if self.redact_argv is not None and rtype in ("EXECVE", "PROCTITLE"):
            before = event.records if event is not None else []
            changed = redact_argv(
                self.redact_argv, data, rtype=rtype, body=body, before=before, logged=logged
            )
        if changed:  # shown masked, and decoded: one pass over the line
            at = m.start("body")
            msg = record["msg"]
            record["msg"] = msg[:at] + shown(body, rtype, changed) + msg[at + len(body) :]
            tag(record, "redacted")
        elif decoded:  # show it decoded, where redaction can see it
            record["msg"] = rewrite(record["msg"], decoded)
        audit: dict[str, Any] = {"record_type": rtype, "sequence": seq, "data": data}
        if enriched:
            audit["enriched"] = {k: decode(k, v, "") for k, v in _pairs(enriched)}
        if m["node"]:
            audit["node"] = m["node"]
        record["auditd"] = audit
        record["event"] = {"created": record.get("ts"), "id": f"{stamp}:{seq}"}
        record["ts"] = ts
        self._add(rtype, seq, stamp, ts, data, masked=bool(changed), logged=logged)
        return True

    def _add(
        self,
        rtype: str,
        seq: int,
        stamp: str,
        ts: str,
        data: dict[str, str],
        *,
        masked: bool,
        logged: dict[str, int],
    ) -> None:
        event = self._open.get(seq)
        if event is None or event.stamp != stamp:
            if event is not None:  # same seq, other time: the old one cannot grow any more
                self._release(self._open.pop(seq))
            event = self._open[seq] = _Event(seq, stamp, ts, self.clock())
        event.masked = event.masked or masked
        event.logged = logged  # the same dict, or the first record's
        if rtype == "EOE":
            event.complete = True
        else:
            event.records.append((rtype, data))
            if rtype.startswith(_USER_SPACE):
                event.complete = True
        if event.complete:
            self._release(self._open.pop(seq))
        elif len(self._open) > self.max_in_flight:
            self._release(self._open.pop(min(self._open, key=self._age)))

    def _age(self, seq: int) -> float:
        return self._open[seq].opened

    def take(self) -> list[Record]:
        """The event and lost-record reports finished since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def expire(self, *, final: bool = False) -> list[Record]:
        """Release events open longer than ``timeout`` (all of them when ``final``)."""
        limit = self.clock() - self.timeout
        for seq in sorted(self._open, key=self._age):
            if final or self._open[seq].opened <= limit:
                self._release(self._open.pop(seq))
        return self.take()

    def _release(self, event: _Event) -> None:
        if event.records:
            self._check_gap(event)
            made = coalesce(event.sequence, event.stamp, event.ts, event.records)
            if event.masked:
                made["tags"].append("redacted")
            self._ready.append(made)

    def _check_gap(self, event: _Event) -> None:
        seq, last = event.sequence, self._last
        if last is not None:
            ahead = (seq - last) % _SEQ_MOD
            if ahead == 0 or ahead >= _SEQ_MOD // 2:  # a late event, or a repeat
                return
            between = [s for s in self._open if 0 < (s - last) % _SEQ_MOD < ahead]
            if ahead > 1 and not between:
                self._ready.append(_lost(last, seq, event.ts))
        self._last = seq


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(m["key"], m["val"]) for m in KV.finditer(text)]


def _audit_ts(sec: str, frac: str) -> str | None:
    """The audit time as the record's ``ts``; None past what a datetime holds (year 9999)."""
    try:
        moment = datetime.fromtimestamp(int(sec), UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return format_utc(moment.replace(microsecond=int(frac[:6].ljust(6, "0"))))


def _lost(last: int, seq: int, ts: str) -> Record:
    count = (seq - last) % _SEQ_MOD - 1
    first, end = (last + 1) % _SEQ_MOD, (seq - 1) % _SEQ_MOD
    return {
        "ts": ts,
        "msg": f"auditd: {count} records lost (sequence {first}..{end})",
        "event": {"kind": "event", "action": "audit_lost", "outcome": "failure"},
        "auditd": {"lost": count, "sequence": {"first": first, "last": end}},
        "tags": ["audit_lost"],
    }


def coalesce(seq: int, stamp: str, ts: str, records: list[tuple[str, dict[str, str]]]) -> Record:
    """One ECS event from the records of ``audit(stamp:seq)``."""
    types = [rtype for rtype, _ in records]
    # The SYSCALL record (if any) describes the actor, whatever order the records came in.
    first = next((d for t, d in records if t == "SYSCALL"), records[0][1])
    event: dict[str, Any] = {"kind": "event", "id": f"{stamp}:{seq}", "action": types[0].lower()}
    result = next((d["result"] for _, d in records if "result" in d), None)
    if result is not None:
        event["outcome"] = "success" if result == "success" else "failure"
    out: Record = {"ts": ts, "event": event, "tags": ["audit_event"]}
    out["auditd"] = {"sequence": seq, "record_types": types, "records": len(records)}
    if "key" in first:
        out["auditd"]["key"] = first["key"]
    proc, user = _process(records, first), _user(first)
    if proc:
        out["process"] = proc
    if user:
        out["user"] = user
    paths = [d["name"] for t, d in records if t == "PATH" and "name" in d]
    if paths:
        out["file"] = {"path": paths[0]}
    what = proc.get("command_line") or proc.get("title") or proc.get("executable") or ""
    out["msg"] = f"audit {'+'.join(dict.fromkeys(types))} {what}".rstrip()
    return out


def _process(records: list[tuple[str, dict[str, str]]], first: dict[str, str]) -> dict[str, Any]:
    proc: dict[str, Any] = {}
    for key, ecs in (("pid", "pid"), ("comm", "name"), ("exe", "executable")):
        if key in first:
            proc[ecs] = int(first[key]) if key == "pid" and first[key].isdigit() else first[key]
    if first.get("ppid", "").isdigit():
        proc["parent"] = {"pid": int(first["ppid"])}
    args = execve_args([d for t, d in records if t == "EXECVE"])
    if args:
        proc["args"] = args
        proc["command_line"] = " ".join(args)
    if "cwd" in first:  # USER_CMD carries it in its own msg
        proc["working_directory"] = first["cwd"]
    for rtype, data in records:
        if rtype == "CWD" and "cwd" in data:
            proc["working_directory"] = data["cwd"]
        elif rtype == "PROCTITLE" and "proctitle" in data:
            proc["title"] = data["proctitle"]
    return proc


def _user(first: dict[str, str]) -> dict[str, Any]:
    user: dict[str, Any] = {}
    if "uid" in first:
        user["id"] = first["uid"]
    if "euid" in first:
        user["effective"] = {"id": first["euid"]}
    if "auid" in first:
        user["audit"] = {"id": first["auid"]}
    if "acct" in first:
        user["name"] = first["acct"]
    return user


def execve_args(execves: list[dict[str, str]]) -> list[str]:
    """argv from EXECVE records: ``aN`` values and ``aN[i]`` chunks of long arguments."""
    return ["".join(data[key] for data, key in pieces) for pieces in arg_slots(execves)]
