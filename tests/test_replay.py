"""Replay: spooled rows reach the database oldest first, exactly once, taking turns with live batches."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from contextlib import closing

import pytest

from storing import (  # noqa: F401 (fixtures: quick_retries is autouse, the others are arguments)
    PARAMS_PER_TICK, PROMPT_S, SHORT_AGE_S, TICK_S, RecordingSink, device_tick, keys, quick_retries, spool_folder,
    start_writer, until,
)
from susee.config import DatabaseTarget
from susee.replay import Replay
from susee.sinks import SinkError, create_sink
from susee.spool import Spool


async def test_failed_batch_goes_to_the_spool_and_is_replayed_oldest_first_exactly_once(start_writer, caplog):
    caplog.set_level(logging.INFO, logger="susee")
    sink = RecordingSink(fail_writes=2)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)

    writer.submit(device_tick("d01", 0))
    await sink.wait_until(lambda: len(sink.attempts) >= 1)
    # The database is down: pollers keep submitting and nothing is refused.
    writer.submit(device_tick("d01", 1))
    writer.submit(device_tick("d02", 1))
    assert writer.store.stats().rows_dropped == 0

    submitted = device_tick("d01", 0) + device_tick("d01", 1) + device_tick("d02", 1)
    await sink.wait_until(lambda: len(sink.stored_rows) >= len(submitted))
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert sink.attempts[0] == device_tick("d01", 0)
    replays = [attempt for attempt in sink.attempts[1:] if any(s.tick_s == TICK_S for s in attempt)]
    assert len(replays) == 2, "one failed probe, then the replay that worked"
    for attempt in replays:
        assert attempt[:PARAMS_PER_TICK] == device_tick("d01", 0), "replay starts with the oldest rows"
    assert sink.stored[0][:PARAMS_PER_TICK] == device_tick("d01", 0)
    assert keys(sink.stored_rows) == keys(submitted)
    assert set(keys(sink.stored_rows).values()) == {1}, "a row was stored twice"
    assert writer.store.stats().rows_written == len(submitted)
    assert writer.store.stats().rows_dropped == 0
    assert writer.store.stats().rows_replayed == writer.store.stats().rows_spooled >= PARAMS_PER_TICK
    assert writer.store.spool.pending_rows == 0
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unavailable" in m and "outage started" in m]) == 1, "one error per outage"
    (ended,) = [m for m in messages if "outage ended" in m]
    assert f"{writer.store.stats().rows_spooled} rows spooled" in ended
    assert any("spool replayed" in m and "the spool is empty" in m for m in messages)


async def test_live_batches_are_not_held_back_by_a_long_replay(start_writer, spool_folder, monkeypatch):
    monkeypatch.setattr("susee.replay.REPLAY_BATCH_ROWS", 10 * PARAMS_PER_TICK)
    spool = Spool(spool_folder)
    spool.open()
    backlog = [device_tick("old", tick) for tick in range(200)]  # 20 replay batches
    for item in backlog:
        spool.append(item)
    spool.close()
    write_s = 0.02
    sink = RecordingSink(write_delay_s=write_s)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S, spool=Spool(spool_folder))

    await sink.wait_until(lambda: len(sink.stored) >= 2, timeout_s=5 * PROMPT_S)  # replay is under way
    submitted_at = time.monotonic()
    writer.submit(device_tick("live", 500))
    await sink.wait_until(lambda: any(b[0].device_id == "live" for b in sink.stored), timeout_s=5 * PROMPT_S)
    live_index = next(i for i, b in enumerate(sink.stored) if b[0].device_id == "live")
    waited_s = sink.stored_at[live_index] - submitted_at
    await until(lambda: writer.store.spool.pending_rows == 0, timeout_s=5 * PROMPT_S)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert live_index < len(sink.stored) - 3, "the live batch went in between replay batches"
    # batch_age, then at most the replay batch in progress, then its own write.
    assert waited_s < SHORT_AGE_S + 3 * write_s + 0.1, waited_s
    assert keys(sink.stored_rows) == keys([s for item in backlog for s in item] + device_tick("live", 500))


async def test_rows_left_in_the_spool_by_an_earlier_run_are_replayed_at_start(start_writer, spool_folder, caplog):
    caplog.set_level(logging.WARNING, logger="susee")
    spool = Spool(spool_folder)
    spool.open()
    spool.append(device_tick("d01", 0))
    spool.close()

    sink = RecordingSink()
    writer, task = start_writer(sink)
    await sink.wait_until(lambda: sink.stored)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert sink.stored == [device_tick("d01", 0)]
    assert any("from an earlier run" in r.getMessage() for r in caplog.records)


# --- Replay on its own: a real spool into a real SQLite file ---


async def test_replay_batches_leave_the_spool_oldest_first_and_only_after_their_commit(tmp_path, job_id, monkeypatch):
    monkeypatch.setattr("susee.replay.REPLAY_BATCH_ROWS", 2 * PARAMS_PER_TICK)
    spool = Spool(tmp_path / "spool")
    spool.open()
    for tick in range(5):
        spool.append(device_tick("d01", tick))
    sink = create_sink(DatabaseTarget(kind="sqlite", database=f"seedb{job_id}", path=tmp_path / "r.db"), job_id)
    replay = Replay(spool, sink.write, asyncio.to_thread)
    try:
        await sink.open()
        with pytest.raises(SinkError):  # no tables yet: the write fails, the rows stay in the spool
            await replay.batch()
        assert (spool.pending_rows, replay.rows_replayed) == (5 * PARAMS_PER_TICK, 0)

        await sink.migrate()
        batches = []
        while replayed := await replay.batch():
            batches.append(replayed)
    finally:
        await sink.close()
        spool.close()

    assert batches == [2 * PARAMS_PER_TICK, 2 * PARAMS_PER_TICK, PARAMS_PER_TICK]
    assert (spool.pending_rows, replay.rows_replayed) == (0, 5 * PARAMS_PER_TICK)
    with closing(sqlite3.connect(tmp_path / "r.db")) as conn:
        dates = [date for (date,) in conn.execute(f'SELECT Date FROM "see{job_id}Raw" ORDER BY idNum')]
    assert len(dates) == 5 * PARAMS_PER_TICK, "every row once"
    assert dates == sorted(dates), "oldest first"
