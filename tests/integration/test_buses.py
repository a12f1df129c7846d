"""Meters sharing one Modbus TCP gateway: fair turns, paced requests, a dead unit backed off.

The simulator on an ephemeral port plays the gateway; the service runs
in-process into a fresh MariaDB database.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from statistics import mean

import pytest

from integration.sites import site_settings
from susee.config import Settings
from susee.devices import plan_devices
from susee.quality import Code
from susee.simulator import Fault, Pac3200Simulator
from susee.sinks import create_sink
from susee.supervisor import Supervisor

UNITS = (1, 2, 3)
GAP_S = 0.03  # inter_request_delay: makes a turn on the bus long enough to see who waited
PERIOD_MS = 1000.0


async def _run(settings: Settings, tmp_path, duration_s: float) -> Supervisor:
    settings = settings.resolved(tmp_path / "site.yaml")  # the spool beside the site file, not in the working folder
    plans = plan_devices(settings, tmp_path / "site.yaml")
    supervisor = Supervisor(settings, plans, create_sink(settings.database_target(), settings.job_id))
    assert await supervisor.run(duration_s=duration_s) == 0
    return supervisor


def _as_epoch(date: datetime) -> float:
    return date.replace(tzinfo=timezone.utc).timestamp()


async def test_gateway_serves_a_different_meter_first_each_tick_and_waits_between_requests(
    mariadb_target, job_id, fetch, tmp_path
):
    async with Pac3200Simulator(port=0, units=UNITS) as gateway:
        devices = [
            {"id": f"d{unit}", "host": "127.0.0.1", "port": gateway.port, "unit": unit, "inter_request_delay": GAP_S}
            for unit in UNITS
        ]
        await _run(site_settings(mariadb_target, job_id, devices), tmp_path, duration_s=3.6)

    rows = await fetch(f"SELECT idDevice, Date, Delay, Code FROM see{job_id}Raw")
    assert {row["Code"] for row in rows} == {0}
    ticks = sorted({row["Date"] for row in rows})[:3]
    assert len(ticks) == 3
    # A device's last response of a tick sets its largest Delay; over three
    # ticks each device is served first, second and third once.
    last_delay = defaultdict(list)
    for tick in ticks:
        for unit in UNITS:
            last_delay[unit].append(max(r["Delay"] for r in rows if r["Date"] == tick and r["idDevice"] == f"d{unit}"))
    means = [mean(delays) for delays in last_delay.values()]
    slot_ms = GAP_S * 1000
    assert max(means) - min(means) < 0.7 * slot_ms, last_delay  # always first-come order: 2 slots apart
    by_tick = defaultdict(list)
    for read in gateway.served:
        by_tick[int(read.time_s)].append(read)
    firsts = [by_tick[int(_as_epoch(tick))][0].unit for tick in ticks]
    assert sorted(firsts) == sorted(UNITS), firsts
    times = sorted(read.time_s for read in gateway.served)
    assert min(b - a for a, b in zip(times, times[1:])) >= GAP_S - 0.002


@pytest.mark.timeout(30)
async def test_dead_unit_behind_the_gateway_is_backed_off_and_the_others_keep_every_tick(
    mariadb_target, job_id, fetch, tmp_path
):
    async with Pac3200Simulator(port=0, units=UNITS, faults={3: Fault.TIMEOUT}) as gateway:
        devices = [
            {"id": f"d{unit}", "host": "127.0.0.1", "port": gateway.port, "unit": unit,
             "timeout": 0.5 if unit == 3 else 1.0}
            for unit in UNITS
        ]
        supervisor = await _run(site_settings(mariadb_target, job_id, devices), tmp_path, duration_s=4.6)

    rows = await fetch(f"SELECT idDevice, Date, Value, Delay, Code FROM see{job_id}Raw")
    dates = sorted({row["Date"] for row in rows})
    assert 4 <= len(dates) <= 5
    for unit in (1, 2):
        device_rows = [row for row in rows if row["idDevice"] == f"d{unit}"]
        assert sorted({row["Date"] for row in device_rows}) == dates
        assert all(row["Code"] == 0 and row["Delay"] < PERIOD_MS for row in device_rows)
    dead_rows = [row for row in rows if row["idDevice"] == "d3"]
    assert sorted({row["Date"] for row in dead_rows}) == dates
    assert {(row["Code"], row["Value"]) for row in dead_rows} == {(Code.ERR_CONNECTION, None)}
    stats = {poller.plan.id: poller.stats for poller in supervisor.pollers}
    assert stats["d1"].missed_ticks == stats["d2"].missed_ticks == 0
    timeouts = stats["d3"].codes[int(Code.ERR_CONNECTION)]  # reads that waited out the timeout
    assert timeouts + stats["d3"].skipped_polls == stats["d3"].ticks == len(dates)
    assert timeouts <= (len(dates) + 1) // 2  # probed on ticks 0, 2, 5, ... only
