"""Queue -> batches -> sink, without ever making a poller wait.

Pollers hand over one list of samples per device-tick with ``submit`` (never
blocks). The writer task flushes a batch when ``batch_rows`` rows wait or the
oldest has waited ``batch_age`` seconds, whichever comes first. When the
database fails, the batch is kept and retried with a capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from susee.config import WriterSettings
from susee.sample import Sample
from susee.sinks import ParamRow, Sink, SinkError

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0  # a database back from a restart is noticed within this


class Writer:
    """Owns the sample queue and the sink; one task drains the queue."""

    def __init__(self, sink: Sink, settings: WriterSettings, params: Sequence[ParamRow] = ()) -> None:
        self.sink = sink
        self.settings = settings
        self.params = list(params)
        self.queue: asyncio.Queue[list[Sample]] = asyncio.Queue(maxsize=settings.queue_size)
        self.rows_written = 0
        self.rows_dropped = 0
        self._queued_rows = 0
        self._enough = asyncio.Event()
        self._closing = False
        self._ready = False
        self._pending: list[Sample] = []

    def submit(self, samples: list[Sample]) -> None:
        """Queue one device-tick of samples; never blocks the caller."""
        if self._closing:
            self._drop(samples, "writer is shutting down")
            return
        try:
            self.queue.put_nowait(samples)
        except asyncio.QueueFull:
            self._drop(samples, "queue full")
            return
        self._queued_rows += len(samples)
        if self._queued_rows >= self.settings.batch_rows:
            self._enough.set()

    @property
    def backlog_rows(self) -> int:
        """Rows accepted but not yet committed."""
        return self._queued_rows + len(self._pending)

    async def run(self) -> None:
        """Drain the queue until ``close()`` was called and nothing is left."""
        while True:
            if not self._pending:
                if self._closing and self.queue.empty():
                    return
                self._pending = await self._collect()
            if self._pending:
                await self._write(self._pending)
                self.rows_written += len(self._pending)
                self._pending = []

    def close(self) -> None:
        """Stop accepting samples; ``run`` returns once everything is written."""
        self._closing = True
        self._enough.set()
        try:
            self.queue.put_nowait([])  # wakes a writer waiting on an empty queue
        except asyncio.QueueFull:
            pass  # a full queue wakes it anyway

    async def _collect(self) -> list[Sample]:
        if self.queue.empty():
            if self._closing:
                return []
            first = await self.queue.get()
            rows = list(first)
        else:
            first, rows = [], []
        # The rows in hand stay counted as queued until the batch is cut, so
        # the submit that brings the total to batch_rows ends the wait.
        if self._queued_rows < self.settings.batch_rows and not self._closing:
            try:
                await asyncio.wait_for(self._enough.wait(), self.settings.batch_age)
            except asyncio.TimeoutError:
                pass
        self._take(first)
        while len(rows) < self.settings.batch_rows and not self.queue.empty():
            item = self.queue.get_nowait()
            self._take(item)
            rows.extend(item)
        if self._queued_rows < self.settings.batch_rows and not self._closing:
            self._enough.clear()
        return rows

    def _take(self, item: list[Sample]) -> None:
        self._queued_rows -= len(item)

    async def _write(self, rows: list[Sample]) -> None:
        delay_s = RETRY_FIRST_S
        outage_started: float | None = None
        while True:
            try:
                if not self._ready:
                    await self._prepare()
                await self.sink.write(rows)
                if outage_started is not None:
                    log.warning("database %s is back after %.1f s", self.sink.target, time.monotonic() - outage_started)
                return
            except SinkError as exc:
                if outage_started is None:
                    outage_started = time.monotonic()
                    log.error("database %s unavailable: %s; %d rows waiting", self.sink.target, exc, self.backlog_rows)
                self._ready = False
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)

    async def _prepare(self) -> None:
        """Connect, apply migrations and refresh the params table."""
        await self.sink.open()
        for line in await self.sink.migrate():
            log.info("database %s: %s", self.sink.target, line)
        if self.params:
            await self.sink.upsert_params(self.params)
        self._ready = True

    def _drop(self, samples: list[Sample], reason: str) -> None:
        self.rows_dropped += len(samples)
        log.error(
            "dropped %d rows of device %s (%s); %d dropped so far",
            len(samples),
            samples[0].device_id if samples else "?",
            reason,
            self.rows_dropped,
        )
