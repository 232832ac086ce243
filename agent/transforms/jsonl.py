"""JSON-lines API logs.

Role: the ``json`` parser. Each line is decoded with orjson; a JSON object goes under the
record's ``json`` key (never merged into the record root, so a line cannot forge ``ts``, ``type``,
``seq`` or ``tags``). The configured timestamp field (dotted path, RFC 3339 text or epoch
seconds/milliseconds) becomes ``ts`` (the read time moves to ``event.created``), and the
configured message field is copied to ``message``.

Invariants: a line that is not a JSON object, or nests more than ``MAX_JSON_DEPTH`` (64) levels
(the chain could not hash it), returns ``False`` (the chain tags ``parse_failure``); a missing
or unreadable timestamp keeps the read time. Never raises.

State: a one-minute timestamp cache (``IsoTimes``) per parser, owned by the task running the chain.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo

from agent.record import Record
from agent.transforms.fields import get, json_object
from agent.transforms.syslog import IsoTimes, format_utc

_EPOCH_MS = 10_000_000_000  # numbers above this are milliseconds (year 2286 in seconds)


class JsonParser:
    """Decodes JSON object lines; ``timestamp_field``/``message_field`` are dotted paths."""

    def __init__(self, timestamp_field: str, message_field: str, tz: tzinfo | None = UTC) -> None:
        self.timestamp_field = timestamp_field
        self.message_field = message_field
        self.tz = tz
        self._times = IsoTimes()

    def __call__(self, record: Record) -> bool:
        data = json_object(record["msg"])
        if data is None:
            return False
        record["json"] = data
        if self.message_field:
            message = get(data, self.message_field)
            if isinstance(message, str):
                record["message"] = message
        if self.timestamp_field:
            ts = self._ts(get(data, self.timestamp_field))
            if ts is not None:
                record["event"] = {"created": record.get("ts")}
                record["ts"] = ts
        return True

    def _ts(self, value: object) -> str | None:
        if isinstance(value, str):
            return self._times.to_utc(value, self.tz)
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
            if not math.isfinite(seconds) or seconds < 0:
                return None
            if seconds > _EPOCH_MS:
                seconds /= 1000.0
            try:
                return format_utc(datetime.fromtimestamp(seconds, UTC))
            except (OverflowError, OSError, ValueError):
                return None
        return None
