"""Clock-aligned tick maths and the injectable clock.

Tick k falls at ``k * period + shift`` seconds since the epoch (UTC). Times are
computed from absolute tick indices in integer microseconds, so nothing drifts
however long the service runs, and every device shares the same grid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

MICROS = 1_000_000

log = logging.getLogger(__name__)


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


class StepWatch:
    """Notices wall-clock steps larger than a period; logs each once for the whole site.

    Every poller of a site shares one: all of them see the same step at the
    same tick, and the log names it once (not once per device).

    - Forward (an NTP step, a paused VM or process): a tick is read more than
      a period late. Its rows get Code LATE, the ticks in between are skipped.
    - Backward: the next tick not yet read lies more than a period ahead.
      Sampling waits for it, because reading earlier ticks would write their
      Dates a second time; the wait is logged, not silent.
    """

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._told: set[tuple[str, float]] = set()

    def woke(self, tick_s: float, now_s: float) -> None:
        """Called when a tick's poll starts at ``now_s``."""
        late_s = now_s - tick_s
        if late_s > self.period_s and self._first(("forward", tick_s)):
            log.warning(
                "wall clock jumped forward (or the process was paused) by about %.1f s: the tick of %s UTC is read "
                "%.1f s late, its rows are flagged late (Code 128); the %d tick(s) in the gap are not acquired",
                late_s, _utc(tick_s), late_s, int(late_s // self.period_s),
            )

    def waits(self, tick_s: float, now_s: float) -> None:
        """Called before sleeping until the next tick not read yet."""
        ahead_s = tick_s - now_s
        if ahead_s > self.period_s and self._first(("backward", tick_s)):
            log.warning(
                "wall clock stepped back by about %.1f s: the next tick not yet stored is %s UTC, so sampling pauses "
                "until then (reading earlier ticks would write their Dates twice); about %d tick(s) of wall time "
                "are not acquired", ahead_s - self.period_s, _utc(tick_s), int(ahead_s // self.period_s),
            )

    def _first(self, key: tuple[str, float]) -> bool:
        if key in self._told:
            return False
        if len(self._told) > 64:
            self._told.clear()
        self._told.add(key)
        return True


def _utc(t_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t_s))
