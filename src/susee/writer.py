"""Queue -> batches -> database, or the spool when the database cannot take them.

Pollers hand over one list of samples per device-tick with ``submit``, which
never blocks: when the bounded queue is full the rows are spilled to the
spool. The write loop cuts a batch when ``batch_rows`` rows wait or the
oldest has waited ``batch_age`` seconds (the batch is then everything that
waits, up to ``LIVE_BATCH_MAX_ROWS``), and stores it:

- ONLINE: into the database. When that fails, the batch goes to the spool and
  the writer turns OFFLINE ("outage started").
- OFFLINE: straight into the spool, with no database attempt.

The replay task probes the database with capped, jittered exponential
backoff; once it answers, the writer is ONLINE again ("outage ended") and the
spool is replayed oldest first in large batches, each removed from the spool
only after its commit. Live batches take turns with replay batches on the
sink, so they wait for at most one replay batch.

Rows are at risk only while in memory: on a kill -9, at most ``batch_age``
seconds of rows (plus the poll in progress), or, while a hung database holds
a write, up to ``WRITE_TIMEOUT_S`` more. All spool I/O runs in one worker
thread, never in the event loop.

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
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from susee.config import WriterSettings
from susee.sample import Sample
from susee.sinks import ParamRow, PermanentSinkError, Sink, SinkError, newest_samples
from susee.spool import Spool, SpoolError, SpoolFull

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0  # a database back from a restart is noticed within this
RETRY_JITTER = 0.2  # +-20 %: many sites restarted together do not probe in step
# Rows per replay transaction. Large, because the Last table then gets only
# the newest row of each (device, param) of the batch (12 ticks of a 1,000-meter
# site: 8,000 upserts, not 100,000): with 1,000 live meters on a 2-core machine
# replay went from 19k rows/s (20,000 per batch) to 40k (bench/replay.py). A live
# batch waits for one replay batch at most, about 2 s there; its rows are
# already read, and its Delay is not affected.
REPLAY_BATCH_ROWS = 100_000
# A live batch takes every row waiting, up to this many: a writer that fell
# behind catches up because the Last table gets only the newest row of each
# (device, param) of the whole batch. Last's upserts are the slow part (about
# 40k rows/s on one connection, where Raw takes 100k): at 5,000 meters x 8
# params per second they cannot follow tick by tick, but two ticks per batch
# halve them. Small enough to commit in a few seconds, well within WRITE_TIMEOUT_S.
LIVE_BATCH_MAX_ROWS = 100_000
# Rows per replay transaction [spool branch, issue 15 item 4]: a replay batch is
# written in parts this large, so a live batch waits for one part at most.
REPLAY_TXN_ROWS = 10_000
PROGRESS_EVERY_S = 5.0  # a long replay logs its progress this often
# A spool that could not take a batch (full disk, disk error) is tried again after
# this: acquisition resumes within one period (sample_time >= 1 s) of space returning.
SPOOL_RETRY_S = 1.0  # [spool branch, issue 15] was 5.0
# A healthy database commits a batch in milliseconds. A write with no answer
# after this is a hung server: the batch is safer in the spool than in memory,
# and this bounds how long rows wait in memory behind it.
WRITE_TIMEOUT_S = 10.0
REFUSED_LOG_EVERY_S = 60.0  # [spool branch] a permanent database error is logged this often at most


class Writer:
    """Owns the sample queue, the sink and the spool; its tasks drain the queue."""

    def __init__(
        self, sink: Sink, settings: WriterSettings, params: Sequence[ParamRow] = (), *, spool: Spool, devices: int = 0
    ) -> None:
        self.sink = sink
        self.settings = settings
        self.params = list(params)
        self.spool = spool
        # In device-ticks; by default a few ticks of every device (``devices``), see WriterSettings.
        self.queue: asyncio.Queue[list[Sample]] = asyncio.Queue(maxsize=settings.queue_capacity(devices))
        self.rows_written = 0  # committed, live or replayed
        self.rows_spooled = 0
        self.rows_replayed = 0
        self.rows_dropped = 0
        self.ticks_not_acquired = 0  # device-ticks skipped while acquisition was paused
        self.permanent_errors = 0  # [spool branch] writes refused for a reason retrying cannot fix
        self._refused_logged: float | None = None
        self._queued_rows = 0
        self._collected_rows = 0  # rows taken into the batch being cut
        self._pending: list[Sample] = []  # the batch in hand: cut, not yet stored
        self._spill: list[list[Sample]] = []  # device-ticks that found the queue full
        self._enough = asyncio.Event()
        self._spilled = asyncio.Event()
        self._closed = asyncio.Event()
        self.started = asyncio.Event()  # the spool is open and the loops run
        self._change = asyncio.Event()  # replaced on every notify, see _notify
        self._closing = False
        self._ready = False
        self._prepare_lock = asyncio.Lock()
        self._prepared_once = False
        self._online = True
        self._outage_started: float | None = None
        self._outage_rows = 0
        self._paused_since: float | None = None
        self._ticks_at_pause = 0
        self._replay_started: float | None = None
        self._replay_rows = 0
        self._replay_logged = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="susee-spool")

    # --- what pollers and the supervisor call ---

    def submit(self, samples: list[Sample]) -> None:
        """Queue one device-tick of samples; never blocks the caller."""
        if self._closing:
            self._drop(samples, "writer is shutting down")
            return
        try:
            self.queue.put_nowait(samples)
        except asyncio.QueueFull:
            self._spill.append(samples)  # the spill task moves them to the spool
            self._spilled.set()
            return
        self._queued_rows += len(samples)
        if self._queued_rows + self._collected_rows >= self.settings.batch_rows:
            self._enough.set()

    def refuse_tick(self) -> bool:
        """True while acquisition is paused (spool full); counts the device-tick as not acquired."""
        if self._paused_since is None:
            return False
        self.ticks_not_acquired += 1
        return True

    @property
    def paused(self) -> bool:
        """True while acquisition is paused: the spool is full (stop_polling) or cannot be written."""
        return self._paused_since is not None

    @property
    def online(self) -> bool:
        """False during an outage: batches go to the spool."""
        return self._online

    @property
    def backlog_rows(self) -> int:
        """Rows accepted and held in memory: neither committed nor spooled."""
        return self._queued_rows + len(self._pending) + sum(len(item) for item in self._spill)

    async def run(self) -> None:
        """Store everything until ``close()``; if cancelled, spill what is in memory first."""
        tasks: list[asyncio.Task] = []
        try:
            await self._in_thread(self.spool.open)
            if self.spool.pending_rows:
                log.warning(
                    "spool %s holds %d rows (%d bytes) from an earlier run: replaying them once the database answers",
                    self.spool.folder, self.spool.pending_rows, self.spool.size_bytes,
                )
            tasks = [
                asyncio.create_task(self._write_loop(), name="writer-write"),
                asyncio.create_task(self._replay_loop(), name="writer-replay"),
                asyncio.create_task(self._spill_loop(), name="writer-spill"),
            ]
            self.started.set()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed loop stops the writer, and the service with it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._spill_what_is_left()
            await self._in_thread(self.spool.close)
            self._executor.shutdown(wait=False)

    def close(self) -> None:
        """Stop accepting samples; ``run`` returns once everything is stored."""
        self._closing = True
        self._closed.set()
        self._enough.set()
        self._spilled.set()
        self._notify()
        try:
            self.queue.put_nowait([])  # wakes a writer waiting on an empty queue
        except asyncio.QueueFull:
            pass  # a full queue wakes it anyway

    # --- live batches ---

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing and self.queue.empty():
                    return
                await self._collect()
            if self._pending:
                if not await self._store(self._pending):
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

    async def _store(self, rows: list[Sample]) -> bool:
        """Into the database when online, else into the spool; wait while neither can take them.

        False only when closing and neither could: the rows stay in memory for the exit spill.
        """
        while True:
            change = self._change
            if self._online:
                try:
                    await self._write(rows)
                except SinkError as exc:
                    self._went_offline(exc)
                else:
                    self.rows_written += len(rows)
                    self._resume()
                    return True
            if await self._append(rows):
                return True
            if self._closing:
                return False
            await self._wait(change, SPOOL_RETRY_S)

    async def _write(self, rows: Sequence[Sample], **last: Sequence[Sample]) -> None:
        if not self._ready:
            await self._prepare()
        try:
            await asyncio.wait_for(self.sink.write(rows, **last), WRITE_TIMEOUT_S)
        except asyncio.TimeoutError as exc:
            # Cancelled mid-commit, the batch may be stored AND spooled: the unique key absorbs that.
            raise SinkError(f"{self.sink.target}: no answer to a write within {WRITE_TIMEOUT_S:g} s") from exc

    async def _prepare(self) -> None:
        """Connect, apply migrations and refresh the params table (once per connection)."""
        async with self._prepare_lock:
            if self._ready:
                return
            # The first preparation may upgrade a large seed-era table (minutes);
            # later ones only find the schema current, and must not hang a probe.
            timeout_s = WRITE_TIMEOUT_S if self._prepared_once else None
            try:
                await asyncio.wait_for(self._prepare_sink(), timeout_s)
            except asyncio.TimeoutError as exc:
                raise SinkError(f"{self.sink.target}: no answer within {WRITE_TIMEOUT_S:g} s") from exc
            self._ready = self._prepared_once = True

    async def _prepare_sink(self) -> None:
        await self.sink.open()
        for line in await self.sink.migrate():
            log.info("database %s: %s", self.sink.target, line)
        if self.params:
            await self.sink.upsert_params(self.params)

    # --- the spool ---

    async def _spill_loop(self) -> None:
        """Move device-ticks that found the queue full into the spool, promptly."""
        while True:
            await self._spilled.wait()
            self._spilled.clear()
            while self._spill:
                change = self._change
                taken = len(self._spill)
                rows = [sample for item in self._spill[:taken] for sample in item]
                if await self._append(rows):
                    del self._spill[:taken]  # only now: a cancelled append is spilled again at exit
                elif self._closing:
                    return  # the exit spill takes them
                else:
                    await self._wait(change, SPOOL_RETRY_S)
            if self._closing:
                return

    async def _append(self, rows: list[Sample]) -> bool:
        """Spool ``rows``; False if the spool cannot take them now (acquisition then pauses)."""
        # Counted for the outage as they go in: the database may come back (and the
        # "outage ended" line be written) while this append is still in the thread.
        self._outage_rows += len(rows)
        try:
            dropped = await self._in_thread(self.spool.append, rows)
        except SpoolFull as exc:
            self._outage_rows = max(0, self._outage_rows - len(rows))
            self._pause(str(exc))
            return False
        except (SpoolError, OSError) as exc:
            self._outage_rows = max(0, self._outage_rows - len(rows))
            if not self.paused:  # [spool branch, issue 15] once, not on every retry
                log.error("spool %s: cannot store %d rows: %s", self.spool.folder, len(rows), exc)
            self._pause("the spool cannot be written")
            return False
        self.rows_spooled += len(rows)
        if dropped:
            self.rows_dropped += dropped
            log.error(
                "spool %s reached max_bytes %d: dropped the %d oldest rows to keep the newest (when_full: "
                "drop_oldest); %d rows dropped so far",
                self.spool.folder, self.spool.max_bytes, dropped, self.rows_dropped,
            )
        self._resume()
        self._notify()
        return True

    async def _replay_loop(self) -> None:
        """Probe the database during an outage; replay the spool whenever it holds rows."""
        delay_s = RETRY_FIRST_S
        while not self._closing:
            change = self._change
            if self._online and self.spool.pending_rows == 0:
                await change.wait()
                continue
            if not self._online:
                await self._sleep(delay_s * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))
                if self._closing:
                    return
                delay_s = min(delay_s * 2, RETRY_MAX_S)
            try:
                replayed = await self._replay_batch()
            except SinkError as exc:
                self._went_offline(exc)
                continue
            except (SpoolError, OSError) as exc:
                log.error("spool %s: cannot replay: %s; trying again in %g s", self.spool.folder, exc, SPOOL_RETRY_S)
                await self._sleep(SPOOL_RETRY_S)
                continue
            if not self._online:
                self._back_online()
            delay_s = RETRY_FIRST_S
            self._log_replay_progress(replayed)
            await asyncio.sleep(0)  # a live batch waiting for the sink goes next

    async def _replay_batch(self) -> int:
        """Write the oldest spooled rows, then remove them from the spool; return how many."""
        if not self._ready:
            await self._prepare()  # during an outage, this is the probe
        batch = await self._in_thread(self.spool.read, REPLAY_BATCH_ROWS)
        if batch is None:
            return 0
        await self._write_in_turns(batch.samples)  # [spool branch, issue 15 item 4]
        # A crash right here replays the batch once more: the unique key makes that a no-op.
        await self._in_thread(self.spool.ack, batch)
        self.rows_replayed += len(batch.samples)
        self.rows_written += len(batch.samples)
        self._notify()  # room for a store waiting on a full spool
        return len(batch.samples)

    async def _write_in_turns(self, rows: list[Sample]) -> None:
        """A replay batch in short transactions, a live batch free to go between any two. [spool branch]

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

    async def _spill_what_is_left(self) -> None:
        """Rows still in memory at exit (database slow or down) go to the spool, over max_bytes if need be."""
        while not self.queue.empty():
            self._take(self.queue.get_nowait())
        rows = self._pending + [sample for item in self._spill for sample in item]
        self._pending, self._spill, self._queued_rows, self._collected_rows = [], [], 0, 0
        if not rows:
            return
        try:
            await self._in_thread(functools.partial(self.spool.append, rows, force=True))
        except (SpoolError, OSError) as exc:
            self.rows_dropped += len(rows)
            log.error("spool %s: cannot store the last %d rows: %s: they are lost", self.spool.folder, len(rows), exc)
            return
        self.rows_spooled += len(rows)
        log.warning(
            "spilled the last %d rows to the spool %s (now %d rows, %d bytes): they are written after the next start",
            len(rows), self.spool.folder, self.spool.pending_rows, self.spool.size_bytes,
        )

    # --- states ---

    def _went_offline(self, exc: SinkError) -> None:
        self._ready = False
        if isinstance(exc, PermanentSinkError):  # [spool branch, issue 15 item 5]
            self._refused(exc)
        if not self._online:
            return
        self._online = False
        self._outage_started = time.monotonic()
        self._outage_rows = 0
        log.error(
            "database %s unavailable: %s; outage started, rows go to the spool %s",
            self.sink.target, exc, self.spool.folder,
        )
        self._notify()

    def _refused(self, exc: SinkError) -> None:
        """An error retrying cannot fix: counted, and an ERROR at most once a minute. [spool branch]

        The rows are spooled meanwhile, and the database is retried with the
        outage backoff (up to RETRY_MAX_S), so it is not hammered.
        """
        self.permanent_errors += 1
        now = time.monotonic()
        if self._refused_logged is not None and now - self._refused_logged < REFUSED_LOG_EVERY_S:
            return
        self._refused_logged = now
        log.error(
            "database %s refuses the rows, and retrying cannot fix it: %s; rows go to the spool %s until someone "
            "fixes it (privilege, column); %d such error(s) so far",
            self.sink.target, exc, self.spool.folder, self.permanent_errors,
        )

    def _back_online(self) -> None:
        lasted_s = time.monotonic() - (self._outage_started or time.monotonic())
        log.warning(
            "database %s is back: outage ended after %.1f s, %d rows spooled during it; "
            "%d rows (%d bytes) left to replay",
            self.sink.target, lasted_s, self._outage_rows, self.spool.pending_rows, self.spool.size_bytes,
        )
        self._online = True
        self._outage_started = None
        self._notify()

    def _pause(self, reason: str) -> None:
        if self._paused_since is not None:
            return
        self._paused_since = time.monotonic()
        self._ticks_at_pause = self.ticks_not_acquired
        log.error(
            "%s: ACQUISITION PAUSED until the spool can take rows again (spool %s: %d rows, %d bytes)",
            reason, self.spool.folder, self.spool.pending_rows, self.spool.size_bytes,
        )

    def _resume(self) -> None:
        if self._paused_since is None:
            return
        log.warning(
            "acquisition resumed after %.1f s; %d device-ticks were not acquired while paused",
            time.monotonic() - self._paused_since, self.ticks_not_acquired - self._ticks_at_pause,
        )
        self._paused_since = None

    def _log_replay_progress(self, replayed: int) -> None:
        if not replayed:
            return
        now = time.monotonic()
        if self._replay_started is None:
            self._replay_started, self._replay_logged, self._replay_rows = now, now, 0
        self._replay_rows += replayed
        elapsed_s = max(now - self._replay_started, 1e-6)
        left = self.spool.pending_rows
        if left == 0:
            log.info(
                "spool replayed: %d rows in %.1f s (%.0f rows/s); the spool is empty",
                self._replay_rows, elapsed_s, self._replay_rows / elapsed_s,
            )
            self._replay_started = None
        elif now - self._replay_logged >= PROGRESS_EVERY_S:
            log.info(
                "replaying the spool: %d rows so far (%.0f rows/s), %d rows (%d bytes) left",
                self._replay_rows, self._replay_rows / elapsed_s, left, self.spool.size_bytes,
            )
            self._replay_logged = now

    # --- helpers ---

    def _notify(self) -> None:
        """Wake everything waiting for a change (room in the spool, online, closing).

        A waiter takes ``self._change`` before it tries, then waits on that
        event: a change between the try and the wait is not missed.
        """
        self._change.set()
        self._change = asyncio.Event()

    async def _wait(self, change: asyncio.Event, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(change.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def _sleep(self, delay_s: float) -> None:
        """Sleep, but not past ``close()``."""
        await self._wait(self._closed, delay_s)

    async def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _drop(self, samples: list[Sample], reason: str) -> None:
        self.rows_dropped += len(samples)
        log.error(
            "dropped %d rows of device %s (%s); %d dropped so far",
            len(samples),
            samples[0].device_id if samples else "?",
            reason,
            self.rows_dropped,
        )
