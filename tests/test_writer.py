"""The writer's batching, backpressure, retry and shutdown, against a recording sink.

The sink here is a small fake implementing the Sink protocol: what is under
test is the writer's logic, the real sinks have tests of their own. One case
runs the real SQLiteSink to show the pieces fit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from pathlib import Path

import pytest

from susee.config import DatabaseTarget, WriterSettings
from susee.sample import Sample
from susee.sinks import ParamRow, SinkError, create_sink
from susee.writer import Writer

TICK_S = 1613644200.0  # 2021-02-18 10:30:00 UTC
PARAMS_PER_TICK = 8  # the PAC3200 default set: one device-tick is 8 rows
SHORT_AGE_S = 0.05  # batch_age where the age itself is under test
LONG_AGE_S = 10.0  # batch_age that must NOT be waited for: a correct writer never costs it
PROMPT_S = 1.0  # "promptly": far below LONG_AGE_S, far above any scheduling jitter
PARAMS = [ParamRow("104", "Tensione L1-L2", "Voltage L1-L2", "V", "UL1_L2")]


def device_tick(device_id: str, tick_index: int = 0) -> list[Sample]:
    """What a poller submits for one device and one tick."""
    tick_s = TICK_S + tick_index
    return [
        Sample(device_id, str(101 + n), tick_s, 230.0 + n, 1.5, 0)
        for n in range(PARAMS_PER_TICK)
    ]


class RecordingSink:
    """A Sink that records every call; its first ``fail_writes`` writes raise SinkError."""

    def __init__(self, fail_writes: int = 0) -> None:
        self.target = DatabaseTarget(kind="sqlite", database="fake", path=Path("recording.db"))
        self.fail_writes = fail_writes
        self.calls: list[str] = []
        self.attempts: list[list[Sample]] = []  # every batch write() was given
        self.stored: list[list[Sample]] = []  # the batches that were committed
        self.params: list[ParamRow] = []
        self._changed = asyncio.Event()

    @property
    def stored_rows(self) -> list[Sample]:
        return [sample for batch in self.stored for sample in batch]

    async def open(self) -> None:
        self.calls.append("open")

    async def migrate(self) -> list[str]:
        self.calls.append("migrate")
        return []

    async def write(self, samples: Sequence[Sample]) -> None:
        self.attempts.append(list(samples))
        try:
            if len(self.attempts) <= self.fail_writes:
                self.calls.append("write failed")
                raise SinkError(f"{self.target}: write failed: database down (attempt {len(self.attempts)})")
            self.calls.append("write")
            self.stored.append(list(samples))
        finally:
            self._changed.set()

    async def upsert_params(self, rows: Iterable[ParamRow]) -> None:
        self.calls.append("upsert_params")
        self.params = list(rows)

    async def recent(self, table: str, limit: int) -> list[tuple]:
        return []

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        self.calls.append("close")

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = PROMPT_S) -> None:
        """Return once ``condition()`` holds after some write attempt; fail after ``timeout_s``."""

        async def watch() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(watch(), timeout_s)


@pytest.fixture
def start_writer():
    """Build a Writer and run it as a task; the task is cancelled if a test leaves it running."""
    tasks: list[asyncio.Task] = []

    def start(sink, *, batch_rows: int = 2000, batch_age: float = SHORT_AGE_S, queue_size: int = 100,
              params: Sequence[ParamRow] = PARAMS) -> tuple[Writer, asyncio.Task]:
        settings = WriterSettings(batch_rows=batch_rows, batch_age=batch_age, queue_size=queue_size)
        writer = Writer(sink, settings, params)
        task = asyncio.create_task(writer.run(), name="writer-under-test")
        tasks.append(task)
        return writer, task

    yield start
    for task in tasks:
        task.cancel()


async def writer_is_waiting() -> None:
    """Let a just-started writer task run up to its wait on the empty queue.

    One loop iteration is enough (it awaits nothing before that); a second
    one is a margin. These are yields to the loop, not timed sleeps.
    """
    for _ in range(2):
        await asyncio.sleep(0)


async def writer_took_everything(writer: Writer) -> None:
    """Return once the writer task has taken every queued device-tick into its batch."""

    async def watch() -> None:
        while not writer.queue.empty():
            await asyncio.sleep(0)  # one loop iteration: the writer task gets its turn

    await asyncio.wait_for(watch(), PROMPT_S)


async def test_batch_is_written_once_batch_rows_are_waiting_without_waiting_for_batch_age(start_writer):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_rows=2 * PARAMS_PER_TICK, batch_age=LONG_AGE_S)

    # Pollers submit at different moments: the writer already holds the first
    # device-tick when the second arrives, and the two together fill the batch.
    await writer_is_waiting()
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
    assert writer.rows_written == PARAMS_PER_TICK


def test_submit_is_a_plain_function_that_returns_at_once():
    # Pollers call it from their own task: it must never be something to await.
    assert not inspect.iscoroutinefunction(Writer.submit)


async def test_full_queue_drops_the_device_tick_counts_it_and_names_the_device(caplog):
    sink = RecordingSink()
    writer = Writer(sink, WriterSettings(queue_size=2, batch_age=SHORT_AGE_S), PARAMS)
    caplog.set_level(logging.ERROR, logger="susee.writer")

    # No writer task runs yet: nothing drains the queue.
    assert writer.submit(device_tick("d01")) is None
    writer.submit(device_tick("d02"))
    writer.submit(device_tick("d03"))  # the queue holds two device-ticks

    assert writer.rows_dropped == PARAMS_PER_TICK
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR and "d03" in r.getMessage()]
    assert len(dropped) == 1, caplog.text
    assert "queue full" in dropped[0].getMessage()
    assert not any("d01" in r.getMessage() or "d02" in r.getMessage() for r in caplog.records)

    # What was accepted is still written in full.
    writer.close()
    await asyncio.wait_for(writer.run(), PROMPT_S)
    assert sink.stored_rows == device_tick("d01") + device_tick("d02")


async def test_failed_batch_is_retried_unchanged_and_stored_exactly_once(start_writer, monkeypatch, caplog):
    monkeypatch.setattr("susee.writer.RETRY_FIRST_S", 0.01)
    sink = RecordingSink(fail_writes=2)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)

    writer.submit(device_tick("d01", 0))
    await sink.wait_until(lambda: len(sink.attempts) >= 1)
    # The database is down: pollers keep submitting and nothing is refused.
    writer.submit(device_tick("d01", 1))
    writer.submit(device_tick("d02", 1))
    assert writer.rows_dropped == 0

    submitted = device_tick("d01", 0) + device_tick("d01", 1) + device_tick("d02", 1)
    await sink.wait_until(lambda: len(sink.stored_rows) >= len(submitted))
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert sink.attempts[0] == sink.attempts[1] == sink.attempts[2] == device_tick("d01", 0)
    assert sink.stored[0] == device_tick("d01", 0)
    keys = Counter((s.device_id, s.param_id, s.tick_s) for s in sink.stored_rows)
    assert sorted(keys) == sorted((s.device_id, s.param_id, s.tick_s) for s in submitted)
    assert set(keys.values()) == {1}, "a row was stored twice"
    assert writer.rows_written == len(submitted)
    assert writer.rows_dropped == 0
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1, "one error per outage, not one per retry"


async def test_sink_is_prepared_before_the_first_write_and_again_after_a_failure(start_writer, monkeypatch):
    monkeypatch.setattr("susee.writer.RETRY_FIRST_S", 0.01)
    sink = RecordingSink(fail_writes=1)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)

    writer.submit(device_tick("d01", 0))
    await sink.wait_until(lambda: len(sink.stored) == 1)
    writer.submit(device_tick("d01", 1))
    await sink.wait_until(lambda: len(sink.stored) == 2)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    prepare = ["open", "migrate", "upsert_params"]
    assert sink.calls == [*prepare, "write failed", *prepare, "write", "write"]
    assert sink.params == PARAMS


async def test_close_flushes_everything_queued_without_waiting_for_batch_age(start_writer):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    await writer_is_waiting()

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
    await writer_is_waiting()
    assert not task.done()

    closed_at = time.monotonic()
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert time.monotonic() - closed_at < PROMPT_S
    assert sink.attempts == []


async def test_submit_after_close_is_dropped_and_counted(start_writer, caplog):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    writer.close()
    writer.submit(device_tick("d07"))
    await asyncio.wait_for(task, PROMPT_S)

    assert writer.rows_dropped == PARAMS_PER_TICK
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
    assert writer.rows_written == 3 * PARAMS_PER_TICK
