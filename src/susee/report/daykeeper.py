"""Keeps the daily rollups following the Q15 buckets the service's upkeep recomputes.

The upkeep hands over every bucket it recomputed (``touch``). A day that is
over (late data, or its last bucket just closed) is rebuilt at the next pass.
Today is not built: it is still changing, and a report computes it from Q15
(``daily.DaySource``), so its figures never lag. A rebuild reaches back and forward to the good readings
bracketing the touched buckets (``daybuild``). The work is synchronous (the
report's reader and arithmetic): the upkeep runs ``build`` in a thread.
Touched buckets are kept in memory until built: a build that fails is retried
at the next pass; a process that dies first leaves those days as they were
(``susee rollup --from --to`` rebuilds them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from susee.config import Settings
from susee.devices import DevicePlan
from susee.report.daybuild import build_days, local_midnight, rollup_horizon_s, site_counters
from susee.report.days import site_calendar
from susee.report.intervals import BUCKET_S

log = logging.getLogger(__name__)

# Touched buckets further apart than this are rebuilt as separate ranges.
SPLIT_S = 86_400


class DayKeeper:
    """Rebuilds the days of recomputed Q15 buckets; ``counter_days`` counts them (days x counters)."""

    def __init__(self, settings: Settings, plans: Sequence[DevicePlan]) -> None:
        self.target = settings.database_target()
        self.job_id = settings.job_id
        self.zone_name = settings.timezone
        self.zone = ZoneInfo(settings.timezone)
        self.calendar = site_calendar(settings)  # TariffError for a bad site tariff: at start
        self.counters = site_counters(plans, settings.sample_time)
        self.rollup_keep_days = settings.storage.rollup_keep_days
        self.pending: set[float] = set()  # bucket starts, epoch s
        self.counter_days = 0

    def touch(self, buckets: Iterable[datetime]) -> None:
        """Buckets (naive UTC) whose Q15 rows were recomputed."""
        self.pending.update(bucket.replace(tzinfo=timezone.utc).timestamp() for bucket in buckets)

    def due(self, now_s: float) -> bool:
        """A day that is over was touched."""
        return bool(self.counters) and any(bucket < local_midnight(now_s, self.zone) for bucket in self.pending)

    def build(self, now_s: float) -> int:
        """Rebuild the touched days that are over (run in a thread); returns the counter-days built."""
        today = local_midnight(now_s, self.zone)
        taken = sorted(bucket for bucket in self.pending if bucket < today)
        ranges: list[list[float]] = []
        for bucket in taken:
            if ranges and bucket - ranges[-1][1] <= SPLIT_S:
                ranges[-1][1] = bucket + BUCKET_S
            else:
                ranges.append([bucket, bucket + BUCKET_S])
        days = 0
        for start, end in ranges:
            days += build_days(self.target, self.job_id, self.counters, self.zone_name, self.calendar, start,
                               min(end, today), not_before_s=rollup_horizon_s(self.rollup_keep_days, now_s))
        self.pending.difference_update(taken)
        self.counter_days += days
        log.debug("daily rollups: %d counter-day(s) rebuilt", days)
        return days
