"""UTC timestamps as fixed-width ISO-8601 strings, the one format the store writes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

# Fixed width with microseconds and a `Z`: text comparison then orders like time, on SQLite and PostgreSQL alike.
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


_second: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """The current time as the store's ISO-8601 UTC string."""
    global _second
    # Every event is stamped on the event loop: format the date part once per second, not once per call.
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached = _second  # one read: another thread may swap the global meanwhile
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{fraction:06d}Z"


def to_iso(value: str | datetime) -> str:
    """Normalize an ISO-8601 string or a datetime (naive means UTC) to the store's format."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_FORMAT)
