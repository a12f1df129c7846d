"""``susee report``: arguments -> meters and counters -> Q15 rows -> figures -> CSV, XLSX or PNG.

Devices are read in chunks (one query set per chunk), so memory stays
bounded by the chunk for per-device reports; the series of devices that a
virtual meter or a tag group needs are combined as they arrive.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from susee.config import Settings
from susee.devices import DevicePlan
from susee.report.aggregate import ALL, Composite, Figure, Layer, combine, figure_rows, figures, layers
from susee.report.daily import CellMap, DaySource, cell_map, reduce_cells, usable
from susee.report.days import DayGrid, DayRows, site_calendar
from susee.report.energy import GapSpan, counter_series
from susee.report.intervals import BUCKET_S, Interval, intervals, parse_duration, parse_local
from susee.report.meters import (
    Counter,
    Culprit,
    Meter,
    check_params,
    default_params,
    device_counters,
    meters,
    select,
    virtual_counter,
)
from susee.report.reader import ReadError, read_rows
from susee.report.tariffs import Calendar, TariffError, load_calendar

EXIT_ARGUMENTS = 2
# Devices per query set: large enough that per-query latency does not
# dominate, small enough that a year of 15-minute series stays in memory.
CHUNK_DEVICES = 50
FORMATS = {".csv": "csv", ".xlsx": "xlsx", ".png": "png"}
PROFILE_METERS = 6  # load profiles kept for the PNG
EMPTY = np.empty((0, 12))  # no Q15 rows


@dataclass(frozen=True)
class Request:
    """What to report, checked."""

    start_s: int
    end_s: int
    every: str
    by: str
    params: tuple[str, ...] | None
    tariff: str | None
    devices: tuple[str, ...] | None
    out: Path | None


@dataclass
class Report:
    """Everything the outputs show."""

    zone: ZoneInfo
    every: str
    calendar: Calendar | None
    intervals: list[Interval]
    rows: list[Figure] = field(default_factory=list)  # per interval and band
    totals: list[Figure] = field(default_factory=list)  # over the whole period, per band
    # (meter, param) -> mean W per 15 minutes (NaN unknown), for load profiles
    profiles: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    grid_start: int = 0
    # Where the figures came from: daily rows read, and days computed from Q15 because the
    # daily rollups did not cover them (both 0: the 15-minute path).
    day_rows_read: int = 0
    days_from_q15: int = 0


def parse_request(args: argparse.Namespace, zone: ZoneInfo, now_s: float) -> Request:
    """Culprit for a bad argument."""
    if args.last is not None:
        if args.start or args.end:
            raise Culprit("--last: give either --last or --from/--to")
        try:
            duration = parse_duration(args.last)
        except ValueError as exc:
            raise Culprit(f"--last: {exc}") from None
        end = -int(-now_s // BUCKET_S) * BUCKET_S  # up to the end of the current 15 minutes
        start = end - duration
    else:
        if not args.start or not args.end:
            raise Culprit("--from and --to (or --last) are required")
        start, end = _when("--from", args.start, zone), _when("--to", args.end, zone)
        if end <= start:
            raise Culprit(f"--to {args.end}: is not after --from {args.start}")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in FORMATS:
        raise Culprit(f"--out {args.out}: the format follows the extension: .csv, .xlsx or .png")
    return Request(start, end, args.every, args.by, _list(args.params), args.tariff, _list(args.devices), out)


def _list(text: str | None) -> tuple[str, ...] | None:
    return tuple(item.strip() for item in text.split(",") if item.strip()) if text else None


def _when(option: str, text: str, zone: ZoneInfo) -> int:
    try:
        return parse_local(text, zone)
    except ValueError:
        raise Culprit(f"{option} {text}: not a date like 2026-11-01 or 2026-11-01T08:00") from None


def build(settings: Settings, plans: Sequence[DevicePlan], config_path: Path, request: Request,
          progress: bool = False, use_days: bool = True) -> Report:
    """Read the rollups and compute every figure; Culprit, TariffError or ReadError on failure.

    Day and month intervals come from the daily rollups when they can (``use_days``; the same figures).
    """
    with _collector_paused():
        return _build(settings, plans, config_path, request, progress, use_days)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the rows are made: a daily report of 1,000 meters makes 1.6 M rows
    (tuples, no cycles), and the collector's passes over them took twice as long as making them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build(settings: Settings, plans: Sequence[DevicePlan], config_path: Path, request: Request,
           progress: bool, use_days: bool) -> Report:
    zone = ZoneInfo(settings.timezone)
    tariff = request.tariff or settings.tariff  # the site's tariff is the default
    calendar = None if tariff.lower() == "none" else load_calendar(tariff, config_path.parent)
    plans = [plan for plan in plans if plan.profile is not None]
    counters = {plan.id: device_counters(plan, settings.sample_time) for plan in plans}
    tags = {device.id: device.tags for device in settings.devices}
    rows = meters(request.by, [plan.id for plan in plans], tags, settings.virtual_meters)
    if request.devices:
        rows, plans = select(rows, plans, request.devices)
    params = list(request.params) if request.params else default_params(counters)
    check_params(params, counters, plans)
    spans = intervals(request.start_s, request.end_s, request.every, zone)
    collector = _Collector(Report(zone, request.every, calendar, spans, grid_start=spans[0].start_s), rows, counters)
    target, end_s = settings.database_target(), spans[-1].end_s
    chunks = [plans[i:i + CHUNK_DEVICES] for i in range(0, len(plans), CHUNK_DEVICES)]
    wanted = [counters[plan.id][param] for plan in plans for param in params if param in counters[plan.id]]
    source = _day_source(settings, request, calendar, collector, wanted) if use_days else None
    if source is not None:  # day or month intervals: from the daily rollups
        per_chunk = [[counters[plan.id][param] for plan in chunk for param in params if param in counters[plan.id]]
                     for chunk in chunks]
        _from_days(source, per_chunk, params, collector, progress)
    for chunk in _progress(chunks if source is None else [], progress, "meters", CHUNK_DEVICES):
        keys = [(plan.id, part) for plan in chunk for param in params
                if param in counters[plan.id] for _, part, _ in counters[plan.id][param].terms]
        found = read_rows(target, settings.job_id, keys, spans[0].start_s, end_s)
        for plan in chunk:
            for param in params:
                if param in counters[plan.id]:
                    collector.device(counters[plan.id][param], found)
    collector.finish(params)
    if source is not None:
        collector.report.day_rows_read, collector.report.days_from_q15 = source.rows_read, source.days_computed
    _sort(collector.report, rows, params, rows_sorted=source is not None)
    return collector.report


def _from_days(source: DaySource, chunks: list[list[Counter]], params: list[str], collector: _Collector,
               progress: bool) -> None:
    """Every device's figures from its daily elements. The next chunk is read in a thread while this one is
    computed: the server formats its rows meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(source.read, chunks[0]) if chunks else None
        for number in _progress(list(range(len(chunks))), progress, "meters", CHUNK_DEVICES):
            assert ahead is not None
            elements = ahead.result()
            if number + 1 < len(chunks):
                ahead = pool.submit(source.read, chunks[number + 1])
            by_device: dict[str, list] = {}
            for counter in chunks[number]:
                by_device.setdefault(counter.device, []).append((counter, *elements[(counter.device, counter.param)]))
            for parts in by_device.values():
                collector.device_days(parts, params, source.grid)


def _day_source(settings: Settings, request: Request, calendar: Calendar | None, collector: _Collector,
                wanted: list[Counter]) -> DaySource | None:
    """The daily rollups when they can give this report's figures: day or month intervals of devices (not virtual
    meters or tag groups: their peak is the peak of a sum) and no PNG (its load profile is 15-minute)."""
    if collector.combined_rows or (request.out is not None and request.out.suffix.lower() == ".png"):
        return None
    if request.every not in ("day", "month"):
        return None
    site = site_calendar(settings)
    if not usable(request.every, calendar, site, settings.timezone, wanted):
        return None
    report = collector.report
    return DaySource(settings.database_target(), settings.job_id, settings.timezone, site, report.grid_start,
                     report.intervals[-1].end_s, time.time())


class _Collector:
    """Turns each device's counter into figures, and keeps what virtual meters and tag groups need."""

    def __init__(self, report: Report, rows: list[Meter], counters: dict[str, dict[str, Counter]]) -> None:
        self.report = report
        self.counters = counters
        spans, start = report.intervals, report.grid_start
        self.count = (spans[-1].end_s - start) // BUCKET_S
        bands = (report.calendar.bands_of(range(start, spans[-1].end_s, BUCKET_S), report.zone)
                 if report.calendar else [])
        self.whole = [Interval(start, spans[-1].end_s, spans[0].label)]
        self.layers = (layers(spans, start, self.count, bands, report.calendar),
                       layers(self.whole, start, self.count, bands, report.calendar))
        self.device_rows = {m.name for m in rows if len(m.terms) == 1 and not m.group and m.terms[0][1] == m.name}
        self.combined_rows = [m for m in rows if m.name not in self.device_rows]
        self.virtual_parts = {d for meter in self.combined_rows if not meter.group for _, d in meter.terms}
        self.groups_of: dict[str, list[Meter]] = {}  # device -> the tag groups it is in
        for meter in self.combined_rows:
            for _, device in meter.terms if meter.group else ():
                self.groups_of.setdefault(device, []).append(meter)
        self.labels: dict[int, str] = {}  # local time texts of peak instants
        self.cell_maps: dict[int, tuple[CellMap, np.ndarray]] = {}  # by id of a layer in self.layers
        self.kept: dict[str, dict[str, Composite]] = {}  # parts of virtual meters
        self.sums: dict[tuple[str, str], tuple[str, Composite]] = {}  # tag groups, summed as devices arrive

    def device(self, counter: Counter, found: dict) -> None:
        """One device's counter from its Q15 rows (``found``, by (device, param))."""
        device, param = counter.device, counter.param
        composite = combine([
            (sign, Composite.of(counter_series(found.get((device, part), EMPTY), self.report.grid_start,
                                               self.count, rules)))
            for sign, part, rules in counter.terms
        ])
        if device in self.virtual_parts:
            self.kept.setdefault(device, {})[param] = composite
        for group in self.groups_of.get(device, ()):
            before = self.sums.get((group.name, param))
            self.sums[(group.name, param)] = (counter.unit, composite if before is None
                                              else combine([(1, before[1]), (1, composite)]))
        if device in self.device_rows:
            self._add(device, param, counter.unit, composite)

    def device_days(self, parts: list[tuple[Counter, DayRows, list[GapSpan]]], params: list[str],
                    grid: DayGrid) -> None:
        """One device's counters from their daily elements (``DaySource``); its rows are added in report order
        (interval, band, param), ordered with numpy rather than by a per-row sort key."""
        report = self.report
        per_interval, whole = self.layers
        rows: list[Figure] = []
        keys: list[np.ndarray] = []
        for counter, elements, spans in parts:
            sample_time_s = counter.terms[0][2].sample_time_s
            for layer in per_interval:
                if layer.cells:
                    cells, order_key = self._cells(grid, layer)
                    rows.extend(figure_rows(counter.device, counter.param, counter.unit, layer, report.intervals,
                                            report.zone, reduce_cells(elements, spans, layer, cells, sample_time_s),
                                            self.labels))
                    keys.append(np.column_stack([order_key, np.full(len(order_key), params.index(counter.param))]))
            for layer in whole:
                if layer.cells:
                    report.totals.extend(figure_rows(
                        counter.device, counter.param, counter.unit, layer, self.whole, report.zone,
                        reduce_cells(elements, spans, layer, self._cells(grid, layer)[0], sample_time_s),
                        self.labels))
        if rows:
            key = np.concatenate(keys)
            report.rows.extend(rows[i] for i in np.lexsort((key[:, 2], key[:, 1], key[:, 0])).tolist())

    def _cells(self, grid: DayGrid, layer: Layer) -> tuple[CellMap, np.ndarray]:
        """A layer's elements per cell and its cells' (interval, band rank) order keys: once per report."""
        found = self.cell_maps.get(id(layer))
        if found is None:
            calendar = self.report.calendar
            rank = {ALL: -1, **{band: i for i, band in enumerate(calendar.bands if calendar else ())},
                    **{band: 100 + i for i, band in enumerate(sorted(calendar.combined if calendar else ()))}}
            order_key = np.array([(i, rank[b]) for i, b in layer.cells], dtype=np.int64).reshape(-1, 2)
            found = self.cell_maps[id(layer)] = (cell_map(grid, layer), order_key)
        return found

    def finish(self, params: list[str]) -> None:
        """Figures of the virtual meters and tag groups, once every device is in."""
        for meter in self.combined_rows:
            for param in params:
                found = (self.sums.get((meter.name, param)) if meter.group
                         else virtual_counter(meter, param, self.kept, self.counters))
                if found is not None:
                    self._add(meter.name, param, *found)

    def _add(self, meter: str, param: str, unit: str, composite: Composite) -> None:
        report = self.report
        per_interval, whole = self.layers
        for layer in per_interval:
            report.rows.extend(figures(meter, param, unit, composite, layer, report.intervals,
                                       report.grid_start, report.zone, self.labels))
        for layer in whole:
            report.totals.extend(figures(meter, param, unit, composite, layer, self.whole,
                                         report.grid_start, report.zone, self.labels))
        shown = {m for m, _ in report.profiles}
        if len(shown) < PROFILE_METERS or meter in shown:
            report.profiles[(meter, param)] = composite.energy * (3600 / BUCKET_S)


def _sort(report: Report, rows: list[Meter], params: list[str], rows_sorted: bool = False) -> None:
    meter_rank = {meter.name: index for index, meter in enumerate(rows)}
    param_rank = {param: index for index, param in enumerate(params)}
    bands = {"all": -1, **{band: i for i, band in enumerate(report.calendar.bands if report.calendar else ())}}

    def key(figure: Figure) -> tuple:
        return (meter_rank[figure.meter], figure.interval.start_s, bands.get(figure.band, 99), figure.band,
                param_rank[figure.param])

    if not rows_sorted:
        report.rows.sort(key=key)
    report.totals.sort(key=key)


def _progress(items: list, enabled: bool, unit: str, scale: int):  # type: ignore[no-untyped-def]
    if not enabled or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, unit=f"x{scale} {unit}", file=sys.stderr, leave=False)


def run(settings: Settings, plans: Sequence[DevicePlan], config_path: Path, args: argparse.Namespace) -> int:
    """The command: exit 2 naming the culprit of a bad argument, 1 when the rollups cannot be read."""
    from susee.report import outputs

    zone = ZoneInfo(settings.timezone)
    try:
        request = parse_request(args, zone, time.time())
        report = build(settings, plans, config_path, request, progress=sys.stderr.isatty())
    except (Culprit, TariffError) as exc:
        print(f"susee report: {exc}", file=sys.stderr)
        return EXIT_ARGUMENTS
    except ReadError as exc:
        print(f"susee report: {exc}", file=sys.stderr)
        return 1
    if request.out is None:
        outputs.write_csv(report, sys.stdout)
        return 0
    kind = FORMATS[request.out.suffix.lower()]
    if kind == "csv":
        with request.out.open("w", newline="", encoding="utf-8") as stream:
            outputs.write_csv(report, stream)
    elif kind == "xlsx":
        outputs.write_xlsx(report, request.out)
    else:
        outputs.write_png(report, request.out)
    print(f"susee report: {request.out} written ({len(report.rows)} interval rows)", file=sys.stderr)
    return 0
