"""Report intervals in the site's civil time, as UTC instants on the 15-minute grid.

Rows are stored in UTC; a day or a month is the local one, so a DST change
gives a 23- or 25-hour day (and hour intervals repeat or skip a local hour).
Every civil offset in use is a multiple of 15 minutes, so each boundary falls
on the Q15 grid and an interval is a whole number of buckets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

BUCKET_S = 900  # the Q15 grid
EVERY = {"15min": BUCKET_S, "hour": 3600, "day": None, "month": None}
_DURATION = re.compile(r"^\s*(\d+)\s*(min|m|h|d|w)\s*$")
_DURATION_S = {"min": 60, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class Interval:
    """[start_s, end_s) in UTC epoch seconds; ``label`` is the local start with its offset."""

    start_s: int
    end_s: int
    label: str

    @property
    def hours(self) -> float:
        return (self.end_s - self.start_s) / 3600


def parse_local(text: str, zone: ZoneInfo) -> int:
    """``2026-11-01`` or ``2026-11-01T08:00`` (local civil time) -> UTC epoch seconds."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return int(value.timestamp())


def parse_duration(text: str) -> int:
    """``7d``, ``1h``, ``15min``, ``2w`` -> seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 15min, 1h, 7d or 2w")
    return int(match.group(1)) * _DURATION_S[match.group(2)]


def intervals(start_s: int, end_s: int, every: str, zone: ZoneInfo) -> list[Interval]:
    """The intervals of size ``every`` covering [start_s, end_s), aligned in local time.

    The first interval starts at or before ``start_s`` (a day starts at local
    midnight, a month on the 1st), the last ends at or after ``end_s``.
    """
    step = EVERY[every]
    result = []
    if step is not None:
        # 15-minute and hour intervals are fixed lengths in UTC; hours are
        # aligned to the local hour (offsets like +05:30 move it off the UTC hour).
        offset = int(datetime.fromtimestamp(start_s, zone).utcoffset().total_seconds())  # type: ignore[union-attr]
        t = (start_s + offset) // step * step - offset
        while t < end_s:
            result.append(Interval(t, t + step, _label(t, zone)))
            t += step
        return result
    local = datetime.fromtimestamp(start_s, zone).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if every == "month":
        local = local.replace(day=1)
    while True:
        start = _utc(local, zone)
        if start >= end_s:
            return result
        local = _next_month(local) if every == "month" else local + timedelta(days=1)
        result.append(Interval(start, _utc(local, zone), _label(start, zone)))


def buckets(interval: Interval) -> range:
    """The Q15 bucket starts inside ``interval``."""
    return range(interval.start_s, interval.end_s, BUCKET_S)


def _utc(local: datetime, zone: ZoneInfo) -> int:
    return int(local.replace(tzinfo=zone).timestamp())


def _label(t: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, zone).isoformat()


def _next_month(local: datetime) -> datetime:
    return local.replace(year=local.year + local.month // 12, month=local.month % 12 + 1)


def utc_text(t: float) -> str:
    """Epoch seconds -> ``YYYY-MM-DD HH:MM:SS`` in UTC (the database's DATETIME)."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
