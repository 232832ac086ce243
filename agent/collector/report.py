"""``tailseal verify PATH``: runs :mod:`agent.collector.verify` and reports to the operator.

Output is human-readable by default (one line per stream, one indented line per finding, a
summary) and a single JSON document with ``--json``. Exit codes: 0 when every stream verifies,
1 when any stream has a break (``unsealed`` counts as one unless ``--allow-unsealed``), 2 when
PATH is not a collector storage or stream directory. No state; the rendering functions are pure.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import orjson

from agent.collector.verify import Finding, StreamReport, verify_path

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2


def run_verify(path: Path, *, as_json: bool, allow_unsealed: bool, out: TextIO = sys.stdout) -> int:
    """Verify everything under ``path``, print the report, return the exit code."""
    try:
        reports = verify_path(path)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        sys.stderr.write(f"tailseal verify: {exc}\n")
        return EXIT_USAGE
    if as_json:
        out.write(render_json(reports, allow_unsealed=allow_unsealed) + "\n")
    else:
        out.writelines(line + "\n" for line in render_text(reports, allow_unsealed=allow_unsealed))
    ok = all(report.ok(allow_unsealed=allow_unsealed) for report in reports)
    return EXIT_OK if ok else EXIT_BROKEN


def render_text(reports: Iterable[StreamReport], *, allow_unsealed: bool) -> list[str]:
    lines: list[str] = []
    total = broken = 0
    for report in reports:
        total += 1
        ok = report.ok(allow_unsealed=allow_unsealed)
        broken += not ok
        host = (report.host or {}).get("name", "?")
        state = "sealed" if report.sealed else "unsealed"
        lines.append(
            f"{'OK    ' if ok else 'BROKEN'} stream {report.stream} (host {host}): "
            f"{report.records} records, seq 1..{report.last_seq}, {state}"
        )
        lines.extend(
            "    " + _finding_text(f, allow_unsealed=allow_unsealed) for f in report.findings
        )
    lines.append(f"{total} streams: {total - broken} verified, {broken} broken")
    return lines


def _finding_text(finding: Finding, *, allow_unsealed: bool) -> str:
    label = "break" if finding.is_break(allow_unsealed=allow_unsealed) else "note "
    if not finding.seq and not finding.last_seq:
        where = ""
    elif finding.seq == finding.last_seq:
        where = f" seq {finding.seq}"
    else:
        where = f" seq {finding.seq}..{finding.last_seq}"
    return f"{label} {finding.kind}{where}: {finding.detail}"


def render_json(reports: Iterable[StreamReport], *, allow_unsealed: bool) -> str:
    streams = [_report_json(r, allow_unsealed=allow_unsealed) for r in reports]
    document = {
        "ok": all(s["ok"] for s in streams),
        "allow_unsealed": allow_unsealed,
        "streams": streams,
    }
    return orjson.dumps(document).decode()


def _report_json(report: StreamReport, *, allow_unsealed: bool) -> dict[str, Any]:
    return {
        "stream": report.stream,
        "path": report.path,
        "host": report.host,
        "ok": report.ok(allow_unsealed=allow_unsealed),
        "records": report.records,
        "last_seq": report.last_seq,
        "head": report.head,
        "sealed": report.sealed,
        "findings": [
            {
                "kind": f.kind,
                "seq": f.seq,
                "last_seq": f.last_seq,
                "detail": f.detail,
                "break": f.is_break(allow_unsealed=allow_unsealed),
            }
            for f in report.findings
        ],
    }
