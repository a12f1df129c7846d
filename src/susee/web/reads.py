"""Bounded database reads for the page and the API: Last, Raw and the Q15 rollups.

The web has its own sink (its own connection), so a page never waits behind
a batch of the writer, nor a batch behind a page; one query at a time runs on
it. Every query is parameterised and bounded: by device, by a capped time
range and a capped number of points.

The rollup table ``see<job>Q15`` (CONTRACT.md) comes with the storage branch:
until it exists, completeness, the quality strip and the rollup lag are
None ("–" on the page, NaN in the metrics). The lag comes from the rollups'
bookkeeping, the pending markers of ``see<job>Q15Dirty`` (``rollup_lag_s``). Its existence is checked at most
once a minute; completeness changes only when a 15-minute bucket is rolled
up, so it is recomputed at most every ``COMPLETENESS_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from dataclasses import dataclass

from susee.config import Settings
from susee.migrations import table_names
from susee.sinks import Sink, SinkError, create_sink, format_tick

log = logging.getLogger(__name__)

BUCKET_S = 900  # the Q15 grid (CONTRACT.md)
MAX_SERIES_RANGE_S = 7 * 86400  # one request: at most a week
MAX_SERIES_POINTS = 2000  # more than any sparkline or chart shows; the step grows to fit
TABLE_CHECK_EVERY_S = 60.0
# A page or a scrape waits at most this for the database (queue behind the lock included);
# the queries are bounded and take milliseconds on a healthy server.
READ_TIMEOUT_S = 5.0
COMPLETENESS_EVERY_S = 300.0  # buckets complete every 15 minutes: five minutes late at most
HOUR_S, DAY_S = 3600, 86400
STRIP_ROWS = 96 * 200  # a day of buckets for a device of up to 200 params


class SeriesRequestError(ValueError):
    """A series request out of bounds; the message says which bound."""


@dataclass(frozen=True, slots=True)
class Series:
    device_id: str
    param_id: str
    from_s: float
    to_s: float
    step_s: float
    points: list[tuple[float, float]]  # (bucket start, mean of the good values in it)


def series_window(from_s: float, to_s: float, step_s: float | None, period_s: float) -> tuple[float, float, float]:
    """Checked (from, to, step): range within MAX_SERIES_RANGE_S, at most MAX_SERIES_POINTS points."""
    if not (math.isfinite(from_s) and math.isfinite(to_s)) or to_s <= from_s:
        raise SeriesRequestError("'from' must be before 'to' (seconds since the epoch, UTC)")
    if to_s - from_s > MAX_SERIES_RANGE_S:
        raise SeriesRequestError(
            f"range of {(to_s - from_s) / 86400:.1f} days is too long: at most {MAX_SERIES_RANGE_S // 86400} days "
            "per request (ask for several ranges)")
    wanted = step_s if step_s is not None and math.isfinite(step_s) and step_s > 0 else period_s
    step = max(wanted, period_s, math.ceil((to_s - from_s) / MAX_SERIES_POINTS))
    return from_s, to_s, float(math.ceil(step))


def bucket_text(t_s: float) -> str:
    """A Q15 Bucket value: 'YYYY-MM-DD HH:MM:SS' (UTC), as both dialects store it."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(t_s)))


class Reads:
    """The web's queries; ``close()`` when done."""

    def __init__(self, settings: Settings, sink: Sink | None = None) -> None:
        target = settings.database_target()
        self.kind = target.kind
        self.sink = sink or create_sink(target, settings.job_id)
        self.period_s = settings.sample_time
        raw, last, params, _ = table_names(settings.job_id)
        self.q15 = f"see{settings.job_id}Q15"
        quote = "`" if self.kind == "mysql" else '"'
        mark = "%s" if self.kind == "mysql" else "?"
        seconds = ("TIMESTAMPDIFF(SECOND, '1970-01-01', `Date`)" if self.kind == "mysql"
                   else "CAST(strftime('%s', Date) AS INTEGER)")  # both independent of the session time zone
        self._last_sql = (f"SELECT idParam, {quote}Date{quote}, Value, Delay, Code FROM {quote}{last}{quote} "
                          f"WHERE idDevice = {mark} ORDER BY idParam LIMIT 1000")
        self._series_sql = (
            f"SELECT FLOOR({seconds} / {mark}) AS slot, AVG(Value) FROM {quote}{raw}{quote} "
            f"WHERE idDevice = {mark} AND idParam = {mark} AND {quote}Date{quote} >= {mark} "
            f"AND {quote}Date{quote} < {mark} AND Code = 0 AND Value IS NOT NULL GROUP BY slot ORDER BY slot")
        self._table_sql = (
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
            if self.kind == "mysql" else "SELECT COUNT(*) FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?")
        self._good_sql = (f"SELECT idDevice, SUM(Good) FROM {quote}{self.q15}{quote} WHERE Bucket >= {mark} "
                          f"AND Bucket < {mark} GROUP BY idDevice")
        # Per param, OR-ed per bucket here: SQLite has no BIT_OR. A day of 96 buckets of the largest profile.
        self._strip_sql = (f"SELECT Bucket, Samples, Good, Codes FROM {quote}{self.q15}{quote} "
                           f"WHERE idDevice = {mark} AND Bucket >= {mark} ORDER BY Bucket LIMIT {STRIP_ROWS}")
        self._pending_sql = f"SELECT MIN(Bucket) FROM {quote}see{settings.job_id}Q15Dirty{quote}"
        self.rollups_on = settings.storage.rollups  # without them nothing marks buckets: the lag is unknown
        self._gate = asyncio.Lock()  # one web query at a time on the web's connection
        self._q15_checked_s = -math.inf
        self._q15 = False
        self._completeness_s = -math.inf
        self._good: tuple[dict[str, int], dict[str, int]] | None = None  # (hour, day) good rows per device
        self._completeness_task: asyncio.Task | None = None

    async def close(self) -> None:
        if self._completeness_task is not None:
            self._completeness_task.cancel()
            await asyncio.gather(self._completeness_task, return_exceptions=True)
        await self.sink.close()

    async def _select(self, sql: str, params: tuple) -> list[tuple]:
        """SinkError also when the database takes longer than READ_TIMEOUT_S (a page must not hang)."""
        try:
            async with self._gate:
                return await asyncio.wait_for(self.sink.select(sql, params), READ_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise SinkError(f"{self.sink.target}: no answer to a read within {READ_TIMEOUT_S:g} s") from None

    async def last(self, device_id: str) -> list[tuple]:
        """(idParam, Date, Value, Delay, Code) of the device's rows in Last; SinkError when unreachable."""
        return await self._select(self._last_sql, (device_id,))

    async def series(self, device_id: str, param_id: str, from_s: float, to_s: float, step_s: float | None) -> Series:
        """Mean of the good values of one param per step; SeriesRequestError when out of bounds."""
        from_s, to_s, step = series_window(from_s, to_s, step_s, self.period_s)
        rows = await self._select(self._series_sql, (int(step), device_id, param_id, format_tick(from_s),
                                                     format_tick(to_s)))
        points = [(float(slot) * step, float(mean)) for slot, mean in rows if mean is not None]
        return Series(device_id, param_id, from_s, to_s, step, points)

    async def has_rollups(self) -> bool:
        """True once the Q15 table exists (checked at most once a minute)."""
        now = time.monotonic()
        if not self._q15 and now - self._q15_checked_s >= TABLE_CHECK_EVERY_S:
            self._q15_checked_s = now
            try:
                rows = await self._select(self._table_sql, (self.q15,))
                self._q15 = bool(rows and rows[0][0])
            except SinkError:
                return False
        return self._q15

    def completeness(self, expected_per_s: dict[str, float], now_s: float) -> dict[str, tuple[float | None, float | None]]:
        """Device -> (fraction of good rows over the last hour, over the last day), from the rollups.

        Answers at once from what was computed last (None before that) and
        starts a refresh in the background when that is older than
        COMPLETENESS_EVERY_S. ``expected_per_s``: rows a device should
        write per second (its params / sample_time).
        """
        stale = time.monotonic() - self._completeness_s >= COMPLETENESS_EVERY_S
        if stale and (self._completeness_task is None or self._completeness_task.done()):
            self._completeness_task = asyncio.create_task(self._refresh_completeness(now_s), name="web-completeness")
        if self._good is None:
            return {}
        hour, day = self._good
        return {
            device: (_fraction(hour.get(device, 0), rate * HOUR_S), _fraction(day.get(device, 0), rate * DAY_S))
            for device, rate in expected_per_s.items()
        }

    async def _refresh_completeness(self, now_s: float) -> None:
        self._completeness_s = time.monotonic()
        if not await self.has_rollups():
            return
        end = (now_s // BUCKET_S) * BUCKET_S  # complete buckets only
        try:
            hour = await self._select(self._good_sql, (bucket_text(end - HOUR_S), bucket_text(end)))
            day = await self._select(self._good_sql, (bucket_text(end - DAY_S), bucket_text(end)))
        except SinkError:
            return
        self._good = ({d: int(n or 0) for d, n in hour}, {d: int(n or 0) for d, n in day})

    async def quality_strip(self, device_id: str, now_s: float) -> list[dict] | None:
        """Today's 15-minute buckets (UTC day) of one device: samples, good ones, OR of Codes; None without rollups."""
        if not await self.has_rollups():
            return None
        day_start = (now_s // DAY_S) * DAY_S
        strip: dict[str, dict] = {}
        for bucket, samples, good, codes in await self._select(self._strip_sql, (device_id, bucket_text(day_start))):
            entry = strip.setdefault(str(bucket), {"bucket": str(bucket), "samples": 0, "good": 0, "codes": 0})
            entry["samples"] += int(samples or 0)
            entry["good"] += int(good or 0)
            entry["codes"] |= int(codes or 0)
        return list(strip.values())

    async def rollup_lag_s(self, now_s: float) -> float | None:
        """How far the rollups are behind: seconds since the end of the oldest bucket still marked
        in ``see<job>Q15Dirty`` (susee.rollup), 0 when none is; None without rollups.

        The bucket being written is always marked and not late (its end is ahead); a closed bucket
        stays marked until the storage upkeep has recomputed it. A primary-key MIN: one index probe.
        """
        if not self.rollups_on or not await self.has_rollups():
            return None
        rows = await self._select(self._pending_sql, ())
        if not rows or rows[0][0] is None:
            return 0.0
        oldest = rows[0][0]
        # A naive UTC datetime from MariaDB (timegm, never the local zone), text from SQLite.
        start = calendar.timegm(oldest.timetuple()) if hasattr(oldest, "timetuple") else _parse_bucket(str(oldest))
        return max(0.0, now_s - (start + BUCKET_S))


def _fraction(good: int, expected: float) -> float | None:
    return min(1.0, good / expected) if expected > 0 else None


def _parse_bucket(text: str) -> float:
    return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S")))
