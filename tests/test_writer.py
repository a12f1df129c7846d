"""The writer's queue: batching by size and age, spilling when full, and shutdown, against a recording sink.

One case runs the real SQLiteSink to show the pieces fit; tests/integration/test_reliability.py runs MariaDB.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
import time
from contextlib import closing

import pytest

from storing import (  # noqa: F401 (fixtures: quick_retries is autouse, the others are arguments)
    PARAMS, PARAMS_PER_TICK, PROMPT_S, SHORT_AGE_S, LONG_AGE_S, HangingSink, RecordingSink, device_tick, keys,
    quick_retries, spool_folder, start_writer, until, writer_is_waiting, writer_took_everything,
)
from support import spooled_rows
from susee.config import DatabaseTarget, WriterSettings
from susee.sinks import create_sink
from susee.spool import Spool
from susee.store import Store
from susee.writer import Writer


async def test_batch_is_written_once_batch_rows_are_waiting_without_waiting_for_batch_age(start_writer):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_rows=2 * PARAMS_PER_TICK, batch_age=LONG_AGE_S)

    # Pollers submit at different moments: the writer already holds the first
    # device-tick when the second arrives, and the two together fill the batch.
    await writer_is_waiting(writer)
    writer.submit(device_tick("d01"))
    await writer_took_everything(writer)
    writer.submit(device_tick("d02"))

    await sink.wait_until(lambda: sink.stored)
    assert [len(batch) for batch in sink.stored] == [2 * PARAMS_PER_TICK]
    assert not task.done()


async def test_fewer_than_batch_rows_are_written_once_batch_age_elapses(start_writer):
    sink = RecordingSink()
    writer, _ = start_writer(sink, batch_rows=1000, batch_age=SHORT_AGE_S)

    submitted_at = time.monotonic()
    writer.submit(device_tick("d01"))
    await sink.wait_until(lambda: sink.stored)
    waited_s = time.monotonic() - submitted_at

    assert sink.stored == [device_tick("d01")]
    assert SHORT_AGE_S * 0.9 <= waited_s < PROMPT_S
    assert writer.store.stats().rows_written == PARAMS_PER_TICK


def test_submit_is_a_plain_function_that_returns_at_once():
    # Pollers call it from their own task: it must never be something to await.
    assert not inspect.iscoroutinefunction(Writer.submit)


async def test_full_queue_spills_the_device_tick_to_the_spool_and_nothing_is_dropped(spool_folder, caplog):
    sink = RecordingSink()
    writer = Writer(Store(sink, Spool(spool_folder), PARAMS), WriterSettings(queue_size=2, batch_age=SHORT_AGE_S))
    caplog.set_level(logging.WARNING, logger="susee")

    # No writer task runs yet: nothing drains the queue.
    assert writer.submit(device_tick("d01")) is None
    writer.submit(device_tick("d02"))
    writer.submit(device_tick("d03"))  # the queue holds two device-ticks: this one spills

    assert writer.store.stats().rows_dropped == 0
    assert writer.backlog_rows == 3 * PARAMS_PER_TICK  # all held, none lost

    task = asyncio.create_task(writer.run())
    await sink.wait_until(lambda: len(sink.stored_rows) == 3 * PARAMS_PER_TICK)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert keys(sink.stored_rows) == keys(device_tick("d01") + device_tick("d02") + device_tick("d03"))
    assert writer.store.stats().rows_spooled == writer.store.stats().rows_replayed == PARAMS_PER_TICK
    assert writer.store.stats().rows_dropped == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(("queue_size", "devices", "capacity"), [
    pytest.param(None, 0, 10_000, id="default-without-devices"),
    pytest.param(None, 3, 10_000, id="default-small-site-keeps-the-old-10000"),
    pytest.param(None, 5000, 25_000, id="default-5000-meters-5-ticks-each"),
    pytest.param(None, 20_000, 100_000, id="default-grows-with-the-site"),
    pytest.param(7, 5000, 7, id="explicit-queue-size-wins"),
])
def test_queue_holds_five_ticks_of_every_device_unless_queue_size_is_set(spool_folder, queue_size, devices,
                                                                         capacity):
    settings = WriterSettings(queue_size=queue_size)
    writer = Writer(Store(RecordingSink(), Spool(spool_folder)), settings, devices=devices)
    assert writer.queue.maxsize == capacity


async def test_four_ticks_of_5000_meters_waiting_for_the_writer_do_not_spill(spool_folder):
    writer = Writer(Store(RecordingSink(), Spool(spool_folder)), WriterSettings(), devices=5000)

    # No writer task runs: nothing drains the queue, as when the database takes a few seconds.
    for tick in range(4):
        for n in range(5000):
            writer.submit(device_tick(f"m{n:04d}", tick))

    assert writer.queue.qsize() == 4 * 5000
    assert not writer.queue.full()
    assert writer.backlog_rows == 4 * 5000 * PARAMS_PER_TICK
    assert writer.store.stats().rows_spooled == writer.store.stats().rows_dropped == 0


async def test_close_flushes_everything_queued_without_waiting_for_batch_age(start_writer):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    await writer_is_waiting(writer)

    writer.submit(device_tick("d01", 0))
    await writer_took_everything(writer)  # the writer now waits for the batch to age
    writer.submit(device_tick("d02", 0))
    writer.submit(device_tick("d01", 1))
    writer.close()

    await asyncio.wait_for(task, PROMPT_S)
    assert sink.stored_rows == device_tick("d01", 0) + device_tick("d02", 0) + device_tick("d01", 1)
    assert writer.backlog_rows == 0


async def test_close_with_an_empty_queue_makes_run_return_at_once(start_writer):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    await writer_is_waiting(writer)
    assert not task.done()

    closed_at = time.monotonic()
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert time.monotonic() - closed_at < PROMPT_S
    assert sink.attempts == []


async def test_cancelled_writer_spills_everything_in_memory_to_the_spool(start_writer):
    # The database accepted the connection and hangs: the writer is stuck in a
    # write, the queue fills and spills; then the shutdown deadline passes.
    sink = HangingSink()
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S, queue_size=3)
    submitted = [device_tick(f"d{n:02d}", tick) for tick in range(4) for n in range(3)]
    writer.submit(submitted[0])
    await sink.wait_until(lambda: sink.attempts)
    for item in submitted[1:]:
        writer.submit(item)
    await until(lambda: writer.store.stats().rows_spooled > 0)  # the overflow is on disk already

    writer.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert writer.store.stats().rows_dropped == 0
    assert set(keys(spooled_rows(writer.store.spool.folder))) == set(keys(s for item in submitted for s in item))


async def test_submit_after_close_is_dropped_and_counted(start_writer, caplog):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    writer.close()
    writer.submit(device_tick("d07"))
    await asyncio.wait_for(task, PROMPT_S)

    assert writer.store.stats().rows_dropped == PARAMS_PER_TICK
    assert sink.stored == []
    assert any("d07" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_three_device_ticks_land_as_24_rows_in_a_real_sqlite_file(start_writer, tmp_path, job_id):
    target = DatabaseTarget(kind="sqlite", database=f"seedb{job_id}", path=tmp_path / "writer.db")
    sink = create_sink(target, job_id)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)
    try:
        writer.submit(device_tick("d01", 0))
        writer.submit(device_tick("d02", 0))
        writer.submit(device_tick("d01", 1))
        writer.close()
        await asyncio.wait_for(task, PROMPT_S * 5)  # includes creating the tables
    finally:
        await sink.close()

    with closing(sqlite3.connect(target.path)) as conn:
        raw = conn.execute(f'SELECT idDevice, COUNT(*) FROM "see{job_id}Raw" GROUP BY idDevice').fetchall()
        params = conn.execute(f'SELECT idParam, Acronimo FROM "see{job_id}Params"').fetchall()
    assert dict(raw) == {"d01": 2 * PARAMS_PER_TICK, "d02": PARAMS_PER_TICK}
    assert params == [("104", "UL1_L2")]
    assert writer.store.stats().rows_written == 3 * PARAMS_PER_TICK
