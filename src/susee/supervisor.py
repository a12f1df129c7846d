"""Starts the pollers and the writer, stops them cleanly.

Shape: startup -> main loop (wait for a signal or the duration) -> shutdown.
Shutdown order: stop polling, let the writer flush the queue before
``shutdown_timeout``, close the Modbus links and the database.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from susee.config import Settings
from susee.devices import DevicePlan, param_rows
from susee.poller import Poller
from susee.quality import describe
from susee.sinks import Sink
from susee.ticks import Clock, TickGrid, WallClock
from susee.transport import LinkPool
from susee.writer import Writer

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0


class Supervisor:
    """Runs the whole acquisition for one site."""

    def __init__(
        self,
        settings: Settings,
        plans: list[DevicePlan],
        sink: Sink,
        clock: Clock | None = None,
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.plans = plans
        self.clock = clock or WallClock()
        self.grid = TickGrid(settings.sample_time, settings.sample_shift)
        self.writer = Writer(sink, settings.writer, param_rows(plans))
        self.links = LinkPool()
        self.pollers: list[Poller] = []
        self.shutdown_timeout_s = shutdown_timeout_s
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def run(self, duration_s: float | None = None) -> int:
        """Acquire until stopped (signal, ``stop()`` or duration); return exit code."""
        async with AsyncExitStack() as stack:
            if self.settings.simulator is not None and self.settings.simulator.enabled:
                await stack.enter_async_context(embedded_simulator(self.settings))
            self._install_signal_handlers()
            stack.callback(self._remove_signal_handlers)
            self.startup()
            try:
                await self.main_loop(duration_s)
            finally:
                await self.shutdown()
        return 0

    def startup(self) -> None:
        for plan in self.plans:
            link = self.links.link_for(plan.endpoint) if plan.profile is not None else None
            if plan.profile_error:
                log.error("device %s: driver not found: %s", plan.id, plan.profile_error)
            else:
                log.info(
                    "device %s: %s unit %d at %s, %d params in %d request(s)",
                    plan.id, plan.profile.name, plan.settings.unit, plan.endpoint, len(plan.param_ids), len(plan.blocks),
                )
            self.pollers.append(Poller(plan, link, self.grid, self.clock, self.writer.submit))
        self._writer_task = asyncio.create_task(self.writer.run(), name="writer")
        self._tasks = [asyncio.create_task(p.run(), name=f"poller-{p.plan.id}") for p in self.pollers]
        log.info(
            "sampling %d device(s) every %g s (shift %g s) into %s",
            len(self.pollers), self.settings.sample_time, self.settings.sample_shift, self.writer.sink.target,
        )

    async def main_loop(self, duration_s: float | None) -> None:
        waiters = [asyncio.create_task(self.stop_event.wait())]
        waiters.append(self._writer_task)  # a crashed writer must stop the service, not hide
        if duration_s is not None:
            waiters.append(asyncio.create_task(asyncio.sleep(duration_s)))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            if waiter is not self._writer_task:
                waiter.cancel()

    def stop(self) -> None:
        """Ask for a clean stop (signal handlers call this)."""
        self.stop_event.set()

    async def shutdown(self) -> None:
        log.info("stopping: %d rows waiting to be written", self.writer.backlog_rows)
        await self._stop_pollers()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results):
            if isinstance(result, Exception):
                log.error("%s ended with an error", task.get_name(), exc_info=result)
        self.writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer_task), self.shutdown_timeout_s)
        except asyncio.TimeoutError:
            log.error(
                "database %s did not take the last %d rows within %g s: they are lost",
                self.writer.sink.target, self.writer.backlog_rows, self.shutdown_timeout_s,
            )
            self._writer_task.cancel()
            await asyncio.gather(self._writer_task, return_exceptions=True)
        self.links.close()
        await self.writer.sink.close()
        self._log_summary()

    async def _stop_pollers(self) -> None:
        """Cancel pollers waiting for a later tick; let due and running polls finish.

        A poll in progress ends within its device's timeouts; its rows are
        acquired data and must reach the writer.
        """
        now_s = self.clock.now()
        for poller, task in zip(self.pollers, self._tasks):
            if poller.stop(now_s):
                task.cancel()
        longest_poll_s = max(
            (p.plan.settings.timeout * max(len(p.plan.blocks), 1) for p in self.pollers), default=0.0
        )
        _, pending = await asyncio.wait(self._tasks, timeout=longest_poll_s + 1.0) if self._tasks else ((), ())
        for task in pending:
            task.cancel()

    def _log_summary(self) -> None:
        for poller in self.pollers:
            stats = poller.stats
            codes = ", ".join(f"{describe(code)}={n}" for code, n in sorted(stats.codes.items())) or "none"
            log.info(
                "device %s: %d ticks, %d missed, failures: %s",
                poller.plan.id, stats.ticks, stats.missed_ticks, codes,
            )
        log.info("rows written %d, dropped %d", self.writer.rows_written, self.writer.rows_dropped)

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


def embedded_simulator(settings: Settings):
    """The in-process PAC3200 simulator of the demo (an async context manager)."""
    from susee.simulator import Pac3200Simulator, parse_units  # only sites that use it pay the import

    sim = settings.simulator
    log.info("embedded PAC3200 simulator on %s:%d, units %s", sim.host, sim.port, sim.units)
    return Pac3200Simulator(sim.host, sim.port, parse_units(sim.units), record=False)
