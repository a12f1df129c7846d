"""Daily rollups: a counter's figures per local day and tariff band, by the report's own arithmetic.

A daily or monthly report of a year reads 35,040 Q15 rows per counter; what
its figures need is far less. Per *element* (one local day x one band of the
site's tariff, or the whole day without a tariff) a counter's 15-minute
energies (``energy.counter_series``) reduce to sums (energy, magnitude, known
buckets, good samples), ORs (codes, flags) and the element's highest bucket
(the earliest on a tie). Every day or month cell of a report is a union of
elements, so the report reduces the elements exactly as it would reduce the
buckets (``daily``). What does not reduce per element is the estimated share:
a gap's energy is estimated wherever the gap crosses the boundary of the
reported cell, and a month holds gaps that cross midnight. The gaps
themselves (``GapSpan``: t0, t1, Wh) are kept beside the elements and split
over the report's grid exactly as the Q15 path does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np

from susee.report.aggregate import Layer, cell_layer, peak_index_of
from susee.report.energy import CounterRules, GapSpan, Series, pieces_of
from susee.report.intervals import BUCKET_S, intervals
from susee.config import Settings
from susee.report.tariffs import Calendar, load_calendar

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
NO_TARIFF = ""  # the only band of a site without a tariff


def site_calendar(settings: Settings) -> Calendar | None:
    """The site's tariff (``tariff:``; a file already resolved beside the config), None for none."""
    return None if settings.tariff.lower() == "none" else load_calendar(settings.tariff)


@dataclass(frozen=True)
class DayGrid:
    """The local days [start_s, end_s) of a site on the Q15 grid, cut into (day, band) elements."""

    start_s: int
    count: int  # buckets
    first_day: int  # days since 1970-01-01 of the first local date
    days: int
    bands: tuple[str, ...]  # the site tariff's bands, (NO_TARIFF,) without one
    elements: Layer  # cells (day index, band name) over the grid's buckets
    element_day: np.ndarray  # days since 1970-01-01, per element
    element_band: np.ndarray  # index into ``bands``, per element

    def index(self, day: np.ndarray, band: np.ndarray) -> np.ndarray:
        """Element number of (day since 1970, band index) pairs; -1 for pairs not in the grid."""
        table = np.full((self.days, len(self.bands)), -1, dtype=np.int64)
        table[self.element_day - self.first_day, self.element_band] = np.arange(len(self.element_day))
        inside = (day >= self.first_day) & (day < self.first_day + self.days) & (band >= 0) & (band < len(self.bands))
        result = np.full(len(day), -1, dtype=np.int64)
        result[inside] = table[day[inside] - self.first_day, band[inside]]
        return result


def day_grid(start_s: int, end_s: int, zone: ZoneInfo, calendar: Calendar | None) -> DayGrid:
    """The grid of the local days covering [start_s, end_s); ``start_s`` a local midnight."""
    days = intervals(start_s, end_s, "day", zone)
    start, end = days[0].start_s, days[-1].end_s
    count = (end - start) // BUCKET_S
    day_of = np.empty(count, dtype=np.int64)
    for number, day in enumerate(days):
        day_of[(day.start_s - start) // BUCKET_S:(day.end_s - start) // BUCKET_S] = number
    bands = calendar.bands if calendar is not None else (NO_TARIFF,)
    if calendar is None:
        band_of = np.zeros(count, dtype=np.int64)
    else:
        names = calendar.bands_of(range(start, end, BUCKET_S), zone)
        band_of = np.array([bands.index(name) for name in names], dtype=np.int64)
    layer = cell_layer(day_of, band_of, bands)
    first_day = datetime.fromtimestamp(start, zone).date().toordinal() - EPOCH_ORDINAL
    element_day = np.array([first_day + day for day, _ in layer.cells], dtype=np.int64)
    element_band = np.array([bands.index(band) for _, band in layer.cells], dtype=np.int64)
    return DayGrid(start, count, first_day, len(days), bands, layer, element_day, element_band)


@dataclass
class DayRows:
    """The columns of ``see<job>Day`` per element of a grid (or of a report's grid)."""

    energy: np.ndarray  # Wh of the known buckets
    magnitude: np.ndarray  # sum of |Wh|: the base of the estimated share
    known: np.ndarray  # buckets with known energy
    good: np.ndarray  # good samples
    codes: np.ndarray
    flags: np.ndarray
    peak: np.ndarray  # Wh of the highest bucket, NaN when none is known
    peak_at: np.ndarray  # epoch s of that bucket (the earliest on a tie), -1 when none

    @classmethod
    def empty(cls, size: int) -> DayRows:
        """Elements with no data at all (no row in the table)."""
        zeros = np.zeros(size, dtype=np.int64)
        return cls(np.zeros(size), np.zeros(size), zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy(),
                   np.full(size, np.nan), np.full(size, -1, dtype=np.int64))

    def put(self, at: np.ndarray, other: DayRows) -> None:
        """Copy ``other``'s elements into elements ``at`` (-1: dropped)."""
        keep = at >= 0
        for name in self.__dataclass_fields__:
            getattr(self, name)[at[keep]] = getattr(other, name)[keep]


def day_rows(series: Series, grid: DayGrid) -> DayRows:
    """Reduce a counter's series on ``grid`` (``counter_series(rows, grid.start_s, grid.count, ...)``) per element,
    with the same numpy reductions as ``aggregate.figures`` applies to the buckets of a cell."""
    layer = grid.elements
    order, starts = layer.order, layer.starts
    energy = series.energy[order]
    known = ~np.isnan(energy)
    peak = peak_index_of(energy, known, layer)
    return DayRows(
        energy=np.add.reduceat(np.where(known, energy, 0.0), starts),
        magnitude=np.add.reduceat(np.nan_to_num(np.abs(series.energy))[order], starts),
        known=np.add.reduceat(known.astype(np.int64), starts),
        good=np.add.reduceat(series.good[order].astype(np.int64), starts),
        codes=np.bitwise_or.reduceat(series.codes[order], starts),
        flags=np.bitwise_or.reduceat(series.flags[order], starts),
        peak=np.where(peak >= 0, series.energy[np.maximum(peak, 0)], np.nan),
        peak_at=np.where(peak >= 0, grid.start_s + peak * BUCKET_S, -1),
    )


Gap = tuple[float, float, float]  # t0, t1 (epoch s), Wh


def gaps_of(series: Series) -> list[Gap]:
    """The gaps whose energy ``series`` apportioned (what ``see<job>DayGap`` keeps)."""
    return [(span.t0, span.t1, span.delta) for span in series.spans]


def spans_on(gaps: list[Gap], start_s: int, count: int) -> list[GapSpan]:
    """The gaps as ``counter_series`` would list them on the grid [start_s, start_s + count * 900)."""
    result = []
    for t0, t1, delta in sorted(set(gaps)):
        first = int(np.floor((t0 - start_s) / BUCKET_S))
        end = int(np.ceil((t1 - start_s) / BUCKET_S)) - 1
        if t1 > start_s and t0 < start_s + count * BUCKET_S:
            result.append(GapSpan(first, end, tuple(pieces_of(t0, t1, delta, start_s, count)), t0, t1, delta))
    return result


def spec_of(timezone: str, calendar: Calendar | None, rules: CounterRules) -> str:
    """What a counter's daily rows were computed with: rebuilt (or ignored) when any of it changes."""
    tariff = None if calendar is None else {
        "bands": calendar.bands, "combined": sorted(calendar.combined.items()), "week": calendar.week,
        "holiday_band": calendar.holiday_band, "country": calendar.country,
        "extra": sorted(day.isoformat() for day in calendar.extra_holidays),
    }
    text = json.dumps([timezone, tariff, rules.sample_time_s, rules.max_power_w, rules.modulus], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
