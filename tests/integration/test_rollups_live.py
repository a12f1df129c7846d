"""Rollups of the running service equal Raw after a 20 s database outage and the replay of its spool."""

from __future__ import annotations

import asyncio
import time

import pytest

from susee.upkeep import StorageUpkeep
from tests.integration.storage_support import Store, assert_rollups_equal_raw, mariadb_query
from tests.integration.test_reliability import (  # noqa: F401 - fixtures
    OUTAGE_S,
    proxy,
    quick_probes,
    settings_for,
    simulator,
    supervisor_for,
    until,
)


def store_of(target, settings) -> Store:
    return Store(None, settings, lambda sql, params=(): mariadb_query(target, sql, params), "mariadb",
                 settings.job_id)


@pytest.mark.timeout(150)
async def test_rollups_equal_raw_after_a_20_s_outage_and_the_replay(  # noqa: F811
    tmp_path, simulator, proxy, mariadb_target, job_id, quick_probes  # noqa: F811
):
    settings = settings_for(tmp_path, job_id, mariadb_target.database, proxy.port, simulator.port,
                            storage={"rollup_every": 1.0, "rollup_open_every": 2.0})
    store = store_of(mariadb_target, settings)
    supervisor = supervisor_for(settings, tmp_path)
    upkeep = StorageUpkeep(settings)  # through the proxy as well: it sees the outage too
    service = asyncio.create_task(supervisor.run())
    upkeep_task = asyncio.create_task(upkeep.run())
    try:
        await until(lambda: upkeep.buckets_done > 0, "a first rollup of live rows")
        proxy.cut()
        cut_at = time.time()
        await until(lambda: supervisor.store.stats().rows_spooled > 0, "rows in the spool")
        await asyncio.sleep(OUTAGE_S - (time.time() - cut_at))  # the outage itself: time, not an event
        proxy.restore()
        await until(lambda: supervisor.store.stats().online and supervisor.store.spool.pending_rows == 0,
                    "spool replayed")
        last_wanted = int(time.time()) + 2
        await until(lambda: supervisor.pollers[0].next_tick_s > last_wanted, "two more live ticks")
        supervisor.stop()
        assert await asyncio.wait_for(service, 15) == 0
        await until(lambda: store.dirty() == 0, "every marked bucket rolled up")
    finally:
        await upkeep.close()
        await upkeep_task
    assert supervisor.store.stats().rows_replayed > 0
    assert_rollups_equal_raw(store)
    assert sum(row[0] for row in store.q15().values()) == len(store.raw())
