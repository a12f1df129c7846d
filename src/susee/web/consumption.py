"""Today's 15-minute consumption of one device by tariff band, for the Device page.

The figures are ``susee report``'s own, by its steps for one device and one
counter (``susee.report``: the Q15 reader, the counter arithmetic, the
aggregation per interval and band, the band calendars): today's
15-minute intervals in the site's ``timezone``, up to the one in progress,
of the device's main active-import counter (``main_counter``), each with its
band (``http.tariff``: ``none`` gives one band ``all``), energy, estimated
share and completeness, plus today's totals per band.

Bounded: computed in a thread (numpy and a read of its own connection, never
on the loop nor the web's connection), one device at a time, at most once
every ``EVERY_S`` per device, for the last ``KEEP_DEVICES`` devices shown.
The page gets the last figures at once; only a device's first request waits
(at most ``FIRST_WAIT_S``). Without the ``report`` extra (numpy) the figures
are None and ``note`` says what to install.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from susee.config import ConfigError, Settings
from susee.devices import DevicePlan

log = logging.getLogger(__name__)

EVERY_S = 60.0  # a 15-minute figure changes slowly: once a minute is fresh enough
KEEP_DEVICES = 64  # device pages open at once; older entries are dropped
FIRST_WAIT_S = 5.0  # like a database read of the page (reads.READ_TIMEOUT_S)
BUCKET_S = 900
ACTIVE_IMPORT = "222"  # the seed's id of active import energy, in every bundled profile
INSTALL = "install susee[report] (numpy) to see consumption by tariff band"


def report_missing() -> str | None:
    """Why the report code cannot run here (None: it can)."""
    try:
        import susee.report.aggregate  # noqa: F401  (numpy)
        import holidays  # noqa: F401  (the tariffs' holidays)
    except ImportError as exc:
        return f"{INSTALL}: {exc}"
    return None


def load_tariff(settings: Settings):
    """The ``http.tariff`` calendar (None for ``none``); ConfigError naming the setting when it is
    unknown or malformed (exit 2 at start). Needs the report extra (see ``report_missing``)."""
    reference = settings.http.tariff
    if reference.lower() == "none":
        return None
    from susee.report.tariffs import TariffError, load_calendar

    try:
        return load_calendar(reference)  # a file is absolute already (Settings.resolved)
    except TariffError as exc:
        raise ConfigError(f"http.tariff: {exc}") from None


def check_tariff(settings: Settings) -> None:
    """``load_tariff`` at start; without the report extra there is nothing to check (the page says so)."""
    if settings.http.tariff.lower() != "none" and report_missing() is None:
        load_tariff(settings)


def main_counter(counters: dict) -> str | None:
    """The param shown: the derived total of active import (e.g. PAC3200 EP_IMP = 222 + 223) when the
    device reads its parts, else 222, else the first counter in Wh; None when it reads no energy counter.

    ``counters``: ``susee.report.meters.device_counters`` of the device (param -> Counter).
    """
    for param, counter in counters.items():
        parts = [part for _, part, _ in counter.terms]
        if len(parts) > 1 and ACTIVE_IMPORT in parts and all(sign > 0 for sign, _, _ in counter.terms):
            return param
    if ACTIVE_IMPORT in counters:
        return ACTIVE_IMPORT
    return next((param for param, counter in counters.items() if counter.unit.lower() == "wh"), None)


def today(settings: Settings, plan: DevicePlan, now_s: float, calendar=None) -> tuple[dict | None, str]:
    """(figures, note) of ``plan``'s main counter today, up to the 15 minutes in progress (blocking).

    ``calendar``: the tariff's ``Calendar`` (None: one band ``all``). The steps of ``susee report``
    for one device and one counter: Q15 rows -> counter series -> figures per interval and band.
    """
    import numpy as np

    from susee.report.aggregate import ALL, Composite, combine, figures, layers
    from susee.report.energy import counter_series
    from susee.report.intervals import Interval, intervals
    from susee.report.meters import device_counters
    from susee.report.reader import ReadError, read_rows

    counters = device_counters(plan, settings.sample_time)
    param = main_counter(counters)
    if param is None:
        return None, "this device reads no active-energy counter"
    counter = counters[param]
    zone = ZoneInfo(settings.timezone)
    local = datetime.fromtimestamp(now_s, zone)
    midnight = datetime.min.time()
    # Local midnights (a DST day has 92 or 100 intervals), each with its own offset.
    day_start = int(datetime.combine(local.date(), midnight, zone).timestamp())
    day_end = int(datetime.combine(local.date() + timedelta(days=1), midnight, zone).timestamp())
    end = min(day_end, (int(now_s // BUCKET_S) + 1) * BUCKET_S)  # with the 15 minutes in progress
    spans = intervals(day_start, end, "15min", zone)
    count = (end - day_start) // BUCKET_S
    try:
        found = read_rows(settings.database_target(), settings.job_id,
                          [(plan.id, part) for _, part, _ in counter.terms], day_start, end)
    except ReadError as exc:
        return None, str(exc)
    composite = combine([
        (sign, Composite.of(counter_series(found.get((plan.id, part), np.empty((0, 12))), day_start, count, rules)))
        for sign, part, rules in counter.terms
    ])
    bands = calendar.bands_of(range(day_start, end, BUCKET_S), zone) if calendar else []
    whole = [Interval(day_start, end, spans[0].label)]
    cells = [figure for layer in layers(spans, day_start, count, bands, calendar)
             for figure in figures(plan.id, param, counter.unit, composite, layer, spans, day_start, zone)]
    totals = [figure for layer in layers(whole, day_start, count, bands, calendar)
              for figure in figures(plan.id, param, counter.unit, composite, layer, whole, day_start, zone)]
    names = calendar.bands if calendar else (ALL,)
    return {
        "param": param, "unit": counter.unit, "tariff": calendar.name if calendar else "none",
        "bands": list(names), "timezone": settings.timezone, "day": local.date().isoformat(),
        "day_start_s": day_start, "day_end_s": day_end, "computed": now_s,
        "intervals": [
            {"start": f.interval.label, "start_s": f.interval.start_s, "band": f.band, "energy": _round(f.energy),
             "estimated_pct": _round(f.estimated_pct), "completeness_pct": _round(f.completeness_pct),
             "flags": f.flags}
            for f in sorted(cells, key=lambda f: f.interval.start_s) if f.band in names
        ],
        "totals": [
            {"band": f.band, "energy": _round(f.energy), "estimated_pct": _round(f.estimated_pct),
             "completeness_pct": _round(f.completeness_pct), "peak_w": _round(f.peak_w), "peak_at": f.peak_at}
            for f in totals
        ],
    }, ""


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)


@dataclass
class _Entry:
    at: float  # time.monotonic() of the computation
    figures: dict | None
    note: str


class Consumption:
    """The figures of the devices whose pages are open, recomputed at most every ``EVERY_S``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._missing: str | None = None
        self._checked = False  # the report code (numpy) is imported at the first device page, not at start
        self._calendar = None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tasks: dict[str, asyncio.Task] = {}
        self._gate = asyncio.Lock()  # one computation at a time: a page never costs more than one core
        self._failing: set[str] = set()

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def of(self, plan: DevicePlan, online: bool) -> tuple[dict | None, str]:
        """(figures or None, note saying why there are none) for ``plan``; never raises."""
        if not self._checked:
            self._missing, self._checked = await asyncio.to_thread(report_missing), True  # numpy's import: off the loop
            if self._missing is not None:
                log.warning("http: the Device page shows no consumption: %s", self._missing)
            else:
                self._calendar = load_tariff(self.settings)  # checked at start (LiveView): loads
        if self._missing is not None:
            return None, INSTALL
        entry = self._entries.get(plan.id)
        if entry is not None:
            self._entries.move_to_end(plan.id)
        stale = entry is None or time.monotonic() - entry.at >= EVERY_S
        if stale and online and plan.id not in self._tasks:
            task = asyncio.create_task(self._compute(plan), name=f"web-consumption-{plan.id}")
            self._tasks[plan.id] = task
            task.add_done_callback(lambda _: self._tasks.pop(plan.id, None))
        if entry is None and plan.id in self._tasks:
            try:
                await asyncio.wait_for(asyncio.shield(self._tasks[plan.id]), FIRST_WAIT_S)
            except asyncio.TimeoutError:
                pass
            entry = self._entries.get(plan.id)
        if entry is None:
            return None, "the database is not reachable" if not online else "being computed"
        return entry.figures, entry.note

    async def _compute(self, plan: DevicePlan) -> None:
        async with self._gate:
            try:
                figures, note = await asyncio.to_thread(today, self.settings, plan, time.time(), self._calendar)
                if plan.id in self._failing:
                    log.info("device %s: today's consumption is computed again", plan.id)
                    self._failing.discard(plan.id)
            except Exception as exc:  # a bug or a database error must not break the page: said once
                if plan.id not in self._failing:
                    log.warning("device %s: today's consumption cannot be computed: %s", plan.id, exc)
                    self._failing.add(plan.id)
                figures, note = None, f"cannot be computed: {exc}"
        self._entries[plan.id] = _Entry(time.monotonic(), figures, note)
        self._entries.move_to_end(plan.id)
        while len(self._entries) > KEEP_DEVICES:
            self._entries.popitem(last=False)
