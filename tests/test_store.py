"""The store: the database while it answers, the spool while it does not; probes, pauses, drops, timeouts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import pytest

from storing import (  # noqa: F401 (fixtures: quick_retries is autouse, the others are arguments)
    PARAMS, PARAMS_PER_TICK, PROMPT_S, SHORT_AGE_S, LONG_AGE_S, TICK_S, HangingSink, RecordingSink, device_tick,
    keys, quick_retries, spool_folder, start_writer, until,
)
from support import spooled_rows
from susee.sample import Sample
from susee.spool import Spool
from susee.store import Store


async def test_offline_batches_go_straight_to_the_spool_without_a_database_attempt(start_writer, monkeypatch):
    monkeypatch.setattr("susee.store.RETRY_FIRST_S", LONG_AGE_S)  # no probe during this test
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)

    for tick in range(5):
        writer.submit(device_tick("d01", tick))
        await until(lambda: writer.store.stats().rows_spooled == (tick + 1) * PARAMS_PER_TICK)

    assert not writer.store.stats().online
    assert sink.calls == ["open failed"], "one failed attempt, then no database traffic"
    assert writer.store.spool.pending_rows == 5 * PARAMS_PER_TICK
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)
    assert keys(spooled_rows(writer.store.spool.folder)) == keys(s for t in range(5) for s in device_tick("d01", t))


async def test_sink_is_prepared_before_the_first_write_and_again_after_a_failure(start_writer):
    sink = RecordingSink(fail_writes=1)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)

    writer.submit(device_tick("d01", 0))
    await sink.wait_until(lambda: len(sink.stored) == 1)
    writer.submit(device_tick("d01", 1))
    await sink.wait_until(lambda: len(sink.stored) == 2)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    prepare = ["open", "migrate", "upsert_params"]
    # The failed batch is spooled; the probe prepares the sink again and replays it.
    assert sink.calls == [*prepare, "write failed", *prepare, "write", "write"]
    assert sink.params == PARAMS


async def test_probe_backoff_doubles_up_to_the_cap_with_jitter(start_writer, monkeypatch):
    monkeypatch.setattr("susee.store.RETRY_FIRST_S", 0.5)
    monkeypatch.setattr("susee.store.RETRY_MAX_S", 30.0)
    delays: list[float] = []

    async def record_sleep(self, delay_s: float) -> None:
        delays.append(delay_s)
        await asyncio.sleep(0)

    monkeypatch.setattr(Store, "_sleep", record_sleep)
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)
    writer.submit(device_tick("d01"))
    await until(lambda: len(delays) >= 9)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    nominal = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    for delay, expected in zip(delays, nominal):
        assert expected * 0.8 <= delay <= expected * 1.2, (delays, nominal)
    assert len(set(delays[6:9])) == 3, "jitter: capped probes are not in step"


async def test_stop_polling_pauses_acquisition_and_resumes_when_the_database_is_back(start_writer, spool_folder,
                                                                                     caplog):
    caplog.set_level(logging.WARNING, logger="susee")
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S, spool=Spool(spool_folder, max_bytes=1000))

    submitted: list[Sample] = []
    tick = 0
    while not writer.store.stats().paused:
        writer.submit(device_tick("d01", tick))
        submitted += device_tick("d01", tick)
        tick += 1
        await until(lambda: writer.backlog_rows == 0 or writer.store.stats().paused)
    for _ in range(5):
        assert writer.store.refuse_tick()  # a poller asks before each tick: five device-ticks not acquired
    assert writer.store.spool.size_bytes <= 1000
    sink.down = False  # the database is back: the held batch and the spool go in

    await until(lambda: not writer.store.stats().paused)
    assert not writer.store.refuse_tick()
    await until(lambda: writer.store.spool.pending_rows == 0 and writer.backlog_rows == 0)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert keys(sink.stored_rows) == keys(submitted), "nothing acquired was lost"
    assert writer.store.stats().rows_dropped == 0
    assert writer.store.stats().ticks_not_acquired == 5
    messages = [r.getMessage() for r in caplog.records]
    assert any("ACQUISITION PAUSED" in m and "is full" in m for m in messages), messages
    assert any("acquisition resumed" in m and "5 device-ticks were not acquired" in m for m in messages), messages


async def test_drop_oldest_keeps_the_newest_rows_and_counts_the_dropped_ones(start_writer, spool_folder, caplog):
    caplog.set_level(logging.WARNING, logger="susee")
    sink = RecordingSink(down=True)
    spool = Spool(spool_folder, max_bytes=2000, when_full="drop_oldest")
    writer, task = start_writer(sink, batch_rows=PARAMS_PER_TICK, spool=spool)  # one record per device-tick

    submitted = [device_tick("d01", tick) for tick in range(60)]
    for tick, item in enumerate(submitted):
        writer.submit(item)
        await until(lambda: writer.store.stats().rows_spooled == (tick + 1) * PARAMS_PER_TICK)
        assert not writer.store.refuse_tick(), "drop_oldest never pauses acquisition"
    assert writer.store.stats().rows_dropped > 0
    sink.down = False
    await until(lambda: writer.store.spool.pending_rows == 0)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    stored = sink.stored_rows
    dropped = writer.store.stats().rows_dropped
    assert len(stored) + dropped == 60 * PARAMS_PER_TICK, "every row stored or counted as dropped"
    newest = [s for item in submitted for s in item][writer.store.stats().rows_dropped:]
    assert keys(stored) == keys(newest), "the oldest rows are the ones dropped"
    dropped_logs = [r for r in caplog.records if r.levelno == logging.ERROR and "dropped the" in r.getMessage()]
    assert dropped_logs and f"{writer.store.stats().rows_dropped} rows dropped so far" in dropped_logs[-1].getMessage()


async def test_close_during_an_outage_spools_the_rest_and_returns_promptly(start_writer, monkeypatch):
    monkeypatch.setattr("susee.store.RETRY_FIRST_S", LONG_AGE_S)  # mid-backoff when closed
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    writer.submit(device_tick("d01", 0))
    writer.submit(device_tick("d02", 0))
    writer.close()

    await asyncio.wait_for(task, PROMPT_S)
    assert keys(spooled_rows(writer.store.spool.folder)) == keys(device_tick("d01", 0) + device_tick("d02", 0))


async def test_a_write_the_database_does_not_answer_is_spooled_after_the_write_timeout(start_writer, monkeypatch):
    monkeypatch.setattr("susee.store.RETRY_FIRST_S", LONG_AGE_S)  # no probe during this test
    sink = HangingSink()
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S, write_timeout_s=0.1)

    writer.submit(device_tick("d01"))
    await until(lambda: writer.store.stats().rows_spooled == PARAMS_PER_TICK)

    assert not writer.store.stats().online
    assert writer.backlog_rows == 0, "nothing waits in memory behind the hung write"
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)
    assert keys(spooled_rows(writer.store.spool.folder)) == keys(device_tick("d01"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read RSS")
async def test_memory_stays_flat_during_an_outage_only_the_spool_grows(start_writer):
    # 300 meters x 8 params every 0.01 s: 240 000 rows/s, far above a real site.
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=0.2, queue_size=1000)
    device_ticks = [device_tick(f"m{n:03d}") for n in range(300)]

    async def acquire(seconds: float) -> None:
        end = time.monotonic() + seconds
        tick = 0
        while time.monotonic() < end:
            for item in device_ticks:
                writer.submit([Sample(s.device_id, s.param_id, TICK_S + tick, s.value, s.delay_ms, 0) for s in item])
            tick += 1
            await asyncio.sleep(0.01)

    await acquire(2.0)  # warm up: queue, buffers and allocator reach their working size
    baseline = rss_bytes()
    spooled_before = writer.store.stats().rows_spooled
    await acquire(8.0)
    growth = rss_bytes() - baseline
    spooled = writer.store.stats().rows_spooled - spooled_before
    writer.close()
    await asyncio.wait_for(task, 10 * PROMPT_S)

    assert spooled > 500_000
    assert writer.store.stats().rows_dropped == 0
    assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB while {spooled} rows were spooled"


# --- what an operator sees ---


async def test_stats_snapshot_shows_the_outage_and_the_spool_and_does_not_change_afterwards(start_writer, monkeypatch):
    monkeypatch.setattr("susee.store.RETRY_FIRST_S", LONG_AGE_S)  # no probe during this test
    writer, task = start_writer(RecordingSink(down=True), batch_age=SHORT_AGE_S)
    before = writer.stats()
    assert (before.queued_ticks, before.backlog_rows) == (0, 0)
    assert before.store.online and before.store.outage_started_at is None and before.store.outage_s == 0

    failed_after = time.time()
    writer.submit(device_tick("d01"))
    await until(lambda: writer.store.stats().rows_spooled == PARAMS_PER_TICK)
    during = writer.stats().store
    writer.submit(device_tick("d02"))
    await until(lambda: writer.store.stats().rows_spooled == 2 * PARAMS_PER_TICK)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert not during.online and not during.paused
    assert failed_after <= during.outage_started_at <= time.time()
    assert during.outage_s >= 0
    assert (during.spool_rows, during.rows_spooled) == (PARAMS_PER_TICK, PARAMS_PER_TICK)
    assert (during.rows_written, during.writes) == (0, 0)
    assert during.spool_bytes > 0 and during.spool_folder == writer.store.spool.folder
    with pytest.raises(dataclasses.FrozenInstanceError):
        during.online = True  # type: ignore[misc]
    assert writer.stats().store.rows_spooled == 2 * PARAMS_PER_TICK, "the live count moved on, the snapshot did not"


async def test_stats_count_the_writes_and_time_the_last_one(start_writer):
    writer, task = start_writer(RecordingSink(), batch_age=SHORT_AGE_S)
    writer.submit(device_tick("d01"))
    await until(lambda: writer.store.stats().writes == 1)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    stats = writer.stats().store
    assert (stats.writes, stats.rows_written, stats.online) == (1, PARAMS_PER_TICK, True)
    assert 0 < stats.last_write_s < PROMPT_S


async def test_a_full_disk_pauses_acquisition_once_and_it_resumes_within_a_period_of_space_returning(
        start_writer, spool_folder, caplog):
    from susee.store import SPOOL_RETRY_S

    caplog.set_level(logging.WARNING, logger="susee.store")
    sink = RecordingSink(down=True)
    spool = Spool(spool_folder, when_full="stop_polling")
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S, spool=spool)
    await writer.started.wait()
    writer.submit(device_tick("d01", 0))
    await until(lambda: writer.store.stats().rows_spooled == PARAMS_PER_TICK)
    # SQLite's own page limit: the next append fails with SQLITE_FULL, exactly as on a full disk.
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")
    big = [Sample("d02", str(p), 1613644200.0 + t, t * 1.1 + p, 1.0, 0) for t in range(300) for p in range(8)]
    writer.submit(big)
    await until(lambda: writer.store.stats().paused)
    for _ in range(3):
        assert writer.store.refuse_tick()
    await asyncio.sleep(2.5 * SPOOL_RETRY_S)  # retries while paused: none of them may log again

    spool._db.execute("PRAGMA max_page_count = 1000000000")  # space is back
    resumed_in = time.monotonic()
    await until(lambda: not writer.store.stats().paused, timeout_s=SPOOL_RETRY_S + PROMPT_S)
    assert time.monotonic() - resumed_in <= SPOOL_RETRY_S + PROMPT_S
    sink.down = False
    await until(lambda: writer.store.spool.pending_rows == 0 and writer.backlog_rows == 0, timeout_s=5 * PROMPT_S)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert keys(sink.stored_rows) == keys(device_tick("d01", 0) + big), "nothing acquired was lost"
    assert SPOOL_RETRY_S <= 1.0, "acquisition resumes within one period (sample_time >= 1 s)"
    messages = [r.getMessage() for r in caplog.records]
    paused = [m for m in messages if "ACQUISITION PAUSED" in m]
    assert len(paused) == 1 and "disk is full" in paused[0], messages
    assert sum("acquisition resumed" in m for m in messages) == 1, messages
