"""Time as the services see it: injectable, in UTC, at MongoDB's millisecond precision."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], float]  # unix seconds, like time.time


def now_ms(clock: Clock = time.time) -> int:
    return int(clock() * 1000)


def utc_datetime(clock: Clock = time.time) -> datetime:
    """Now as an aware UTC datetime truncated to milliseconds (what BSON dates keep)."""
    return from_ms(now_ms(clock))


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime (a naive one is taken as local time by Python;
    callers pass aware ones)."""
    return int(moment.timestamp() * 1000)


def from_ms(millis: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
