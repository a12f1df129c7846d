"""The report as CSV (tidy rows), XLSX (summary, intervals, native chart) or PNG (bars and load profile)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from susee.quality import describe
from susee.report.aggregate import ALL, Figure
from susee.report.energy import flag_words
from susee.report.intervals import BUCKET_S

if TYPE_CHECKING:
    from susee.report.command import Report

COLUMNS = (
    "meter", "param", "unit", "band", "interval_start", "interval_end", "hours",
    "energy", "power_unit", "demand", "peak_demand", "peak_at",
    "estimated_pct", "completeness_pct", "codes", "flags", "reactive_ratio_pct", "cos_phi",
)
PNG_SIZE_IN = (12, 8)
PNG_DPI = 100  # 1200 x 800 pixels


def power_unit(energy_unit: str) -> str:
    """Wh -> W, VArh -> VAr: the unit of the mean power over a time."""
    return energy_unit[:-1] if energy_unit.lower().endswith("h") else f"{energy_unit}/h"


def _is_reactive(unit: str) -> bool:
    return unit.lower() == "varh"


def table(report: Report, figures: Iterable[Figure] | None = None) -> list[list[Any]]:
    """The report's tidy rows (``COLUMNS``): None where there is no figure."""
    figures = report.rows if figures is None else list(figures)
    active: dict[tuple[str, int, str], float | None] = {}
    for figure in figures:
        if figure.unit == "Wh":
            active.setdefault((figure.meter, figure.interval.start_s, figure.band), figure.energy)
    rows = []
    for f in figures:
        ratio = cos_phi = None
        if _is_reactive(f.unit) and f.energy is not None:
            p = active.get((f.meter, f.interval.start_s, f.band))
            if p:  # neither None nor zero
                ratio = 100.0 * f.energy / p
            if p is not None and (p or f.energy):  # no active energy but some reactive: cos phi 0
                cos_phi = p / float(np.hypot(p, f.energy))
        rows.append([
            f.meter, f.param, f.unit, f.band, f.interval.label, _local(f.interval.end_s, report), f.hours,
            _round(f.energy), power_unit(f.unit), _round(f.demand_w), _round(f.peak_w), f.peak_at,
            _round(f.estimated_pct, 2), round(f.completeness_pct, 2), describe(f.codes), flag_words(f.flags),
            _round(ratio, 2), _round(cos_phi, 4),
        ])
    return rows


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _local(t: int, report: Report) -> str:
    return datetime.fromtimestamp(t, report.zone).isoformat()


def write_csv(report: Report, stream: IO[str]) -> None:
    """One row per (meter, param, interval, band); empty cells where there is no figure."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in table(report):
        writer.writerow(["" if value is None else value for value in row])


def write_xlsx(report: Report, path: Path) -> None:
    """Summary (whole period per band), Intervals (the CSV's rows) and a stacked chart by band."""
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})  # rows stream to disk
    try:
        bold = workbook.add_format({"bold": True})
        summary = workbook.add_worksheet("Summary")
        period = f"{report.intervals[0].label} to {_local(report.intervals[-1].end_s, report)}"
        summary.write_row(0, 0, ["susee report", period, f"every {report.every}",
                                 f"tariff {report.calendar.name}" if report.calendar else "no tariff bands"], bold)
        _sheet(summary, table(report, report.totals), bold, first_row=2)
        intervals = workbook.add_worksheet("Intervals")
        _sheet(intervals, table(report), bold)
        _chart(workbook, report, bold)
    finally:
        workbook.close()


def _sheet(sheet: Any, rows: list[list[Any]], bold: Any, first_row: int = 0) -> None:
    sheet.write_row(first_row, 0, COLUMNS, bold)
    for number, row in enumerate(rows, start=first_row + 1):
        for column, value in enumerate(row):
            if value is not None:
                sheet.write(number, column, value)
    sheet.freeze_panes(first_row + 1, 0)
    sheet.set_column(0, 3, 12)
    sheet.set_column(4, 5, 26)


def _chart_series(report: Report) -> tuple[str, str, str, list[str], dict[str, list[float]]] | None:
    """(meter, param, unit, interval labels, {band: energies}) of the first meter's first counter."""
    if not report.rows:
        return None
    first = report.rows[0]
    bands = [b for b in report.calendar.bands] if report.calendar else [ALL]
    labels = [interval.label for interval in report.intervals]
    values = {band: [0.0] * len(labels) for band in bands}
    index = {interval.start_s: i for i, interval in enumerate(report.intervals)}
    for f in report.rows:
        if (f.meter, f.param) == (first.meter, first.param) and f.band in values and f.energy is not None:
            values[f.band][index[f.interval.start_s]] = f.energy
    return first.meter, first.param, first.unit, labels, values


def _chart(workbook: Any, report: Report, bold: Any) -> None:
    data = _chart_series(report)
    if data is None:
        return
    meter, param, unit, labels, values = data
    sheet = workbook.add_worksheet("Chart")
    sheet.write_row(0, 0, ["interval", *(f"{band} ({unit})" for band in values)], bold)
    for row, label in enumerate(labels, start=1):
        sheet.write(row, 0, label)
        for column, band in enumerate(values, start=1):
            sheet.write(row, column, values[band][row - 1])
    chart = workbook.add_chart({"type": "column", "subtype": "stacked"})
    for column in range(1, len(values) + 1):
        chart.add_series({
            "name": ["Chart", 0, column],
            "categories": ["Chart", 1, 0, len(labels), 0],
            "values": ["Chart", 1, column, len(labels), column],
        })
    chart.set_title({"name": f"{meter} {param}: consumption per {report.every} by band"})
    chart.set_y_axis({"name": unit})
    chart.set_size({"width": 960, "height": 480})
    sheet.insert_chart(1, len(values) + 2, chart)


def write_png(report: Report, path: Path) -> None:
    """Stacked bars of the first meter's first counter by band, and the 15-minute load profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, (bars, profile) = plt.subplots(2, 1, figsize=PNG_SIZE_IN, dpi=PNG_DPI)
    try:
        data = _chart_series(report)
        if data is not None:
            _bars(bars, report, *data)
            _profile(profile, report, data[1], data[2])
        for axis in (bars, profile):
            axis.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d\n%H:%M", tz=report.zone))
            axis.grid(True, axis="y", alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=PNG_DPI)
    finally:
        plt.close(figure)


def _bars(axis: Any, report: Report, meter: str, param: str, unit: str, labels: list[str],
          values: dict[str, list[float]]) -> None:
    largest = max((sum(column) for column in zip(*values.values(), strict=True)), default=0.0)
    scale, shown = (1000.0, f"k{unit}") if largest > 10_000 else (1.0, unit)
    starts = [datetime.fromtimestamp(i.start_s, report.zone) for i in report.intervals]
    widths = [(i.end_s - i.start_s) / 86400 * 0.8 for i in report.intervals]  # matplotlib dates are days
    bottom = np.zeros(len(labels))
    for band, energies in values.items():
        heights = np.array(energies) / scale
        axis.bar(starts, heights, width=widths, bottom=bottom, align="edge", label=band)
        bottom += heights
    axis.set_title(f"{meter} {param}: consumption per {report.every}" + (" by band" if report.calendar else ""))
    axis.set_ylabel(shown)
    axis.legend(loc="upper right")


def _profile(axis: Any, report: Report, param: str, unit: str) -> None:
    shown = [(meter, watts) for (meter, p), watts in report.profiles.items() if p == param]
    if not shown:
        return
    times = [datetime.fromtimestamp(report.grid_start + i * BUCKET_S, report.zone) for i in range(len(shown[0][1]))]
    for meter, watts in shown:
        axis.step(times, watts / 1000.0, where="post", label=meter, linewidth=1)
    axis.set_title(f"Load profile ({param}): mean power per 15 minutes")
    axis.set_ylabel(f"k{power_unit(unit)}")
    axis.legend(loc="upper right")
