"""The one adapter between the running service and what the web shows.

Everything the page, the API and the metrics know about the running service
comes from :class:`SiteState`, as frozen snapshots taken when someone asks
(a scrape, a page refresh), never from the hot path: ``Poller.snapshot()``,
``Writer.stats()`` (with the store's), read in ``_poller_counts`` and
``_writer_view`` only.

Two things the service does not keep are taken here, cheaply:

- :class:`Tap` wraps the pollers' ``emit``: per device-tick it keeps the
  tick's time, Delay, Code and active power, the time of the last good tick,
  and one count in a fixed-bucket Delay histogram
  that is never reset (Prometheus wants it cumulative; the status line's
  histogram is reset at each line): about a microsecond per device-tick.
- :class:`TimedSink` wraps the sink to time each batch write (the store
  keeps only the last write's time).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from susee import __version__
from susee.quality import Code, describe

if TYPE_CHECKING:
    from susee.devices import DevicePlan
    from susee.sample import Sample
    from susee.supervisor import Supervisor

# Fleet-wide Delay histogram (ms): the tick's last answer, per device-tick.
# Fixed bounds from "on time" to "a timeout"; Prometheus wants seconds.
DELAY_BOUNDS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
POWER_ACRONYM = "P_TOT"  # the "active power now" column: every bundled profile names total power so
WRITE_BOUNDS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CODE_BITS = tuple(int(bit) for bit in Code if bit)  # plain ints: iterating an IntFlag is slow
GOOD, FAILING, BACKED_OFF, NO_PROFILE, WAITING = "good", "failing", "backed off", "profile missing", "waiting"
STATUSES = (GOOD, FAILING, BACKED_OFF, NO_PROFILE, WAITING)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per upper bound (non-cumulative, last one = above every bound), their sum and total."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device as the page and the metrics see it."""

    id: str
    profile: str | None
    tags: dict[str, str]
    status: str
    code: int  # OR of the Codes of its last tick
    polls: int
    missed_ticks: int
    skipped_polls: int
    failures: dict[int, int]  # failed reads per Code bit
    last_tick_s: float | None
    last_good_s: float | None
    delay_ms: float | None
    power_w: float | None

    @property
    def problem(self) -> str:
        """The Code bits of its last tick in words ('' when good)."""
        return describe(self.code) if self.code else ""


@dataclass(frozen=True, slots=True)
class SiteView:
    """The whole site: database, spool, writer and fleet totals."""

    version: str
    started_s: float
    now_s: float
    period_s: float
    stopping: bool
    database: str  # where rows go (password masked)
    online: bool
    outage_since_s: float | None
    paused: bool  # spool full with stop_polling, or not writable: rows have nowhere to go
    queue_rows: int
    rows_written: int
    rows_spooled: int
    rows_replayed: int
    rows_dropped: int
    spool_rows: int
    spool_bytes: int
    devices: int
    last_poll_s: float | None  # the newest tick any device finished
    write_latency: Histogram
    delay: Histogram
    notes: tuple[str, ...] = ()  # what else keeps the site from being ready (e.g. a worker not answering)


class Tap:
    """Keeps what the page needs from each device-tick on its way to the writer.

    Per device only scalars of its newest tick, never the samples themselves:
    holding a second of samples beyond their trip to the writer made the
    collector's young generation traverse them again and again (measured:
    +6 to +9 µs of CPU per device-tick at 1,000 meters, against ~1 µs for this).
    """

    def __init__(self, power_params: dict[str, str | None]) -> None:
        self.power_params = power_params  # device id -> its "active power now" param, from the plans
        self.last: dict[str, tuple[float, float, int, float | None]] = {}  # device -> (tick, Delay ms, Code OR, power)
        self.last_good_s: dict[str, float] = {}
        self.delay_counts = [0] * (len(DELAY_BOUNDS_MS) + 1)
        self.delay_sum_ms = [0.0]  # a list: the closure below adds to it without a nonlocal lookup
        self.newest_tick_s = [0.0]

    def wrap(self, emit: Callable[[list[Sample]], None]) -> Callable[[list[Sample]], None]:
        """``emit`` plus the bookkeeping; what the pollers call instead of ``emit``."""
        last, good, counts, delay_sum, newest, power_params = (
            self.last, self.last_good_s, self.delay_counts, self.delay_sum_ms, self.newest_tick_s, self.power_params)
        bounds = DELAY_BOUNDS_MS

        def tapped(samples: list[Sample]) -> None:
            emit(samples)
            if not samples:
                return
            device_id, _, tick_s, _, delay, _ = samples[-1]  # answered last: its Delay is the tick's
            power_id = power_params.get(device_id)
            code = 0
            power = None
            for sample in samples:  # plain indexes: a NamedTuple's names cost a call each
                code |= sample[5]
                if sample[1] == power_id:
                    power = sample[3]
            last[device_id] = (tick_s, delay, code, power)
            counts[bisect_left(bounds, delay)] += 1
            delay_sum[0] += delay
            if tick_s > newest[0]:
                newest[0] = tick_s
            if not code:
                good[device_id] = tick_s

        return tapped


class TimedSink:
    """A sink whose ``write`` is timed into a histogram; everything else passes through."""

    def __init__(self, sink) -> None:
        self._sink = sink
        self.write_counts = [0] * (len(WRITE_BOUNDS_S) + 1)
        self.write_sum_s = 0.0

    def __getattr__(self, name: str):
        return getattr(self._sink, name)

    async def write(self, samples, *, last=None) -> None:
        """The sink's ``write`` (``last``: the replay's source of Last rows, see ``Sink.write``), timed."""
        started = time.perf_counter()
        try:
            await self._sink.write(samples, last=last)
        finally:
            elapsed = time.perf_counter() - started
            self.write_counts[bisect_left(WRITE_BOUNDS_S, elapsed)] += 1
            self.write_sum_s += elapsed


class Fleet:
    """What the configuration says about the devices: shared by the one-process and the workers' views."""

    def __init__(self, plans: Sequence[DevicePlan], period_s: float) -> None:
        self.plans = list(plans)
        self.period_s = period_s
        self.started_s = time.time()
        self._plans = {plan.id: plan for plan in self.plans}
        self._power = power_params(self.plans)
        # What never changes, per device in configuration order (the pollers' order too).
        self._static = [
            (plan.id, plan.profile.name if plan.profile else None,
             dict(getattr(plan.settings, "tags", None) or {}),  # device tags arrive with the report branch
             self._power[plan.id])
            for plan in self.plans
        ]

    async def refresh(self) -> None:
        """Bring the snapshots up to date before a request reads them (nothing to do in one process)."""

    def plan(self, device_id: str) -> DevicePlan | None:
        return self._plans.get(device_id)

    def rows_per_s(self) -> dict[str, float]:
        """Rows each device should store per second (its params / the period): completeness' denominator."""
        return {plan.id: len(plan.param_ids) / self.period_s for plan in self.plans if plan.profile is not None}

    def power_param(self, device_id: str) -> str | None:
        """The param shown as "active power now" (acronym P_TOT), if the device reads one."""
        return self._power.get(device_id)


class SiteState(Fleet):
    """Snapshots of one supervisor's site for the web (see the module doc)."""

    def __init__(self, supervisor: Supervisor, tap: Tap, sink: TimedSink | None = None) -> None:
        super().__init__(supervisor.plans, supervisor.grid.period_s)
        self.supervisor = supervisor
        self.tap = tap
        self.sink = sink

    @property
    def stopping(self) -> bool:
        return self.supervisor.stop_event.is_set()

    @property
    def database_online(self) -> bool:
        return self.supervisor.writer.stats().store.online

    def site(self) -> SiteView:
        writer = self.supervisor.writer
        view = _writer_view(writer)
        return SiteView(
            version=__version__, started_s=self.started_s, now_s=time.time(),
            period_s=self.period_s, stopping=self.stopping,
            database=str(self.supervisor.sink.target), devices=len(self.supervisor.plans),
            last_poll_s=self.tap.newest_tick_s[0] or None,
            write_latency=Histogram(WRITE_BOUNDS_S, tuple(self.sink.write_counts), self.sink.write_sum_s)
            if self.sink is not None else Histogram(WRITE_BOUNDS_S, (0,) * (len(WRITE_BOUNDS_S) + 1), 0.0),
            delay=Histogram(tuple(b / 1000.0 for b in DELAY_BOUNDS_MS), tuple(self.tap.delay_counts),
                            self.tap.delay_sum_ms[0] / 1000.0),
            **view,
        )

    def devices(self) -> list[DeviceView]:
        """Every device, in configuration order (about 4 µs a device: a 5,000-device scrape is not slowed by it)."""
        last, good = self.tap.last, self.tap.last_good_s
        views = []
        for poller, (device_id, profile, tags, power_id) in zip(self.supervisor.pollers, self._static):
            newest = last.get(device_id)
            polls, missed, skipped, failures, backed_off = _poller_counts(poller)
            tick, delay, code, power = newest if newest is not None else (None, None, 0, None)
            if profile is None:
                status = NO_PROFILE
            elif backed_off:
                status = BACKED_OFF
            elif newest is None:
                status = WAITING
            else:
                status = FAILING if code else GOOD
            views.append(DeviceView(device_id, profile, tags, status, code, polls, missed, skipped, failures, tick,
                                    good.get(device_id), delay, power))
        return views


def power_params(plans: Sequence[DevicePlan]) -> dict[str, str | None]:
    """Device id -> the param shown as its "active power now" (acronym P_TOT), None if it reads none."""
    return {plan.id: _power_param(plan) for plan in plans}


def _power_param(plan: DevicePlan) -> str | None:
    if plan.profile is None:
        return None
    for param_id in plan.param_ids:
        if plan.profile.by_id[param_id].acronym == POWER_ACRONYM:
            return param_id
    return None


# --- the two functions that read today's counters (repoint at the stats() snapshots) ---

def _poller_counts(poller) -> tuple[int, int, int, dict[int, int], bool]:
    """(polls, missed ticks, skipped polls, failures per Code bit, backing off) of one poller."""
    stats = poller.snapshot()
    failures: dict[int, int] = {}
    if stats.codes:
        for code, count in stats.codes.items():
            for bit in CODE_BITS:
                if code & bit:
                    failures[bit] = failures.get(bit, 0) + count
    return stats.ticks, stats.missed_ticks, stats.skipped_polls, failures, poller.backoff.active


def _writer_view(writer) -> dict:
    """The writer's and the store's stats snapshot as SiteView fields."""
    stats = writer.stats()
    store = stats.store
    return dict(
        online=store.online, outage_since_s=store.outage_started_at, paused=store.paused,
        queue_rows=stats.backlog_rows, rows_written=store.rows_written, rows_spooled=store.rows_spooled,
        rows_replayed=store.rows_replayed, rows_dropped=store.rows_dropped, spool_rows=store.spool_rows,
        spool_bytes=store.spool_bytes,
    )
