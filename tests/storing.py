"""What the writer, store and replay tests share: device-ticks, a recording sink, a running writer.

The sink here is a small fake implementing the Sink protocol: what is under
test is the writer's and the store's logic, the real sinks have tests of
their own. The spool is the real one, in tmp_path.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from susee.config import DatabaseTarget, WriterSettings
from susee.sample import Sample
from susee.sinks import ParamRow, SinkError
from susee.spool import Spool
from susee.store import Store
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
    monkeypatch.setattr("susee.store.RETRY_FIRST_S", 0.01)
    monkeypatch.setattr("susee.store.RETRY_MAX_S", 0.05)


@pytest.fixture
def spool_folder(tmp_path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def start_writer(spool_folder):
    """Build a Writer and run it as a task; the task is cancelled if a test leaves it running."""
    tasks: list[asyncio.Task] = []

    def start(sink, *, batch_rows: int = 2000, batch_age: float = SHORT_AGE_S, queue_size: int = 100,
              params: Sequence[ParamRow] = PARAMS, spool: Spool | None = None,
              write_timeout_s: float = 10.0) -> tuple[Writer, asyncio.Task]:
        settings = WriterSettings(batch_rows=batch_rows, batch_age=batch_age, queue_size=queue_size)
        store = Store(sink, spool or Spool(spool_folder), params, write_timeout_s=write_timeout_s)
        writer = Writer(store, settings)
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
