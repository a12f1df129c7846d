"""Acquisition first: storing a batch waits until the tick's burst of polls has passed.

Every meter is read at the tick, all at once. A read's Delay is how long
after the tick its answer is handled, so every millisecond the event loop
spends on other work during that burst is added to the Delay of every read
still waiting. Storing rows is such work (formatting a statement of a
thousand rows takes milliseconds, and a 1,000-meter tick makes 8,000 rows)
and it is never urgent: rows may wait ``batch_age`` anyway. So the writer
asks ``BurstWatch.passed()`` before it stores a batch, and the pollers tell
the watch when each poll starts and ends.

The burst has passed when no poll is running, or when none has ended for
``SETTLE_S``: the polls still running then wait on slow or silent devices
(a timeout, a serial line), not on the CPU, and the writer may use the gap.
"""

from __future__ import annotations

import asyncio
import time

# Long enough to span the gaps between answers in a burst (tens of µs each on
# TCP), short enough that a bus of slow devices (one poll per 100 ms or more
# at RS485 speeds) leaves the writer most of its time.
SETTLE_S = 0.005


class BurstWatch:
    """Counts the polls running; tells the writer when the burst of a tick has passed."""

    __slots__ = ("running", "last_end")

    def __init__(self) -> None:
        self.running = 0
        self.last_end = float("-inf")  # time.monotonic() of the last poll that ended

    def poll_started(self) -> None:
        self.running += 1

    def poll_ended(self) -> None:
        self.running -= 1
        self.last_end = time.monotonic()

    async def passed(self, max_wait_s: float) -> None:
        """Return once the burst has passed, or after ``max_wait_s`` in any case."""
        deadline = time.monotonic() + max_wait_s
        while self.running > 0:
            now = time.monotonic()
            quiet_s = now - self.last_end
            if quiet_s >= SETTLE_S or now >= deadline:
                return
            await asyncio.sleep(min(SETTLE_S - quiet_s, deadline - now))
