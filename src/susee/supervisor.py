"""Starts the pollers and the writer, stops them cleanly.

Shape: startup -> main loop (wait for a signal or the duration) -> shutdown.
Shutdown order: stop polling, let the writer flush the queue before
``shutdown_timeout``, spill what is left to the spool, close the Modbus links
and the database. A second signal skips the waiting and spills at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path

from susee.config import Settings
from susee.devices import DevicePlan, param_rows
from susee.poller import Poller, PollReports
from susee.quality import describe
from susee.shown import SHOWN, first_few
from susee.sinks import Sink
from susee.spool import Spool, open_spool
from susee.ticks import Clock, TickGrid, WallClock
from susee.transport import LinkPool
from susee.writer import Writer

log = logging.getLogger(__name__)

DEFAULT_SPOOL = Path("spool")  # without a config file (tests, embedding): relative to the working folder
# The collector's young generation runs when this many more objects were
# allocated than freed: above what one tick keeps in flight (a PAC3200
# device-tick: 8 samples, their lists, answers and futures, ~20 objects, held
# until the writer has stored them), so that a busy tick alone never runs it.
YOUNG_OBJECTS_PER_DEVICE = 20
YOUNG_GC_THRESHOLD = 50_000


class Supervisor:
    """Runs the whole acquisition for one site."""

    def __init__(
        self,
        settings: Settings,
        plans: list[DevicePlan],
        sink: Sink,
        clock: Clock | None = None,
        shutdown_timeout_s: float | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.handle_signals = handle_signals  # False in a worker: its parent tells it when to stop
        self.settings = settings
        self.plans = plans
        self.clock = clock or WallClock()
        self.grid = TickGrid(settings.sample_time, settings.sample_shift)
        spool = settings.spool
        self.writer = Writer(
            sink, settings.writer, param_rows(plans),
            spool=Spool(spool.path or DEFAULT_SPOOL, spool.max_bytes, spool.when_full,
                        destination=settings.database_target().identity(settings.job_id)),  # [spool branch]
            devices=len(plans),
        )
        self.reports = PollReports(self.grid.period_s)  # overruns and errors: one line per period, not per device
        self.links = LinkPool()
        self.pollers: list[Poller] = []
        self.shutdown_timeout_s = settings.shutdown_timeout if shutdown_timeout_s is None else shutdown_timeout_s
        self.stop_event = asyncio.Event()
        self.hurry_event = asyncio.Event()  # asked to stop twice: spill to the spool, wait for nothing
        self._tasks: list[asyncio.Task] = []

    async def run(self, duration_s: float | None = None) -> int:
        """Acquire until stopped (signal, ``stop()`` or duration); return exit code."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(embedded_simulator(self.settings))
            if self.handle_signals:
                self._install_signal_handlers()
                stack.callback(self._remove_signal_handlers)
            await open_spool(self.writer.spool)  # [spool branch, issue 15] locked before sampling
            self.startup()
            thresholds = gc.get_threshold()
            _freeze_long_lived_objects(len(self.plans))
            try:
                await self.main_loop(duration_s)
            finally:
                await self.shutdown()
                gc.unfreeze()  # an embedding process (tests) gets its objects collectable again
                gc.set_threshold(*thresholds)
        return 0

    def startup(self) -> None:
        for plan in self.plans:
            link = (
                self.links.link_for(plan.endpoint, plan.settings.inter_request_delay)
                if plan.profile is not None else None
            )
            poller = Poller(plan, link, self.grid, self.clock, self.writer.submit, self.reports)
            poller.paused = self.writer.refuse_tick  # spool full (stop_polling): ticks are not read
            self.pollers.append(poller)
        self._log_devices()
        self.links.open_all()  # open-files limit for one descriptor per bus; connect ahead of the first tick
        self._writer_task = asyncio.create_task(self.writer.run(), name="writer")
        self._tasks = [asyncio.create_task(p.run(), name=f"poller-{p.plan.id}") for p in self.pollers]
        log.info(
            "sampling %d device(s) every %g s (shift %g s) into %s",
            len(self.pollers), self.settings.sample_time, self.settings.sample_shift, self.writer.sink.target,
        )

    def _log_devices(self) -> None:
        """What start-up found, in a few lines however many devices: each one only at DEBUG."""
        missing = [plan for plan in self.plans if plan.profile_error]
        for plan in self.plans:
            if plan.profile is not None:
                log.debug(
                    "device %s: %s unit %d at %s, %d params in %d request(s)",
                    plan.id, plan.profile.name, plan.settings.unit, plan.endpoint, len(plan.param_ids), len(plan.blocks),
                )
            elif len(missing) > SHOWN:
                log.debug("device %s: driver not found: %s", plan.id, plan.profile_error)
        log.info("%d device(s) on %d bus(es): %s", len(self.plans), len(self.links), profile_summary(self.plans))
        if len(missing) <= SHOWN:  # a few: each is something to fix, name it with its reason
            for plan in missing:
                log.error("device %s: driver not found: %s", plan.id, plan.profile_error)
            return
        by_reason: dict[str, list[str]] = {}
        for plan in missing:
            by_reason.setdefault(plan.profile_error, []).append(plan.id)
        for reason, ids in by_reason.items():
            log.error("%d device(s): driver not found: %s: %s", len(ids), reason, first_few(ids))

    async def main_loop(self, duration_s: float | None) -> None:
        waiters = [asyncio.create_task(self.stop_event.wait())]
        waiters.append(self._writer_task)  # a crashed writer must stop the service, not hide
        if duration_s is not None:
            waiters.append(asyncio.create_task(asyncio.sleep(duration_s)))
        freeze = asyncio.create_task(self._freeze_after_first_tick(), name="gc-freeze")
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        freeze.cancel()
        for waiter in waiters:
            if waiter is not self._writer_task:
                waiter.cancel()

    async def _freeze_after_first_tick(self) -> None:
        """Freeze once more when every device has polled a tick: its connection exists by then.

        Thousands of connections are long-lived objects too; start-up cannot
        freeze them, they are made by the first tick. No collection first: that
        would pause the loop during acquisition.
        """
        while not all(poller.stats.ticks for poller in self.pollers):
            await asyncio.sleep(self.grid.period_s)
        gc.freeze()

    def stop(self) -> None:
        """Ask for a clean stop (signal handlers call this); asked again, stop at once."""
        if self.stop_event.is_set() and not self.hurry_event.is_set():
            log.warning("asked again to stop: not waiting for polls or the database, spilling to the spool")
            self.hurry_event.set()
            for task in self._tasks:
                task.cancel()
        self.stop_event.set()

    async def shutdown(self) -> None:
        self.stop_event.set()  # stopped by the duration too: a signal from now on means hurry
        log.info("stopping: %d rows waiting to be written", self.writer.backlog_rows)
        await self._stop_pollers()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results):
            if isinstance(result, Exception):
                log.error("%s ended with an error", task.get_name(), exc_info=result)
        self.reports.flush()
        self.writer.close()
        hurry = asyncio.create_task(self.hurry_event.wait())
        done, _ = await asyncio.wait(
            [self._writer_task, hurry], timeout=self.shutdown_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        hurry.cancel()
        if self._writer_task not in done:
            # Cancelling the writer makes it spill everything still in memory to the spool.
            log.warning(
                "database %s has not taken the last %d rows (shutdown_timeout %g s or a second signal): "
                "spilling them to the spool",
                self.writer.sink.target, self.writer.backlog_rows, self.shutdown_timeout_s,
            )
            self._writer_task.cancel()
        await asyncio.gather(self._writer_task, return_exceptions=True)
        self.links.close()
        await self.writer.sink.close()
        self._log_summary()
        if not self._writer_task.cancelled() and self._writer_task.exception() is not None:
            raise self._writer_task.exception()  # a crashed writer is an error, not a clean stop

    async def _stop_pollers(self) -> None:
        """Cancel pollers waiting for a later tick; let due and running polls finish.

        A poll in progress ends within its device's timeouts; its rows are
        acquired data and must reach the writer.
        """
        now_s = self.clock.now()
        for poller, task in zip(self.pollers, self._tasks):
            if poller.stop(now_s):
                task.cancel()
        _, pending = await asyncio.wait(self._tasks, timeout=self._longest_tick_s() + 1.0) if self._tasks else ((), ())
        for task in pending:
            task.cancel()

    def _longest_tick_s(self) -> float:
        """Worst-case time for one tick of the slowest bus.

        Devices on a bus take turns, so a poll may wait for every other
        device's requests on it: the bound is the sum over the bus.
        """
        per_bus: dict[tuple, float] = {}
        for poller in self.pollers:
            plan = poller.plan
            if plan.profile is None:
                continue
            requests = max(len(plan.blocks), 1)
            worst_s = requests * (plan.settings.timeout + plan.settings.inter_request_delay)
            key = plan.endpoint.bus_key
            per_bus[key] = per_bus.get(key, 0.0) + worst_s
        return max(per_bus.values(), default=0.0)

    def _log_summary(self) -> None:
        """At stop: totals over all devices; each device with failures or missed ticks named, in few lines."""
        troubled = [p for p in self.pollers if p.stats.codes or p.stats.missed_ticks]
        named_each = len(troubled) <= SHOWN
        codes: dict[int, int] = {}
        for poller in self.pollers:
            stats = poller.stats
            for code, count in stats.codes.items():
                codes[code] = codes.get(code, 0) + count
            level = logging.INFO if named_each and poller in troubled else logging.DEBUG
            log.log(
                level, "device %s: %d ticks, %d missed, %d skipped in backoff, failures: %s",
                poller.plan.id, stats.ticks, stats.missed_ticks, stats.skipped_polls, _describe_codes(stats.codes),
            )
        log.info(
            "%d device(s): %d ticks, %d missed, %d skipped in backoff, failures: %s%s",
            len(self.pollers), sum(p.stats.ticks for p in self.pollers), sum(p.stats.missed_ticks for p in self.pollers),
            sum(p.stats.skipped_polls for p in self.pollers), _describe_codes(codes),
            f" (devices with failures or missed ticks: {first_few(p.plan.id for p in troubled)})"
            if troubled and not named_each else "",
        )
        writer = self.writer
        log.info(
            "rows written %d, dropped %d, spooled %d, replayed %d; spool %s holds %d rows (%d bytes)",
            writer.rows_written, writer.rows_dropped, writer.rows_spooled, writer.rows_replayed,
            writer.spool.folder, writer.spool.pending_rows, writer.spool.size_bytes,
        )
        if writer.ticks_not_acquired:
            log.warning("%d device-ticks were not acquired while the spool was full", writer.ticks_not_acquired)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(signum)
            except (NotImplementedError, RuntimeError):
                pass

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self.stop)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass


def _describe_codes(codes: dict[int, int]) -> str:
    return ", ".join(f"{describe(code)}={n}" for code, n in sorted(codes.items())) or "none"


def profile_summary(plans: list[DevicePlan]) -> str:
    """Devices per profile, most first: "4990 pac3200 (2 request(s) each), 10 sdm630 (1-3 request(s) each)"."""
    requests: dict[str, list[int]] = {}
    without_driver = 0
    for plan in plans:
        if plan.profile is None:
            without_driver += 1
        else:
            requests.setdefault(plan.profile.name, []).append(len(plan.blocks))
    parts = []
    for name, counts in sorted(requests.items(), key=lambda item: (-len(item[1]), item[0])):
        low, high = min(counts), max(counts)
        each = f"{low}" if low == high else f"{low}-{high}"
        parts.append(f"{len(counts)} {name} ({each} request(s) each)")
    if without_driver:
        parts.append(f"{without_driver} without a driver")
    return ", ".join(parts) or "none"


def _freeze_long_lived_objects(devices: int) -> None:
    """Keep the garbage collector off the hot path: freeze what start-up built, and collect rarely.

    A site of thousands of meters holds hundreds of thousands of objects that
    live as long as the process (settings, profiles, plans, pollers); every
    full collection would traverse them all, pausing the loop for 100-200 ms.
    Frozen, they are never traversed again (they are still freed normally if
    they ever become garbage without a cycle); the connections are frozen
    after the first tick (``_freeze_after_first_tick``).

    What acquisition makes afterwards (samples, answers, batches) is freed by
    reference counting, but a sample lives about a second, queued for the
    writer: with the default young-generation threshold (700 objects more
    allocated than freed) the collector ran some 25 times a second at 1,000
    meters and traversed every sample in flight, ~5 ms of CPU a second (5 µs
    per device-tick, measured with gc.callbacks). With the threshold above
    the number of objects a tick keeps in flight, it runs a few times a
    minute: the only garbage it is there for, reference cycles (an exception
    and its traceback), waits a little longer, bounded by the threshold.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(max(YOUNG_GC_THRESHOLD, YOUNG_OBJECTS_PER_DEVICE * devices), middle, oldest)


def embedded_simulator(settings: Settings):
    """The in-process PAC3200 simulator of the demo, or a no-op when none is configured.

    Either way an async context manager, so callers just enter it.
    """
    sim = settings.simulator
    if sim is None or not sim.enabled:
        return nullcontext()
    from susee.simulator import Pac3200Simulator, parse_units  # only sites that use it pay the import

    log.info("embedded PAC3200 simulator on %s:%d, units %s", sim.host, sim.port, sim.units)
    return Pac3200Simulator(sim.host, sim.port, parse_units(sim.units), record=False)
