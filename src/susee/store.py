"""Where a batch goes: the database while it answers, the spool while it does not.

- ONLINE: a batch goes into the database. When that fails, it goes to the
  spool and the store turns OFFLINE ("outage started").
- OFFLINE: straight into the spool, with no database attempt.

The replay task probes the database with capped, jittered exponential
backoff; once it answers, the store is ONLINE again ("outage ended") and the
spool is replayed oldest first in large batches (``replay``). Live batches
take turns with replay batches on the sink, so they wait for at most one
replay batch. Every (re)connection first applies the migrations and
refreshes the params table.

When the spool cannot take rows (full with ``when_full: stop_polling``, or a
disk error) acquisition pauses: ``refuse_tick`` tells the pollers to skip
their ticks until an append succeeds again.

All spool I/O runs in one worker thread, never in the event loop, which also
keeps appends in order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from susee.replay import Replay
from susee.sample import Sample
from susee.sinks import ParamRow, PermanentSinkError, Sink, SinkError
from susee.spool import Spool, SpoolError, SpoolFull

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0  # a database back from a restart is noticed within this
RETRY_JITTER = 0.2  # +-20 %: many sites restarted together do not probe in step
# A spool that could not take a batch (full disk, disk error) is tried again after
# this: acquisition resumes within one period (sample_time >= 1 s) of space returning.
SPOOL_RETRY_S = 1.0
REFUSED_LOG_EVERY_S = 60.0  # a database error retrying cannot fix is logged this often at most


@dataclass(frozen=True)
class StoreStats:
    """A snapshot of where rows went, for the stop summary, status lines and metrics."""

    online: bool  # False during an outage: batches go to the spool
    outage_started_at: float | None  # wall time (s since the epoch) the current outage started
    outage_s: float  # how long the current outage has lasted (0 while online)
    paused: bool  # acquisition paused: the spool cannot take rows
    rows_written: int  # committed, live or replayed
    rows_spooled: int
    rows_replayed: int
    rows_dropped: int
    ticks_not_acquired: int  # device-ticks skipped while acquisition was paused
    spool_folder: Path
    spool_rows: int  # waiting in the spool for the database
    spool_bytes: int
    writes: int  # database writes that committed (live and replay batches)
    permanent_errors: int  # writes refused for a reason retrying cannot fix (privilege, column)
    last_write_s: float | None  # how long the last committed write took


class Store:
    """Puts each batch in the database while it answers, in the spool while it does not."""

    def __init__(
        self, sink: Sink, spool: Spool, params: Sequence[ParamRow] = (), *, write_timeout_s: float = 10.0
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.params = list(params)
        # A healthy database commits a batch in milliseconds. A write with no answer
        # after this is a hung server: the batch is safer in the spool than in memory,
        # and this bounds how long rows wait in memory behind it (database.write_timeout).
        self.write_timeout_s = write_timeout_s
        self.replay = Replay(spool, self._write, self._in_thread)
        self._rows_written = 0
        self._rows_spooled = 0
        self._rows_dropped = 0
        self._ticks_not_acquired = 0
        self._permanent_errors = 0  # writes refused for a reason retrying cannot fix
        self._refused_logged: float | None = None
        self._writes = 0
        self._last_write_s: float | None = None
        self._spill: list[list[Sample]] = []  # device-ticks that found the writer's queue full
        self._spilled = asyncio.Event()
        self._closed = asyncio.Event()
        self._change = asyncio.Event()  # replaced on every notify, see _notify
        self._closing = False
        self._ready = False  # connected, migrated, params refreshed
        self._prepare_lock = asyncio.Lock()
        self._prepared_once = False
        self._online = True
        self._outage_started: float | None = None  # monotonic, for its length
        self._outage_started_at: float | None = None  # wall time, for people
        self._outage_rows = 0
        self._paused_since: float | None = None
        self._ticks_at_pause = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="susee-spool")

    # --- what the writer and the pollers call ---

    def refuse_tick(self) -> bool:
        """True while acquisition is paused (spool full); counts the device-tick as not acquired."""
        if self._paused_since is None:
            return False
        self._ticks_not_acquired += 1
        return True

    def stats(self) -> StoreStats:
        """A snapshot of the counters and states."""
        started = self._outage_started
        return StoreStats(
            online=self._online,
            outage_started_at=self._outage_started_at,
            outage_s=0.0 if started is None else time.monotonic() - started,
            paused=self._paused_since is not None,
            rows_written=self._rows_written,
            rows_spooled=self._rows_spooled,
            rows_replayed=self.replay.rows_replayed,
            rows_dropped=self._rows_dropped,
            ticks_not_acquired=self._ticks_not_acquired,
            spool_folder=self.spool.folder,
            spool_rows=self.spool.pending_rows,
            spool_bytes=self.spool.size_bytes,
            writes=self._writes,
            permanent_errors=self._permanent_errors,
            last_write_s=self._last_write_s,
        )

    @property
    def spill_rows(self) -> int:
        """Rows handed to ``spill`` and not yet in the spool."""
        return sum(len(item) for item in self._spill)

    def spill(self, samples: list[Sample]) -> None:
        """Send a device-tick that found the writer's queue full to the spool; never blocks."""
        self._spill.append(samples)
        self._spilled.set()

    def drop(self, samples: list[Sample], reason: str) -> None:
        """Count and log rows that cannot be stored at all."""
        self._rows_dropped += len(samples)
        log.error(
            "dropped %d rows of device %s (%s); %d dropped so far",
            len(samples),
            samples[0].device_id if samples else "?",
            reason,
            self._rows_dropped,
        )

    async def run(
        self,
        live: Callable[[], Coroutine[Any, Any, None]] | None = None,
        leftovers: Callable[[], list[Sample]] = list,
        started: asyncio.Event | None = None,
    ) -> None:
        """Open the spool, then replay and spill until ``close()``; if cancelled, spool what is in memory first.

        ``live`` is the writer's loop, run beside the store's own tasks (a
        failure of any stops them all); ``leftovers`` gives the rows still in
        its memory at the end. Without them the store only replays its spool.
        """
        tasks: list[asyncio.Task] = []
        try:
            await self._in_thread(self.spool.open)
            if self.spool.pending_rows:
                log.warning(
                    "spool %s holds %d rows (%d bytes) from an earlier run: replaying them once the database answers",
                    self.spool.folder, self.spool.pending_rows, self.spool.size_bytes,
                )
            if live is not None:
                tasks.append(asyncio.create_task(live(), name="writer-write"))
            tasks.append(asyncio.create_task(self._replay_loop(), name="writer-replay"))
            tasks.append(asyncio.create_task(self._spill_loop(), name="writer-spill"))
            if started is not None:
                started.set()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed loop stops the writer, and the service with it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._spill_what_is_left(leftovers() + [sample for item in self._spill for sample in item])
            self._spill = []
            await self._in_thread(self.spool.close)
            self._executor.shutdown(wait=False)

    def close(self) -> None:
        """Stop: waiters wake up, the tasks of ``open`` return."""
        self._closing = True
        self._closed.set()
        self._spilled.set()
        self._notify()

    async def put(self, rows: list[Sample]) -> bool:
        """Into the database when online, else into the spool; wait while neither can take them.

        False only when closing and neither could: the caller keeps the rows for ``finish``.
        """
        while True:
            change = self._change
            if self._online:
                try:
                    await self._write(rows)
                except SinkError as exc:
                    self._went_offline(exc)
                else:
                    self._rows_written += len(rows)
                    self._resume()
                    return True
            if await self._append(rows):
                return True
            if self._closing:
                return False
            await self._wait(change, SPOOL_RETRY_S)

    # --- the database ---

    async def _write(self, rows: Sequence[Sample], **last: Sequence[Sample]) -> None:
        if not self._ready:
            await self._prepare()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.sink.write(rows, **last), self.write_timeout_s)
        except asyncio.TimeoutError as exc:
            # Cancelled mid-commit, the batch may be stored AND spooled: the unique key absorbs that.
            raise SinkError(f"{self.sink.target}: no answer to a write within {self.write_timeout_s:g} s") from exc
        self._last_write_s = time.perf_counter() - started
        self._writes += 1

    async def _prepare(self) -> None:
        """Connect, apply migrations and refresh the params table (once per connection)."""
        async with self._prepare_lock:
            if self._ready:
                return
            # The first preparation may upgrade a large seed-era table (minutes);
            # later ones only find the schema current, and must not hang a probe.
            timeout_s = self.write_timeout_s if self._prepared_once else None
            try:
                await asyncio.wait_for(self._prepare_sink(), timeout_s)
            except asyncio.TimeoutError as exc:
                raise SinkError(f"{self.sink.target}: no answer within {self.write_timeout_s:g} s") from exc
            self._ready = self._prepared_once = True

    async def _prepare_sink(self) -> None:
        await self.sink.open()
        for line in await self.sink.migrate():
            log.info("database %s: %s", self.sink.target, line)
        if self.params:
            await self.sink.upsert_params(self.params)

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
                if not self._ready:
                    await self._prepare()  # during an outage, this is the probe
                replayed = await self.replay.batch()
            except SinkError as exc:
                self._went_offline(exc)
                continue
            except (SpoolError, OSError) as exc:
                log.error("spool %s: cannot replay: %s; trying again in %g s", self.spool.folder, exc, SPOOL_RETRY_S)
                await self._sleep(SPOOL_RETRY_S)
                continue
            if replayed:
                self._rows_written += replayed
                self._notify()  # room for a store waiting on a full spool
            if not self._online:
                self._back_online()
            delay_s = RETRY_FIRST_S
            self.replay.log_progress(replayed)
            await asyncio.sleep(0)  # a live batch waiting for the sink goes next

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
            if self._paused_since is None:  # once, not on every retry
                log.error("spool %s: cannot store %d rows: %s", self.spool.folder, len(rows), exc)
            self._pause("the spool cannot be written")
            return False
        self._rows_spooled += len(rows)
        if dropped:
            self._rows_dropped += dropped
            log.error(
                "spool %s reached max_bytes %d: dropped the %d oldest rows to keep the newest (when_full: "
                "drop_oldest); %d rows dropped so far",
                self.spool.folder, self.spool.max_bytes, dropped, self._rows_dropped,
            )
        self._resume()
        self._notify()
        return True

    async def _spill_what_is_left(self, rows: list[Sample]) -> None:
        """Rows still in memory at exit (database slow or down) go to the spool, over max_bytes if need be."""
        if not rows:
            return
        try:
            await self._in_thread(functools.partial(self.spool.append, rows, force=True))
        except (SpoolError, OSError) as exc:
            self._rows_dropped += len(rows)
            log.error("spool %s: cannot store the last %d rows: %s: they are lost", self.spool.folder, len(rows), exc)
            return
        self._rows_spooled += len(rows)
        log.warning(
            "spilled the last %d rows to the spool %s (now %d rows, %d bytes): they are written after the next start",
            len(rows), self.spool.folder, self.spool.pending_rows, self.spool.size_bytes,
        )

    # --- states ---

    def _went_offline(self, exc: SinkError) -> None:
        self._ready = False
        if isinstance(exc, PermanentSinkError):
            self._refused(exc)
        if not self._online:
            return
        self._online = False
        self._outage_started = time.monotonic()
        self._outage_started_at = time.time()
        self._outage_rows = 0
        log.error(
            "database %s unavailable: %s; outage started, rows go to the spool %s",
            self.sink.target, exc, self.spool.folder,
        )
        self._notify()

    def _refused(self, exc: SinkError) -> None:
        """An error retrying cannot fix: counted, and an ERROR at most once a minute.

        The rows are spooled meanwhile, and the database is retried with the
        outage backoff (up to RETRY_MAX_S), so it is not hammered.
        """
        self._permanent_errors += 1
        now = time.monotonic()
        if self._refused_logged is not None and now - self._refused_logged < REFUSED_LOG_EVERY_S:
            return
        self._refused_logged = now
        log.error(
            "database %s refuses the rows, and retrying cannot fix it: %s; rows go to the spool %s until someone "
            "fixes it (privilege, column); %d such error(s) so far",
            self.sink.target, exc, self.spool.folder, self._permanent_errors,
        )

    def _back_online(self) -> None:
        lasted_s = time.monotonic() - (self._outage_started or time.monotonic())
        log.warning(
            "database %s is back: outage ended after %.1f s, %d rows spooled during it; "
            "%d rows (%d bytes) left to replay",
            self.sink.target, lasted_s, self._outage_rows, self.spool.pending_rows, self.spool.size_bytes,
        )
        self._online = True
        self._outage_started = self._outage_started_at = None
        self._notify()

    def _pause(self, reason: str) -> None:
        if self._paused_since is not None:
            return
        self._paused_since = time.monotonic()
        self._ticks_at_pause = self._ticks_not_acquired
        log.error(
            "%s: ACQUISITION PAUSED until the spool can take rows again (spool %s: %d rows, %d bytes)",
            reason, self.spool.folder, self.spool.pending_rows, self.spool.size_bytes,
        )

    def _resume(self) -> None:
        if self._paused_since is None:
            return
        log.warning(
            "acquisition resumed after %.1f s; %d device-ticks were not acquired while paused",
            time.monotonic() - self._paused_since, self._ticks_not_acquired - self._ticks_at_pause,
        )
        self._paused_since = None

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
