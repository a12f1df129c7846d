"""Starts the pollers and the writer, stops them cleanly.

Shape: startup -> main loop (wait for a signal or the duration) -> shutdown.
Shutdown order: stop polling, let the writer flush the queue before
``shutdown_timeout``, spill what is left to the spool, close the Modbus links
and the database. A second signal skips the waiting and spills at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from susee.bus_key import BusKey
from susee.config import Settings
from susee.devices import DevicePlan, param_rows
from susee.poller import Emit, Poller, PollReports
from susee.quality import describe
from susee.runtime import freeze_after_first_tick, quiet_collector
from susee.shown import SHOWN, first_few
from susee.simulator import embedded_simulator
from susee.sinks import Sink
from susee.spool import Spool, open_spool
from susee.status import Status
from susee.ticks import Clock, TickGrid, WallClock
from susee.links.pool import LinkPool
from susee.store import Store
from susee.writer import Writer

log = logging.getLogger(__name__)

DEFAULT_SPOOL = Path("spool")  # without a config file (tests, embedding): relative to the working folder


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
        observe: Callable[[Emit], Emit] | None = None,  # [web] the live view's tap on the pollers' samples
    ) -> None:
        self.observe = observe  # [web]
        self.handle_signals = handle_signals  # False in a worker: its parent tells it when to stop
        self.settings = settings
        self.plans = plans
        self.clock = clock or WallClock()
        self.grid = TickGrid(settings.sample_time, settings.sample_shift)
        spool = settings.spool
        self.sink = sink
        self.store = Store(
            sink,
            Spool(spool.path or DEFAULT_SPOOL, spool.max_bytes, spool.when_full,
                  destination=settings.database_target().identity(settings.job_id)),  # [spool branch]
            param_rows(plans),
            write_timeout_s=settings.database.write_timeout,
        )
        self.writer = Writer(self.store, settings.writer, devices=len(plans))
        self.reports = PollReports(self.grid.period_s)  # overruns and errors: one line per period, not per device
        self.status = Status(len(plans), self.store.stats)  # the status line
        self._status_task: asyncio.Task | None = None
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
            await open_spool(self.store.spool)  # [spool branch, issue 15] locked before sampling
            self.startup()
            with quiet_collector(len(self.plans)):
                try:
                    await self.main_loop(duration_s)
                finally:
                    await self.shutdown()
        return 0

    def startup(self) -> None:
        submit = self.status.observing(self.writer.submit)  # firsthour: each device-tick counted for the status line
        if self.observe is not None:  # [web] the live view's tap, after the status line's
            submit = self.observe(submit)
        for plan in self.plans:
            link = (
                self.links.link_for(plan.endpoint, plan.settings.inter_request_delay)
                if plan.profile is not None else None
            )
            # Spool full (stop_polling): ticks are not read, the store counts them.
            poller = Poller(plan, link, self.grid, self.clock, submit, self.reports, self.store.refuse_tick)
            self.pollers.append(poller)
        self._log_devices()
        self.links.open_all()  # open-files limit for one descriptor per bus; connect ahead of the first tick
        self._writer_task = asyncio.create_task(self.writer.run(), name="writer")
        self._tasks = [asyncio.create_task(p.run(), name=f"poller-{p.plan.id}") for p in self.pollers]
        if self.settings.status_every > 0:  # firsthour
            self._status_task = asyncio.create_task(self.status.run(self.clock, self.settings.status_every), name="status")
        log.info(
            "sampling %d device(s) every %g s (shift %g s) into %s",
            len(self.pollers), self.settings.sample_time, self.settings.sample_shift, self.sink.target,
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
        freeze = asyncio.create_task(
            freeze_after_first_tick(lambda: all(p.stats.ticks for p in self.pollers), self.grid.period_s),
            name="gc-freeze",
        )
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        freeze.cancel()
        for waiter in waiters:
            if waiter is not self._writer_task:
                waiter.cancel()

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
        log.info("stopping: %d rows waiting to be written", self.writer.stats().backlog_rows)
        await self._stop_pollers()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results):
            if isinstance(result, Exception):
                log.error("%s ended with an error", task.get_name(), exc_info=result)
        self.reports.flush()
        if self._status_task is not None:  # firsthour
            self._status_task.cancel()
            await asyncio.gather(self._status_task, return_exceptions=True)
        self.status.flush_changes()
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
                self.sink.target, self.writer.stats().backlog_rows, self.shutdown_timeout_s,
            )
            self._writer_task.cancel()
        await asyncio.gather(self._writer_task, return_exceptions=True)
        self.links.close()
        await self.sink.close()
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
        per_bus: dict[BusKey, float] = {}
        for poller in self.pollers:
            plan = poller.plan
            if plan.profile is None:
                continue
            requests = max(len(plan.blocks), 1)
            worst_s = requests * (plan.settings.timeout + plan.settings.inter_request_delay)
            key = plan.endpoint.bus
            per_bus[key] = per_bus.get(key, 0.0) + worst_s
        return max(per_bus.values(), default=0.0)

    def _log_summary(self) -> None:
        """At stop: totals over all devices; each device with failures or missed ticks named, in few lines."""
        polled = [(poller.plan.id, poller.snapshot()) for poller in self.pollers]
        troubled = [device_id for device_id, stats in polled if stats.codes or stats.missed_ticks]
        named_each = len(troubled) <= SHOWN
        codes: dict[int, int] = {}
        for device_id, stats in polled:
            for code, count in stats.codes.items():
                codes[code] = codes.get(code, 0) + count
            level = logging.INFO if named_each and device_id in troubled else logging.DEBUG
            log.log(
                level, "device %s: %d ticks, %d missed, %d skipped in backoff, failures: %s",
                device_id, stats.ticks, stats.missed_ticks, stats.skipped_polls, _describe_codes(stats.codes),
            )
        log.info(
            "%d device(s): %d ticks, %d missed, %d skipped in backoff, failures: %s%s",
            len(polled), sum(s.ticks for _, s in polled), sum(s.missed_ticks for _, s in polled),
            sum(s.skipped_polls for _, s in polled), _describe_codes(codes),
            f" (devices with failures or missed ticks: {first_few(troubled)})"
            if troubled and not named_each else "",
        )
        stored = self.store.stats()
        log.info(
            "rows written %d, dropped %d, spooled %d, replayed %d; spool %s holds %d rows (%d bytes)",
            stored.rows_written, stored.rows_dropped, stored.rows_spooled, stored.rows_replayed,
            stored.spool_folder, stored.spool_rows, stored.spool_bytes,
        )
        if stored.ticks_not_acquired:
            log.warning("%d device-ticks were not acquired while the spool was full", stored.ticks_not_acquired)

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
