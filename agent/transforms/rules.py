"""The built-in redaction rules: what a secret looks like, and the words that announce one.

Role: data for ``redact.py`` (which applies the rules) and ``suspects.py`` (which finds the values
some rule may change). Each ``Rule`` has a pattern whose ``secret`` group (or whole match) is
replaced by ``REDACTED``, lower-case trigger substrings one of which every match contains, an
optional ``check`` of a match (``basic`` credentials must decode to ``user:pass``) and an
optional prefilter: a cheap necessary condition on ASCII text, searched in its lowered copy.

Invariants: every match of a rule's pattern holds one of its triggers in ``caseless()`` of the
text; on ASCII text, its prefilter finds something wherever the pattern matches and its check
passes (tests hold both).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

REDACTED = "[REDACTED]"

# Python's ``(?i)`` matches these as the ASCII letters they fold to (long s, dotless i, dotted
# capital I), but ``str.lower()`` keeps the first two and makes two characters of the third:
# "pa\u017fsword=x" is a password a rule redacts, yet "pass" is not in its lower().
_FOLD = str.maketrans({"\u017f": "s", "\u0131": "i", "\u0130": "i"})


def caseless(text: str) -> str:
    """``text`` lowered as trigger words are looked for in it: ``str.lower()``, after folding the
    characters a ``(?i)`` rule matches as ASCII letters that lower() does not turn into them.
    (Every other character whose case folds onto an ASCII letter, as the Kelvin sign onto "k",
    lowers to it.)"""
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


# An escaped quote (``\\"``, as in a JSON string or a shell word) and an escaped backslash, as the
# built-in rules see them: one character each (Unicode private use), which the rules take for a
# quote and for a plain character. ``password=\\"hunter2\\"`` inside a JSON line then reads as
# ``password="hunter2"`` does, instead of as a one-character value ``\\``.
ESCAPED_QUOTE, ESCAPED_BACKSLASH = "\ue000", "\ue001"
_ESCAPE = re.compile(r'\\["\\]')
_ESCAPED = {'\\"': ESCAPED_QUOTE, "\\\\": ESCAPED_BACKSLASH}.__getitem__


def escapes_view(text: str) -> str | None:
    """``text`` with each ``\\"`` and ``\\\\`` (paired left to right, as JSON does) made one
    character, for the built-in rules; None when it holds no escaped quote, or already holds one
    of those characters (then the rules see it as it is)."""
    if '\\"' not in text or ESCAPED_QUOTE in text or ESCAPED_BACKSLASH in text:
        return None
    return _ESCAPE.sub(lambda m: _ESCAPED(m[0]), text)


def unview(view: str) -> str:
    """The text an ``escapes_view`` stands for, with whatever the rules replaced in it."""
    return view.replace(ESCAPED_QUOTE, '\\"').replace(ESCAPED_BACKSLASH, "\\\\")


_MYSQL = re.compile(r"\b(?:mysql\w*|mariadb\w*|mysqldump|mysqladmin)\b")
# Registry logins that take the password as -p: docker login -p, podman login -p, ...
_LOGIN = re.compile(
    r"\b(?:docker|podman|buildah|skopeo|nerdctl)\s+login\b|\bhelm\s+registry\s+login\b"
)
_CURL = re.compile(r"(?<![\w.-])curl(?!\S)")  # the command, not curl-test or curl/8.5.0
_REDIS = re.compile(r"\bredis-cli\b")
_COMMAND_REACH = 1024  # characters from the command's name to the whitespace before its option


def _command_before(
    names: re.Pattern[str], words: tuple[str, ...]
) -> Callable[[re.Match[str]], bool]:
    """A check that a command ``names`` matches (and which holds one of ``words``) ends at most
    ``_COMMAND_REACH`` characters before the whitespace that precedes the match (its option),
    with no ``|``, ``;``, ``&`` or newline between: ``-p`` is a password to mysql and docker
    login, ``-a`` to redis-cli, ``-u`` a user:password to curl, and other things elsewhere.

    It looks only at the window before the match, in place (no copy, no state kept between
    calls): a bounded cost per match, whatever the text and whichever thread asks. (A cache of
    each text's commands, tried first, made split lines and a second thread quadratic.)"""

    def check(m: re.Match[str]) -> bool:
        text, space = m.string, m.start() - 1
        low = max(0, space - _COMMAND_REACH - 64)
        if not any(text.find(word, low, space) >= 0 for word in words):
            return False  # the common case, in C
        start = max(low, *(text.rfind(c, low, space) + 1 for c in "|;&\n"))
        # Inside a command substitution still open at the option ("$(date -u" after curl -H),
        # the option is the inner command's: its name comes after the "$(".
        opened = text.rfind("$(", start, space)
        if opened >= 0 and text.find(")", opened, space) < 0:
            start = opened + 2
        reach = space - _COMMAND_REACH
        return any(name.end() >= reach for name in names.finditer(text, start, space))

    return check


_mysql_before = _command_before(_MYSQL, ("mysql", "mariadb"))


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
    # For a case-sensitive ``pattern``: substrings one of which every match contains as it is.
    # Which values may hold a secret (``suspects.py``) is then asked of these, not of
    # ``triggers`` in any case: random text holds "eyj" or "xox" far more often than "eyJ".
    exact: tuple[str, ...] = ()


# A value in quotes (which stay, outside the secret): "..." or '...', or between escaped quotes
# (ESCAPED_QUOTE) inside a JSON string. Not the punctuation between two JSON strings: in
# '{"msg":"Enter password:","level":"info"}' the "," is no quoted value (its closing quote opens
# the next string), while in '{"password": ","}' it is. Possessive runs: a
# quoted value can end only at the next quote, and a scan that fails there gives up at once
# instead of retrying every shorter length.
_NOT_JSON_PUNCTUATION = r"(?![\s,:{}\[\]]*\"(?![\s,:}\]]|$))"
_QUOTED = (
    rf"(?<=\"){_NOT_JSON_PUNCTUATION}[^\"]{{1,8192}}+(?=\")"
    rf"|(?<=')[^']{{1,8192}}+(?=')"
    rf"|(?<=\ue000)[^\ue000\"]{{1,8192}}+(?=\ue000)"
)
# ... whose closing quote also ends the word (the end, whitespace, a separator, or a JSON
# string's end): -p"S3cr3t"Tail and the shell's 'ab'"'"'cd' are one word, not a quoted value.
_WORD_END = r"(?:$|[\s,;&|}\])]|\"(?:$|[,}\]]))"
_QUOTED_WORD = (
    rf"(?<=\"){_NOT_JSON_PUNCTUATION}[^\"]{{1,8192}}+(?=\"{_WORD_END})"
    rf"|(?<=')[^']{{1,8192}}+(?='{_WORD_END})"
    rf"|(?<=\ue000)[^\ue000\"]{{1,8192}}+(?=\ue000{_WORD_END})"
)

# A bare value right after an opening quote does not start with what follows a JSON string's
# closing quote ('{"cmd":"mysql -p"}': no value there, and the "}" is not one).
_AFTER_OPENER = r"(?:(?<![\"'\ue000])|(?![,}\]]))"


def _argument(stop: str) -> str:
    """A command-line secret (``--password``, ``mysql -p``, ``sshpass -p``): quoted, or the whole
    word up to whitespace or a character of ``stop``, quotes and all (the shell's Pa\\"ss,
    It\\'s, -p"a"b), except a double quote that ends a JSON string ('"cmd":"mysql -ppw"}'): it
    is followed by ",", "}", "]" or the end, and stays."""
    bare = rf"(?:[^\s{stop}\"]|\"(?![,}}\]]|$))+"
    return rf"[\"'\ue000]?(?P<secret>{_QUOTED_WORD}|{_AFTER_OPENER}{bare})"


# What the key of every ``password_assignment`` ends with (its prefilter; split lines in
# ``redact.py`` look for an open quoted value after these too).
KEY_ENDINGS = r"pass(?:word|wd|phrase)?|secret|key|token"
AWS_PREFIX = "AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA"
_KV_KEYS = (  # "-" too: the X-Api-Key and X-Auth-Token headers
    r"password|passwd|passphrase|pass|secret|secret_?key|api[_-]?key|apikey|access[_-]?token"
    r"|auth[_-]?token|refresh_?token|client_?secret|private_?key|token"
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
        re.compile(rf"(?<![A-Za-z0-9])(?P<secret>(?:{AWS_PREFIX})[A-Z0-9]{{16}})(?![A-Za-z0-9])"),
        tuple(p.lower() for p in AWS_PREFIX.split("|")),
    ),
    Rule(
        "aws_secret_key",
        re.compile(
            r"(?i)aws_?secret_?(?:access_?)?key[\"'\ue000]?\s*[:=]\s*[\"'\ue000]?"
            r"(?P<secret>[A-Za-z0-9/+=]{40})"
        ),
        ("secret",),
    ),
    Rule(
        "jwt",
        # Tried only where a run of token characters starts (glued to at most 16 of them),
        # with possessive runs: each character is scanned a bounded number of times. Tried at
        # every "eyJ", a line of "eyJeyJeyJ..." cost time quadratic in its length (~1 s for
        # 64 KiB, minutes for a 1 MiB line).
        re.compile(
            r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{0,16}?"
            r"(?P<secret>eyJ[A-Za-z0-9_-]{4,}+\.eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+)"
        ),
        ("eyj",),
        exact=("eyJ",),
    ),
    Rule(
        "authorization",
        re.compile(
            r"(?i)(?:proxy-)?authorization[\"'\ue000]?\s*[:=]\s*[\"'\ue000]?"
            r"(?:[A-Za-z-]{1,20}\s+)?(?P<secret>" + _AFTER_OPENER + r"[^\s\"',;\ue000]{1,8192})"
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
        re.compile(r"(?i)(?<![\w-])--?(?:password|passwd|pass)(?:=|\s+)" + _argument(";&|")),
        ("-pass", "--pass"),
    ),
    Rule(
        "password_assignment",
        re.compile(
            # A quoted value's quotes stay (outside the secret): a redacted JSON line or
            # password="..." assignment keeps its shape, '"password": "[REDACTED]"'. A value
            # in escaped quotes (ESCAPED_QUOTE) ends at the next one, or at a JSON string's end.
            # PAM's "module(passwd:chauthtok)" names a service and a type, no secret.
            rf"(?i)(?:\b|_)(?:{_KV_KEYS})[\"'\ue000]?\s*[:=]\s*[\"'\ue000]?"
            rf"(?!(?:auth|account|session|password|chauthtok)\))"
            rf"(?P<secret>{_QUOTED}|[^\s,;&\"'}}\ue000]{{1,8192}})"
        ),
        ("pass", "secret", "token", "apikey", "api_key", "api-key", "private"),
        # Every key ends in one of these words and is followed by the separator (its closing
        # quote may be escaped: ``\\"`` in raw text, ESCAPED_QUOTE in an escapes_view).
        prefilter=re.compile(rf"(?:{KEY_ENDINGS})(?:\\?[\"']|\ue000)?\s*[:=]"),
    ),
    Rule(
        "mysql_password",
        # -p<password> where a mysql client command precedes it (``_mysql_before``). Matched
        # from the -p, not from the command: a pattern scanning up to 1 KiB after every word
        # "mysql" cost ~2.4 s for a 1 MiB line of them.
        re.compile(r"(?<=\s)-p" + _argument("|;&")),
        ("mysql", "mariadb"),
        _mysql_before,
    ),
    Rule("sshpass", re.compile(r"\bsshpass\s+-p\s*" + _argument("")), ("sshpass",)),
    Rule(
        "login_password",
        # docker login -p <password> (the value may follow after spaces, unlike mysql's -p)
        re.compile(r"(?<=\s)-p(?:\s++|=)?" + _argument("|;&")),
        ("docker", "podman", "buildah", "skopeo", "nerdctl", "helm"),
        _command_before(_LOGIN, ("login",)),
        # dockerd's own log lines hold "docker" but no login: not suspect
        prefilter=re.compile(r"login"),
    ),
    Rule(
        "redis_password",
        re.compile(r"(?<=\s)-a(?:\s++)?" + _argument("|;&")),
        ("redis-cli",),
        _command_before(_REDIS, ("redis-cli",)),
    ),
    Rule(
        "curl_user",
        # curl -u user:password (the user stays): in quotes, the password runs to the closing
        # quote (spaces and all); bare, to whitespace
        # (or only the password quoted: bob:'pw'); -U/--proxy-user alike
        re.compile(
            r"(?<=\s)(?:-[uU]\s*+|--(?:proxy-)?user(?:\s++|=))(?P<q>[\"'\ue000])?"
            r"(?(q)[^:\"'\ue000]{1,256}+|[^\s:\"'\ue000]{1,256}+):(?(q)|(?P<q2>[\"'\ue000])?)"
            r"(?P<secret>(?(q)[^\"'\ue000]{1,8192}+|(?(q2)[^\"'\ue000]{1,8192}+|[^\s\"'\ue000]{1,8192}+)))"
        ),
        # Its words are the option's: "curl" is in every line of some access logs (user agents),
        # "-u" in few; the name's found by the prefilter.
        ("-u",),
        _command_before(_CURL, ("curl",)),
        prefilter=re.compile(r"curl"),
    ),
    Rule(
        "env_password",
        # PGPASSWORD=..., MYSQL_PWD=...: an environment variable named for a password, glued to
        # a prefix (password_assignment wants a word boundary or "_" before its key).
        re.compile(
            r"(?<![A-Za-z0-9_])[A-Z][A-Z0-9_]*?(?:PASSWORD|PASSWD|_PWD)=" + _argument("|;&")
        ),
        ("password", "passwd", "_pwd"),
        exact=("PASSWORD", "PASSWD", "_PWD"),
    ),
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
            *("xoxa-", "xoxb-", "xoxo-", "xoxp-", "xoxr-", "xoxs-"),  # xox[abposr]-
            "aiza",
            "sk_live_",
            "glpat-",
        ),
        exact=(
            *("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            *("xoxa-", "xoxb-", "xoxo-", "xoxp-", "xoxr-", "xoxs-", "AIza", "sk_live_", "glpat-"),
        ),
    ),
)
