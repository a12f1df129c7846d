"""A device's state changes are logged once each, never at every tick (real simulator, real sockets)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from susee.config import Settings
from susee.devices import plan_devices
from susee.simulator import Fault, Pac3200Simulator
from susee.sinks import create_sink
from susee.supervisor import Supervisor

WAIT_S = 20.0
FAILING_TICKS = 4  # enough ticks that a per-tick line would show as several


async def ticks_pass(supervisor: Supervisor, device_id: str, count: int) -> None:
    """Wait until the device's poller has polled ``count`` more ticks (and one period has flushed its lines)."""
    deadline = time.monotonic() + WAIT_S
    while not supervisor.pollers:  # the supervisor opens its spool before it starts polling
        assert time.monotonic() < deadline, "the supervisor did not start polling"
        await asyncio.sleep(0.05)
    poller = next(p for p in supervisor.pollers if p.plan.id == device_id)
    wanted = poller.stats.ticks + count
    while poller.stats.ticks < wanted:
        assert time.monotonic() < deadline, f"{device_id}: {count} ticks not polled within {WAIT_S} s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", [Fault.GATEWAY_NO_RESPONSE, Fault.ILLEGAL_ADDRESS])
async def test_a_meter_answering_with_exceptions_then_values_again_makes_one_warning_each(tmp_path, caplog, fault):
    caplog.set_level(logging.INFO)
    async with Pac3200Simulator(port=0, units=(1, 2), record=False) as simulator:
        settings = Settings(
            sample_time=1,
            database={"url": f"sqlite:///{tmp_path / 'site.db'}"},
            spool={"path": tmp_path / "spool"},
            devices=[{"id": f"d{u:02d}", "host": "127.0.0.1", "port": simulator.port, "unit": u} for u in (1, 2)],
        )
        sink = create_sink(settings.database_target(), settings.job_id)
        supervisor = Supervisor(settings, plan_devices(settings, tmp_path / "site.yaml"), sink)
        service = asyncio.create_task(supervisor.run())
        await asyncio.sleep(0)
        await ticks_pass(supervisor, "d02", 1)
        simulator.set_fault(2, fault)
        await ticks_pass(supervisor, "d02", FAILING_TICKS)
        simulator.set_fault(2, Fault.NONE)
        await ticks_pass(supervisor, "d02", 3)  # the line of the change comes one period (1 s) later
        supervisor.stop()
        assert await asyncio.wait_for(service, WAIT_S) == 0

    warnings = [r.getMessage() for r in caplog.records if r.name == "susee.poller" and r.levelno >= logging.WARNING]
    refusing = [m for m in warnings if "answer with an exception instead of values" in m]
    again = [m for m in warnings if "answer with values again" in m]
    assert refusing == ["1 device(s) answer with an exception instead of values (1 poll(s)); the Code column says "
                        "which in the last 1 s: d02"], warnings
    assert len(again) == 1 and again[0].endswith(": d02"), warnings
    failed_polls = int(again[0].split("after ")[1].split(" ")[0])
    assert failed_polls >= FAILING_TICKS - 1
    assert not [m for m in warnings if "d01" in m], "the healthy meter is never named"
