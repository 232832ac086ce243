"""Redaction: secrets never reach the buffer.

Role: the last transform of every chain (after parsing, so decoded values such as auditd hex
fields or JSON escapes are redacted too). ``Redactor.record(record)`` rewrites ``msg`` and every
string field a parser added, replacing each secret by ``[REDACTED]`` (key names and schemes stay,
so ``password=[REDACTED]`` still says what was there) and tags the record ``redacted``.

Rules: AWS access key ids and secret keys, ``password=``/``"password": ...``/``--password``/
``mysql -p<pw>``/``sshpass -p``, ``Authorization:`` values, bearer tokens, basic credentials (only
when the base64 decodes to ``user:pass``), URL credentials, JWTs, private key blocks, well-known
vendor token shapes, plus configured patterns (a ``(?P<secret>...)`` group limits the
replacement to that group, otherwise the whole match goes). Each built-in rule has cheap
lower-case trigger substrings, so a line without any trigger costs one ``lower()`` and a few
``in`` tests; a rule whose pattern is slow may add a prefilter (a cheaper necessary condition on
ASCII text), which also decides whether a value holding only that rule's triggers is suspect at
all ("Failed password for root" holds "pass", but no ``password=``).

Batches: ``Redactor.suspects`` answers "holds a trigger?" for many strings in one pass (Hyperscan
for big batches, ``str.find`` over the joined strings for small ones), and ``redact_batch`` uses
it to redact a whole batch, or one record's fields, with one pass over all their strings;
the rules then run only on the strings it flags.

Split lines (invariant: redaction is not defeated by the max-line-bytes split): the file source
splits an over-long line into parts tagged ``split`` with ``log.part``. Neither part alone can
tell whether a token at the boundary is a secret, so for split parts the redactor masks the
token touching each boundary, remembers the tail of each part per file path and masks whatever a
rule matches across the boundary, and carries "inside a private key block" into the next part.

State: ``_carry`` (file path -> tail of the last split part) is owned by the one task or thread
that runs the source's chain; it holds at most one entry per file being split.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, repeat
from operator import add

from agent.record import Record
from agent.transforms.fields import tag
from agent.transforms.redact_batch import fields_may_hold, redact_fields

# Without a hyperscan wheel for the platform, the pure-Python scan gives the same answers.
_HYPERSCAN = importlib.util.find_spec("hyperscan") is not None
# Smaller batches (a trickle of lines) are scanned with ``str.find``: the scanner pays off on
# big ones, and loading its library costs ~6 MB of RSS that an idle agent need not carry.
_SCAN_MIN = 64
_FIND_MIN = 4  # below this, one ``_suspect`` per value beats joining them for ``_find_suspects``

REDACTED = "[REDACTED]"
_TAIL = 4096  # longest secret we expect to straddle a split boundary (JWTs, keys' headers)
_KEY_END = re.compile(r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")


def _basic(m: re.Match[str]) -> bool:
    """``Basic <b64>`` is a credential only if it decodes to ``user:password``."""
    token = m["secret"]
    try:
        return b":" in base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    triggers: tuple[str, ...]  # lower-case substrings one of which every match contains
    check: Callable[[re.Match[str]], bool] | None = None
    # Searched in the lower-cased text of an ASCII value: no hit means ``pattern`` cannot match
    # (a cheap necessary condition where ``pattern`` is slow, as case-insensitive ones are).
    prefilter: re.Pattern[str] | None = None


_AWS_PREFIX = "AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA"
_KV_KEYS = (
    r"password|passwd|passphrase|pass|secret|secret_?key|api_?key|apikey|access_?token"
    r"|auth_?token|refresh_?token|client_?secret|private_?key|token"
)
BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        "private_key",
        re.compile(
            r"(?P<secret>-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z))",
            re.S,
        ),
        ("private key",),
    ),
    Rule(
        "aws_access_key",
        re.compile(rf"(?<![A-Za-z0-9])(?P<secret>(?:{_AWS_PREFIX})[A-Z0-9]{{16}})(?![A-Za-z0-9])"),
        tuple(p.lower() for p in _AWS_PREFIX.split("|")),
    ),
    Rule(
        "aws_secret_key",
        re.compile(
            r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+=]{40})"
        ),
        ("secret",),
    ),
    Rule(
        "jwt",
        re.compile(r"(?P<secret>eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"),
        ("eyj",),
    ),
    Rule(
        "authorization",
        re.compile(
            r"(?i)(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:[A-Za-z-]{1,20}\s+)?"
            r"(?P<secret>[^\s\"',;]{1,8192})"
        ),
        ("authorization",),
    ),
    Rule(
        "bearer",
        re.compile(r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,8192})"),
        ("bearer",),
    ),
    Rule(
        "basic",
        re.compile(r"(?i)\bbasic\s+(?P<secret>[A-Za-z0-9+/]{4,8192}={0,2})"),
        ("basic",),
        _basic,
    ),
    Rule(
        "url_credentials",
        # Starts with a literal so ``re`` can skip ahead with a fast substring search.
        re.compile(r"://[^\s/:@]{0,256}:(?P<secret>[^\s/]{1,256})@"),
        ("://",),
    ),
    Rule(
        "password_option",
        re.compile(r"(?i)(?<![\w-])--?(?:password|passwd|pass)(?:=|\s+)(?P<secret>[^\s;&|]+)"),
        ("-pass", "--pass"),
    ),
    Rule(
        "password_assignment",
        re.compile(
            rf"(?i)(?:\b|_)(?:{_KV_KEYS})[\"']?\s*[:=]\s*"
            r"(?P<secret>\"[^\"]{1,8192}\"|'[^']{1,8192}'|[^\s,;&\"'}]{1,8192})"
        ),
        ("pass", "secret", "token", "apikey", "api_key", "private"),
        # Every key ends in one of these words and is followed by the separator.
        prefilter=re.compile(r"(?:pass(?:word|wd|phrase)?|secret|key|token)[\"']?\s*[:=]"),
    ),
    Rule(
        "mysql_password",
        re.compile(
            r"\b(?:mysql\w*|mariadb\w*|mysqldump|mysqladmin)\b[^|;&\n]{0,1024}?\s-p"
            r"(?P<secret>[^\s|;&]+)"
        ),
        ("mysql", "mariadb"),
    ),
    Rule("sshpass", re.compile(r"\bsshpass\s+-p\s*(?P<secret>\S+)"), ("sshpass",)),
    Rule(
        "vendor_token",
        re.compile(
            r"(?<![A-Za-z0-9])(?P<secret>gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_\w{40,255}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,255}|AIza[0-9A-Za-z_-]{35}|sk_live_[0-9A-Za-z]{16,255}"
            r"|glpat-[0-9A-Za-z_-]{20})"
        ),
        (
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "xox",
            "aiza",
            "sk_live_",
            "glpat-",
        ),
    ),
)


def _replace(m: re.Match[str], rule: Rule) -> str:
    if rule.check is not None and not rule.check(m):
        return m[0]
    if "secret" not in m.re.groupindex or m.start("secret") < 0:
        return REDACTED
    base = m.start()
    return m[0][: m.start("secret") - base] + REDACTED + m[0][m.end("secret") - base :]


def _mask_lead(text: str) -> str:
    """Mask the first token (up to ``_TAIL`` characters) of ``text``."""
    start = len(text) - len(text.lstrip())
    end = start
    limit = min(len(text), start + _TAIL)
    while end < limit and not text[end].isspace():
        end += 1
    return text[:start] + REDACTED + text[end:] if end > start else text


def _mask_trail(text: str) -> str:
    """Mask the last token (up to ``_TAIL`` characters) of ``text``."""
    end = len(text.rstrip())
    start = end
    limit = max(0, end - _TAIL)
    while start > limit and not text[start - 1].isspace():
        start -= 1
    return text[:start] + REDACTED + text[end:] if end > start else text


def _cover(rules: tuple[Rule, ...], *, beside: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fewest lower-case words such that every line some rule can match holds one: the
    rules' own triggers, minus any that contains a shorter one ("--pass" holds "-pass") or a
    word of ``beside`` (a line holding that is found by it). AWS key ids are upper case and
    found by their own regex instead."""
    words = {w for rule in rules if rule.name != "aws_access_key" for w in rule.triggers}
    return tuple(
        sorted(
            w
            for w in words
            if not any(o != w and o in w for o in words) and not any(o in w for o in beside)
        )
    )


# The fast path. Python's ``re`` is slow at alternations of literals; ``in`` over one
# ``lower()`` copy is several times faster, and one Hyperscan pass over a whole batch faster still.
#
# A value is suspect when it may hold a secret: it holds a word of ``_FAST_WORDS`` or an AWS key
# id, or a word of ``_GATED_WORDS`` (the triggers of rules with a prefilter) confirmed by
# ``_confirmed``. The gate matters for auth logs, where "Failed password for ..." and the parsed
# method "password" hold "pass" but never a ``password=`` assignment: checking the prefilter once
# per such value costs far less than running the rules on it and walking its record's fields.
_GATED = tuple(rule for rule in BUILTIN_RULES if rule.prefilter is not None)
_FAST_WORDS = _cover(tuple(rule for rule in BUILTIN_RULES if rule.prefilter is None))
_GATED_WORDS = _cover(_GATED, beside=_FAST_WORDS)
_PREFILTERS = tuple(rule.prefilter for rule in _GATED if rule.prefilter is not None)
_FAST_AWS = re.compile(rf"(?:{_AWS_PREFIX})[A-Z0-9]{{16}}")


def _confirmed(value: str) -> bool:
    """Whether ``value``, which holds a word of ``_GATED_WORDS``, is suspect: unless it is ASCII
    and no prefilter finds anything in it lowered (a prefilter is a necessary condition of its
    rule on ASCII text only, which is also when ``Redactor.text`` consults it)."""
    if not value.isascii():
        return True
    low = value.lower()
    return any(prefilter.search(low) for prefilter in _PREFILTERS)


def _suspect(value: str) -> bool:
    low = value.lower()
    if any(map(low.__contains__, _FAST_WORDS)) or _FAST_AWS.search(value):
        return True
    return any(map(low.__contains__, _GATED_WORDS)) and _confirmed(value)


def _unconfirmed(value: str) -> bool:
    """``_suspect`` without the gate: any trigger word at all. For JSON texts (``may_hold``),
    where escapes (``\\"``, ``\\t``) can hide the separator a prefilter looks for."""
    low = value.lower()
    words = (*_FAST_WORDS, *_GATED_WORDS)
    return any(map(low.__contains__, words)) or bool(_FAST_AWS.search(value))


def _suspects(values: list[str], *, confirm: bool = True) -> bytearray:
    """``_suspect`` of each value (1 or 0), or ``_unconfirmed`` if not ``confirm``: the reference
    the batch scanners must agree with."""
    return bytearray(map(_suspect if confirm else _unconfirmed, values))


def _ends(values: Sequence[Sized]) -> list[int]:
    """Where each of ``values`` ends once they are joined by one separator (one past it)."""
    return list(accumulate(map(add, map(len, values), repeat(1))))


def _mark(offsets: list[int], ends: list[int], flags: bytearray) -> None:
    for at in offsets:  # value i ends at ends[i]
        flags[bisect_right(ends, at)] = 1


def _gate(
    offsets: list[int], ends: list[int], values: list[str], flags: bytearray, confirm: bool
) -> None:
    """Flag the values holding a gated word at ``offsets`` (as ``_mark``), once ``_confirmed``."""
    if not confirm:
        _mark(offsets, ends, flags)
        return
    for i in {bisect_right(ends, at) for at in offsets}:
        if not flags[i] and _confirmed(values[i]):
            flags[i] = 1


def _find_aws(text: str, values: list[str], flags: bytearray) -> None:
    """Flag the values holding an AWS key id, ``text`` being them joined by "\\n"."""
    if starts := [m.start() for m in _FAST_AWS.finditer(text)]:
        _mark(starts, _ends(values), flags)


def _find_suspects(values: list[str], *, confirm: bool = True) -> bytearray:
    """``_suspects`` by ``str.find`` over the values joined: a pass per word over the batch, not
    one per value. No word holds the "\\n" that joins them, so a hit lies inside one value.
    Non-ASCII values are lowered one by one, as ``_suspect`` does (lowering can change lengths
    and context: "\\u0130" lowers to two characters)."""
    flags = bytearray(len(values))
    text = "\n".join(values)
    if text.isascii():
        low, ends = text.lower(), _ends(values)
    else:
        lowered = [v.lower() for v in values]
        low, ends = "\n".join(lowered), _ends(lowered)
    gated: list[int] = []
    for words, found in ((_FAST_WORDS, None), (_GATED_WORDS, gated)):
        for word in words:
            at = low.find(word)
            while at >= 0:  # after a hit, on from the next value: one hit per word and value
                i = bisect_right(ends, at)
                if found is None:
                    flags[i] = 1
                else:
                    found.append(at)
                at = low.find(word, ends[i])
    _find_aws(text, values, flags)
    _gate(gated, ends, values, flags, confirm)
    return flags


class _BatchScanner:
    """``_suspects`` in one Hyperscan pass over a batch's values joined by "\\n" (which no
    trigger word holds, so a hit's offset says which value holds it).

    An ASCII batch (the common case) is scanned as it is, the words matching ASCII-caselessly
    (on ASCII text, what ``str.lower`` gives); AWS key id prefixes, case-sensitive, are in the
    database too, and a value with one is checked with the regex. Otherwise values are lowered
    by Python (``str.lower`` is what the triggers assume, e.g. the Kelvin sign lowers to "k"),
    scanned as UTF-8, and the AWS regex runs over the original text. Values with a gated word
    are confirmed one by one (``_gate``). (The whole AWS regex in the database would take ~50 ms
    to compile, literals ~1 ms.) One scanner (and its scratch space) per ``Redactor``, which one
    thread drives at a time.
    """

    def __init__(self) -> None:
        import hyperscan

        self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        words = [re.escape(word).encode() for word in (*_FAST_WORDS, *_GATED_WORDS)]
        self.gated_id = len(_FAST_WORDS)  # ids from here on are gated words
        self.aws_id = len(words)  # ids from here on are AWS key id prefixes
        prefixes = [prefix.encode() for prefix in _AWS_PREFIX.split("|")]
        self.db.compile(
            expressions=words + prefixes,
            ids=list(range(len(words) + len(prefixes))),
            flags=[hyperscan.HS_FLAG_CASELESS] * len(words) + [0] * len(prefixes),
        )

    def __call__(self, values: list[str], *, confirm: bool = True) -> bytearray:
        flags = bytearray(len(values))
        text = "\n".join(values)
        hits: list[int] = []  # offsets of the last byte of each trigger word found
        gated: list[int] = []  # and of each gated word
        prefixes: list[int] = []  # and of each AWS key id prefix
        gated_id, aws_id = self.gated_id, self.aws_id

        def hit(id_: int, _start: int, end: int, _flags: int, _context: object) -> None:
            (prefixes if id_ >= aws_id else gated if id_ >= gated_id else hits).append(end - 1)

        if text.isascii():
            self.db.scan(text.encode("ascii"), match_event_handler=hit)
            if hits or gated or prefixes:  # where values end matters only then: most are clean
                ends = _ends(values)
                _mark(hits, ends, flags)
                for at in prefixes:
                    i = bisect_right(ends, at)
                    flags[i] = flags[i] or _FAST_AWS.search(values[i]) is not None
                _gate(gated, ends, values, flags, confirm)
            return flags
        lowered = [v.lower().encode("utf-8", "surrogatepass") for v in values]
        self.db.scan(b"\n".join(lowered), match_event_handler=hit)
        ends = _ends(lowered) if hits or gated else []
        _mark(hits, ends, flags)
        _find_aws(text, values, flags)
        _gate(gated, ends, values, flags, confirm)
        return flags


class Redactor:
    """Applies the built-in rules plus ``patterns`` (regular expressions from config)."""

    def __init__(self, patterns: list[str] | tuple[str, ...] = ()) -> None:
        self.custom = tuple(Rule(f"custom{i}", re.compile(p), ()) for i, p in enumerate(patterns))
        self.rules = BUILTIN_RULES + self.custom
        self._carry: dict[str, tuple[int, str, bool]] = {}  # path -> (next part, tail, in key)
        self._scanner: _BatchScanner | None = None  # made for the first big batch
        # Per rule, in order: what ``text`` needs, bound once instead of per call.
        self._plan = tuple(
            (rule.triggers, rule.prefilter, rule.pattern.sub, partial(_replace, rule=rule))
            for rule in self.rules
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
        if len(values) < _FIND_MIN:
            return _suspects(values, confirm=confirm)
        if len(values) < _SCAN_MIN or not _HYPERSCAN:
            return _find_suspects(values, confirm=confirm)
        if self._scanner is None:
            self._scanner = _BatchScanner()
        return self._scanner(values, confirm=confirm)

    def text(self, value: str, *, suspect: bool | None = None) -> str:
        """``value`` with every secret replaced (the same object when there was none).

        ``suspect``: the caller already ran :meth:`suspect` on ``value`` (it costs a lowered
        copy and a scan per call, the largest part of redaction on clean lines)."""
        if not (self.suspect(value) if suspect is None else suspect):
            return value  # the common case
        low = now = value.lower()  # rules are chosen by ``low``; ``now`` follows the rewrites
        ascii_text = value.isascii()
        for triggers, prefilter, sub, replace in self._plan:
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
            masked = self._continue(masked, carried[1], in_key=carried[2])
        masked = self.text(masked)
        if part > 0:  # the token that starts this part may end a secret begun in the last one
            masked = _mask_lead(masked)
        in_key = self._opens_key(msg, carried[2] if carried else False)
        self._carry[path] = (part + 1, msg[-_TAIL:], in_key)
        return _mask_trail(masked)

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
                if m.start() < cut < m.end():
                    reach = max(reach, m.end() - cut)
        return REDACTED + msg[reach:] if reach else msg

    @staticmethod
    def _opens_key(msg: str, inside: bool) -> bool:
        """Whether ``msg`` ends inside a private key block."""
        begin = msg.rfind("PRIVATE KEY")
        if begin < 0:
            return inside and _KEY_END.search(msg) is None
        return msg.rfind("-----BEGIN", 0, begin) > msg.rfind("-----END", 0, begin)
