"""Figures per (meter, interval, band): consumption, demand, peak, estimated share, completeness.

A meter's counter is a ``Composite``: one ``Series``, or sums and differences
of them (derived counters such as ``222 + 223``, virtual meters, tag groups).
Its buckets are gathered into *cells*: each interval as a whole (band
``all``), each interval's buckets of one tariff band, and of each combined
band (e.g. F23). The grouping is done once per report with numpy
(``Layer``), then every counter is reduced with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from susee.report.energy import GapSpan, Series
from susee.report.intervals import BUCKET_S, Interval
from susee.report.tariffs import Calendar

ALL = "all"


@dataclass(frozen=True)
class Composite:
    """Per-bucket energy of a sum of counters (signs +1/-1), with what each part measured."""

    energy: np.ndarray  # NaN where any part knows nothing
    magnitude: np.ndarray  # sum of the parts' absolute energies: the base of the estimated share
    flags: np.ndarray
    codes: np.ndarray
    spans: tuple[GapSpan, ...]
    goods: tuple[np.ndarray, ...]  # good samples per bucket, per part
    sample_time_s: float

    @classmethod
    def of(cls, series: Series) -> Composite:
        # Good counts fit 16 bits (900 a bucket at 1 s): a tag group keeps one array per member.
        return cls(series.energy, np.nan_to_num(np.abs(series.energy)), series.flags, series.codes,
                   tuple(series.spans), (series.good.astype(np.int16),), series.sample_time_s)


def combine(terms: Sequence[tuple[int, Composite]]) -> Composite:
    """``sign1 * part1 + sign2 * part2 + ...``; its completeness is the minimum of its parts'."""
    sign, first = terms[0]
    energy = sign * first.energy
    magnitude, flags, codes = first.magnitude.copy(), first.flags.copy(), first.codes.copy()
    spans, goods = list(first.spans), list(first.goods)
    for sign, part in terms[1:]:
        energy = energy + sign * part.energy
        magnitude += part.magnitude
        flags |= part.flags
        codes |= part.codes
        spans.extend(part.spans)
        goods.extend(part.goods)
    return Composite(energy, magnitude, flags, codes, tuple(spans), tuple(goods), first.sample_time_s)


class Figure(NamedTuple):
    """One report row: a meter's counter over one cell (interval x band).

    A NamedTuple, not a frozen dataclass: a daily report of 1,000 meters for a
    year makes 1.6 M of them, and a frozen dataclass takes ~8x longer to build.
    """

    meter: str
    param: str
    unit: str
    interval: Interval
    band: str
    hours: float  # the cell's length: the whole interval, or the band's hours in it
    energy: float | None  # None: no data at all (not zero)
    demand_w: float | None  # mean power over the cell
    peak_w: float | None  # highest 15-minute mean power in the cell
    peak_at: str | None  # local start of that 15 minutes
    estimated_pct: float | None
    completeness_pct: float
    codes: int
    flags: int


@dataclass(frozen=True)
class Layer:
    """A partition of the grid's buckets into cells: (interval index, band) per cell."""

    order: np.ndarray  # bucket indices sorted by cell
    starts: np.ndarray  # start of each cell in ``order``
    cells: tuple[tuple[int, str], ...]
    sizes: np.ndarray  # buckets per cell
    key: np.ndarray  # cell number of each bucket, -1 when in none


def layers(intervals: Sequence[Interval], grid_start: int, count: int,
           bands: Sequence[str], calendar: Calendar | None) -> list[Layer]:
    """The cell layers of a report: whole intervals, then per band, then combined bands."""
    interval_of = np.empty(count, dtype=np.int64)
    for number, interval in enumerate(intervals):
        interval_of[(interval.start_s - grid_start) // BUCKET_S:(interval.end_s - grid_start) // BUCKET_S] = number
    result = [cell_layer(interval_of, np.zeros(count, dtype=np.int64), (ALL,))]
    if calendar is None:
        return result
    band_names = calendar.bands
    band_of = np.array([band_names.index(b) for b in bands], dtype=np.int64)
    result.append(cell_layer(interval_of, band_of, band_names))
    for name, parts in calendar.combined.items():
        member = np.isin(band_of, [band_names.index(p) for p in parts])
        result.append(cell_layer(np.where(member, interval_of, -1), np.zeros(count, dtype=np.int64), (name,)))
    return result


def cell_layer(interval_of: np.ndarray, band_of: np.ndarray, names: Sequence[str]) -> Layer:
    key = np.where(interval_of >= 0, interval_of * len(names) + band_of, -1)
    order = np.argsort(key, kind="stable")
    order = order[key[order] >= 0]
    sorted_keys = key[order]
    unique, starts, sizes = np.unique(sorted_keys, return_index=True, return_counts=True)
    cells = tuple((int(k) // len(names), names[int(k) % len(names)]) for k in unique)
    cell_key = np.full(len(key), -1, dtype=np.int64)
    cell_key[order] = np.repeat(np.arange(len(unique)), sizes)
    return Layer(order, starts, cells, sizes, cell_key)


def figures(meter: str, param: str, unit: str, counter: Composite, layer: Layer,
            intervals: Sequence[Interval], grid_start: int, zone: ZoneInfo,
            labels: dict[int, str] | None = None) -> list[Figure]:
    """Reduce one counter over one layer's cells."""
    if not layer.cells:
        return []
    order, starts = layer.order, layer.starts
    energy = counter.energy[order]
    known = ~np.isnan(energy)
    covered = np.add.reduceat(known, starts)
    totals = np.add.reduceat(np.where(known, energy, 0.0), starts)
    magnitude = np.add.reduceat(counter.magnitude[order], starts)
    estimated = np.add.reduceat(estimated_wh(counter.spans, layer)[order], starts)
    codes = np.bitwise_or.reduceat(counter.codes[order], starts)
    flags = np.bitwise_or.reduceat(counter.flags[order], starts)
    seconds = layer.sizes * BUCKET_S
    completeness = np.min(
        [np.minimum(1.0, np.add.reduceat(good[order], starts, dtype=np.int64) * counter.sample_time_s / seconds)
         for good in counter.goods], axis=0)
    peak = peak_index_of(energy, known, layer)
    peak_wh = np.where(peak >= 0, counter.energy[np.maximum(peak, 0)], np.nan)
    return figure_rows(meter, param, unit, layer, intervals, zone, Reduced(
        covered, totals, magnitude, estimated, codes, flags, completeness, peak_wh,
        np.where(peak >= 0, grid_start + peak * BUCKET_S, -1)), labels)


@dataclass(frozen=True)
class Reduced:
    """One counter reduced over a layer's cells (arrays by cell): what a Figure shows."""

    covered: np.ndarray  # buckets with known energy
    totals: np.ndarray  # Wh
    magnitude: np.ndarray
    estimated: np.ndarray
    codes: np.ndarray
    flags: np.ndarray
    completeness: np.ndarray  # 0..1
    peak_wh: np.ndarray  # NaN when no bucket is known
    peak_at: np.ndarray  # epoch s of the peak's bucket, -1 when none


def figure_rows(meter: str, param: str, unit: str, layer: Layer, intervals: Sequence[Interval], zone: ZoneInfo,
                reduced: Reduced, labels: dict[int, str] | None = None) -> list[Figure]:
    """The report rows of one counter's reduced cells (the Q15 path and the daily rollups share it).

    Built column by column (a daily report of a year has ~1,800 rows per meter);
    ``labels`` caches the local time text of peak instants across calls.
    """
    labels = {} if labels is None else labels
    cells = len(layer.cells)
    hours_s = layer.sizes * BUCKET_S / 3600
    has = (reduced.covered > 0).tolist()
    at = reduced.peak_at.tolist()
    for instant in set(at) - labels.keys():
        if instant >= 0:
            labels[instant] = datetime.fromtimestamp(instant, zone).isoformat()
    share = np.where(reduced.magnitude > 0,
                     100.0 * reduced.estimated / np.where(reduced.magnitude > 0, reduced.magnitude, 1.0), 0.0)
    columns = (
        repeat(meter, cells), repeat(param, cells), repeat(unit, cells),
        [intervals[index] for index, _ in layer.cells], [band for _, band in layer.cells], hours_s.tolist(),
        _known(reduced.totals, has), _known(reduced.totals / hours_s, has),
        [None if instant < 0 else watts for instant, watts in zip(at, (reduced.peak_wh * 3600 / BUCKET_S).tolist())],
        [labels.get(instant) for instant in at],
        _known(share, has), (100.0 * reduced.completeness).tolist(), reduced.codes.tolist(), reduced.flags.tolist(),
    )
    return list(map(Figure._make, zip(*columns)))


def _known(values: np.ndarray, has: list[bool]) -> list[float | None]:
    """``values`` as floats, None where the cell knows nothing."""
    return [value if known else None for value, known in zip(values.tolist(), has)]


def peak_index_of(energy: np.ndarray, known: np.ndarray, layer: Layer) -> np.ndarray:
    """Per cell, the grid index of its highest known bucket (the earliest on a tie), or -1."""
    cell = np.repeat(np.arange(len(layer.cells)), layer.sizes)
    value = np.where(known, energy, -np.inf)
    ranked = np.lexsort((layer.order, -value, cell))  # by cell, then highest, then earliest
    best = ranked[layer.starts]
    return np.where(known[best], layer.order[best], -1)


def estimated_wh(spans: Sequence[GapSpan], layer: Layer) -> np.ndarray:
    """Wh per bucket that came from gaps crossing the boundary of the bucket's cell."""
    result = np.zeros(len(layer.key))
    count = len(layer.key)
    for span in spans:
        inside = 0 <= span.first and span.last < count
        keys = layer.key[span.first:span.last + 1] if inside else None
        if keys is not None and keys[0] >= 0 and bool(np.all(keys == keys[0])):
            continue  # the whole gap lies in one cell: its total is measured there
        for index, wh in span.pieces:
            result[index] += wh
    return result
