"""Redaction: secrets never reach the buffer.

Role: the last transform of every chain (after parsing, so decoded values such as auditd hex
fields or JSON escapes are redacted too). ``Redactor.record(record)`` rewrites ``msg`` and every
string field a parser added, replacing each secret by ``[REDACTED]`` (key names and schemes stay,
so ``password=[REDACTED]`` still says what was there) and tags the record ``redacted``.

Rules (``rules.py``): AWS access key ids and secret keys, ``password=``/``"password": ...``/
``--password``/``mysql -p<pw>``/``sshpass -p``, ``Authorization:`` values, bearer tokens, basic
credentials (only when the base64 decodes to ``user:pass``), URL credentials, JWTs, private key
blocks, well-known vendor token shapes, plus configured patterns (a ``(?P<secret>...)`` group
limits the replacement to that group, otherwise the whole match goes). Each built-in rule has
cheap lower-case trigger substrings and may add a prefilter (a cheaper necessary condition on
ASCII text); ``text`` runs a rule only when they allow.

Escaped quotes: a JSON line's msg holds its strings escaped, so ``export TOKEN="x"`` logged by a
shell hook reads ``export TOKEN=\\"x\\"``. The built-in rules see each ``\\"`` as one quote
character (``rules.escapes_view``): the secret between escaped quotes goes whole and the redacted
line still parses, decoding to what the same command redacted on its own gives. (Before, the
rules took the backslash for the whole value and shipped the secret after it.) Command-line
values (``--password``, ``mysql -p``, ``sshpass -p``) stop before a JSON string's closing quote
for the same reason. Configured patterns see the text as it is.

Suspects (``suspects.py``): which strings may hold a secret at all, answered for many strings in
one pass (Hyperscan for big batches, ``str.find`` over the joined strings for small ones); a
value holding only a prefiltered rule's trigger is suspect only when the prefilter agrees
("Failed password for root" holds "pass", but no ``password=``). ``redact_batch`` uses it to
redact a whole batch, or one record's fields, with one pass over all their strings; the rules then
run only on the strings it flags.

Arguments (``argv``): a command logged as separate strings (auditd's EXECVE ``aN`` and
proctitle) is redacted as its command line, the arguments joined by spaces, and each secret found
is masked in the argument (or the ``aN[i]`` chunks) it lies in. A value the rules end at a space,
a quote or one of ``;&|`` inside one argument runs to that argument's end: the shell passed it
whole.

Split lines (invariant: redaction is not defeated by the max-line-bytes split): the file source
splits an over-long line into parts tagged ``split`` with ``log.part``. Neither part alone can
tell whether a token at the boundary is a secret, so for split parts the redactor masks the
token touching each boundary, remembers the tail of each part per file path and masks whatever a
rule matches across the boundary, and carries "inside a private key block" into the next part. A
quoted secret still open at a part's end (``password="a b``) is masked to that end and, in the
next part, up to its closing quote; so is one whose key ends a part and whose quote opens the
next.

State: ``_carry`` (file path -> tail of the last split part) is owned by the one task or thread
that runs the source's chain; it holds at most one entry per file being split.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from functools import partial

from agent.record import Record
from agent.transforms.fields import tag
from agent.transforms.redact_batch import fields_may_hold, redact_fields
from agent.transforms.rules import (
    BUILTIN_RULES,
    KEY_ENDINGS,
    REDACTED,
    Rule,
    caseless,
    escapes_view,
    unview,
)
from agent.transforms.suspects import Suspects, _suspect, every_line

__all__ = ["BUILTIN_RULES", "REDACTED", "Redactor", "Rule"]

# Per rule: its triggers, prefilter, pattern.sub and the replacement function for it.
_Plan = tuple[
    tuple[tuple[str, ...], re.Pattern[str] | None, Callable[..., str], Callable[..., str]], ...
]
_TAIL = 4096  # longest secret we expect to straddle a split boundary (JWTs, keys' headers)
# A secret's key with its separator (its own closing quote, if quoted, before it), or -p.
# (_pwd: MYSQL_PWD=; -p: mysql, sshpass and docker login; -a: redis-cli)
_KEY_THEN_SEPARATOR = (
    rf"(?i)(?:(?:{KEY_ENDINGS}|_pwd|authorization)(?:\\?[\"'])?\s*(?:[:=]\s*|\s+)|-[pa]\s*)"
)
# A quote opened after a secret's key or option (password="…, -p"…, Authorization: "…, also
# escaped in a JSON line) that no quote closes before the end of the text.
_OPEN_QUOTED_SECRET = re.compile(_KEY_THEN_SEPARATOR + r"(?P<quote>\\?[\"'])[^\"']*\Z")
# A secret's key, separator and opening quote ("password=\"", "TOKEN=\\\"", "-p'").
_KEY_QUOTE = re.compile(_KEY_THEN_SEPARATOR + r"(?P<quote>\\?[\"'])")


def _quote_opening(tail: str, msg: str) -> tuple[str, int]:
    """A secret's quoted value opened across the boundary between the last part (``tail``) and
    ``msg``: the quote that closes it and where in ``msg`` its value starts; ("", 0) if none."""
    window = tail[-64:] + msg[:64]
    cut = len(window) - len(msg[:64])
    for m in _KEY_QUOTE.finditer(window):
        if m.start() < cut < m.end():
            return m["quote"], m.end() - cut
    return "", 0


# Where the rules end a command-line value, but which the shell passes on literally inside
# one argument (it was quoted).
_ENDS_A_WORD = frozenset(" \t\n\r\x0b\x0c;&|\"'")
_KEY_END = re.compile(r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")


def _replace(m: re.Match[str], rule: Rule) -> str:
    if rule.check is not None and not rule.check(m):
        return m[0]
    if "secret" not in m.re.groupindex or m.start("secret") < 0:
        return REDACTED
    base = m.start()
    return m[0][: m.start("secret") - base] + REDACTED + m[0][m.end("secret") - base :]


def _apply(plan: _Plan, value: str, low: str, ascii_text: bool) -> str:
    """``value`` rewritten by each rule of ``plan`` whose triggers are in ``low`` and whose
    prefilter (consulted if ``ascii_text``) finds something in it as rewritten so far."""
    now = value.lower()
    for triggers, prefilter, sub, replace in plan:
        if triggers:
            for word in triggers:
                if word in low:
                    break
            else:
                continue
            if prefilter is not None and ascii_text and prefilter.search(now) is None:
                continue
        new = sub(replace, value)
        if new is not value:
            value, now = new, new.lower()
    return value


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` sorted, with overlapping or touching ones joined and empty ones dropped."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        elif end > start:
            merged.append((start, end))
    return merged


def _spans(rules: tuple[Rule, ...], text: str, low: str, now: str | None) -> list[tuple[int, int]]:
    """Where each of ``rules`` whose triggers are in ``low`` (and whose prefilter finds
    something in ``now``, the lowered ASCII text, if given) finds a secret in ``text``."""
    found: list[tuple[int, int]] = []
    for rule in rules:
        if rule.triggers and not any(word in low for word in rule.triggers):
            continue
        if rule.prefilter is not None and now is not None and not rule.prefilter.search(now):
            continue
        for m in rule.pattern.finditer(text):
            if rule.check is None or rule.check(m):
                keep = "secret" in m.re.groupindex and m.start("secret") >= 0
                found.append(m.span("secret") if keep else m.span())
    return found


def _in_raw(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Where ``spans`` of ``escapes_view(text)`` lie in ``text`` (an escaped quote or escaped
    backslash is one character of the view and two of the text, paired left to right): one
    walk over ``text`` for all of them."""
    targets = sorted({at for span in spans for at in span})
    where: dict[int, int] = {}
    raw = view = 0
    for target in targets:
        while view < target:
            escaped = text[raw] == "\\" and raw + 1 < len(text) and text[raw + 1] in '"\\'
            raw += 2 if escaped else 1
            view += 1
        where[target] = raw
    return [(where[start], where[end]) for start, end in spans]


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of ``spans`` (sorted, disjoint) replaced by ``REDACTED``."""
    if not spans:
        return text
    out: list[str] = []
    done = 0
    for start, end in spans:
        out += (text[done:start], REDACTED)
        done = end
    out.append(text[done:])
    return "".join(out)


def mask_lead(text: str) -> str:
    """Mask the first token (up to ``_TAIL`` characters) of ``text``."""
    start = len(text) - len(text.lstrip())
    end = start
    limit = min(len(text), start + _TAIL)
    while end < limit and not text[end].isspace():
        end += 1
    return text[:start] + REDACTED + text[end:] if end > start else text


def mask_trail(text: str) -> str:
    """Mask the last token (up to ``_TAIL`` characters) of ``text``."""
    end = len(text.rstrip())
    start = end
    limit = max(0, end - _TAIL)
    while start > limit and not text[start - 1].isspace():
        start -= 1
    return text[:start] + REDACTED + text[end:] if end > start else text


class Redactor:
    """Applies the built-in rules plus ``patterns`` (regular expressions from config)."""

    def __init__(self, patterns: list[str] | tuple[str, ...] = ()) -> None:
        self.custom = tuple(Rule(f"custom{i}", re.compile(p), ()) for i, p in enumerate(patterns))
        self.rules = BUILTIN_RULES + self.custom
        self._carry: dict[str, tuple[int, str, bool, str]] = {}  # path -> (next part, tail,
        # inside a private key, the quote of a quoted secret still open)
        self._suspects = Suspects()
        # Per rule, in order: what ``text`` needs, bound once instead of per call. The built-in
        # rules read escaped quotes as quotes (``escapes_view``); configured patterns were
        # written against the text as it is and see it so.
        self._builtin_plan, self._custom_plan = (
            tuple(
                (rule.triggers, rule.prefilter, rule.pattern.sub, partial(_replace, rule=rule))
                for rule in rules
            )
            for rules in (BUILTIN_RULES, self.custom)
        )

    def suspect(self, value: str) -> bool:
        """Whether ``value`` may hold a secret (see ``_suspect``; always, with configured
        patterns)."""
        return bool(self.custom) or _suspect(value)

    def suspects(self, values: list[str], *, confirm: bool = True) -> bytearray:
        """:meth:`suspect` of each of ``values`` (1 or 0), in one pass over all of them.
        ``confirm=False``: any trigger word counts (no prefilter gate), for texts such as JSON
        in which a secret's separator may appear escaped."""
        if self.custom:
            return bytearray(b"\x01" * len(values))
        return self._suspects(values, confirm=confirm)

    def line_spans(self, data: bytes, begin: int, end: int, count: int) -> list[tuple[int, int]]:
        """The lines of ``data[begin:end]`` (``count`` ASCII lines, each ending in "\\n") that
        :meth:`suspects` flags, as the (start, newline) offsets of each in ``data``."""
        if self.custom:
            return every_line(data, begin, end)
        return self._suspects.spans(data, begin, end, count)

    def text(self, value: str, *, suspect: bool | None = None) -> str:
        """``value`` with every secret replaced (the same object when there was none).

        ``suspect``: the caller already ran :meth:`suspect` on ``value`` (it costs a lowered
        copy and a scan per call, the largest part of redaction on clean lines)."""
        if not (self.suspect(value) if suspect is None else suspect):
            return value  # the common case
        low = caseless(value)  # rules are chosen by the triggers in ``low``
        ascii_text = value.isascii()  # where prefilters hold (an escapes_view is not ASCII)
        view = escapes_view(value)
        if view is None:
            value = _apply(self._builtin_plan, value, low, ascii_text)
        else:
            new = _apply(self._builtin_plan, view, low, ascii_text)
            if new is not view:
                value = unview(new)
        if self._custom_plan:
            value = _apply(self._custom_plan, value, low, ascii_text)  # no triggers
        return value

    def secrets(self, value: str) -> list[tuple[int, int]]:
        """Where in ``value`` the rules find a secret: sorted, merged (start, end) spans of
        ``value``, each what :meth:`text` would replace (the built-in rules read escaped quotes
        as :meth:`text` does, on the escapes view, and their spans are mapped back).

        For text in pieces that must be masked piece by piece (``argv``)."""
        if not self.suspect(value):
            return []
        low = caseless(value)
        now = value.lower() if value.isascii() else None
        view = escapes_view(value)
        # The built-in rules read escaped quotes as quotes, as text() has them do; configured
        # patterns see the text as it is.
        found = _spans(BUILTIN_RULES, value if view is None else view, low, now)
        if view is not None:
            found = _in_raw(value, found)
        return _merged(found + _spans(self.custom, value, low, now))

    def argv(self, args: list[list[str]]) -> list[list[str]] | None:
        """A command's arguments (each as the pieces it was logged in: auditd's ``aN[i]``
        chunks) with every secret masked that the rules find in its command line (the
        arguments joined by spaces), piece by piece; None when there is none.

        A value the shell took as one argument may hold spaces, quotes or ``;&|``
        (``-p'two words'``, ``curl -u 'ci:a b;c'``): a secret that the rules end at one of
        those inside an argument runs to that argument's end. Each string alone is redacted
        as any field is; this adds what only their order shows (``mysql`` then ``-pS3cret``,
        ``curl`` ``-u`` ``bob:pw``)."""
        pieces = [piece for arg in args for piece in arg]
        starts: list[int] = []  # of each piece in the command line
        ends: list[int] = []  # of each argument
        at = 0
        for arg in args:
            for piece in arg:
                starts.append(at)
                at += len(piece)
            ends.append(at)
            at += 1
        line = " ".join("".join(arg) for arg in args)
        spans = self.secrets(line)
        if not spans:
            return None
        widened = []
        for start, found_end in spans:
            arg_end = ends[bisect_right(ends, found_end - 1)]
            # a space, quote or ;&| inside one argument: literal, the value goes on
            end = arg_end if found_end < arg_end and line[found_end] in _ENDS_A_WORD else found_end
            widened.append((start, end))
        masks: list[list[tuple[int, int]]] = [[] for _ in pieces]
        for start, end in _merged(widened):  # a widened span may cover the next ones
            first = bisect_right(starts, start) - 1
            for i in range(max(first, 0), len(pieces)):
                begin = starts[i]
                if begin >= end:
                    break
                low, high = max(start, begin) - begin, min(end, begin + len(pieces[i])) - begin
                if high > low:
                    masks[i].append((low, high))
        out = [_masked(piece, mask) for piece, mask in zip(pieces, masks, strict=True)]
        if out == pieces:
            return None
        taken = iter(out)
        return [[next(taken) for _ in arg] for arg in args]

    def record(
        self, record: Record, *, fields_from_msg: bool = False, suspect: bool | None = None
    ) -> Record:
        """Redact ``msg`` and all parsed string fields in place; tag the record if anything went.

        ``fields_from_msg``: the parser only copied substrings of ``msg`` (nothing decoded), so
        when ``msg`` holds no trigger word its fields cannot either and are not walked.
        Otherwise they are walked unless their JSON holds no trigger either (``may_hold``).
        ``suspect``: :meth:`suspect` of ``msg``, when the caller already knows it.
        """
        changed = False
        tags = record.get("tags")
        msg = record.get("msg")
        walk = not fields_from_msg
        if isinstance(msg, str):
            if suspect is None:
                suspect = self.suspect(msg)
            walk = walk or suspect
            if tags and "split" in tags:
                new = self._split_part(record, msg)
            else:
                new = self.text(msg, suspect=suspect)
            if new != msg:
                record["msg"] = new
                changed = True
        if walk and (fields_from_msg or fields_may_hold(self, [record])[0]):
            changed = redact_fields(self, record) or changed
        if changed:
            tag(record, "redacted")
        return record

    def _split_part(self, record: Record, msg: str) -> str:
        """Redact one part of a split line, including what straddles its boundaries."""
        log = record.get("log")
        path, part = "", 0
        if isinstance(log, dict):
            file = log.get("file")
            path = str(file.get("path", "")) if isinstance(file, dict) else ""
            part = int(log.get("part", 0) or 0)
        carried = self._carry.pop(path, None)
        masked = msg
        if carried is not None and carried[0] == part:
            quote, value = (carried[3], 0) if carried[3] else _quote_opening(carried[1], masked)
            if quote:  # a quoted secret open across the boundary: masked up to its close
                close = masked.find(quote, value)
                masked = REDACTED + (masked[close:] if close >= 0 else "")
            masked = self._continue(masked, carried[1], in_key=carried[2])
        masked = self.text(masked)
        if part > 0:  # the token that starts this part may end a secret begun in the last one
            masked = mask_lead(masked)
        in_key = self._opens_key(msg, carried[2] if carried else False)
        # A quoted secret still open where this part ends ('password="a b'): the rest of the
        # part is masked (the rules took only its first word), and the next part up to its close.
        quote = ""
        if opened := _OPEN_QUOTED_SECRET.search(masked):
            quote = opened["quote"]
            masked = masked[: opened.end("quote")] + REDACTED
        self._carry[path] = (part + 1, msg[-_TAIL:], in_key, quote)
        return mask_trail(masked)

    def _continue(self, msg: str, tail: str, *, in_key: bool) -> str:
        """Mask the start of ``msg`` as far as a rule matches across the boundary from ``tail``."""
        if in_key:
            end = _KEY_END.search(msg)
            return REDACTED + (msg[end.end() :] if end else "")
        window = tail + msg[:_TAIL]
        cut = len(tail)
        reach = 0
        for rule in self.rules:
            for m in rule.pattern.finditer(window):
                if m.end() <= cut or (rule.check is not None and not rule.check(m)):
                    continue
                if m.start() < cut or not self._found_alone(rule, msg, m.start() - cut):
                    # Across the boundary, or after it but a secret only with what precedes
                    # it (mysql ... -p<pw>: the client's name is in the last part).
                    reach = max(reach, m.end() - cut)
        return REDACTED + msg[reach:] if reach else msg

    @staticmethod
    def _found_alone(rule: Rule, msg: str, at: int) -> bool:
        """Whether ``rule`` finds its match at ``at`` in ``msg`` without the parts before."""
        alone = rule.pattern.match(msg, at)
        return alone is not None and (rule.check is None or rule.check(alone))

    @staticmethod
    def _opens_key(msg: str, inside: bool) -> bool:
        """Whether ``msg`` ends inside a private key block."""
        begin = msg.rfind("PRIVATE KEY")
        if begin < 0:
            return inside and _KEY_END.search(msg) is None
        return msg.rfind("-----BEGIN", 0, begin) > msg.rfind("-----END", 0, begin)
