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
    """The real clock: UTC epoch seconds, asyncio sleeps."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t_s: float) -> None:
        # Loop timers may fire a little early (uvloop rounds to ms) and the
        # wall clock may be stepped by NTP: re-check until the time is reached.
        while (remaining := t_s - time.time()) > 0:
            await asyncio.sleep(remaining)
