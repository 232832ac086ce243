"""Web access logs: Apache/nginx ``combined`` and ``common`` formats.

Role: the ``access`` parser. One precompiled regex per line; ECS output ``client.ip`` (or
``client.address`` for a resolved host name), ``user.name``, ``http.request.method``,
``url.original``/``url.path``/``url.query``, ``http.version``, ``http.response.status_code``,
``http.response.body.bytes``, ``http.request.referrer``, ``user_agent.original``, and
``event.category/type/outcome`` (outcome ``failure`` for status >= 400). ``ts`` becomes the
request time; the read time moves to ``event.created``.

Invariants: returns ``False`` (the chain tags ``parse_failure``) for a line that is not an access
log line; a malformed request line (``"-"``, binary probes) still parses, with only
``url.original`` set. Never raises. ``msg`` is untouched.

State: a one-minute timestamp cache (the last minute and zone text -> its UTC text up to the
minute; a line of another second only appends its seconds) owned by the task running the chain.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from agent.record import Record
from agent.transforms.syslog import format_utc, seconds_text

# Quoted text unrolled (``[^"\\]*(?:\\.[^"\\]*)*``): the language of ``(?:[^"\\]|\\.)*``
# without one regex branch per character. Possessive (``*+``, ``++``) wherever the next character
# cannot be part of the run anyway (a quote, a space, ``]``): the same matches, no backtracking.
_TEXT = r'[^"\\]*+(?:\\.[^"\\]*+)*+'
_LINE = re.compile(
    r"(?P<client>\S++) (?P<ident>\S++) (?P<user>\S++) \[(?P<time>[^\]]{1,64}+)\] "
    rf'"(?P<request>{_TEXT})"'
    r" (?P<status>\d{3}|-) (?P<bytes>\d+|-)"
    rf'(?: "(?P<referrer>{_TEXT})" "(?P<agent>{_TEXT})"?)?'
)
_REQUEST = re.compile(r"(?P<method>[A-Za-z]{1,32}) (?P<target>\S+)(?: HTTP/(?P<version>[\d.]+))?$")
_TIME = re.compile(r"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_IP_CHARS = frozenset("0123456789abcdefABCDEF.:")


class AccessParser:
    """Parses combined/common access log lines into ECS HTTP fields."""

    def __init__(self) -> None:
        self._minute = self._zone = self._minute_ts = ""

    def __call__(self, record: Record) -> bool:
        m = _LINE.match(record["msg"])
        if m is None:
            return False
        client, _, user, stamp, request_line, status, size, referrer, agent = m.groups()
        ts = self._ts(stamp)
        if ts is not None:
            event: dict[str, object] = {"created": record.get("ts")}
            record["ts"] = ts
        else:
            event = {}
        record["client"] = {"ip": client} if _IP_CHARS.issuperset(client) else {"address": client}
        if user != "-":
            record["user"] = {"name": user}
        http: dict[str, object] = {}
        record["url"] = self._request(request_line, http)
        if status != "-":
            code = int(status)
            response: dict[str, object] = {"status_code": code}
            event["outcome"] = "failure" if code >= 400 else "success"
        else:
            response = {}
        if size != "-":
            response["body"] = {"bytes": int(size)}
        http["response"] = response
        if referrer is not None and referrer != "-":
            request = http.get("request")
            if not isinstance(request, dict):
                request = http["request"] = {}
            request["referrer"] = referrer
        record["http"] = http
        if agent is not None and agent != "-":
            record["user_agent"] = {"original": agent}
        event["category"] = ["web"]
        event["type"] = ["access"]
        record["event"] = event
        return True

    @staticmethod
    def _request(request: str, http: dict[str, object]) -> dict[str, object]:
        url: dict[str, object] = {"original": request}
        r = _REQUEST.match(request)
        if r is None:
            return url
        http["request"] = {"method": r["method"]}
        if r["version"]:
            http["version"] = r["version"]
        target = r["target"]
        url["original"] = target
        path, sep, query = target.partition("?")
        url["path"] = path
        if sep:
            url["query"] = query
        return url

    def _ts(self, stamp: str) -> str | None:
        # "17/May/2015:10:05:03 +0200": the zone is a whole number of minutes, so every second of
        # a minute shares the UTC text up to the minute; the seconds must still be two digits.
        if stamp[:18] == self._minute and stamp[20:] == self._zone:
            sec = stamp[18:20]
            tail = seconds_text(sec, None) if sec.isdecimal() else None  # isdecimal is regex \d
            return None if tail is None else self._minute_ts + tail
        t = _TIME.fullmatch(stamp)
        month = _MONTHS.get(t[2]) if t else None
        if t is None or month is None:
            return None
        sign = -1 if t[7] == "-" else 1
        try:  # Feb 30, an offset of a day or more, a moment outside years 1-9999 in UTC
            zone = timezone(sign * timedelta(hours=int(t[8]), minutes=int(t[9])))
            moment = datetime(int(t[3]), month, int(t[1]), int(t[4]), int(t[5]), int(t[6]), 0, zone)
            ts = format_utc(moment)
        except (ValueError, OverflowError):
            return None
        if ts == f"{ts[:17]}{seconds_text(t[6], None)}":
            self._minute, self._zone, self._minute_ts = stamp[:18], stamp[20:], ts[:17]
        return ts
