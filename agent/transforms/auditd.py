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
from agent.transforms.fields import tag
from agent.transforms.redact import mask_lead, mask_trail
from agent.transforms.syslog import format_utc

_HEADER = re.compile(
    r"(?:node=(?P<node>\S+) )?type=(?P<type>\w+)"
    r" msg=audit\((?P<sec>\d{1,12})\.(?P<ms>\d{1,9}):(?P<seq>\d{1,20})\): ?(?P<body>.*)",
    re.S,
)
_KV = re.compile(
    r"(?:(?P<pre>old|new) )?(?P<key>[\w-]+(?:\[\d+\])?)=(?P<val>\"[^\"]*\"|'[^']*'|[^\s,]*)"
)
_AVC = re.compile(r"avc:\s+(?P<result>\w+)\s+\{\s*(?P<perms>[^}]*?)\s*\}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_ARG = re.compile(r"a(\d+)(?:\[(\d+)\])?")
_HEX_KEYS = frozenset(
    (
        "proctitle",
        "exe",
        "comm",
        "name",
        "cwd",
        "cmd",
        "path",
        "key",
        "data",
        "acct",
        "ocomm",
        "opath",
        "old-chardev",
        "new-chardev",
        "watch",
        "dir",
        "file",
        "vm",
        "root_dir",
    )
)
_UNSET_KEYS = frozenset(("auid", "ses"))
_UNSET = "4294967295"
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
_ARCH = {"c000003e": "x86_64", "40000003": "i386", "c00000b7": "aarch64", "40000028": "arm"}
# Linux errno and signal numbers shared by the common architectures. Syscall numbers differ per
# architecture and are not named here: the ENRICHED log format carries their names.
# fmt: off
_ERRNO = dict(enumerate((
    "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD",
    "EAGAIN", "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV",
    "ENOTDIR", "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC",
    "ESPIPE", "EROFS", "EMLINK", "EPIPE", "EDOM", "ERANGE",
), 1))
_SIGNALS = dict(enumerate((
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL",
    "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD",
    "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ",
    "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
), 1))
# fmt: on


def _decode(key: str, value: str, record_type: str) -> str:
    if value.endswith(")") and not value.startswith("("):  # "(... res=success)" in PAM records
        value = value[:-1]
    if value.startswith('"'):
        return value[1:-1] if value.endswith('"') and len(value) > 1 else value[1:]
    if value.startswith("'"):
        return value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
    hexable = key in _HEX_KEYS or (record_type == "EXECVE" and _ARG.fullmatch(key) is not None)
    if hexable and len(value) >= 2 and _HEX.fullmatch(value):
        text = bytes.fromhex(value).decode("utf-8", errors="replace")
        return text.replace("\x00", " ").rstrip(" ") if key == "proctitle" else text
    return value


def parse_fields(
    body: str, record_type: str, decoded: list[tuple[str, str]] | None = None
) -> dict[str, str]:
    """The normalised key=value data of one record body (without the enriched part).

    ``decoded`` collects ``(key=HEX, key="text")`` for each hex value decoded, as found in body.
    """
    data: dict[str, str] = {}
    avc = _AVC.match(body)
    if avc:
        data["seresult"] = avc["result"]
        data["seperms"] = ",".join(avc["perms"].split())
    for m in _KV.finditer(body):
        key, raw = m["key"], m["val"]
        if key == "msg" and raw.startswith("'"):
            data.update(parse_fields(raw[1:-1], record_type, decoded))
            continue
        if m["pre"]:
            key = f"{m['pre']}_{key}"
        value = _decode(key, raw, record_type)
        if decoded is not None and value != raw and _HEX.fullmatch(raw.rstrip(")")):
            decoded.append((f"{m['key']}={raw.rstrip(')')}", f'{m["key"]}="{value}"'))
        if value in ("?", "(null)", ""):
            continue
        data[key] = value
    _normalise(data)
    return data


def _normalise(data: dict[str, str]) -> None:
    for key in _UNSET_KEYS:
        if data.get(key) == _UNSET:
            data[key] = "unset"
    result = data.pop("res", None) or data.pop("success", None)
    if result is not None:
        data["result"] = "success" if result in ("success", "yes", "1") else "fail"
    for label in ("subj", "obj"):
        context = data.get(label)
        parts = context.split(":", 4) if context is not None else []
        if len(parts) >= 4:
            del data[label]
            names = ("user", "role", "domain", "level", "category")
            data.update((f"{label}_{n}", v) for n, v in zip(names, parts, strict=False))
    arch = _ARCH.get(data.get("arch", ""))
    if arch is not None:
        data["arch"] = arch
    exit_code = data.get("exit", "")
    if exit_code.startswith("-") and exit_code[1:].isdigit():
        data["exit"] = _ERRNO.get(int(exit_code[1:]), exit_code)
    sig = data.get("sig", "")
    if sig.isdigit() and int(sig) in _SIGNALS:
        data["sig"] = _SIGNALS[int(sig)]


@dataclass(slots=True)
class _Event:
    sequence: int
    stamp: str  # "sec.ms", the event id's time part
    ts: str
    opened: float
    records: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    complete: bool = False
    masked: bool = False  # some record's arguments had a secret masked


# A command's arguments, each as its pieces, with its secrets masked (None: nothing to mask).
RedactArgv = Callable[[list[list[str]]], list[list[str]] | None]


class AuditParser:
    """Parses audit records and reassembles events; ``take()`` returns the finished ones.

    ``redact_argv`` (``Redactor.argv``, when the source redacts): EXECVE arguments and
    ``proctitle`` are redacted as one command line before anything else sees them (see
    ``_redact_argv``)."""

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
        if self.redact_argv is not None and rtype in ("EXECVE", "PROCTITLE"):
            event = self._open.get(seq)
            before = event.records if event is not None and event.stamp == stamp else []
            changed = _redact_argv(self.redact_argv, data, rtype=rtype, body=body, before=before)
        if changed:  # shown masked, and decoded: one pass over the line
            at = m.start("body")
            msg = record["msg"]
            record["msg"] = msg[:at] + _shown(body, rtype, changed) + msg[at + len(body) :]
            tag(record, "redacted")
        elif decoded:  # show it decoded, where redaction can see it
            record["msg"] = _rewrite(record["msg"], decoded)
        audit: dict[str, Any] = {"record_type": rtype, "sequence": seq, "data": data}
        if enriched:
            audit["enriched"] = {k: _decode(k, v, "") for k, v in _pairs(enriched)}
        if m["node"]:
            audit["node"] = m["node"]
        record["auditd"] = audit
        record["event"] = {"created": record.get("ts"), "id": f"{stamp}:{seq}"}
        record["ts"] = ts
        self._add(rtype, seq, stamp, ts, data, masked=bool(changed))
        return True

    def _add(
        self, rtype: str, seq: int, stamp: str, ts: str, data: dict[str, str], *, masked: bool
    ) -> None:
        event = self._open.get(seq)
        if event is None or event.stamp != stamp:
            if event is not None:  # same seq, other time: the old one cannot grow any more
                self._release(self._open.pop(seq))
            event = self._open[seq] = _Event(seq, stamp, ts, self.clock())
        event.masked = event.masked or masked
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


_PROCTITLE = re.compile(r"(?<![\w-])proctitle=(?P<hex>(?:[0-9A-Fa-f]{2})+)(?![\w\"'])")


def _redact_argv(
    redact: RedactArgv,
    data: dict[str, str],
    *,
    rtype: str,
    body: str,
    before: list[tuple[str, dict[str, str]]],
) -> dict[str, str]:
    """Mask the secrets of an EXECVE record's arguments, or a PROCTITLE's, in ``data``, as
    ``redact`` finds them in the command line; the keys changed, with their new values.

    Each string alone is redacted later as any field is, but a rule such as ``mysql -p`` needs
    the command before its option, which is in another argument (maybe of an earlier EXECVE
    record of the event, ``before``, with its own secrets already masked). A proctitle is the
    command's NUL-separated argv (cut at 128 bytes): redacted split at its NULs, not at the
    spaces ``data`` shows in their place.

    An argument too long for one record goes on in the next (``aN[i]`` chunks): neither record
    alone can tell whether the token at the cut is (part of) a secret, so the last token of a
    chunk that the next record continues, and the first token of a chunk that continues one,
    are masked, as the halves of a split line are (``mask_trail``, ``mask_lead``)."""
    changed: dict[str, str] = {}
    if rtype == "PROCTITLE":
        title = data.get("proctitle")
        if title is None:
            return changed
        found = _PROCTITLE.search(body)
        if found is not None:
            text = bytes.fromhex(found["hex"]).decode("utf-8", errors="replace")
            args = [[arg] for arg in text.split("\x00")]
        else:
            args = [[title]]
        new = redact(args)
        if new is not None:
            changed["proctitle"] = data["proctitle"] = " ".join(
                piece for arg in new for piece in arg
            ).rstrip(" ")
        return changed
    context = _context(before)
    slots = _arg_slots([*context, data])
    new = redact([[d[k] for d, k in pieces] for pieces in slots])
    cut = _cut_chunks(slots, context, data)  # before masking: lengths as logged
    if new is not None:
        for pieces, values in zip(slots, new, strict=True):
            for (owner, key), value in zip(pieces, values, strict=True):
                # earlier records are shipped as they were
                if owner is data and data[key] != value:
                    changed[key] = data[key] = value
    for key, edge in cut:
        value = mask_lead(data[key]) if edge == "lead" else mask_trail(data[key])
        if value != data[key]:
            changed[key] = data[key] = value
    return changed


def _cut_chunks(
    slots: list[list[tuple[dict[str, str], str]]],
    context: list[dict[str, str]],
    data: dict[str, str],
) -> list[tuple[str, str]]:
    """The chunks of ``data`` at a cut between records: ("aN[i]", "lead") for one that goes on
    from an earlier record, ("aN[i]", "trail") for one that a later record may go on from: its
    chunks so far are not exactly its argument's ``aN_len`` (unknown, or earlier chunks masked
    to another length, count as going on: a needless mask, never a leak)."""
    cut: list[tuple[str, str]] = []
    for pieces in slots:
        mine = [i for i, (owner, key) in enumerate(pieces) if owner is data and "[" in key]
        if not mine:
            continue
        first_key, last_key = pieces[mine[0]][1], pieces[mine[-1]][1]
        if mine[0] > 0 or not first_key.endswith("[0]"):
            cut.append((first_key, "lead"))
        index = first_key[1 : first_key.index("[")]
        declared = next((d[f"a{index}_len"] for d in (data, *context) if f"a{index}_len" in d), "")
        so_far = sum(len(owner[key]) for owner, key in pieces[: mine[-1] + 1])
        if not declared.isdigit() or int(declared) != so_far:
            cut.append((last_key, "trail"))
    return cut


def _shown(body: str, rtype: str, changed: dict[str, str]) -> str:
    """``body`` with each value of ``changed`` shown as ``key="new"`` and every hex value the
    parser decoded shown decoded (as ``parse_fields`` has them), in one pass: a ``str.replace``
    per value cost time quadratic in them on a hostile line."""
    out: list[str] = []
    done = 0
    for m in _KV.finditer(body):
        key, raw = m["key"], m["val"]
        name = f"{m['pre']}_{key}" if m["pre"] else key
        if key == "msg" and raw.startswith("'"):
            shown = "'" + _shown(raw[1:-1], rtype, changed) + raw[-1:]
        elif name in changed:
            shown = f'"{changed[name]}"' + (")" if raw.endswith(")") else "")
        else:
            value = _decode(name, raw, rtype)
            bare = raw.rstrip(")")
            decoded = value != raw and _HEX.fullmatch(bare) is not None
            shown = f'"{value}"' + raw[len(bare) :] if decoded else raw
        out += (body[done : m.start("val")], shown)  # through "key="
        done = m.end("val")
    out.append(body[done:])
    return "".join(out)


# How much of an event's earlier EXECVE arguments is context for the next record's: more than
# a command's reach to its option (``rules._COMMAND_REACH``). Bounded, so that an event of many
# records costs time linear in them, not quadratic.
_CONTEXT_CHARS = 4096


def _context(before: list[tuple[str, dict[str, str]]]) -> list[dict[str, str]]:
    """The data of the last EXECVE records in ``before`` whose values hold at least
    ``_CONTEXT_CHARS`` characters (or all of them), in order."""
    taken: list[dict[str, str]] = []
    size = 0
    for rtype, data in reversed(before):
        if rtype != "EXECVE":
            continue
        taken.append(data)
        size += sum(map(len, data.values()))
        if size >= _CONTEXT_CHARS:
            break
    return taken[::-1]


def _rewrite(msg: str, pairs: list[tuple[str, str]]) -> str:
    """``msg`` with each (old, new) of ``pairs`` replaced, each at the first place after the
    last one's (they come in the order the line holds them, as ``parse_fields`` found them):
    one pass over ``msg``, where a ``str.replace`` per pair cost time quadratic in the pairs (a
    command of 27,000 arguments in one 256 KiB EXECVE record took 4.7 s)."""
    out: list[str] = []
    done = 0
    for old, new in pairs:
        at = msg.find(old, done)
        if at >= 0:
            out += (msg[done:at], new)
            done = at + len(old)
    out.append(msg[done:])
    return "".join(out)


def _arg_slots(execves: list[dict[str, str]]) -> list[list[tuple[dict[str, str], str]]]:
    """Where each argument of ``execves`` lives, in order: its (data, key) pieces, one ``aN``
    or its ``aN[i]`` chunks in order (as ``execve_args`` joins them)."""
    whole: dict[int, tuple[dict[str, str], str]] = {}
    chunks: dict[int, dict[int, tuple[dict[str, str], str]]] = {}
    for data in execves:
        for key in data:
            m = _ARG.fullmatch(key)
            if m is None:
                continue
            if m[2] is None:
                whole[int(m[1])] = (data, key)
            else:
                chunks.setdefault(int(m[1]), {})[int(m[2])] = (data, key)
    slots = {index: [slot] for index, slot in whole.items()}
    for index, parts in chunks.items():
        slots[index] = [parts[i] for i in sorted(parts)]
    return [slots[i] for i in sorted(slots)]


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(m["key"], m["val"]) for m in _KV.finditer(text)]


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
    whole: dict[int, str] = {}
    chunks: dict[int, dict[int, str]] = {}
    for data in execves:
        for key, value in data.items():
            m = _ARG.fullmatch(key)
            if m is None:
                continue
            index = int(m[1])
            if m[2] is None:
                whole[index] = value
            else:
                chunks.setdefault(index, {})[int(m[2])] = value
    for index, parts in chunks.items():
        whole[index] = "".join(parts[i] for i in sorted(parts))
    return [whole[i] for i in sorted(whole)]
