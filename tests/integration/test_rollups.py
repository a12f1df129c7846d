"""15-minute rollups equal a recomputation from Raw, on MariaDB and SQLite alike."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from datetime import datetime, timedelta

import pytest

from susee import rollup
from susee.quality import Code
from susee.rollup import BUCKET, now_utc
from susee.sample import Sample
from susee.upkeep import StorageUpkeep
from tests.integration.storage_support import Store, assert_rollups_equal_raw, same_row, store  # noqa: F401

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC, the start of a bucket
NOW = datetime(2021, 2, 18, 12, 0)  # every bucket of these tests is closed by then


async def roll_up(store: Store, now: datetime = NOW, **storage) -> StorageUpkeep:
    """One upkeep pass at ``now`` on its own connection, as the service runs it."""
    settings = store.settings.model_copy(update={"storage": store.settings.storage.model_copy(update=storage)})
    upkeep = StorageUpkeep(settings, now=lambda: now)
    try:
        await upkeep.sink.session("test upkeep", upkeep.run_once)
    finally:
        await upkeep.sink.close()
    return upkeep


# The hand-computed case: a counter that resets, failed reads (NULL, Code 1), a
# value with a Modbus exception Code (not good although it has a value), a
# param with one good reading and a param with none.
HAND_SAMPLES = [
    Sample("d01", "222", TICK + 0, 100.0, 5.0, 0),
    Sample("d01", "222", TICK + 60, None, 1000.0, Code.ERR_CONNECTION),
    Sample("d01", "222", TICK + 120, 130.0, 5.0, 0),  # +30
    Sample("d01", "222", TICK + 180, 125.0, 5.0, Code.ERR_REGISTER),  # not good: skipped
    Sample("d01", "222", TICK + 240, 10.0, 5.0, 0),  # -120: the counter reset
    Sample("d01", "222", TICK + 300, 25.0, 5.0, 0),  # +15
    Sample("d01", "222", TICK + 360, 45.5, 5.0, 0),  # +20.5
    Sample("d01", "222", TICK + 900, 50.0, 5.0, 0),  # the next bucket
    Sample("d01", "104", TICK + 0, None, 1000.0, Code.ERR_CONNECTION),
    Sample("d01", "104", TICK + 60, float("nan"), 5.0, 0),  # stored NULL with Code 16
    Sample("d01", "107", TICK + 420, 5.0, 5.0, 0),
]
B0, B1 = "2021-02-18 10:30:00", "2021-02-18 10:45:00"
HAND_Q15 = {
    # Samples Good Min Max Mean FirstDate FirstValue LastDate LastValue Rise Fall Drops MaxRise Codes
    ("d01", "222", B0): (7, 5, 10.0, 130.0, 62.1, "2021-02-18 10:30:00.000000", 100.0,
                         "2021-02-18 10:36:00.000000", 45.5, 65.5, 120.0, 1, 30.0, 9),
    ("d01", "222", B1): (1, 1, 50.0, 50.0, 50.0, "2021-02-18 10:45:00.000000", 50.0,
                         "2021-02-18 10:45:00.000000", 50.0, 0.0, 0.0, 0, None, 0),
    ("d01", "104", B0): (2, 0, None, None, None, None, None, None, None, None, None, 0, None, 17),
    ("d01", "107", B0): (1, 1, 5.0, 5.0, 5.0, "2021-02-18 10:37:00.000000", 5.0,
                         "2021-02-18 10:37:00.000000", 5.0, 0.0, 0.0, 0, None, 0),
}


# The hour of those buckets: 222's two buckets joined by the step 45.5 -> 50.0 (+4.5).
H10 = "2021-02-18 10:00:00"
HAND_Q60 = {
    ("d01", "222", H10): (8, 6, 10.0, 130.0, 360.5 / 6, "2021-02-18 10:30:00.000000", 100.0,
                          "2021-02-18 10:45:00.000000", 50.0, 70.0, 120.0, 1, 30.0, 9),
    ("d01", "104", H10): HAND_Q15[("d01", "104", B0)],
    ("d01", "107", H10): HAND_Q15[("d01", "107", B0)],
}


async def test_hand_computed_rollup_with_nulls_codes_and_a_counter_reset(store):
    await store.sink.write(HAND_SAMPLES)
    await roll_up(store)
    for actual, expected_rows in ((store.q15(), HAND_Q15), (store.q60(), HAND_Q60)):
        assert set(actual) == set(expected_rows)
        for key, expected in expected_rows.items():
            assert same_row(actual[key], expected, rel=1e-12), (key, actual[key])
    assert store.dirty() == 0


def fleet_samples(devices: int, ticks: int, start: float = TICK, period_s: float = 10.0, seed: int = 7) -> list[Sample]:
    """Counters, gauges and the odd failed read, tick by tick."""
    rng = random.Random(seed)
    samples = []
    counters = {f"d{d:02d}": rng.uniform(1e6, 1e7) for d in range(devices)}
    for k in range(ticks):
        tick = start + k * period_s
        for device in counters:
            counters[device] += rng.uniform(0, 50)
            failed = rng.random() < 0.03
            samples.append(Sample(device, "222", tick, None if failed else counters[device], 3.0,
                                  Code.ERR_CONNECTION if failed else 0))
            samples.append(Sample(device, "104", tick, rng.gauss(400, 3), 3.0, 0))
    return samples


async def test_rollups_equal_raw_after_out_of_order_batches_across_buckets_and_duplicates(store):
    samples = fleet_samples(devices=4, ticks=400)  # 4,000 s: five buckets
    batches = [samples[i : i + 50] for i in range(0, len(samples), 50)]
    random.Random(3).shuffle(batches)
    for number, batch in enumerate(batches):
        await store.sink.write(batch)
        if number % 10 == 0:
            await roll_up(store)  # rollups done in between see only part of each bucket
    for batch in batches[:5]:
        await store.sink.write(batch)  # replayed twice: no row added, rollups unchanged
    await roll_up(store)
    assert store.dirty() == 0
    assert_rollups_equal_raw(store)


@pytest.mark.parametrize("store", ["mariadb"], indirect=True)  # slices are MariaDB's
async def test_the_upkeep_recomputes_a_bucket_in_slices_equal_to_raw(store, monkeypatch):  # noqa: F811
    monkeypatch.setattr(rollup, "SLICE_ROWS", 50)  # every bucket here (720 rows) is sliced
    samples = fleet_samples(devices=4, ticks=400)
    batches = [samples[i : i + 50] for i in range(0, len(samples), 50)]
    random.Random(5).shuffle(batches)
    for number, batch in enumerate(batches):
        await store.sink.write(batch)
        if number % 10 == 0:
            await roll_up(store)
    await roll_up(store)
    assert store.dirty() == 0
    assert_rollups_equal_raw(store)


async def test_a_write_after_the_recompute_keeps_the_bucket_due(store):
    first, late = fleet_samples(devices=2, ticks=30)[:60], fleet_samples(devices=2, ticks=30)[60:]
    await store.sink.write(first)
    upkeep = StorageUpkeep(store.settings, now=lambda: NOW)
    try:
        async def recompute_then_clear_a_stale_version(session):
            upkeep.rollups = upkeep.rollups or __import__("susee.rollup").rollup.Rollups(store.job_id, session.dialect)
            ((bucket, version),) = await upkeep.rollups.dirty(session)
            await store.sink.write(late)  # commits between reading the marker and clearing it
            return await upkeep.rollups.refresh_bucket(session, bucket, version, None)

        cleared = await upkeep.sink.session("test", recompute_then_clear_a_stale_version)
    finally:
        await upkeep.sink.close()
    assert not cleared and store.dirty() == 1, "the marker moved on: the bucket stays due"
    await roll_up(store)
    assert store.dirty() == 0
    assert_rollups_equal_raw(store)


async def test_the_open_bucket_is_recomputed_every_rollup_open_every_and_once_closed(store):
    samples = fleet_samples(devices=2, ticks=60, period_s=10.0)  # 10:30:00 .. 10:39:50, one bucket
    clock = [datetime(2021, 2, 18, 10, 35)]
    settings = store.settings.model_copy(
        update={"storage": store.settings.storage.model_copy(update={"rollup_open_every": 300})})
    upkeep = StorageUpkeep(settings, now=lambda: clock[0])

    async def upkeep_pass_at(moment: datetime) -> int:
        clock[0] = moment
        before = upkeep.buckets_done
        await upkeep.sink.session("test upkeep", upkeep.run_once)
        return upkeep.buckets_done - before

    try:
        await store.sink.write(samples[: 4 * 30])  # 4 samples a tick
        assert await upkeep_pass_at(datetime(2021, 2, 18, 10, 35)) == 1
        assert store.q15()[("d00", "222", "2021-02-18 10:30:00")][0] == 30
        await store.sink.write(samples[4 * 30 : 4 * 40])
        assert store.dirty() == 1
        assert await upkeep_pass_at(datetime(2021, 2, 18, 10, 38)) == 0, "open, done 3 minutes ago: not yet"
        assert await upkeep_pass_at(datetime(2021, 2, 18, 10, 40)) == 1, "open, done 5 minutes ago: again"
        assert store.q15()[("d00", "222", "2021-02-18 10:30:00")][0] == 40
        await store.sink.write(samples[4 * 40 :])
        assert await upkeep_pass_at(datetime(2021, 2, 18, 10, 41)) == 0
        assert await upkeep_pass_at(datetime(2021, 2, 18, 10, 46)) == 1, "closed: done at once"
        assert await upkeep_pass_at(datetime(2021, 2, 18, 10, 50)) == 0, "and only once"
    finally:
        await upkeep.sink.close()
    assert store.dirty() == 0
    assert_rollups_equal_raw(store)


KILLED_WRITER = """
import asyncio, os, signal, sys
from susee.config import Settings
from susee.sample import Sample
from susee.sinks import create_sink

async def main():
    settings = Settings(job_id=sys.argv[1], database={"url": sys.argv[2]})
    sink = create_sink(settings.database_target(), settings.job_id)
    await sink.open()
    await sink.write([Sample("d09", "222", 1613644200.0 + 10 * k, 1000.0 + k, 3.0, 0) for k in range(200)])
    os.kill(os.getpid(), signal.SIGKILL)  # the raw commit is done, the rollup never ran

asyncio.run(main())
"""


async def test_kill_9_after_a_raw_commit_then_restart_rolls_the_rows_up(store, tmp_path):
    url = store.settings.database.url
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", KILLED_WRITER, store.job_id, url,
                                                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert await asyncio.wait_for(process.wait(), 60) == -signal.SIGKILL
    assert len(store.raw()) == 200 and store.dirty() == 3
    await roll_up(store)  # the next start
    assert store.dirty() == 0
    assert_rollups_equal_raw(store)
    assert store.q15()[("d09", "222", "2021-02-18 10:30:00")][:2] == (90, 90)


async def test_a_late_row_for_an_expired_day_is_written_logged_and_never_shrinks_its_rollup(store, caplog):
    old = fleet_samples(devices=2, ticks=90)  # 10:30 .. 10:44:50
    await store.sink.write(old)
    await roll_up(store)
    before = store.q15()
    # Days after today: on MariaDB the rows sit in the partition of the days
    # before the database was made, which expires whole.
    later = datetime.combine(now_utc().date() + timedelta(days=3), datetime.min.time())
    await roll_up(store, later, raw_keep_days=2)  # the day of those rows expires
    assert store.raw() == [] and store.q15() == before
    late = [Sample("d00", "222", TICK + 5, 1.0, 3.0, 0), Sample("d77", "222", TICK + 5, 7.0, 3.0, 0)]
    await store.sink.write(late)  # a spool replayed after the expiry: still written
    assert len(store.raw()) == 2
    caplog.set_level("INFO", logger="susee.upkeep")
    await roll_up(store, later, raw_keep_days=2)
    assert any("rows written for 1 bucket(s) before the Raw horizon" in r.getMessage() for r in caplog.records)
    after = store.q15()
    assert after[("d00", "222", "2021-02-18 10:30:00")] == before[("d00", "222", "2021-02-18 10:30:00")]
    assert after[("d77", "222", "2021-02-18 10:30:00")][:2] == (1, 1), "a key with no rollup yet is added"
    assert store.dirty() == 0


async def test_rollup_expiry_removes_only_buckets_before_its_horizon(store):
    await store.sink.write(fleet_samples(devices=1, ticks=2, start=TICK))
    await store.sink.write(fleet_samples(devices=1, ticks=2, start=TICK + 86_400))
    await roll_up(store, NOW + timedelta(days=1))
    assert {key[2] for key in store.q15()} == {"2021-02-18 10:30:00", "2021-02-19 10:30:00"}
    await roll_up(store, datetime(2021, 2, 21, 1, 0), rollup_keep_days=2)  # keep 2021-02-19 onwards
    assert {key[2] for key in store.q15()} == {"2021-02-19 10:30:00"}
    assert {key[2] for key in store.q60()} == {"2021-02-19 10:00:00"}
    assert len(store.raw()) == 8, "Raw is kept: raw_keep_days is not set"


def test_bucket_is_fifteen_minutes():
    assert BUCKET == timedelta(minutes=15)


class Crash(Exception):
    """The process dies between the rollup's write and its commit."""


class CrashBeforeClearingMarkers:
    """A session that fails where the marker of a recomputed bucket would be removed."""

    def __init__(self, session) -> None:
        self._session = session

    def __getattr__(self, name):
        return getattr(self._session, name)

    async def execute(self, sql, params=None):
        if sql.startswith("DELETE FROM") and "Q15Dirty" in sql:
            raise Crash
        return await self._session.execute(sql, params)


async def test_an_interrupted_recompute_changes_nothing_and_is_done_at_the_next_start(store):
    await store.sink.write(fleet_samples(devices=3, ticks=200))  # three buckets
    upkeep = StorageUpkeep(store.settings, now=lambda: NOW)
    try:
        with pytest.raises(Crash):
            await upkeep.sink.session("test", lambda session: upkeep.run_once(CrashBeforeClearingMarkers(session)))
    finally:
        await upkeep.sink.close()
    assert store.q15() == {} and store.dirty() == 3, "rolled back: no rollup, every marker kept"
    await roll_up(store)  # the next start
    assert store.dirty() == 0
    assert_rollups_equal_raw(store)
