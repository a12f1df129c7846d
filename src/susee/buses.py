"""Fair, paced turns on a shared bus, and backing off devices that went silent.

A bus is one connection several devices share: an RS485 line, or a TCP
gateway (or serial server) with meters behind it. One transaction at a time
goes on it. Two things keep one device from hurting the others:

- ``BusScheduler`` hands out turns in a round-robin over the devices waiting,
  starting each round (a burst of requests on an idle bus: one tick) one
  device further along, so no device is always served last; and it keeps the
  configured silence between two transactions (RS485 turnaround).
- ``Backoff`` skips the polls of a device whose requests time out, for 1, 2,
  4 ... ticks (capped), so a dead meter costs its bus one timeout per backoff
  period instead of one per tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

# Pollers of one tick wake within a millisecond or so of each other. On an idle
# bus the first request waits this long so the others can queue and the
# rotated order, not wake-up order, decides who goes first. 2 ms of Delay is
# invisible next to one RS485 transaction (about 110 ms for a 64-register read
# at 19200 baud) and is not paid on a link with a single device.
GATHER_S = 0.002

# A silent device is probed again after at most this many skipped ticks...
BACKOFF_MAX_TICKS = 64
# ...and at most this long: at sample_time 10 s, 64 ticks would be 10 minutes
# before a repaired meter is noticed.
BACKOFF_MAX_S = 300.0


class BusScheduler:
    """One turn at a time on a bus, round-robin over waiting devices, paced.

    ``key`` identifies a device on the bus (its unit id). Within a round,
    every waiting device gets one turn before any device gets a second; a
    round that starts on an idle bus starts one device further than the last.
    After each turn the bus stays silent for ``inter_request_delay_s``,
    measured on the loop clock from the end of that turn.
    """

    def __init__(self, name: str, inter_request_delay_s: float = 0.0, gather_s: float = GATHER_S) -> None:
        self.name = name
        self.inter_request_delay_s = inter_request_delay_s
        self.gather_s = gather_s
        self._ring: list[Hashable] = []  # devices in order of first request
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._busy = False  # a turn is running or about to be granted
        self._cursor = 0  # ring index where the search for the next turn starts
        self._rounds = 0
        self._last_end = float("-inf")  # loop time at which the last turn ended

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        """Wait for this device's turn on the bus; hold the bus inside the block."""
        await self._acquire(key)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, key: Hashable) -> None:
        loop = asyncio.get_running_loop()
        queue = self._waiting.get(key)
        if queue is None:
            queue = self._waiting[key] = deque()
            self._ring.append(key)
        waiter: asyncio.Future[None] = loop.create_future()
        queue.append(waiter)
        if not self._busy:
            self._busy = True
            self._start_round(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted just as we were cancelled: pass the turn on
            raise

    def _start_round(self, loop: asyncio.AbstractEventLoop) -> None:
        gather_s = 0.0 if len(self._ring) == 1 else self.gather_s
        start_at = max(loop.time() + gather_s, self._last_end + self.inter_request_delay_s)
        self._rounds += 1
        loop.call_at(start_at, self._grant_first)

    def _grant_first(self) -> None:
        self._cursor = (self._rounds - 1) % len(self._ring)
        self._grant_next()

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_end = loop.time()
        if self.inter_request_delay_s > 0:
            loop.call_at(self._last_end + self.inter_request_delay_s, self._grant_next)
        else:
            self._grant_next()

    def _grant_next(self) -> None:
        """Give the bus to the next waiting device in ring order, or mark it idle."""
        count = len(self._ring)
        for step in range(count):
            index = (self._cursor + step) % count
            queue = self._waiting[self._ring[index]]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():  # skip requests cancelled while waiting
                    waiter.set_result(None)
                    self._cursor = (index + 1) % count
                    return
        self._busy = False


def backoff_cap_ticks(period_s: float) -> int:
    """The most ticks a silent device is skipped in a row at sampling ``period_s``."""
    return max(1, min(BACKOFF_MAX_TICKS, int(BACKOFF_MAX_S // period_s)))


class Backoff:
    """Which ticks to skip for a device whose requests time out.

    After a poll in which a request timed out and nothing was answered, the
    next 1, 2, 4 ... ticks (doubling with each such poll in a row, capped at
    ``cap_ticks``) are skipped; the poll after them probes the device. A poll
    the device answers, even in part or with an exception response, ends the
    backoff: the device is there. A poll that failed otherwise (connection
    refused, serial port missing) neither extends nor ends it: such failures
    do not hold the bus for a timeout.
    """

    def __init__(self, device_id: str, cap_ticks: int) -> None:
        self.device_id = device_id
        self.cap_ticks = cap_ticks
        self.timeouts = 0  # consecutive polls that ended in a timeout
        self.skip_left = 0  # ticks still to skip before the next probe
        self.skipped = 0  # ticks skipped in the current backoff

    @property
    def active(self) -> bool:
        return self.timeouts > 0

    def skip(self) -> bool:
        """Called once per tick: True if this tick must not be read."""
        if self.skip_left <= 0:
            return False
        self.skip_left -= 1
        self.skipped += 1
        return True

    def record(self, *, timed_out: bool, answered: bool) -> None:
        """Account for the outcome of a poll that was not skipped."""
        if timed_out and not answered:
            self.timeouts += 1
            self.skip_left = min(2 ** (self.timeouts - 1), self.cap_ticks)
            if self.timeouts == 1:
                log.warning("device %s: no answer, backing off: skipping the next %d tick(s)", self.device_id, self.skip_left)
            else:
                log.info(
                    "device %s: still no answer after %d timed-out polls, skipping the next %d tick(s)",
                    self.device_id, self.timeouts, self.skip_left,
                )
        elif answered and self.timeouts:
            log.warning(
                "device %s: answers again, backoff ended after %d timed-out polls and %d skipped tick(s)",
                self.device_id, self.timeouts, self.skipped,
            )
            self.timeouts = self.skipped = 0
