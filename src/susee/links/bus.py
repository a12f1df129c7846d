"""Fair, paced turns on a shared bus.

A bus is one connection several devices share: an RS485 line, or a TCP
gateway (or serial server) with meters behind it. One transaction at a time
goes on it. ``BusScheduler`` hands out turns in a round-robin over the
devices waiting, starting each round (a burst of requests on an idle bus:
one tick) one device further along, so no device is always served last; and
it keeps the configured silence between two transactions (RS485 turnaround).
Each link keeps its scheduler as ``link.scheduler``. (The poller's
``Backoff`` keeps a silent device from holding its bus for a timeout every
tick.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager

# Pollers of one tick wake within a millisecond or so of each other. On an idle
# bus the first turn waits until every device of the bus has queued its own,
# or at most this long (a device backing off queues nothing), so that the
# rotated order, not wake-up order, decides who goes first. 2 ms of Delay is
# invisible next to one RS485 transaction (about 110 ms for a 64-register read
# at 19200 baud) and is not paid on a link with a single device.
GATHER_S = 0.002

# Called with (waiter, payload) when a submitted turn begins.
Grant = Callable[[asyncio.Future, object], None]


class BusScheduler:
    """One turn at a time on a bus, round-robin over waiting devices, paced.

    ``key`` identifies a device on the bus (its unit id). Within a round,
    every waiting device gets one turn before any device gets a second; a
    round that starts on an idle bus starts one device further than the last,
    as soon as every device of the bus has queued a turn (or ``gather_s``
    after the first did). After each turn the bus stays silent for
    ``inter_request_delay_s``, measured on the loop clock from the end of that
    turn. The links take one turn per request.

    Two ways to take a turn: ``async with bus.turn(key)`` for a coroutine that
    does its transaction itself, and ``submit()`` (every link) for a
    link that starts the transaction from a callback and ends the turn with
    ``release()`` when the answer (or the timeout) comes: no task wakes up
    only to send a request. A device alone on its bus is granted its turn at
    once, in the caller, without a trip through the event loop.
    """

    def __init__(self, name: str, inter_request_delay_s: float = 0.0, gather_s: float = GATHER_S) -> None:
        self.name = name
        self.inter_request_delay_s = inter_request_delay_s
        self.gather_s = gather_s
        self._ring: list[Hashable] = []  # devices in order of first request
        # Per device: (waiter, grant, payload) in order of submission.
        self._waiting: dict[Hashable, deque[tuple[asyncio.Future, Grant, object]]] = {}
        self._devices_waiting = 0  # devices whose queue is not empty
        self._loop: asyncio.AbstractEventLoop | None = None  # bound at the first submit
        self._gathering: asyncio.TimerHandle | None = None  # a round waiting for the bus's devices to queue
        self._busy = False  # a turn is running or about to be granted
        self._cursor = 0  # ring index where the search for the next turn starts
        self._rounds = 0
        self._last_end = float("-inf")  # loop time at which the last turn ended
        self._granting = False  # inside _grant_next: a release() now only asks for the next grant
        self._released = False  # the turn just granted ended before its grant returned

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        """Wait for this device's turn on the bus; hold the bus inside the block."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, key: Hashable) -> None:
        """Wait for this device's turn; the caller must ``release()`` it."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submit(key, waiter, _grant_turn)
        try:
            await waiter  # returns at once if granted inside submit()
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: pass the turn on
            raise

    def submit(self, key: Hashable, waiter: asyncio.Future, grant: Grant, payload: object = None) -> None:
        """Queue a turn for device ``key``: ``grant(waiter, payload)`` runs when it is its turn.

        ``grant`` runs synchronously, possibly before submit() returns; from
        then on the bus belongs to that turn until ``release()``, which
        ``grant`` may also call at once (it failed without using the bus).
        ``grant`` must not raise. A waiter already done (its reader was
        cancelled) when its turn comes is skipped.
        """
        queue = self._waiting.get(key)
        if queue is None:
            queue = self._waiting[key] = deque()
            self._ring.append(key)
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
        if not queue:
            self._devices_waiting += 1
        queue.append((waiter, grant, payload))
        if not self._busy:
            self._busy = True
            self._start_round()
        elif (self._gathering is not None and self._devices_waiting == len(self._ring)
              and self._last_end + self.inter_request_delay_s <= self._loop.time()):
            self._gathering.cancel()  # everyone is here: no need to wait out the gathering
            self._grant_first()

    def release(self) -> None:
        """End the current turn: the next one follows after the inter-request delay."""
        loop = self._loop
        self._last_end = loop.time()
        if self.inter_request_delay_s > 0:
            loop.call_at(self._last_end + self.inter_request_delay_s, self._grant_next)
        else:
            self._grant_next()

    def _start_round(self) -> None:
        self._rounds += 1
        loop = self._loop
        ready_at = self._last_end + self.inter_request_delay_s
        if len(self._ring) == 1:
            if self.inter_request_delay_s <= 0 or ready_at <= loop.time():
                self._grant_first()  # alone on the bus: nobody to gather for, nothing to wait out
                return
            loop.call_at(ready_at, self._grant_first)
            return
        start_at = max(loop.time() + self.gather_s, ready_at)
        self._gathering = loop.call_at(start_at, self._grant_first)

    def _grant_first(self) -> None:
        self._gathering = None
        self._cursor = (self._rounds - 1) % len(self._ring)
        self._grant_next()

    def _grant_next(self) -> None:
        """Give the bus to the next waiting device in ring order, or mark it idle."""
        if self._granting:  # release() from inside a grant: the loop below goes on
            self._released = True
            return
        self._granting = True
        try:
            while self._grant_one() and self._released:
                pass
        finally:
            self._granting = False

    def _grant_one(self) -> bool:
        """Grant the next waiting turn; False (and the bus idle) if nobody waits."""
        ring = self._ring
        count = len(ring)
        for step in range(count):
            index = (self._cursor + step) % count
            queue = self._waiting[ring[index]]
            while queue:
                waiter, grant, payload = queue.popleft()
                if not queue:
                    self._devices_waiting -= 1
                if not waiter.done():  # skip requests cancelled while waiting
                    # Not reduced modulo count: a device joining the ring meanwhile is next.
                    self._cursor = index + 1
                    self._released = False
                    grant(waiter, payload)
                    return True
        self._busy = False
        return False


def _grant_turn(waiter: asyncio.Future, _payload: object) -> None:
    waiter.set_result(None)
