"""The service's HTTP endpoint: live page, JSON API, health checks and Prometheus metrics.

Needs the ``web`` extra (aiohttp, prometheus-client). ``LiveView`` is made
before the supervisor (it taps the pollers' samples and times the sink's
writes) and serves around the supervisor's run, on the service's own loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from susee.config import ConfigError, Settings, host_port
from susee.web.app import build_app
from susee.web.consumption import Consumption, check_tariff
from susee.web.reads import Reads
from susee.web.shares import SharesState, worker_snapshot
from susee.web.state import Fleet, SiteState, Tap, TimedSink, power_params

log = logging.getLogger(__name__)


class LiveView:
    """The HTTP endpoint of one site."""

    def __init__(self, settings: Settings, plans) -> None:
        self.settings = settings
        check_tariff(settings)  # a bad http.tariff is a config error: before anything starts
        self.tap = Tap(power_params(plans))
        self.sink: TimedSink | None = None

    def timed(self, sink):
        """``sink`` with its writes timed for the write-latency metric; give this one to the supervisor."""
        self.sink = TimedSink(sink)
        return self.sink

    def site_state(self, supervisor) -> SiteState:
        """The view of a site polled in this process."""
        return SiteState(supervisor, self.tap, self.sink)

    def shares_state(self, plans, workers) -> SharesState:
        """The parent's view of a site polled by ``workers`` (``susee.workers.Workers``)."""
        return SharesState(plans, self.settings.sample_time, workers.ask_states, lambda: workers.stopping)

    def reporter(self, supervisor) -> Callable[[int], Awaitable[None]]:
        """In a worker: answers the parent's "state <n>" with this worker's snapshot on stdout."""
        state = self.site_state(supervisor)

        def write(seq: int) -> None:
            sys.stdout.buffer.write(worker_snapshot(state, seq))
            sys.stdout.buffer.flush()

        async def report(seq: int) -> None:
            await asyncio.to_thread(write, seq)  # ~10 ms at 2,500 devices: not on the polling loop

        return report

    @asynccontextmanager
    async def serving(self, state: Fleet) -> AsyncIterator[str]:
        """Listen on ``http.listen`` while the block runs; yield the page's URL.

        ConfigError naming the address when it cannot listen (port in use,
        address not on this machine): before anything else starts.
        """
        http = self.settings.http
        reads = Reads(self.settings)
        consumption = Consumption(self.settings)
        runner = web.AppRunner(build_app(state, reads, http.token, consumption), access_log=None,
                               handle_signals=False)
        await runner.setup()
        host, port = host_port(http.listen)
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            await consumption.close()
            await reads.close()
            raise ConfigError(f"http.listen {http.listen}: cannot listen: {exc.strerror or exc}") from None
        bound_host, bound_port = runner.addresses[0][:2]
        url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}/"
        log.info("live view, health and metrics on %s%s", url, " (token required)" if http.token else "")
        try:
            yield url
        finally:
            await runner.cleanup()
            await consumption.close()
            await reads.close()
