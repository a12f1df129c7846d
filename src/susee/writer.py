"""The queue between the pollers and the store, cut into batches by size and age.

Pollers hand over one list of samples per device-tick with ``submit``, which
never blocks: when the bounded queue is full the rows are spilled straight
to the spool (``Store.spill``). The write loop cuts a batch when
``batch_rows`` rows wait or the oldest has waited ``batch_age`` seconds (the
batch is then everything that waits, up to ``LIVE_BATCH_MAX_ROWS``), and
hands it to the store, which puts it in the database or the spool
(``store``).

Rows are at risk only while in memory: on a kill -9, at most ``batch_age``
seconds of rows (plus the poll in progress), or, while a hung database holds
a write, up to ``database.write_timeout`` more.

The queue holds device-ticks, by default five ticks of every device (see
``WriterSettings.queue_capacity``): a 5,000-meter site does not spill in
normal running, and memory stays bounded when the database is away.

Writing stays on the event loop, measured rather than assumed: the MariaDB
sink formats each statement of 1,000 rows just before sending it (about
1 ms of CPU, ~1 µs a row for Raw and Last together) and awaits the server
between statements, so the loop is never held longer than that; at 1,000
meters the loop lag probe showed p99 5 ms, max 13 ms, with the tick's own
burst of polls as the larger part. A writer thread would not buy CPU (the
formatting holds the GIL either way) and would add GIL hand-offs of up to
5 ms to the polling loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from susee.config import WriterSettings
from susee.sample import Sample
from susee.store import Store, StoreStats

# A live batch takes every row waiting, up to this many: a writer that fell
# behind catches up because the Last table gets only the newest row of each
# (device, param) of the whole batch. Last's upserts are the slow part (about
# 40k rows/s on one connection, where Raw takes 100k): at 5,000 meters x 8
# params per second they cannot follow tick by tick, but two ticks per batch
# halve them. Small enough to commit in a few seconds, well within the
# write timeout (database.write_timeout).
LIVE_BATCH_MAX_ROWS = 100_000


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of the queue, with the store's behind it."""

    queued_ticks: int  # device-ticks waiting in the queue
    backlog_rows: int  # rows accepted and held in memory: neither committed nor spooled
    store: StoreStats


class Writer:
    """Owns the sample queue; its write loop cuts batches and hands them to the store."""

    def __init__(self, store: Store, settings: WriterSettings, *, devices: int = 0) -> None:
        self.store = store
        self.settings = settings
        # In device-ticks; by default a few ticks of every device (``devices``), see WriterSettings.
        self.queue: asyncio.Queue[list[Sample]] = asyncio.Queue(maxsize=settings.queue_capacity(devices))
        self._queued_rows = 0
        self._collected_rows = 0  # rows taken into the batch being cut
        self._pending: list[Sample] = []  # the batch in hand: cut, not yet stored
        self._enough = asyncio.Event()
        self.started = asyncio.Event()  # the spool is open and the loops run
        self._closing = False

    # --- what pollers and the supervisor call ---

    def submit(self, samples: list[Sample]) -> None:
        """Queue one device-tick of samples; never blocks the caller."""
        if self._closing:
            self.store.drop(samples, "writer is shutting down")
            return
        try:
            self.queue.put_nowait(samples)
        except asyncio.QueueFull:
            self.store.spill(samples)  # the store's spill task moves them to the spool
            return
        self._queued_rows += len(samples)
        if self._queued_rows + self._collected_rows >= self.settings.batch_rows:
            self._enough.set()

    @property
    def backlog_rows(self) -> int:
        """Rows accepted and held in memory: neither committed nor spooled."""
        return self._queued_rows + len(self._pending) + self.store.spill_rows

    def stats(self) -> WriterStats:
        """A snapshot of the queue and the store."""
        return WriterStats(self.queue.qsize(), self.backlog_rows, self.store.stats())

    async def run(self) -> None:
        """Store everything until ``close()``; if cancelled, spill what is in memory first."""
        await self.store.run(self._write_loop, self._take_all, self.started)

    def close(self) -> None:
        """Stop accepting samples; ``run`` returns once everything is stored."""
        self._closing = True
        self.store.close()
        self._enough.set()
        try:
            self.queue.put_nowait([])  # wakes a writer waiting on an empty queue
        except asyncio.QueueFull:
            pass  # a full queue wakes it anyway

    # --- batches ---

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing and self.queue.empty():
                    return
                await self._collect()
            if self._pending:
                if not await self.store.put(self._pending):
                    return  # closing with a full spool: the exit spill takes the batch
                self._pending = []

    async def _collect(self) -> None:
        """Move the next batch from the queue into ``self._pending``.

        Rows taken stay counted (``_collected_rows``) until the batch is cut,
        so the submit that brings the total to batch_rows ends the wait.
        """
        if self.queue.empty():
            if self._closing:
                return
            self._take(await self.queue.get())
        if self._queued_rows + self._collected_rows < self.settings.batch_rows and not self._closing:
            try:
                await asyncio.wait_for(self._enough.wait(), self.settings.batch_age)
            except asyncio.TimeoutError:
                pass
        while len(self._pending) < LIVE_BATCH_MAX_ROWS and not self.queue.empty():  # all that waits
            self._take(self.queue.get_nowait())
        self._collected_rows = 0
        if self._queued_rows < self.settings.batch_rows and not self._closing:
            self._enough.clear()

    def _take(self, item: list[Sample]) -> None:
        self._queued_rows -= len(item)
        self._collected_rows += len(item)
        self._pending.extend(item)

    def _take_all(self) -> list[Sample]:
        """Everything still in memory (the batch in hand, then the queue), for the exit spill."""
        while not self.queue.empty():
            self._take(self.queue.get_nowait())
        rows, self._pending, self._queued_rows, self._collected_rows = self._pending, [], 0, 0
        return rows
