"""The writer's batching, spooling, replay, pause and shutdown, against a recording sink.

The sink here is a small fake implementing the Sink protocol: what is under
test is the writer's logic, the real sinks have tests of their own. The spool
is the real one, in tmp_path. One case runs the real SQLiteSink to show the
pieces fit; tests/integration/test_reliability.py runs MariaDB.
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

from support import spooled_rows
from susee.config import DatabaseTarget, WriterSettings
from susee.sample import Sample
from susee.sinks import ParamRow, SinkError, create_sink
from susee.spool import Spool
from susee.writer import SPOOL_RETRY_S, Writer

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


def keys(samples: Iterable[Sample]) -> Counter:
    return Counter((s.device_id, s.param_id, s.tick_s) for s in samples)


class RecordingSink:
    """A Sink that records every call.

    Its first ``fail_writes`` writes raise SinkError; while ``down`` is True
    every open and write raises; ``write_delay_s`` makes writes take time (one
    at a time, like the real sinks' connection lock).
    """

    def __init__(self, fail_writes: int = 0, *, down: bool = False, write_delay_s: float = 0.0) -> None:
        self.target = DatabaseTarget(kind="sqlite", database="fake", path=Path("recording.db"))
        self.fail_writes = fail_writes
        self.down = down
        self.write_delay_s = write_delay_s
        self.calls: list[str] = []
        self.attempts: list[list[Sample]] = []  # every batch write() was given
        self.stored: list[list[Sample]] = []  # the batches that were committed
        self.stored_at: list[float] = []
        self.params: list[ParamRow] = []
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def stored_rows(self) -> list[Sample]:
        return [sample for batch in self.stored for sample in batch]

    async def open(self) -> None:
        if self.down:
            self.calls.append("open failed")
            raise SinkError(f"{self.target}: cannot connect: database down")
        self.calls.append("open")

    async def migrate(self) -> list[str]:
        self.calls.append("migrate")
        return []

    async def write(self, samples: Sequence[Sample], *, last: Sequence[Sample] | None = None) -> None:
        if not samples:
            return  # a replay's Last-only transaction: no Raw rows to record
        async with self._lock:
            self.attempts.append(list(samples))
            try:
                if self.write_delay_s:
                    await asyncio.sleep(self.write_delay_s)
                if self.down or len(self.attempts) <= self.fail_writes:
                    self.calls.append("write failed")
                    raise SinkError(f"{self.target}: write failed: database down (attempt {len(self.attempts)})")
                self.calls.append("write")
                self.stored.append(list(samples))
                self.stored_at.append(time.monotonic())
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


class HangingSink(RecordingSink):
    """A database that accepts the connection and then never answers a write."""

    async def write(self, samples: Sequence[Sample], *, last: Sequence[Sample] | None = None) -> None:
        self.attempts.append(list(samples))
        self._changed.set()
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Probe a failed database within milliseconds, not the production 0.5 s .. 30 s."""
    monkeypatch.setattr("susee.writer.RETRY_FIRST_S", 0.01)
    monkeypatch.setattr("susee.writer.RETRY_MAX_S", 0.05)


@pytest.fixture
def spool_folder(tmp_path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def start_writer(spool_folder):
    """Build a Writer and run it as a task; the task is cancelled if a test leaves it running."""
    tasks: list[asyncio.Task] = []

    def start(sink, *, batch_rows: int = 2000, batch_age: float = SHORT_AGE_S, queue_size: int = 100,
              params: Sequence[ParamRow] = PARAMS, spool: Spool | None = None) -> tuple[Writer, asyncio.Task]:
        settings = WriterSettings(batch_rows=batch_rows, batch_age=batch_age, queue_size=queue_size)
        writer = Writer(sink, settings, params, spool=spool or Spool(spool_folder))
        task = asyncio.create_task(writer.run(), name="writer-under-test")
        tasks.append(task)
        return writer, task

    yield start
    for task in tasks:
        task.cancel()


async def writer_is_waiting(writer: Writer) -> None:
    """Let a just-started writer task run up to its wait on the empty queue.

    Once the spool is open (``started``), one loop iteration is enough; a
    second one is a margin. These are yields to the loop, not timed sleeps.
    """
    await asyncio.wait_for(writer.started.wait(), PROMPT_S)
    for _ in range(2):
        await asyncio.sleep(0)


async def writer_took_everything(writer: Writer) -> None:
    """Return once the writer task has taken every queued device-tick into its batch."""

    async def watch() -> None:
        while not writer.queue.empty():
            await asyncio.sleep(0)  # one loop iteration: the writer task gets its turn

    await asyncio.wait_for(watch(), PROMPT_S)


async def until(condition: Callable[[], bool], timeout_s: float = PROMPT_S) -> None:
    """Yield to the loop until ``condition()`` holds (bounded)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)



# --- batching ---


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
    assert writer.rows_written == PARAMS_PER_TICK


def test_submit_is_a_plain_function_that_returns_at_once():
    # Pollers call it from their own task: it must never be something to await.
    assert not inspect.iscoroutinefunction(Writer.submit)


# --- a full queue spills, never drops ---


async def test_full_queue_spills_the_device_tick_to_the_spool_and_nothing_is_dropped(spool_folder, caplog):
    sink = RecordingSink()
    writer = Writer(sink, WriterSettings(queue_size=2, batch_age=SHORT_AGE_S), PARAMS, spool=Spool(spool_folder))
    caplog.set_level(logging.WARNING, logger="susee.writer")

    # No writer task runs yet: nothing drains the queue.
    assert writer.submit(device_tick("d01")) is None
    writer.submit(device_tick("d02"))
    writer.submit(device_tick("d03"))  # the queue holds two device-ticks: this one spills

    assert writer.rows_dropped == 0
    assert writer.backlog_rows == 3 * PARAMS_PER_TICK  # all held, none lost

    task = asyncio.create_task(writer.run())
    await sink.wait_until(lambda: len(sink.stored_rows) == 3 * PARAMS_PER_TICK)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert keys(sink.stored_rows) == keys(device_tick("d01") + device_tick("d02") + device_tick("d03"))
    assert writer.rows_spooled == writer.rows_replayed == PARAMS_PER_TICK
    assert writer.rows_dropped == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# --- queue size ---


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
    writer = Writer(RecordingSink(), settings, spool=Spool(spool_folder), devices=devices)
    assert writer.queue.maxsize == capacity


async def test_four_ticks_of_5000_meters_waiting_for_the_writer_do_not_spill(spool_folder):
    writer = Writer(RecordingSink(), WriterSettings(), spool=Spool(spool_folder), devices=5000)

    # No writer task runs: nothing drains the queue, as when the database takes a few seconds.
    for tick in range(4):
        for n in range(5000):
            writer.submit(device_tick(f"m{n:04d}", tick))

    assert writer.queue.qsize() == 4 * 5000
    assert not writer.queue.full()
    assert writer.backlog_rows == 4 * 5000 * PARAMS_PER_TICK
    assert writer.rows_spooled == writer.rows_dropped == 0


# --- outage: spool, probe, replay ---


async def test_failed_batch_goes_to_the_spool_and_is_replayed_oldest_first_exactly_once(start_writer, caplog):
    caplog.set_level(logging.INFO, logger="susee.writer")
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

    assert sink.attempts[0] == device_tick("d01", 0)
    replays = [attempt for attempt in sink.attempts[1:] if any(s.tick_s == TICK_S for s in attempt)]
    assert len(replays) == 2, "one failed probe, then the replay that worked"
    for attempt in replays:
        assert attempt[:PARAMS_PER_TICK] == device_tick("d01", 0), "replay starts with the oldest rows"
    assert sink.stored[0][:PARAMS_PER_TICK] == device_tick("d01", 0)
    assert keys(sink.stored_rows) == keys(submitted)
    assert set(keys(sink.stored_rows).values()) == {1}, "a row was stored twice"
    assert writer.rows_written == len(submitted)
    assert writer.rows_dropped == 0
    assert writer.rows_replayed == writer.rows_spooled >= PARAMS_PER_TICK
    assert writer.spool.pending_rows == 0
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unavailable" in m and "outage started" in m]) == 1, "one error per outage"
    (ended,) = [m for m in messages if "outage ended" in m]
    assert f"{writer.rows_spooled} rows spooled" in ended
    assert any("spool replayed" in m and "the spool is empty" in m for m in messages)


async def test_offline_batches_go_straight_to_the_spool_without_a_database_attempt(start_writer, monkeypatch):
    monkeypatch.setattr("susee.writer.RETRY_FIRST_S", LONG_AGE_S)  # no probe during this test
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)

    for tick in range(5):
        writer.submit(device_tick("d01", tick))
        await until(lambda: writer.rows_spooled == (tick + 1) * PARAMS_PER_TICK)

    assert not writer.online
    assert sink.calls == ["open failed"], "one failed attempt, then no database traffic"
    assert writer.spool.pending_rows == 5 * PARAMS_PER_TICK
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)
    assert keys(spooled_rows(writer.spool.folder)) == keys(s for t in range(5) for s in device_tick("d01", t))


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
    monkeypatch.setattr("susee.writer.RETRY_FIRST_S", 0.5)
    monkeypatch.setattr("susee.writer.RETRY_MAX_S", 30.0)
    delays: list[float] = []

    async def record_sleep(self, delay_s: float) -> None:
        delays.append(delay_s)
        await asyncio.sleep(0)

    monkeypatch.setattr(Writer, "_sleep", record_sleep)
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


async def test_live_batches_are_not_held_back_by_a_long_replay(start_writer, spool_folder, monkeypatch):
    monkeypatch.setattr("susee.writer.REPLAY_BATCH_ROWS", 10 * PARAMS_PER_TICK)
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
    await until(lambda: writer.spool.pending_rows == 0, timeout_s=5 * PROMPT_S)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert live_index < len(sink.stored) - 3, "the live batch went in between replay batches"
    # batch_age, then at most the replay batch in progress, then its own write.
    assert waited_s < SHORT_AGE_S + 3 * write_s + 0.1, waited_s
    assert keys(sink.stored_rows) == keys([s for item in backlog for s in item] + device_tick("live", 500))


# --- a full spool ---


async def test_stop_polling_pauses_acquisition_and_resumes_when_the_database_is_back(start_writer, spool_folder,
                                                                                     caplog):
    caplog.set_level(logging.WARNING, logger="susee.writer")
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S, spool=Spool(spool_folder, max_bytes=1000))

    submitted: list[Sample] = []
    tick = 0
    while not writer.paused:
        writer.submit(device_tick("d01", tick))
        submitted += device_tick("d01", tick)
        tick += 1
        await until(lambda: writer.backlog_rows == 0 or writer.paused)
    for _ in range(5):
        assert writer.refuse_tick()  # a poller asks before each tick: five device-ticks not acquired
    assert writer.spool.size_bytes <= 1000
    sink.down = False  # the database is back: the held batch and the spool go in

    await until(lambda: not writer.paused)
    assert not writer.refuse_tick()
    await until(lambda: writer.spool.pending_rows == 0 and writer.backlog_rows == 0)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert keys(sink.stored_rows) == keys(submitted), "nothing acquired was lost"
    assert writer.rows_dropped == 0
    assert writer.ticks_not_acquired == 5
    messages = [r.getMessage() for r in caplog.records]
    assert any("ACQUISITION PAUSED" in m and "is full" in m for m in messages), messages
    assert any("acquisition resumed" in m and "5 device-ticks were not acquired" in m for m in messages), messages


async def test_drop_oldest_keeps_the_newest_rows_and_counts_the_dropped_ones(start_writer, spool_folder, caplog):
    caplog.set_level(logging.WARNING, logger="susee.writer")
    sink = RecordingSink(down=True)
    spool = Spool(spool_folder, max_bytes=2000, when_full="drop_oldest")
    writer, task = start_writer(sink, batch_rows=PARAMS_PER_TICK, spool=spool)  # one record per device-tick

    submitted = [device_tick("d01", tick) for tick in range(60)]
    for tick, item in enumerate(submitted):
        writer.submit(item)
        await until(lambda: writer.rows_spooled == (tick + 1) * PARAMS_PER_TICK)
        assert not writer.refuse_tick(), "drop_oldest never pauses acquisition"
    assert writer.rows_dropped > 0
    sink.down = False
    await until(lambda: writer.spool.pending_rows == 0)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    stored = sink.stored_rows
    assert len(stored) + writer.rows_dropped == 60 * PARAMS_PER_TICK, "every row stored or counted as dropped"
    newest = [s for item in submitted for s in item][writer.rows_dropped:]
    assert keys(stored) == keys(newest), "the oldest rows are the ones dropped"
    dropped_logs = [r for r in caplog.records if r.levelno == logging.ERROR and "dropped the" in r.getMessage()]
    assert dropped_logs and f"{writer.rows_dropped} rows dropped so far" in dropped_logs[-1].getMessage()


# --- shutdown ---


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


async def test_close_during_an_outage_spools_the_rest_and_returns_promptly(start_writer, monkeypatch):
    monkeypatch.setattr("susee.writer.RETRY_FIRST_S", LONG_AGE_S)  # mid-backoff when closed
    sink = RecordingSink(down=True)
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    writer.submit(device_tick("d01", 0))
    writer.submit(device_tick("d02", 0))
    writer.close()

    await asyncio.wait_for(task, PROMPT_S)
    assert keys(spooled_rows(writer.spool.folder)) == keys(device_tick("d01", 0) + device_tick("d02", 0))


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
    await until(lambda: writer.rows_spooled > 0)  # the overflow is on disk already

    writer.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert writer.rows_dropped == 0
    assert set(keys(spooled_rows(writer.spool.folder))) == set(keys(s for item in submitted for s in item))


async def test_a_write_the_database_does_not_answer_is_spooled_after_the_write_timeout(start_writer, monkeypatch):
    monkeypatch.setattr("susee.writer.WRITE_TIMEOUT_S", 0.1)
    monkeypatch.setattr("susee.writer.RETRY_FIRST_S", LONG_AGE_S)  # no probe during this test
    sink = HangingSink()
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S)

    writer.submit(device_tick("d01"))
    await until(lambda: writer.rows_spooled == PARAMS_PER_TICK)

    assert not writer.online
    assert writer.backlog_rows == 0, "nothing waits in memory behind the hung write"
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)
    assert keys(spooled_rows(writer.spool.folder)) == keys(device_tick("d01"))


async def test_submit_after_close_is_dropped_and_counted(start_writer, caplog):
    sink = RecordingSink()
    writer, task = start_writer(sink, batch_age=LONG_AGE_S)
    writer.close()
    writer.submit(device_tick("d07"))
    await asyncio.wait_for(task, PROMPT_S)

    assert writer.rows_dropped == PARAMS_PER_TICK
    assert sink.stored == []
    assert any("d07" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_rows_left_in_the_spool_by_an_earlier_run_are_replayed_at_start(start_writer, spool_folder, caplog):
    caplog.set_level(logging.WARNING, logger="susee.writer")
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


# --- memory during a long outage ---


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
    spooled_before = writer.rows_spooled
    await acquire(8.0)
    growth = rss_bytes() - baseline
    spooled = writer.rows_spooled - spooled_before
    writer.close()
    await asyncio.wait_for(task, 10 * PROMPT_S)

    assert spooled > 500_000
    assert writer.rows_dropped == 0
    assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB while {spooled} rows were spooled"


# --- with a real sink ---


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


async def test_a_full_disk_pauses_acquisition_once_and_it_resumes_within_a_period_of_space_returning(
        start_writer, spool_folder, caplog):
    caplog.set_level(logging.WARNING, logger="susee.writer")
    sink = RecordingSink(down=True)
    spool = Spool(spool_folder, when_full="stop_polling")
    writer, task = start_writer(sink, batch_age=SHORT_AGE_S, spool=spool)
    await writer.started.wait()
    writer.submit(device_tick("d01", 0))
    await until(lambda: writer.rows_spooled == PARAMS_PER_TICK)
    # SQLite's own page limit: the next append fails with SQLITE_FULL, exactly as on a full disk.
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")
    big = [Sample("d02", str(p), 1613644200.0 + t, t * 1.1 + p, 1.0, 0) for t in range(300) for p in range(8)]
    writer.submit(big)
    await until(lambda: writer.paused)
    for _ in range(3):
        assert writer.refuse_tick()
    await asyncio.sleep(2.5 * SPOOL_RETRY_S)  # retries while paused: none of them may log again

    spool._db.execute("PRAGMA max_page_count = 1000000000")  # space is back
    resumed_in = time.monotonic()
    await until(lambda: not writer.paused, timeout_s=SPOOL_RETRY_S + PROMPT_S)
    assert time.monotonic() - resumed_in <= SPOOL_RETRY_S + PROMPT_S
    sink.down = False
    await until(lambda: writer.spool.pending_rows == 0 and writer.backlog_rows == 0, timeout_s=5 * PROMPT_S)
    writer.close()
    await asyncio.wait_for(task, PROMPT_S)

    assert keys(sink.stored_rows) == keys(device_tick("d01", 0) + big), "nothing acquired was lost"
    assert SPOOL_RETRY_S <= 1.0, "acquisition resumes within one period (sample_time >= 1 s)"
    messages = [r.getMessage() for r in caplog.records]
    paused = [m for m in messages if "ACQUISITION PAUSED" in m]
    assert len(paused) == 1 and "disk is full" in paused[0], messages
    assert sum("acquisition resumed" in m for m in messages) == 1, messages
