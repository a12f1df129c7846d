"""Test doubles and helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from susee.links import Answer, LinkError, Read, unsent_answers
from susee.sample import Sample
from susee.spool import Spool


class FakeClock:
    """Virtual wall clock: sleeping jumps straight to the wake-up time."""

    def __init__(self, start_s: float) -> None:
        self.t = start_s

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t_s: float) -> None:
        self.t = max(self.t, t_s)
        await asyncio.sleep(0)  # still a real suspension point, like the wall clock's

    def advance(self, seconds: float) -> None:
        self.t += seconds


def spooled_rows(folder: Path) -> list[Sample]:
    """Everything a spool folder holds, read by a fresh Spool (as the next start would)."""
    spool = Spool(folder)
    spool.open()
    try:
        batch = spool.read(10**9)
        return [] if batch is None else batch.samples
    finally:
        spool.close()


async def read_one_by_one(
    read: Callable[[int, int, int, int, float], Awaitable[bytes | list[int]]],
    unit: int,
    reads: Sequence[Read],
    timeout_s: float,
    now: Callable[[], float] = time.time,
) -> list[Answer]:
    """``read_many`` for a test double whose ``read()`` is a coroutine: one read after the other, as a link does."""
    answers: list[Answer] = []
    for function, address, count in reads:
        try:
            outcome = await read(unit, function, address, count, timeout_s)
        except Exception as exc:  # handed over: the poller makes every failure a Code
            outcome = exc
        received_s = now()
        answers.append(Answer(outcome, received_s))
        if isinstance(outcome, LinkError):
            answers += unsent_answers(outcome, received_s, len(reads) - len(answers))
            break
    return answers


class ReadsInTurn:
    """Gives a test double that has ``read()`` the links' ``read_many`` (the contract in ``susee.links``).

    Each answer is stamped with ``self.clock.now()`` if the double has a
    clock, else with the wall clock.
    """

    async def read_many(self, unit: int, reads, timeout_s: float) -> list[Answer]:
        clock = getattr(self, "clock", None)
        return await read_one_by_one(self.read, unit, reads, timeout_s, clock.now if clock is not None else time.time)
