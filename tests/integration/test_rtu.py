"""Modbus RTU end to end: meters on a (pseudo-terminal) serial line, and RTU frames over TCP.

The line is two pty pairs joined by a relay thread (``ptyline``) that holds
each byte for its wire time at BAUDRATE, so the bus is as slow as a real
one; pymodbus' serial server plays the meters on the far end. The service
runs in-process into a fresh MariaDB database.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
from pymodbus.framer import FramerType
from ptyline import Frame, PtyLine

from integration.sites import site_settings
from susee.config import Settings
from susee.devices import plan_devices
from susee.poller import Poller
from susee.quality import Code
from susee.simulator import Fault, Pac3200Simulator
from susee.sinks import create_sink
from susee.supervisor import Supervisor
from susee.ticks import TickGrid, WallClock
from susee.links.pool import LinkPool

DEFAULT_SET = ["104", "107", "132", "133", "134", "135", "222", "226"]
BAUDRATE = 19200  # a common RS485 speed; one PAC3200 tick (two reads) is ~110 ms of wire time
HEALTHY_UNITS = (1, 2, 3)
DEAD_UNIT = 4
DEAD_TIMEOUT_S = 0.3
RUN_S = 3.6  # three or four ticks at 1 s
PERIOD_MS = 1000.0

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs POSIX pseudo-terminals")


def _line_device(line: PtyLine, unit: int, **extra) -> dict:
    return {"id": f"m{unit}", "serial": {"port": line.client_port, "baudrate": BAUDRATE}, "unit": unit, **extra}


def _as_epoch(date: datetime) -> float:
    return date.replace(tzinfo=timezone.utc).timestamp()


async def _run(settings: Settings, tmp_path, duration_s: float = RUN_S) -> Supervisor:
    settings = settings.resolved(tmp_path / "site.yaml")  # the spool beside the site file, not in the working folder
    plans = plan_devices(settings, tmp_path / "site.yaml")
    supervisor = Supervisor(settings, plans, create_sink(settings.database_target(), settings.job_id))
    assert await supervisor.run(duration_s=duration_s) == 0
    return supervisor


def assert_one_transaction_at_a_time(frames: list[Frame], silent_units: set[int], timeout_s: float) -> None:
    """Every request is answered before the next goes out, or (silent unit) the next waits out the timeout."""
    pending: Frame | None = None
    for frame in frames:
        if frame.to_device:
            if pending is not None:
                assert pending.unit in silent_units, f"unit {frame.unit} asked while unit {pending.unit} had not answered"
                assert frame.time_s - pending.time_s >= 0.9 * timeout_s, "request sent before the timeout"
            pending = frame
        else:
            assert pending is not None and frame.unit == pending.unit, f"response of unit {frame.unit} unasked"
            pending = None


@pytest.fixture
def line():
    with PtyLine(baudrate=BAUDRATE) as pty_line:
        yield pty_line


@pytest.fixture
async def meters(line):
    """PAC3200 units 1-3 on the line, and unit 4 that never answers."""
    async with Pac3200Simulator(
        serial_port=line.device_port, baudrate=BAUDRATE, units=(*HEALTHY_UNITS, DEAD_UNIT),
        faults={DEAD_UNIT: Fault.TIMEOUT},
    ) as simulator:
        yield simulator


async def test_three_meters_on_one_rtu_line_store_what_they_served_one_transaction_at_a_time(
    line, meters, mariadb_target, job_id, fetch, tmp_path
):
    settings = site_settings(mariadb_target, job_id, [_line_device(line, unit) for unit in HEALTHY_UNITS])

    await _run(settings, tmp_path)

    rows = await fetch(f"SELECT idDevice, Date, idParam, Value, Delay, Code FROM see{job_id}Raw")
    dates = sorted({row["Date"] for row in rows})
    assert 3 <= len(dates) <= 4
    for unit in HEALTHY_UNITS:
        device_rows = [row for row in rows if row["idDevice"] == f"m{unit}"]
        assert len(device_rows) == len(dates) * len(DEFAULT_SET)
        for row in device_rows:
            assert row["Code"] == 0, row
            assert 0 <= row["Delay"] < PERIOD_MS, row
            tick = _as_epoch(row["Date"])
            served = [v for t, v in meters.served_values(unit, row["idParam"]) if tick <= t < tick + 1]
            assert served == [row["Value"]], (row, served)
    frames = line.frames()
    assert len([f for f in frames if f.to_device]) == len(dates) * len(HEALTHY_UNITS) * 2
    assert_one_transaction_at_a_time(frames, silent_units=set(), timeout_s=1.0)


async def test_dead_unit_on_the_line_costs_the_others_no_tick(line, meters, mariadb_target, job_id, fetch, tmp_path):
    devices = [_line_device(line, unit) for unit in HEALTHY_UNITS]
    devices.append(_line_device(line, DEAD_UNIT, timeout=DEAD_TIMEOUT_S))
    settings = site_settings(mariadb_target, job_id, devices)

    supervisor = await _run(settings, tmp_path, duration_s=4.6)

    rows = await fetch(f"SELECT idDevice, Date, Value, Delay, Code FROM see{job_id}Raw")
    dates = sorted({row["Date"] for row in rows})
    assert 4 <= len(dates) <= 5
    assert [_as_epoch(d) - _as_epoch(dates[0]) for d in dates] == list(range(len(dates)))
    for unit in HEALTHY_UNITS:
        device_rows = [row for row in rows if row["idDevice"] == f"m{unit}"]
        assert sorted({row["Date"] for row in device_rows}) == dates  # no tick missed
        assert all(row["Code"] == 0 and row["Delay"] < PERIOD_MS for row in device_rows)
    dead_rows = [row for row in rows if row["idDevice"] == f"m{DEAD_UNIT}"]
    assert sorted({row["Date"] for row in dead_rows}) == dates  # its gap is visible on every tick
    assert {(row["Code"], row["Value"]) for row in dead_rows} == {(Code.ERR_CONNECTION, None)}
    stats = {poller.plan.id: poller.stats for poller in supervisor.pollers}
    assert all(stats[f"m{unit}"].missed_ticks == 0 for unit in HEALTHY_UNITS)
    # Backed off: asked on ticks 0, 2, 5 ..., not on every tick.
    frames = line.frames()
    dead_requests = [f for f in frames if f.to_device and f.unit == DEAD_UNIT]
    assert 1 <= len(dead_requests) < len(dates)
    assert stats[f"m{DEAD_UNIT}"].skipped_polls == len(dates) - len(dead_requests)
    assert_one_transaction_at_a_time(frames, silent_units={DEAD_UNIT}, timeout_s=DEAD_TIMEOUT_S)


async def test_serial_port_missing_at_start_gives_code_1_then_is_opened_on_a_later_tick(line, meters, tmp_path):
    port = tmp_path / "ttyMETERS"  # like /dev/serial/by-id/..., which appears when the adapter is plugged in
    settings = Settings(
        database={"url": "sqlite:///unused.db"},
        devices=[{"id": "m1", "serial": {"port": str(port), "baudrate": BAUDRATE}, "unit": 1}],
    )
    (plan,) = plan_devices(settings, tmp_path / "site.yaml")
    links = LinkPool()
    clock = WallClock()
    poller = Poller(plan, links.link_for(plan.endpoint), TickGrid(1), clock, lambda samples: None)
    try:
        unplugged = await poller.poll(clock.now())
        os.symlink(line.client_port, port)
        plugged = await poller.poll(clock.now())
    finally:
        links.close()

    assert {(s.value, s.code) for s in unplugged} == {(None, Code.ERR_CONNECTION)}
    assert {s.code for s in plugged} == {0}
    assert poller.backoff.timeouts == 0  # a port that cannot be opened held the bus for no timeout


async def test_rtu_over_tcp_to_a_serial_server(mariadb_target, job_id, fetch, tmp_path):
    async with Pac3200Simulator(port=0, units=(1, 2, 3), framer=FramerType.RTU, faults={3: Fault.TIMEOUT}) as gateway:
        devices = [
            {"id": f"g{unit}", "host": "127.0.0.1", "port": gateway.port, "framer": "rtu", "unit": unit,
             "timeout": DEAD_TIMEOUT_S if unit == 3 else 1.0}
            for unit in (1, 2, 3)
        ]
        settings = site_settings(mariadb_target, job_id, devices)
        await _run(settings, tmp_path, duration_s=2.6)

    rows = await fetch(f"SELECT idDevice, Date, idParam, Value, Delay, Code FROM see{job_id}Raw")
    dates = sorted({row["Date"] for row in rows})
    assert 2 <= len(dates) <= 3
    for unit in (1, 2):
        device_rows = [row for row in rows if row["idDevice"] == f"g{unit}"]
        assert len(device_rows) == len(dates) * len(DEFAULT_SET)
        for row in device_rows:
            assert row["Code"] == 0 and row["Delay"] < PERIOD_MS, row
            tick = _as_epoch(row["Date"])
            served = [v for t, v in gateway.served_values(unit, row["idParam"]) if tick <= t < tick + 1]
            assert served == [row["Value"]], (row, served)
    assert {(row["Code"], row["Value"]) for row in rows if row["idDevice"] == "g3"} == {(Code.ERR_CONNECTION, None)}


# unit -> (fault injected on the line, the Code every row of that unit carries)
LINE_FAULTS = {
    5: (Fault.ILLEGAL_ADDRESS, Code.ERR_REGISTER),
    6: (Fault.GATEWAY_NO_RESPONSE, Code.SERVER_OFF),
    7: (Fault.NAN, Code.VALUE_NAN),
    8: (Fault.SHORT, Code.LENREG_ZERO),
    9: (Fault.TIMEOUT, Code.ERR_CONNECTION),
    10: (None, Code.ERR_CONNECTION),  # nobody with that address on the line: silence
}


async def test_faults_on_the_line_give_the_same_codes_as_over_tcp(line, tmp_path):
    simulated = [unit for unit, (fault, _) in LINE_FAULTS.items() if fault is not None]
    faults = {unit: fault for unit, (fault, _) in LINE_FAULTS.items() if fault is not None}
    settings = Settings(
        database={"url": "sqlite:///unused.db"},
        devices=[_line_device(line, unit, timeout=DEAD_TIMEOUT_S) for unit in LINE_FAULTS],
    )
    plans = plan_devices(settings, tmp_path / "site.yaml")
    links, clock = LinkPool(), WallClock()
    async with Pac3200Simulator(serial_port=line.device_port, baudrate=BAUDRATE, units=simulated, faults=faults):
        try:
            codes = {}
            for plan in plans:
                poller = Poller(plan, links.link_for(plan.endpoint), TickGrid(1), clock, lambda samples: None)
                codes[plan.settings.unit] = {sample.code for sample in await poller.poll(clock.now())}
        finally:
            links.close()

    assert codes == {unit: {int(code)} for unit, (_, code) in LINE_FAULTS.items()}
