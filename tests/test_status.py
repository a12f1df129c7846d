"""The status line: Delay percentiles from a fixed-bucket histogram, failing devices, state changes once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from support import FakeClock
from susee.quality import Code
from susee.sample import Sample
from susee.shown import rate_text
from susee.status import DELAY_BOUNDS_MS, DelayHistogram, Status, StoreFigures

T = 1_700_000_000.0


def tick(device_id: str, code: int = 0, delay_ms: float = 5.0, params: int = 3) -> list[Sample]:
    return [Sample(device_id, str(100 + n), T, None if code else 1.0, delay_ms, code if n == 0 else 0)
            for n in range(params)]


# (delays, p50 bound, p99 bound): a percentile is the upper bound of its bucket.
PERCENTILES = [
    ([5.0] * 100, 5.01, 5.01),
    ([1.0] * 99 + [900.0], 1.0, 1.0),
    ([1.0] * 98 + [900.0] * 2, 1.0, 1000.0),
    ([0.01, 0.02], 0.1, 0.1),  # below the first bound
    ([10.0] * 50 + [30.0] * 50, 10.0, 31.6),
    ([500_000.0], 100_000.0, 100_000.0),  # beyond the last bound: the last bound
]


@pytest.mark.parametrize(("delays", "p50", "p99"), PERCENTILES)
def test_percentiles_are_the_upper_bound_of_their_bucket(delays, p50, p99):
    histogram = DelayHistogram()
    for delay in delays:
        histogram.add(delay)

    assert (histogram.percentile(0.5), histogram.percentile(0.99)) == (p50, p99)
    assert histogram.total == len(delays)


def test_buckets_are_ten_per_decade_and_an_empty_histogram_has_no_percentile():
    assert DELAY_BOUNDS_MS[0] == 0.1 and DELAY_BOUNDS_MS[10] == 1.0 and DELAY_BOUNDS_MS[-1] == 100_000.0
    assert DelayHistogram().percentile(0.5) is None


def figures(rows_written: int = 0, online: bool = True, spool_rows: int = 0) -> StoreFigures:
    return StoreFigures(rows_written, online, spool_rows, spool_rows * 50)


def test_status_line_counts_the_period_names_failing_devices_by_code_and_resets():
    written = [800]
    status = Status(10, lambda: figures(written[0]))
    status.failing = {"d03": int(Code.ERR_CONNECTION), "d01": int(Code.VALUE_NAN), "d07": int(Code.ERR_CONNECTION)}
    for _ in range(10):
        status.delays.add(5.0)
    status.device_ticks = 10

    line = status.line(60)

    assert line == (
        "status of the last 60 s: 10 device-ticks, 800 rows written; "
        "3 of 10 devices failing: err_connection: d03, d07; value_nan: d01; "
        "Delay p50 <= 5.01 ms, p99 <= 5.01 ms; database online; spool empty"
    )
    written[0] = 900
    assert status.line(60).startswith("status of the last 60 s: 0 device-ticks, 100 rows written; ")
    assert "Delay -" in status.line(60)


def test_status_line_says_when_the_database_is_offline_and_what_the_spool_holds():
    line = Status(1, lambda: figures(online=False, spool_rows=1200)).line(60)

    assert "no device failing" in line
    assert "database OFFLINE (rows go to the spool); spool 1200 rows (60000 bytes)" in line


async def test_a_device_failing_and_recovering_is_logged_once_each(caplog):
    caplog.set_level(logging.INFO, logger="susee.status")
    status = Status(2, figures)

    for _ in range(5):
        status.observe(tick("d01", int(Code.VALUE_NAN)))
        status.observe(tick("d02"))
    status.flush_changes()
    for _ in range(5):
        status.observe(tick("d01"))
    status.flush_changes()

    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["device d01 now failing: value_nan (Code 16)", "device d01 answers well again"]
    assert status.failing == {}


async def test_many_devices_failing_at_once_make_one_line(caplog):
    caplog.set_level(logging.INFO, logger="susee.status")
    status = Status(200, figures)

    for n in range(200):
        status.observe(tick(f"m{n:03d}", int(Code.ERR_CONNECTION)))
    await asyncio.sleep(0)
    status.flush_changes()

    (message,) = [record.getMessage() for record in caplog.records]
    assert message == "200 devices now failing: err_connection (Code 1): m000, m001, m002, m003, m004 and 195 more"


async def test_status_lines_come_every_period_on_absolute_times(caplog):
    caplog.set_level(logging.INFO, logger="susee.status")
    clock = FakeClock(T)
    status = Status(1, figures)

    task = asyncio.create_task(status.run(clock, 60))
    while len(caplog.records) < 3:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert (clock.now() - T) % 60 == 0 and clock.now() - T >= 180  # whole periods from the start
    assert all(record.getMessage().startswith("status of the last 60 s") for record in caplog.records)


@pytest.mark.parametrize(
    ("rows", "elapsed_s", "text"),
    [(2_000_000, 19.2, " (104167 rows/s)"), (64, 0.0, ""), (64, 0.00001, ""), (100, 0.1, " (1000 rows/s)")],
)
def test_a_rate_is_only_given_over_a_measurable_time(rows, elapsed_s, text):
    assert rate_text(rows, elapsed_s) == text  # a 0.0 s replay once said "6400000000 rows/s"
