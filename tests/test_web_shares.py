"""The parent's merge of its workers' snapshots (susee.web.shares)."""

from __future__ import annotations

from pathlib import Path

import pytest

from susee.config import Settings
from susee.devices import plan_devices
from susee.web.app import readiness
from susee.web.shares import SharesState
from susee.web.state import DELAY_BOUNDS_MS, WRITE_BOUNDS_S

BUCKETS_DELAY = len(DELAY_BOUNDS_MS) + 1
BUCKETS_WRITE = len(WRITE_BOUNDS_S) + 1


def _snapshot(online: bool, outage_since: float | None, rows: int, devices: list[tuple], last_poll: float) -> dict:
    return {
        "seq": 1, "cpu_s": 2.5, "devices": devices,
        "site": {"database": "mysql://u@h:3306/db", "online": online, "outage_since_s": outage_since,
                 "paused": False, "last_poll_s": last_poll, "stopping": False, "queue_rows": 1,
                 "rows_written": rows, "rows_spooled": 2, "rows_replayed": 0, "rows_dropped": 0, "spool_rows": 3,
                 "spool_bytes": 100, "write_latency": [[1] * BUCKETS_WRITE, 0.5], "delay": [[2] * BUCKETS_DELAY, 1.0]},
    }


def _device(device_id: str, status: str, failures: dict) -> tuple:
    return (device_id, "pac3200", {}, status, 1 if failures else 0, 10, 0, 0, failures, 100.0, 99.0, 12.5, 1000.0)


@pytest.fixture
def plans(tmp_path):
    settings = Settings(database={"url": "sqlite:///x.db"}, devices=[
        {"id": f"d{n}", "host": "127.0.0.1", "port": 1500 + n} for n in range(1, 5)])
    return plan_devices(settings, Path(tmp_path) / "site.yaml")


async def _merged(plans, snapshots):
    async def ask():
        return snapshots

    state = SharesState(plans, 1.0, ask, lambda: False)
    await state.refresh()
    return state


async def test_counters_add_up_and_the_earliest_outage_wins(plans) -> None:
    state = await _merged(plans, [
        _snapshot(True, None, 1000, [_device("d1", "good", {}), _device("d2", "good", {})], 50.0),
        _snapshot(False, 40.0, 500, [_device("d3", "failing", {"8": 4}), _device("d4", "good", {})], 60.0),
    ])
    site = state.site()
    assert (site.rows_written, site.spool_rows, site.spool_bytes, site.queue_rows) == (1500, 6, 200, 2)
    assert (site.online, site.outage_since_s, site.last_poll_s, site.devices) == (False, 40.0, 60.0, 4)
    assert site.delay.counts == (4,) * BUCKETS_DELAY and site.delay.total == 2.0
    assert site.write_latency.counts == (2,) * BUCKETS_WRITE
    devices = {d.id: d for d in state.devices()}
    assert devices["d3"].failures == {8: 4} and devices["d3"].problem == "err_connection"
    assert state.worker_cpu_s() == [2.5, 2.5]
    assert state.database_online is False


async def test_a_silent_worker_makes_its_devices_waiting_and_the_site_not_ready(plans) -> None:
    state = await _merged(plans, [
        _snapshot(True, None, 1000, [_device("d1", "good", {}), _device("d2", "good", {})], 1e12), None])
    devices = {d.id: d.status for d in state.devices()}
    assert devices == {"d1": "good", "d2": "good", "d3": "waiting", "d4": "waiting"}
    assert "worker(s) 1 did not answer" in readiness(state.site())
