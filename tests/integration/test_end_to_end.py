"""The service, end to end: simulator over real sockets -> MariaDB rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from integration.sites import site_settings
from susee.devices import plan_devices
from susee.quality import Code
from susee.simulator import Fault, Pac3200Simulator
from susee.sinks import create_sink
from susee.supervisor import Supervisor

DEFAULT_SET = ["104", "107", "132", "133", "134", "135", "222", "226"]
RUN_S = 3.6  # three or four ticks at 1 s

# unit -> (fault injected, the Code bit every row of that unit must carry)
FAULTY_UNITS = {
    3: (Fault.TIMEOUT, Code.ERR_CONNECTION),
    4: (Fault.ILLEGAL_ADDRESS, Code.ERR_REGISTER),
    5: (Fault.GATEWAY_NO_RESPONSE, Code.SERVER_OFF),
    6: (Fault.NAN, Code.VALUE_NAN),
    7: (Fault.SHORT, Code.LENREG_ZERO),
}
HEALTHY_UNITS = (1, 2)


def _as_epoch(date: datetime) -> float:
    return date.replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture
async def simulator():
    units = (*HEALTHY_UNITS, *FAULTY_UNITS)
    faults = {unit: fault for unit, (fault, _) in FAULTY_UNITS.items()}
    async with Pac3200Simulator(port=0, units=units, faults=faults) as sim:
        yield sim


async def test_rows_match_served_values_and_faults_give_their_code(simulator, mariadb_target, job_id, fetch, tmp_path):
    devices = [
        {"id": f"d{unit:02d}", "host": "127.0.0.1", "port": simulator.port, "unit": unit,
         "timeout": 0.25 if unit in FAULTY_UNITS else 1.0}
        for unit in (*HEALTHY_UNITS, *FAULTY_UNITS)
    ]
    devices.append({"id": "nodriver", "profile": "no-such-meter.yaml", "host": "127.0.0.1", "port": simulator.port})
    settings = site_settings(mariadb_target, job_id, devices).resolved(tmp_path / "site.yaml")  # spool in tmp_path
    plans = plan_devices(settings, tmp_path / "site.yaml")
    sink = create_sink(settings.database_target(), job_id)

    assert await Supervisor(settings, plans, sink).run(duration_s=RUN_S) == 0

    rows = await fetch(f"SELECT idDevice, Date, idParam, Value, Delay, Code FROM see{job_id}Raw")
    by_device: dict[str, list[dict]] = {}
    for row in rows:
        by_device.setdefault(row["idDevice"], []).append(row)

    # Every device shares the same aligned grid of whole seconds, no gaps.
    dates = sorted({row["Date"] for row in rows})
    assert 3 <= len(dates) <= 4
    assert all(d.microsecond == 0 for d in dates)
    assert [_as_epoch(d) - _as_epoch(dates[0]) for d in dates] == list(range(len(dates)))
    for device_id, device_rows in by_device.items():
        assert sorted({r["Date"] for r in device_rows}) == dates, device_id

    for unit in HEALTHY_UNITS:
        device_rows = by_device[f"d{unit:02d}"]
        assert len(device_rows) == len(dates) * len(DEFAULT_SET)
        for row in device_rows:
            assert row["Code"] == 0, row
            assert 0 <= row["Delay"] < 1000, row
            tick = _as_epoch(row["Date"])
            served = [v for t, v in simulator.served_values(unit, row["idParam"]) if tick <= t < tick + 1]
            assert served == [row["Value"]], (row, served)

    for unit, (_, code) in FAULTY_UNITS.items():
        device_rows = by_device[f"d{unit:02d}"]
        assert len(device_rows) == len(dates) * len(DEFAULT_SET)
        assert {(r["Code"], r["Value"]) for r in device_rows} == {(int(code), None)}, unit

    assert {(r["idParam"], r["Code"], r["Value"]) for r in by_device["nodriver"]} == {("100", 64, None)}

    last = await fetch(f"SELECT idDevice, idParam, Date, Value, Code FROM see{job_id}Last")
    assert len(last) == len({(r["idDevice"], r["idParam"]) for r in rows})
    newest = {(r["idDevice"], r["idParam"]): r for r in rows if r["Date"] == dates[-1]}
    for row in last:
        expected = newest[(row["idDevice"], row["idParam"])]
        assert (row["Date"], row["Value"], row["Code"]) == (expected["Date"], expected["Value"], expected["Code"])

    params = await fetch(f"SELECT idParam, descrENG, um, Acronimo FROM see{job_id}Params")
    acronyms = {p["idParam"]: p["Acronimo"] for p in params}
    assert acronyms["104"] == "UL1_L2" and acronyms["222"] == "EnP_Imp_Tar1"
    assert set(DEFAULT_SET) | {"100"} <= set(acronyms)


async def test_dead_endpoint_does_not_delay_other_devices(simulator, mariadb_target, job_id, fetch, tmp_path):
    # Nothing listens on the dead endpoint's port: connects are refused, or on
    # a blackholed host time out; either way the healthy meter stays on time.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    devices = [
        {"id": "alive", "host": "127.0.0.1", "port": simulator.port, "unit": 1},
        {"id": "dead", "host": "127.0.0.1", "port": dead_port, "unit": 1, "timeout": 0.5},
    ]
    settings = site_settings(mariadb_target, job_id, devices).resolved(tmp_path / "site.yaml")  # spool in tmp_path
    sink = create_sink(settings.database_target(), job_id)
    await Supervisor(settings, plan_devices(settings, tmp_path / "site.yaml"), sink).run(duration_s=2.6)

    rows = await fetch(f"SELECT idDevice, Code, Delay, Value FROM see{job_id}Raw")
    alive = [r for r in rows if r["idDevice"] == "alive"]
    dead = [r for r in rows if r["idDevice"] == "dead"]
    assert alive and all(r["Code"] == 0 and r["Delay"] < 1000 for r in alive)
    assert dead and all(r["Code"] == Code.ERR_CONNECTION and r["Value"] is None for r in dead)
