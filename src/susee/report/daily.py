"""The daily and monthly report from the daily rollups: cells reduced from (day, band) elements.

Each day or month cell (whole, per band, per combined band) is a union of
elements, so its sums, ORs and peak come from the elements' ones, and its
estimated share from the kept gaps split over the report's grid with the Q15
path's own function: the figures are those of the Q15 path (sums may differ
in the last bits of a double, never to the Wh). Days the table does not cover
for every counter asked (not built yet, built for another time zone, tariff
or counter rule), and today (still changing), are computed from Q15 on the
fly, with the same code the rollups are built with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from susee.config import DatabaseTarget
from susee.report.aggregate import Layer, Reduced, estimated_wh
from susee.report.days import EPOCH_ORDINAL, DayGrid, DayRows, Gap, day_grid, day_rows, gaps_of, spans_on, spec_of
from susee.report.daystore import as_day_rows, has_tables, read_gaps, read_rows, read_specs
from susee.report.energy import GapSpan, counter_series
from susee.report.intervals import BUCKET_S
from susee.report.meters import Counter
from susee.report.reader import Key, connection
from susee.report.reader import read_rows as read_q15
from susee.report.tariffs import Calendar

EVERY = ("day", "month")  # the intervals made of whole days
EMPTY = np.empty((0, 12))


def usable(every: str, calendar: Calendar | None, site: Calendar | None, zone_name: str,
           counters: Sequence[Counter]) -> bool:
    """Whether a report can be computed from the daily rollups: day or month intervals, counters read as such
    (not sums of params), and the report's bands are the site's (or none)."""
    if every not in EVERY or not all(len(c.terms) == 1 and c.terms[0][1] == c.param for c in counters):
        return False
    if calendar is None:
        return True
    return site is not None and bool(counters) and (
        spec_of(zone_name, calendar, counters[0].terms[0][2]) == spec_of(zone_name, site, counters[0].terms[0][2]))


class DaySource:
    """The elements (day x site band) of a report's grid per counter: stored rows where the table covers the days,
    computed from Q15 elsewhere."""

    def __init__(self, target: DatabaseTarget, job_id: str, zone_name: str, site: Calendar | None,
                 start_s: int, end_s: int, now_s: float) -> None:
        self.target, self.job_id, self.zone_name, self.site = target, job_id, zone_name, site
        self.zone = ZoneInfo(zone_name)
        self.grid = day_grid(start_s, end_s, self.zone, site)
        self.today = datetime.fromtimestamp(now_s, self.zone).date().toordinal() - EPOCH_ORDINAL
        self.rows_read = 0  # stored rows read, for the benchmark
        self.days_computed = 0  # days computed from Q15 (not covered)

    def read(self, counters: Sequence[Counter]) -> dict[Key, tuple[DayRows, list[GapSpan]]]:
        grid = self.grid
        keys = [(c.device, c.param) for c in counters]
        first, end = grid.first_day, grid.first_day + grid.days
        lo, hi = end, end  # the days every key has valid rows for
        stored: dict[Key, np.ndarray] = {}
        gaps: dict[Key, list[Gap]] = {key: [] for key in keys}
        with connection(self.target, writable=False) as conn:
            if has_tables(conn, self.target, self.job_id):
                specs = read_specs(conn, self.target, self.job_id, keys)
                wanted = {(c.device, c.param): spec_of(self.zone_name, self.site, c.terms[0][2]) for c in counters}
                found = [specs.get(key) for key in keys]
                if all(f is not None and f[0] == wanted[key] for f, key in zip(found, keys)):
                    lo = max(first, *(f[1] for f in found))  # type: ignore[index]
                    hi = min(end, self.today, *(f[2] for f in found))  # type: ignore[index]
                if lo < hi:
                    stored = read_rows(conn, self.target, self.job_id, keys, lo, hi)
                    for key, found_gaps in read_gaps(conn, self.target, self.job_id, keys, self._midnight(lo),
                                                     self._midnight(hi)).items():
                        gaps[key].extend(found_gaps)
                else:
                    lo = hi = end
        result: dict[Key, DayRows] = {key: DayRows.empty(len(grid.element_day)) for key in keys}
        for key, array in stored.items():
            self.rows_read += len(array)
            as_day_rows(array, grid, result[key])
        for a, b in ((first, lo), (hi, end)):
            if a < b:
                self._compute(counters, a, b, result, gaps)
        return {key: (result[key], spans_on(gaps[key], grid.start_s, grid.count)) for key in keys}

    def _compute(self, counters: Sequence[Counter], first: int, end: int, into: dict[Key, DayRows],
                 gaps: dict[Key, list[Gap]]) -> None:
        """Days [first, end) from Q15, exactly as the rollups are built."""
        sub = day_grid(self._midnight(first), self._midnight(end), self.zone, self.site)
        self.days_computed += sub.days
        keys = [(c.device, c.param) for c in counters]
        found = read_q15(self.target, self.job_id, keys, sub.start_s, sub.start_s + sub.count * BUCKET_S)
        at = self.grid.index(sub.element_day, sub.element_band)
        for counter, key in zip(counters, keys):
            series = counter_series(found.get(key, EMPTY), sub.start_s, sub.count, counter.terms[0][2])
            into[key].put(at, day_rows(series, sub))
            gaps[key].extend(gaps_of(series))

    def _midnight(self, day: int) -> int:
        local = datetime.fromordinal(day + EPOCH_ORDINAL)
        return int(local.replace(tzinfo=self.zone).timestamp())


@dataclass(frozen=True)
class CellMap:
    """Which elements of a grid make each cell of a layer: elements sorted by cell, and where each cell starts."""

    order: np.ndarray
    starts: np.ndarray
    cells: np.ndarray  # the cell of each element in ``order``


def cell_map(grid: DayGrid, layer: Layer) -> CellMap:
    """The same for every counter of a report: computed once per layer."""
    first_bucket = grid.elements.order[grid.elements.starts]
    cell = layer.key[first_bucket]  # an element lies in one cell of any day-aligned layer
    order = np.argsort(cell, kind="stable")
    order = order[cell[order] >= 0]
    cells = cell[order]
    return CellMap(order, np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]), cells)


def reduce_cells(rows: DayRows, spans: list[GapSpan], layer: Layer, cells: CellMap,
                 sample_time_s: float) -> Reduced:
    """One counter's elements reduced over a layer's cells, as ``aggregate.figures`` reduces its buckets."""
    order, starts = cells.order, cells.starts
    seconds = layer.sizes * BUCKET_S
    good = np.add.reduceat(rows.good[order], starts)
    value = np.where(np.isnan(rows.peak), -np.inf, rows.peak)[order]
    ranked = np.lexsort((rows.peak_at[order], -value, cells.cells))  # by cell, then highest, then earliest
    best = order[ranked[starts]]
    peak_wh = rows.peak[best]
    estimated = (np.add.reduceat(estimated_wh(spans, layer)[layer.order], layer.starts) if spans
                 else np.zeros(len(layer.cells)))
    return Reduced(
        covered=np.add.reduceat(rows.known[order], starts),
        totals=np.add.reduceat(rows.energy[order], starts),
        magnitude=np.add.reduceat(rows.magnitude[order], starts),
        estimated=estimated,
        codes=np.bitwise_or.reduceat(rows.codes[order], starts),
        flags=np.bitwise_or.reduceat(rows.flags[order], starts),
        completeness=np.minimum(1.0, good * sample_time_s / seconds),
        peak_wh=peak_wh,
        peak_at=np.where(np.isnan(peak_wh), -1, rows.peak_at[best]),
    )
