"""Transforms: parse and redact records between the sources and the buffer.

Role: ``build(source_name, config)`` turns a source's ``parser``/``redact`` config into a
``TransformChain``, set up once. The chain parses each record with the configured parser
(``syslog``, ``auth``, ``access``, ``json``, ``auditd``, ``shell``), then redacts ``msg`` and every
parsed string field. ``chain.apply(batch)`` does this for a batch of ``Pending`` records in place
and may append records that no line carries by itself (coalesced auditd events, lost auditd
sequence reports); those have no checkpoint. ``chain.flush()`` releases what a parser holds
back (auditd events whose time ran out); call it on a timer and at the final sweep.

Invariants (DESIGN.md contract 6): a transform never raises and never drops a record. A line the
parser cannot read ships unchanged, tagged ``parse_failure`` and counted in ``stats``; an
exception inside a parser is caught here, the record is restored to what it was and tagged the
same way. Redaction runs after parsing and even when parsing failed, so nothing leaves the chain
unredacted. The chain mutates the records it is given (the source built them for it).

State: each chain (its parser caches, the redactor's split-line carry, the auditd reassembler
and ``stats``) belongs to one source and must be driven by one task or thread at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, cast, overload

import orjson

from agent.compiled import load
from agent.record import Record
from agent.sources import EncodedRun, Item, Pending, PlainRun, materialize, record_count
from agent.transforms.access import AccessParser
from agent.transforms.auditd import AuditParser
from agent.transforms.auth import PROGRAM_CODES, parse_auth
from agent.transforms.fields import tag
from agent.transforms.jsonl import JsonParser
from agent.transforms.redact import Redactor
from agent.transforms.redact_batch import redact_records
from agent.transforms.shell import ShellParser
from agent.transforms.syslog import Clock, SyslogParser, parse_timezone

if TYPE_CHECKING:
    from agent.config import SourceConfig

__all__ = ["Parser", "TransformChain", "TransformStats", "build"]

log = logging.getLogger(__name__)

_RECORD = attrgetter("record")
_COMPILED = load("agent.transforms._speedups")

# A parser sets fields on the record it is given; False = "not my format" (tagged, counted).
Parser = Callable[[Record], bool]


@dataclass(slots=True)
class TransformStats:
    """Counters for metrics (``tailseal_parse_failures_total`` and friends)."""

    records: int = 0
    parse_failures: int = 0
    parser_errors: int = 0  # exceptions caught: a parser bug, never the input's fault
    redacted: int = 0
    audit_lost: int = 0
    by_tag: dict[str, int] = field(default_factory=dict)


class _SyslogAuth:
    """The ``syslog`` and ``auth`` parsers: header, then (for ``auth``) the event by program."""

    def __init__(self, syslog: SyslogParser, *, auth: bool) -> None:
        self.syslog = syslog
        self.auth = auth

    def parse_batch(self, records: list[Record], slow: Callable[[Record], object]) -> int:
        """Parse each of ``records`` as ``_parse_msg`` does with this parser; returns how many
        the compiled ``parse_batch`` did itself (the commonest lines: see its comment in
        ``transforms/_speedups.c``). ``slow`` is that Python path, for every other record and
        for all of them without the compiled module. Only a failure to allocate can raise."""
        if _COMPILED is None:
            for record in records:
                slow(record)
            return 0
        programs = PROGRAM_CODES if self.auth else None
        done: int = _COMPILED.parse_batch(records, programs, slow, self.syslog.fast_state)
        return done

    def encode_run(self, run: PlainRun, slow: Callable[[Record], object]) -> list[Item]:
        """The records of ``run``'s lines, parsed as ``parse_batch`` parses them: the lines the
        compiled ``encode_run`` does itself as ``EncodedRun``s (no Python object per line), each
        other one as its record, parsed by ``slow`` (the Python path), in the lines' order.
        Needs the compiled module."""
        if _COMPILED is None:
            raise RuntimeError("encode_run needs agent.transforms._speedups")
        programs = PROGRAM_CODES if self.auth else None
        created, src = orjson.dumps(run.ts), orjson.dumps(run.source)
        log_head = run.head[1:]  # '"log":{"file":{"path":...},"offset":'
        out: list[Item] = []
        at, data, end = run.begin, run.data, run.end
        while at < end:
            blob, at, count = _COMPILED.encode_run(
                data, at, end, run.offset, programs, self.syslog.fast_state, created, log_head, src
            )
            if count:
                out.append(EncodedRun(blob, 0, len(blob), run.source, run.key, run.path, count))
            if at < end:  # a line encode_run leaves to the Python path
                newline = data.index(b"\n", at) + 1
                line = run.line(at, newline)
                slow(line.record)
                out.append(line)
                at = newline
        return out

    def __call__(self, record: Record) -> bool:
        head = self.syslog.header(record["msg"])
        if head is None:
            return False
        self.syslog.apply(record, head)
        if self.auth:
            parse_auth(head.program, head.body.lstrip(" "), record)
        return True


class TransformChain:
    """Parse then redact; see the module docstring for the contract."""

    def __init__(
        self,
        source: str,
        parser: Parser | None,
        redactor: Redactor | None,
        audit: AuditParser | None = None,
    ) -> None:
        self.source = source
        self.parser = parser
        self.redactor = redactor
        self.audit = audit
        self.stats = TransformStats()
        # Parsers that only copy substrings of msg: their fields need no walk when msg is clean.
        # Without a parser there are no parsed fields at all: only msg can hold a secret.
        self.fields_from_msg = parser is None or isinstance(parser, _SyslogAuth | AccessParser)

    def __call__(self, record: Record) -> Record:
        """Transform one record in place and return it."""
        self.stats.records += 1
        had = "redacted" in record.get("tags", ())  # the auditd parser may redact arguments
        if self.parser is not None and isinstance(record.get("msg"), str):
            self._parse(self.parser, record)
        if self.redactor is not None:
            self._redact(self.redactor, record, had=had)
        return record

    @overload
    def apply(self, batch: list[Pending]) -> list[Pending]: ...
    @overload
    def apply(self, batch: Sequence[Item]) -> list[Item]: ...

    def apply(self, batch: Sequence[Item]) -> list[Item] | list[Pending]:
        """Transform a batch; returns it with any parser-made records inserted in order.

        Runs of plain lines (``PlainRun``) stay runs when there is no parser: only their lines
        that may hold a secret are made records, to be redacted as any other. The syslog and
        auth parsers turn them into ``EncodedRun``s (``_apply_encoded``) where compiled; any
        other parser gets records."""
        runs = PlainRun in set(map(type, batch))
        if runs and type(self.parser) is _SyslogAuth and _COMPILED is not None:
            return self._apply_encoded(self.parser, batch)
        if runs and self.parser is not None:
            batch, runs = materialize(batch), False
        if self.audit is None:
            return self._apply(list(batch), runs)
        out: list[Item] = []
        for pending in cast(list[Pending], batch):
            self(pending.record)
            out.append(pending)
            out.extend(self._made(self.audit.take()))
        return out

    def _apply(self, batch: list[Item], runs: bool) -> list[Item]:
        """Parse each record, then redact the batch: every string that may need it is found in
        one scan over them all (``redact_records``). A batch with runs has no parser (``apply``
        made records of them for one): their suspect lines are taken out first."""
        parser, redactor = self.parser, self.redactor
        if runs:
            self.stats.records += record_count(batch)
            if redactor is None:
                return batch
            batch = _open_runs(redactor, batch)
            records = [item.record for item in batch if type(item) is Pending]
        else:
            self.stats.records += len(batch)
            records = list(map(_RECORD, cast(list[Pending], batch)))
            if type(parser) is _SyslogAuth:
                parser.parse_batch(records, partial(self._parse_msg, parser))
            elif parser is not None:
                for record in records:
                    self._parse_msg(parser, record)
        if redactor is not None and records:
            self.stats.redacted += redact_records(
                redactor, records, fields_from_msg=self.fields_from_msg
            )
        return batch

    def _apply_encoded(self, parser: _SyslogAuth, batch: Sequence[Item]) -> list[Item]:
        """``_apply`` for a batch with runs, by the syslog or auth parser: the lines it parses
        in C go on encoded (``_SyslogAuth.encode_run``), the others as records, parsed and
        redacted as ``_apply`` does. A line that may hold a secret is taken out of its run
        first (``_open_runs``): an encoded line is one the redactor would leave as it is, and
        its fields are parts of it (``fields_from_msg``)."""
        self.stats.records += record_count(batch)
        items = list(batch) if self.redactor is None else _open_runs(self.redactor, list(batch))
        slow = partial(self._parse_msg, parser)
        out: list[Item] = []
        records: list[Record] = []  # every record of the batch, to redact
        waiting: list[Record] = []  # records not parsed yet: parsed in order, before a run
        for item in items:
            if type(item) is PlainRun:
                if waiting:
                    parser.parse_batch(waiting, slow)
                    waiting = []
                made = parser.encode_run(item, slow)
                records += [each.record for each in made if type(each) is Pending]
                out += made
            else:
                record = cast(Pending, item).record
                records.append(record)
                waiting.append(record)
                out.append(item)
        if waiting:
            parser.parse_batch(waiting, slow)
        if self.redactor is not None and records:
            self.stats.redacted += redact_records(
                self.redactor, records, fields_from_msg=self.fields_from_msg
            )
        return out

    def flush(self, *, final: bool = False) -> list[Pending]:
        """Records a parser held back and may now release (all of them when ``final``)."""
        if self.audit is None:
            return []
        return self._made(self.audit.expire(final=final))

    def _made(self, records: list[Record]) -> list[Pending]:
        made = []
        for record in records:
            record.setdefault("src", self.source)
            if self.redactor is not None:
                self._redact(self.redactor, record, had=False)  # made here: never counted
            if "audit_lost" in record.get("tags", ()):
                self.stats.audit_lost += int(record.get("auditd", {}).get("lost", 0))
            made.append(Pending(record, None))
        return made

    def _parse_msg(self, parser: Parser, record: Record) -> None:
        """``_parse`` a record whose ``msg`` is a str; leave others alone."""
        if isinstance(record.get("msg"), str):
            self._parse(parser, record)

    def _parse(self, parser: Parser, record: Record) -> None:
        # Parsers only add keys or replace values at the top (and add log.syslog), so a shallow
        # snapshot is enough to undo a half-applied parse; a deep copy would cost more than most
        # parses.
        before = dict(record)
        try:
            ok = parser(record)
        except Exception:  # contract 6: a parser bug must not stop the pipeline
            record.clear()
            record.update(before)
            self.stats.parser_errors += 1
            log.debug("parser error in source %s", self.source, exc_info=True)
            ok = False
        if not ok:
            self.stats.parse_failures += 1
            tag(record, "parse_failure")

    def _redact(self, redactor: Redactor, record: Record, *, had: bool) -> None:
        """Redact ``record``; count it if it is tagged ``redacted`` now and ``had`` not been."""
        redactor.record(record, fields_from_msg=self.fields_from_msg)
        if not had and "redacted" in record.get("tags", ()):
            self.stats.redacted += 1


def _open_runs(redactor: Redactor, batch: list[Item]) -> list[Item]:
    """``batch`` with each line of its runs that may hold a secret taken out as a record of its
    own, in its place; the lines between stay runs. A clean run is left as it is."""
    out: list[Item] = []
    for item in batch:
        if type(item) is not PlainRun:
            out.append(item)
            continue
        spans = redactor.line_spans(item.data, item.begin, item.end, item.count)
        done = item.begin
        for start, newline in spans:
            if start > done:
                out.append(item.part(done, start))
            out.append(item.line(start, newline + 1))
            done = newline + 1
        if done == item.begin:
            out.append(item)  # clean: the common case
        elif done < item.end:
            out.append(item.part(done, item.end))
    return out


def make_parser(
    config: SourceConfig, redactor: Redactor | None = None, clock: Clock | None = None
) -> tuple[Parser | None, AuditParser | None]:
    """The parser for ``config.parser.format`` (and the auditd reassembler, if that, which
    redacts command arguments with ``redactor``). ``clock`` (the system clock if None) is what
    the syslog parser reads for the year of a BSD timestamp."""
    cfg = config.parser
    tz = parse_timezone(cfg.timezone)
    if cfg.format in ("syslog", "auth"):
        return _SyslogAuth(SyslogParser(tz, clock), auth=cfg.format == "auth"), None
    if cfg.format == "access":
        return AccessParser(), None
    if cfg.format == "json":
        return JsonParser(cfg.timestamp_field, cfg.message_field, tz), None
    if cfg.format == "shell":
        return ShellParser(), None
    if cfg.format == "auditd":
        argv = redactor.argv if redactor is not None else None
        audit = AuditParser(timeout=cfg.audit_timeout, redact_argv=argv)
        return audit, audit
    return None, None


def build(source_name: str, config: SourceConfig, clock: Clock | None = None) -> TransformChain:
    """The transform chain of one source, from its config section (``clock``: ``make_parser``)."""
    redactor = Redactor(config.redact.patterns) if config.redact.enabled else None
    parser, audit = make_parser(config, redactor, clock)
    return TransformChain(source_name, parser, redactor, audit)
