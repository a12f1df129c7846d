"""A sign of life in the log: one status line at a steady pace, and device state changes when they happen.

Every ``status_every`` seconds (default 60) one line, whatever the size of
the fleet: device-ticks polled and rows written since the last line, the
devices failing with their Codes in words (the first few ids of each and
how many), the Delay p50/p99 of the period, the database state and what the
spool holds. A device that starts failing (any Code in its tick) or
recovers is logged once, when it happens; the changes of a second are
logged together so that a gateway taking 200 meters with it gives a line,
not 200.

``observe`` runs on every device-tick, the hot path (8,000 meters a second
on one core): it ORs the tick's Codes, counts the Delay in a fixed-bucket
histogram (one ``bisect`` and one increment, never a list of samples) and
looks the device up in a dict of the failing ones.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from susee.quality import describe
from susee.sample import Sample
from susee.shown import first_few

if TYPE_CHECKING:
    from susee.ticks import Clock

log = logging.getLogger(__name__)

# Upper bounds of the Delay buckets, ms: ten per decade from 0.1 ms to 100 s
# (a timeout is at most 60 s), so a percentile is known within 26 %; above
# the last bound, one overflow bucket.
DELAY_BOUNDS_MS: tuple[float, ...] = tuple(float(f"{0.1 * 10 ** (i / 10):.3g}") for i in range(61))
# State changes of this many seconds are logged together (a gateway dropping
# its meters, the meters of one tick recovering).
CHANGE_WINDOW_S = 1.0


@dataclass(frozen=True)
class StoreFigures:
    """What the status line says about storage (``store.StoreStats`` has these fields too)."""

    rows_written: int  # since start, live and replayed
    online: bool  # False during a database outage (rows go to the spool)
    spool_rows: int
    spool_bytes: int


class DelayHistogram:
    """Delays counted in fixed buckets; percentiles as the upper bound of a bucket."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0] * (len(DELAY_BOUNDS_MS) + 1)

    def add(self, delay_ms: float) -> None:
        self.counts[bisect_left(DELAY_BOUNDS_MS, delay_ms)] += 1  # a delay equal to a bound is in its bucket

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, fraction: float) -> float | None:
        """The bound below which ``fraction`` of the delays lie (None without any)."""
        total = self.total
        if not total:
            return None
        wanted = fraction * total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= wanted and count:
                return DELAY_BOUNDS_MS[min(index, len(DELAY_BOUNDS_MS) - 1)]
        return DELAY_BOUNDS_MS[-1]

    def reset(self) -> None:
        self.counts = [0] * len(self.counts)


class Status:
    """Device health from every device-tick, a periodic status line, and logged state changes."""

    def __init__(self, devices: int, figures: Callable[[], StoreFigures]) -> None:
        self.devices = devices
        self.figures = figures
        self.failing: dict[str, int] = {}  # device id -> Code of its latest tick, failing devices only
        self.delays = DelayHistogram()
        self.device_ticks = 0
        self._rows_at_last_line = 0
        self._now_failing: dict[str, int] = {}  # changes waiting for the next change line
        self._recovered: list[str] = []
        self._flush_handle: asyncio.TimerHandle | None = None

    def observing(self, emit: Callable[[list[Sample]], None]) -> Callable[[list[Sample]], None]:
        """``emit`` (the writer's submit) that observes each device-tick on the way."""
        observe = self.observe

        def submit(samples: list[Sample]) -> None:
            observe(samples)
            emit(samples)

        return submit

    def observe(self, samples: Sequence[Sample]) -> None:
        """One device-tick's samples: its Codes, and the Delay of its last answer (the tick complete)."""
        if not samples:
            return
        code = 0
        for sample in samples:
            code |= sample[5]
        self.device_ticks += 1
        self.delays.counts[bisect_left(DELAY_BOUNDS_MS, samples[-1][4])] += 1
        device_id = samples[0][0]
        if code != self.failing.get(device_id, 0):
            self._changed(device_id, code)

    def _changed(self, device_id: str, code: int) -> None:
        if code:
            self.failing[device_id] = code
            self._now_failing[device_id] = code
            if device_id in self._recovered:
                self._recovered.remove(device_id)
        else:
            del self.failing[device_id]
            self._now_failing.pop(device_id, None)
            self._recovered.append(device_id)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(CHANGE_WINDOW_S, self.flush_changes)

    def flush_changes(self) -> None:
        """Log the state changes gathered since the last call (also called at shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        failing, recovered = self._now_failing, self._recovered
        self._now_failing, self._recovered = {}, []
        for code, ids in _by_code(failing).items():
            if len(ids) == 1:
                log.warning("device %s now failing: %s (Code %d)", ids[0], describe(code), code)
            else:
                log.warning("%d devices now failing: %s (Code %d): %s", len(ids), describe(code), code, first_few(ids))
        if len(recovered) == 1:
            log.info("device %s answers well again", recovered[0])
        elif recovered:
            log.info("%d devices answer well again: %s", len(recovered), first_few(recovered))

    def line(self, period_s: float) -> str:
        """The status of the last ``period_s`` seconds, and resets the period's counters."""
        figures = self.figures()
        written = figures.rows_written - self._rows_at_last_line
        self._rows_at_last_line = figures.rows_written
        p50, p99 = self.delays.percentile(0.5), self.delays.percentile(0.99)
        delay = "Delay -" if p50 is None else f"Delay p50 <= {p50:g} ms, p99 <= {p99:g} ms"
        parts = [
            f"status of the last {period_s:g} s: {self.device_ticks} device-ticks, {written} rows written",
            _failing_text(self.failing, self.devices),
            delay,
            "database online" if figures.online else "database OFFLINE (rows go to the spool)",
            "spool empty" if not figures.spool_rows else f"spool {figures.spool_rows} rows ({figures.spool_bytes} bytes)",
        ]
        self.device_ticks = 0
        self.delays.reset()
        return "; ".join(parts)

    async def run(self, clock: Clock, every_s: float) -> None:
        """Log a status line every ``every_s`` seconds, on absolute times, until cancelled."""
        next_s = clock.now() + every_s
        while True:
            await clock.sleep_until(next_s)
            log.info("%s", self.line(every_s))
            now_s = clock.now()
            next_s += every_s
            if next_s <= now_s:  # the loop was stalled: the next line one period from now, not a burst
                next_s = now_s + every_s


def _by_code(codes: dict[str, int]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for device_id, code in codes.items():
        grouped.setdefault(code, []).append(device_id)
    return grouped


def _failing_text(failing: dict[str, int], devices: int) -> str:
    """``"2 of 10 devices failing: err_connection: d03; value_nan: d01"`` or ``"no device failing"``."""
    if not failing:
        return "no device failing"
    groups = sorted(_by_code(failing).items(), key=lambda item: (-len(item[1]), item[0]))
    described = "; ".join(f"{describe(code)}: {first_few(ids)}" for code, ids in groups)
    return f"{len(failing)} of {devices} devices failing: {described}"
