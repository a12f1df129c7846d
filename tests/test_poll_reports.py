"""Per-device events many devices have at once are logged as one line per period, not one per device."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from support import FakeClock, ReadsInTurn
from susee.config import DeviceSettings
from susee.devices import DevicePlan
from susee.planner import plan_reads
from susee.poller import Poller, PollReports, TickLog
from susee.profiles import load_profile
from susee.ticks import TickGrid

T0 = 1_700_000_000.0
PERIOD_S = 10.0


class SlowLink(ReadsInTurn):
    """A device whose every answer takes ``read_s`` virtual seconds (all registers 0)."""

    def __init__(self, clock: FakeClock, read_s: float) -> None:
        self.clock = clock
        self.read_s = read_s

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> bytes | list[int]:
        await asyncio.sleep(0)
        self.clock.advance(self.read_s)
        return bytes(2 * count) if function >= 3 else [0] * count  # registers come as their wire bytes


class BrokenLink(SlowLink):
    """A link with a bug: every read raises something that is not a Modbus failure."""

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> bytes | list[int]:
        raise RuntimeError("a bug in the driver")


class Enough(Exception):
    pass


def stop_after(polls: int):
    seen: list[int] = []

    def emit(samples) -> None:
        seen.append(1)
        if len(seen) >= polls:
            raise Enough

    return emit


def plan(device_id: str) -> DevicePlan:
    profile = load_profile("pac3200")
    settings = DeviceSettings(id=device_id, host="127.0.0.1", params=["133"])
    return DevicePlan(settings=settings, profile=profile, blocks=plan_reads(profile, ["133"]))


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "susee.poller" and r.levelno >= logging.WARNING]


async def test_overruns_of_many_devices_in_one_period_make_one_line_and_stay_counted_per_device(caplog):
    caplog.set_level(logging.WARNING, logger="susee.poller")
    reports = PollReports(PERIOD_S)
    pollers = []
    for n in range(300):
        clock = FakeClock(T0 - 0.5)
        link = SlowLink(clock, read_s=2.5 * PERIOD_S)  # each poll ends 25 s after its tick: 2 ticks skipped
        pollers.append(Poller(plan(f"d{n:03d}"), link, TickGrid(PERIOD_S), clock, stop_after(2), reports))

    results = await asyncio.gather(*(p.run() for p in pollers), return_exceptions=True)
    assert all(isinstance(r, Enough) for r in results)
    assert warnings_of(caplog) == [], "nothing is logged per device"
    reports.flush()

    (line,) = warnings_of(caplog)
    assert line == (
        "300 device(s) overran their poll, skipping 600 tick(s) in all in the last 10 s: "
        "d000, d001, d002, d003, d004 and 295 more"
    )
    assert [p.stats.missed_ticks for p in pollers] == [2] * 300
    reports.flush()
    assert len(warnings_of(caplog)) == 1, "a flush with nothing new logs nothing"


async def test_the_line_is_logged_one_period_after_the_first_event_without_a_flush(caplog):
    caplog.set_level(logging.WARNING, logger="susee.poller")
    log = TickLog("overran their poll, skipping %d tick(s) in all", period_s=0.05)
    log.add("d01", 1)
    log.add("d02", 3)

    deadline = time.monotonic() + 2.0
    while not warnings_of(caplog):
        assert time.monotonic() < deadline, "the aggregated line never came"
        await asyncio.sleep(0.01)
    assert warnings_of(caplog) == [
        "2 device(s) overran their poll, skipping 4 tick(s) in all in the last 0.05 s: d01, d02"
    ]


@pytest.mark.timeout(10)
async def test_an_unexpected_error_is_logged_in_full_once_per_device_then_only_counted(caplog):
    caplog.set_level(logging.WARNING, logger="susee.poller")
    reports = PollReports(PERIOD_S)
    pollers = []
    for n in range(50):
        clock = FakeClock(T0 - 0.5)
        pollers.append(Poller(plan(f"d{n:02d}"), BrokenLink(clock, 0.0), TickGrid(PERIOD_S), clock, stop_after(4),
                              reports))

    await asyncio.gather(*(p.run() for p in pollers), return_exceptions=True)
    reports.flush()

    records = [r for r in caplog.records if r.name == "susee.poller"]
    tracebacks = [r for r in records if r.exc_info]
    assert len(tracebacks) == 50, "the first error of each device, with its traceback"
    assert all("further ones are counted, not shown" in r.getMessage() for r in tracebacks)
    (summary,) = [r.getMessage() for r in records if not r.exc_info]
    assert summary.startswith("50 device(s) had 150 unexpected read or decode error(s) (Code 2) in the last 10 s: ")
    assert all(p.stats.codes == {2: 4} for p in pollers)
