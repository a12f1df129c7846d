"""Keeps the daily rollups following the Q15 buckets the service's upkeep recomputes.

The upkeep's recomputation marks every bucket it recomputed in
``see<job>DayDirty``, in the same transaction (``Rollups(mark_days=True)``).
At each pass the keeper rebuilds the days of the marked buckets that are over
(late data, or a day whose last bucket just closed) and removes their markers
unless a recomputation marked them again meanwhile (``Version``). Today is not
built: it is still changing, and a report computes it from Q15
(``daily.DaySource``), so its figures never lag. A rebuild reaches back and
forward to the good readings bracketing the marked buckets (``daybuild``).
The markers live in the database, so a stop or a crash between a bucket's
recomputation and its day's rebuild loses nothing: the next start rebuilds
the day. The work is synchronous (the report's reader and arithmetic): the
upkeep runs ``build`` in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from susee.config import Settings
from susee.devices import DevicePlan
from susee.report.daybuild import build_days, local_midnight, rollup_horizon_s, site_counters
from susee.report.days import site_calendar
from susee.report.intervals import BUCKET_S, utc_text
from susee.report.reader import connection
from susee.rollup import as_datetime, epoch_s

log = logging.getLogger(__name__)

# Touched buckets further apart than this are rebuilt as separate ranges.
SPLIT_S = 86_400


class DayKeeper:
    """Rebuilds the days of the marked Q15 buckets; ``counter_days`` counts them (days x counters)."""

    def __init__(self, settings: Settings, plans: Sequence[DevicePlan]) -> None:
        self.target = settings.database_target()
        self.job_id = settings.job_id
        self.zone_name = settings.timezone
        self.zone = ZoneInfo(settings.timezone)
        self.calendar = site_calendar(settings)  # TariffError for a bad site tariff: at start
        self.counters = site_counters(plans, settings.sample_time)
        self.rollup_keep_days = settings.storage.rollup_keep_days
        self.counter_days = 0
        quote, self._mark = ("`", "%s") if self.target.kind == "mysql" else ('"', "?")
        self._markers = f"{quote}see{self.job_id}DayDirty{quote}"

    def marked(self, before_s: float) -> list[tuple[float, object, int]]:
        """The marked buckets that start before ``before_s``: (epoch s, Bucket as stored, Version), oldest first."""
        with connection(self.target, writable=False) as conn:
            cursor = conn.cursor()
            cursor.execute(f"SELECT Bucket, Version FROM {self._markers} WHERE Bucket < {self._mark} ORDER BY Bucket",
                           (utc_text(int(before_s)),))
            return [(epoch_s(as_datetime(bucket)), bucket, int(version)) for bucket, version in cursor.fetchall()]

    def build(self, now_s: float) -> int:
        """Rebuild the days that are over of the marked buckets (run in a thread); returns the counter-days built."""
        today = local_midnight(now_s, self.zone)
        taken = self.marked(today)
        if not taken:
            return 0
        ranges: list[list[float]] = []
        for bucket, _, _ in taken:
            if ranges and bucket - ranges[-1][1] <= SPLIT_S:
                ranges[-1][1] = bucket + BUCKET_S
            else:
                ranges.append([bucket, bucket + BUCKET_S])
        days = sum(self.build_range(start, min(end, today), now_s) for start, end in ranges)
        with connection(self.target, writable=True) as conn:  # done, unless marked again meanwhile
            conn.cursor().executemany(
                f"DELETE FROM {self._markers} WHERE Bucket = {self._mark} AND Version = {self._mark}",
                [(stored, version) for _, stored, version in taken])
            conn.commit()
        self.counter_days += days
        log.debug("daily rollups: %d counter-day(s) rebuilt", days)
        return days

    def build_range(self, start_s: float, end_s: float, now_s: float) -> int:
        """Build the days [start_s, end_s) touches and those its gaps reach (``build``, ``susee rollup``);
        returns the counter-days built."""
        if not self.counters:
            return 0
        return build_days(self.target, self.job_id, self.counters, self.zone_name, self.calendar, start_s, end_s,
                          not_before_s=rollup_horizon_s(self.rollup_keep_days, now_s))

