"""Build the daily rollups of a range of local days from Q15, through the report's own reader and arithmetic.

The energy of a day depends on the good readings that bracket it: a meter
offline for three days is apportioned over all of them when it comes back. A
build from new data therefore reaches back to the day of the last good
reading before the range and on to the day of the first good reading after
it (``extend``), so every day whose buckets a changed span touches is redone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from susee.config import DatabaseTarget
from susee.devices import DevicePlan
from susee.report.days import DayGrid, DayRows, Gap, day_grid, day_rows, gaps_of, spec_of
from susee.report.daystore import has_tables, write
from susee.report.energy import counter_series
from susee.report.intervals import BUCKET_S, utc_text
from susee.report.meters import Counter, device_counters
from susee.report.reader import BRACKET_S, Key, connection, q15_table, read_rows
from susee.report.tariffs import Calendar
from susee.retention import horizon

log = logging.getLogger(__name__)

# Devices per read and write: as the report's chunks (memory of a year of series stays bounded).
CHUNK_DEVICES = 50
# Days per build step: a year of 1,000 meters is built a month at a time.
STEP_DAYS = 31


def site_counters(plans: Sequence[DevicePlan], sample_time_s: float) -> list[Counter]:
    """The counters with daily rows: every param a device reads and its profile marks as a counter.

    Derived counters (sums like ``222 + 223``) are not kept: the peak of a sum is not a sum of peaks.
    """
    return [counter for plan in plans for counter in device_counters(plan, sample_time_s).values()
            if len(counter.terms) == 1 and counter.terms[0][1] == counter.param]


def local_midnight(t: float, zone: ZoneInfo, after: bool = False) -> int:
    """The local midnight at or before ``t`` (``after``: at or after)."""
    local = datetime.fromtimestamp(t, zone)
    midnight = int(local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None).replace(tzinfo=zone)
                   .timestamp())
    if after and midnight < t:
        day = datetime.fromtimestamp(midnight + 26 * 3600, zone)  # past any 25-hour day
        midnight = int(day.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None).replace(tzinfo=zone)
                       .timestamp())
    return midnight


def build_days(target: DatabaseTarget, job_id: str, counters: Sequence[Counter], zone_name: str,
               calendar: Calendar | None, start_s: float, end_s: float, extend: bool = True,
               not_before_s: float | None = None) -> int:
    """(Re)build the daily rows of the local days covering [start_s, end_s) for ``counters``; returns the
    counter-days built (0 when the tables do not exist yet).

    With ``extend``, each counter's range reaches its own bracketing good readings: a meter offline for a
    month widens its own rebuild, not every meter's. No day starting before ``not_before_s`` (the rollups'
    retention horizon) is rebuilt: its Q15 rows may be gone, and its daily rows are all that is left.
    """
    zone = ZoneInfo(zone_name)
    keys = [(counter.device, counter.param) for counter in counters]
    if not keys:
        return 0
    with connection(target, writable=True) as conn:
        if not has_tables(conn, target, job_id):
            return 0
        reach = _bracketed(conn, target, job_id, keys, start_s, end_s) if extend else {}
    groups: dict[tuple[int, int], list[Counter]] = {}
    for counter, key in zip(counters, keys):
        first, last = reach.get(key, (start_s, end_s))
        if not_before_s is not None:
            first = max(first, local_midnight(not_before_s, zone, after=True))
        span = (local_midnight(first, zone), local_midnight(last, zone, after=True))
        if span[0] >= span[1]:
            continue
        groups.setdefault(span, []).append(counter)
    specs = {(c.device, c.param): spec_of(zone_name, calendar, c.terms[0][2]) for c in counters}
    built = 0
    for (start, end), members in sorted(groups.items()):
        step_start = start
        while step_start < end:
            step_end = min(end, local_midnight(step_start + STEP_DAYS * 86400 + 3 * 3600, zone))
            grid = day_grid(step_start, step_end, zone, calendar)
            for first_index in range(0, len(members), CHUNK_DEVICES):
                _build_chunk(target, job_id, members[first_index:first_index + CHUNK_DEVICES], grid, specs)
            built += grid.days * len(members)
            step_start = step_end
    return built


def _build_chunk(target: DatabaseTarget, job_id: str, counters: Sequence[Counter], grid: DayGrid,
                 specs: dict[Key, str]) -> None:
    keys = [(counter.device, counter.param) for counter in counters]
    found = read_rows(target, job_id, keys, grid.start_s, grid.start_s + grid.count * BUCKET_S)
    rows: dict[Key, DayRows] = {}
    gaps: dict[Key, list[Gap]] = {}
    for counter, key in zip(counters, keys):
        if key not in found:
            rows[key], gaps[key] = DayRows.empty(len(grid.element_day)), []
            continue
        series = counter_series(found[key], grid.start_s, grid.count, counter.terms[0][2])
        rows[key], gaps[key] = day_rows(series, grid), gaps_of(series)
    with connection(target, writable=True) as conn:
        write(conn, target, job_id, grid, rows, gaps, {key: specs[key] for key in keys})


def _bracketed(conn: Any, target: DatabaseTarget, job_id: str, keys: Sequence[Key], start_s: float,
               end_s: float) -> dict[Key, tuple[float, float]]:
    """Per key, [start_s, end_s) widened to its last good bucket before and its first good bucket after
    (within the reader's bracket)."""
    mark = "%s" if target.kind == "mysql" else "?"
    table = q15_table(job_id)
    devices = sorted({d for d, _ in keys})
    params = sorted({p for _, p in keys})
    where = (f"idDevice IN ({', '.join([mark] * len(devices))}) AND idParam IN ({', '.join([mark] * len(params))})"
             f" AND Good > 0 AND Bucket >= {mark} AND Bucket < {mark}")
    cursor = conn.cursor()
    result = {key: [start_s, end_s] for key in keys}
    for number, (pick, low, high) in enumerate((("MAX", start_s - BRACKET_S, start_s),
                                                ("MIN", end_s, end_s + BRACKET_S))):
        cursor.execute(f"SELECT idDevice, idParam, {pick}(Bucket) FROM {table} WHERE {where}"
                       " GROUP BY idDevice, idParam", [*devices, *params, utc_text(low), utc_text(high)])
        for device, param, value in cursor.fetchall():
            if (device, param) not in result or value is None:
                continue
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            seconds = moment.replace(tzinfo=timezone.utc).timestamp()
            reach = result[(device, param)]
            reach[number] = min(start_s, seconds) if number == 0 else max(end_s, seconds + BUCKET_S)
    return {key: (first, last) for key, (first, last) in result.items()}


def rollup_horizon_s(keep_days: int | None, now_s: float) -> float | None:
    """The rollups' retention horizon (``storage.rollup_keep_days``) as epoch seconds, None when all is kept."""
    first = horizon(datetime.fromtimestamp(now_s, timezone.utc).date(), keep_days)
    return None if first is None else datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()
