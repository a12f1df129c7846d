"""Draining a spool into the database: oldest rows first, each exactly once.

A batch is read from the head of the spool, written, and only then
acknowledged (the spool's cursor moves past it). A crash between the commit
and the acknowledgement replays the batch once more, which the database's
unique key turns into a no-op: no row is lost, none is stored twice.

``Replay`` does one batch per call; the store decides when (after an outage,
and at start for rows an earlier run left), so live batches take turns with
replay batches on the one connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from susee.sample import Sample
from susee.shown import rate_text
from susee.sinks import newest_samples
from susee.spool import Spool

log = logging.getLogger(__name__)

# Rows per replay transaction. Large, because the Last table then gets only
# the newest row of each (device, param) of the batch (12 ticks of a 1,000-meter
# site: 8,000 upserts, not 100,000): with 1,000 live meters on a 2-core machine
# replay went from 19k rows/s (20,000 per batch) to 40k (bench/replay.py). A live
# batch waits for one replay batch at most, about 2 s there; its rows are
# already read, and its Delay is not affected.
REPLAY_BATCH_ROWS = 100_000
# Rows per replay transaction: a replay batch is written in parts this large
# (Raw, then Last's newest rows), so a live batch waits for one part at most.
REPLAY_TXN_ROWS = 10_000
PROGRESS_EVERY_S = 5.0  # a long replay logs its progress this often

Write = Callable[..., Awaitable[None]]  # (rows, *, last=...) as Sink.write
InThread = Callable[..., Awaitable[Any]]


class Replay:
    """Moves the oldest rows of a spool into the database, one batch per ``batch()`` call."""

    def __init__(self, spool: Spool, write: Write, in_thread: InThread) -> None:
        self.spool = spool
        self._write = write  # raises SinkError when the database does not take the batch
        self._in_thread = in_thread  # the spool's one thread: spool I/O never runs in the loop
        self.rows_replayed = 0
        self._started: float | None = None  # this replay run: since the spool last held rows
        self._rows = 0
        self._logged = 0.0

    async def batch(self) -> int:
        """Write the oldest spooled rows, then remove them from the spool; return how many (0: empty)."""
        batch = await self._in_thread(self.spool.read, REPLAY_BATCH_ROWS)
        if batch is None:
            return 0
        await self._write_in_turns(batch.samples)
        # A crash right here replays the batch once more: the unique key makes that a no-op.
        await self._in_thread(self.spool.ack, batch)
        self.rows_replayed += len(batch.samples)
        return len(batch.samples)

    async def _write_in_turns(self, rows: list[Sample]) -> None:
        """A replay batch in short transactions, a live batch free to go between any two.

        Raw in parts of REPLAY_TXN_ROWS, then Last, which gets only the newest
        row of each (device, param) of the whole batch: the replay keeps its
        rate, and a live batch waits for one part at most (a fraction of a
        second), not for the whole batch. The batch leaves the spool after its
        last part: a crash in between replays it again, which the unique key and
        Last's newer-wins upsert absorb.
        """
        newest = newest_samples(rows)
        parts = [(rows[i:i + REPLAY_TXN_ROWS], []) for i in range(0, len(rows), REPLAY_TXN_ROWS)]
        parts += [([], newest[i:i + REPLAY_TXN_ROWS]) for i in range(0, len(newest), REPLAY_TXN_ROWS)]
        for raw, last in parts:
            await self._write(raw, last=last)
            await asyncio.sleep(0)  # a live batch waiting for the sink goes next

    def log_progress(self, replayed: int) -> None:
        """Log a long replay every ``PROGRESS_EVERY_S``, and once when the spool is empty."""
        if not replayed:
            return
        now = time.monotonic()
        if self._started is None:
            self._started, self._logged, self._rows = now, now, 0
        self._rows += replayed
        elapsed_s = max(now - self._started, 1e-6)
        left = self.spool.pending_rows
        if left == 0:
            log.info(
                "spool replayed: %d rows in %.1f s%s; the spool is empty",
                self._rows, elapsed_s, rate_text(self._rows, elapsed_s),
            )
            self._started = None
        elif now - self._logged >= PROGRESS_EVERY_S:
            log.info(
                "replaying the spool: %d rows so far%s, %d rows (%d bytes) left",
                self._rows, rate_text(self._rows, elapsed_s), left, self.spool.size_bytes,
            )
            self._logged = now
