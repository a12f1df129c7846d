"""Clock-aligned tick maths and the injectable clock.

Tick k falls at ``k * period + shift`` seconds since the epoch (UTC). Times are
computed from absolute tick indices in integer microseconds, so nothing drifts
however long the service runs, and every device shares the same grid.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

MICROS = 1_000_000


class TickGrid:
    """The sampling grid: a period and a shift inside the period."""

    __slots__ = ("period_us", "shift_us")

    def __init__(self, period_s: float, shift_s: float = 0.0) -> None:
        self.period_us = round(period_s * MICROS)
        self.shift_us = round(shift_s * MICROS)
        if self.period_us <= 0:
            raise ValueError("period must be positive")
        if not 0 <= self.shift_us < self.period_us:
            raise ValueError("shift must be in [0, period)")

    @property
    def period_s(self) -> float:
        return self.period_us / MICROS

    def index_at_or_after(self, t_s: float) -> int:
        """Index of the first tick at or after ``t_s``."""
        offset_us = round(t_s * MICROS) - self.shift_us
        return -(-offset_us // self.period_us)

    def time_of(self, index: int) -> float:
        """Nominal time (epoch seconds) of tick ``index``."""
        return (index * self.period_us + self.shift_us) / MICROS


class Clock(Protocol):
    """Wall-clock time and sleeping until an absolute wall-clock time."""

    def now(self) -> float: ...

    async def sleep_until(self, t_s: float) -> None: ...


class WallClock:
    """The real clock: UTC epoch seconds; sleepers of the same tick share one loop timer.

    Every poller sleeps until the same tick. One timer per tick, waking them
    all, instead of one per poller: at a 1,000-meter site that is 1,000
    timers fewer a tick, at the very moment the tick's burst starts. Loop
    timers may fire a little early (uvloop rounds to ms) and the wall clock
    may be stepped by NTP: the timer re-checks and re-arms until the time is
    reached, once for everybody.
    """

    def __init__(self) -> None:
        self._sleepers: dict[float, list[asyncio.Future]] = {}

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t_s: float) -> None:
        if t_s <= time.time():
            return
        loop = asyncio.get_running_loop()
        sleepers = self._sleepers.get(t_s)
        if sleepers is None:
            sleepers = self._sleepers[t_s] = []
            self._arm(loop, t_s)
        waiter = loop.create_future()
        sleepers.append(waiter)
        await waiter  # a cancelled sleeper's future is cancelled; the wake-up skips it

    def _arm(self, loop: asyncio.AbstractEventLoop, t_s: float) -> None:
        loop.call_later(max(0.0, t_s - time.time()), self._wake, loop, t_s)

    def _wake(self, loop: asyncio.AbstractEventLoop, t_s: float) -> None:
        if time.time() < t_s:
            self._arm(loop, t_s)
            return
        for waiter in self._sleepers.pop(t_s, ()):
            if not waiter.done():
                waiter.set_result(None)
