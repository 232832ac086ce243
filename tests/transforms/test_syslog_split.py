"""The syslog header split: the compiled ``split_bsd``/``split_iso`` (``_speedups.c``) must give
exactly the groups of the regexes they stand for (``split_bsd_py``/``split_iso_py``), or None
with them, for any str: lines from the corpus, lines built from header pieces that sit at each
boundary of the patterns, and Unicode that re's classes take in (other decimal digits, spaces
beyond ASCII)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.transforms import syslog
from agent.transforms.syslog import SyslogParser, split_bsd_py, split_iso_py

try:
    from agent.transforms import _speedups  # type: ignore[attr-defined]

    COMPILED: dict[str, Callable[[str], Any]] | None = {
        "bsd": _speedups.split_bsd,
        "iso": _speedups.split_iso,
    }
except ImportError:  # built without a compiler: the fallback is all there is to test
    COMPILED = None

needs_compiled = pytest.mark.skipif(COMPILED is None, reason="agent.transforms._speedups not built")
REFERENCE: dict[str, Callable[[str], Any]] = {"bsd": split_bsd_py, "iso": split_iso_py}
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"

# Pieces that sit on the patterns' boundaries: each delimiter, digits of every width around the
# limits (pri 3, frac 9, pid 10), runs around the host (255) and program (64) limits, Unicode
# digits and spaces (re's \d and \s take them), NUL, and text a body may hold.
PIECES = st.sampled_from(
    [
        "<",
        ">",
        "<13>",
        "<1234>",
        "<>",
        "Nov",
        "nov",
        "NOV",
        "Jan",
        " ",
        "  ",
        ":",
        "::",
        "[",
        "]",
        "[12]",
        "[]",
        "[12345678901]",
        ".",
        "T",
        "Z",
        "+",
        "-",
        "+01:00",
        "-0530",
        "+01:0",
        "21",
        " 1",
        "1",
        "10:00:00",
        "10:00:0",
        "2026-11-21",
        "2026-11-21T10:00:00",
        "2026-11-21 10:00:00",
        ".123456",
        ".1234567890",
        "web-1",
        "sshd",
        "sshd[2000]:",
        "sshd:",
        "x" * 63,
        "x" * 64,
        "x" * 65,
        "h" * 254,
        "h" * 255,
        "h" * 256,
        "\u0663",  # ARABIC-INDIC DIGIT THREE: \d
        "\u00b2",  # SUPERSCRIPT TWO: a digit to str.isdigit, not to \d
        "\u00a0",  # NO-BREAK SPACE: \s
        "\u2003",
        "\x1c",  # a separator str.isspace (and \s) takes
        "\t",
        "\n",
        "\r",
        "\x00",
        "\U0001f600",
        "é",
        "body text",
    ]
)
LINES = st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=14).map("".join)


def headed(draw: st.DrawFn, shape: str) -> str:
    """A line with a whole header of ``shape`` (bsd or iso), one piece of it maybe altered."""
    pri = draw(st.sampled_from(["", "<13>", "<1>", "<191>"]))
    if shape == "bsd":
        day = draw(st.sampled_from(["21", " 1", "1", "\u0663\u0663"]))
        frac = draw(st.sampled_from(["", ".5", ".123456789"]))
        second = draw(st.sampled_from(["0", "9", "\u0661"]))
        stamp = f"Nov {day} 10:00:0{second}{frac}"
    else:
        sep = draw(st.sampled_from(["T", " "]))
        frac = draw(st.sampled_from(["", ".5", ".123456789"]))
        zone = draw(st.sampled_from(["", "Z", "+01:00", "-0530"]))
        stamp = f"2026-11-21{sep}10:00:00{frac}{zone}"
    host = draw(st.sampled_from(["", "web-1 ", "h" * 255 + " ", "[x] ", "a:b "]))
    prog = draw(st.sampled_from(["sshd", "CRON", "x" * 64, "systemd-logind", "a.b"]))
    pid = draw(st.sampled_from(["", "[1]", "[1234567890]", "[\u0663]"]))
    colon = draw(st.sampled_from([": ", ":", ":  "]))
    body = draw(st.text(max_size=20))
    line = f"{pri}{stamp} {host}{prog}{pid}{colon}{body}"
    if draw(st.booleans()):  # alter one character: every boundary, broken one way or another
        at = draw(st.integers(0, max(len(line) - 1, 0)))
        line = line[:at] + draw(PIECES) + line[at + 1 :]
    return line


@st.composite
def header_lines(draw: st.DrawFn) -> str:
    return headed(draw, draw(st.sampled_from(["bsd", "iso"])))


@needs_compiled
@settings(max_examples=3000, deadline=None)
@given(line=st.one_of(LINES, header_lines()))
def test_compiled_split_gives_the_regex_groups(line: str) -> None:
    assert COMPILED is not None
    for shape, reference in REFERENCE.items():
        assert COMPILED[shape](line) == reference(line), (shape, line)


@needs_compiled
def test_compiled_split_matches_the_regexes_on_every_corpus_line() -> None:
    assert COMPILED is not None
    lines = [
        line
        for path in sorted(CORPUS.rglob("*"))
        if path.is_file() and path.suffix not in (".json", ".md", ".gz", ".zst")
        for line in path.read_text(errors="replace").splitlines()
    ]
    assert len(lines) > 1000  # the corpus is there
    matched: set[str] = set()
    for line in lines:
        for shape, reference in REFERENCE.items():
            expected = reference(line)
            assert COMPILED[shape](line) == expected, (shape, line)
            if expected is not None:
                matched.add(line)
    # The comparison covered real headers, not only misses: every auth log line has one.
    auth = {
        line
        for path in (CORPUS / "beats-system-auth").glob("*.log")
        for line in path.read_text().splitlines()
    }
    assert len(auth) >= 12
    assert auth <= matched


@needs_compiled
@pytest.mark.parametrize("shape", ["bsd", "iso"])
def test_compiled_split_refuses_what_is_not_an_exact_str(shape: str) -> None:
    assert COMPILED is not None

    class Text(str):
        __slots__ = ()

    for value in (b"Nov 21 10:00:00 h x: y", Text("Nov 21 10:00:00 h x: y"), None, 7):
        with pytest.raises(TypeError, match="line must be a str"):
            COMPILED[shape](value)  # type: ignore[arg-type]


def test_a_str_subclass_is_parsed_by_the_regex() -> None:
    class Text(str):
        __slots__ = ()

    parser = SyslogParser()
    head = parser.header(Text("<13>Nov 21 10:00:00 web-1 sshd[7]: hello"))
    assert head is not None
    assert (head.host, head.program, head.pid, head.body, head.pri) == (
        "web-1",
        "sshd",
        7,
        "hello",
        13,
    )
    iso = parser.header(Text("2026-11-21T10:00:00Z web-1 CRON[8]: job"))
    assert iso is not None
    assert (iso.ts, iso.program, iso.pid) == ("2026-11-21T10:00:00.000000Z", "CRON", 8)


def test_speedups_reports_which_split_runs() -> None:
    assert syslog.speedups() == (syslog.split_bsd is not split_bsd_py)
    assert syslog.speedups() == (COMPILED is not None and syslog.split_bsd is COMPILED["bsd"])
