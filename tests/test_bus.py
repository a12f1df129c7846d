"""Turns on a shared bus (fair order, one at a time, paced) and the backoff schedule of silent devices.

How the poller writes the rows of a backed-off device: ``test_poller.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from susee.backoff import Backoff, backoff_cap_ticks
from susee.links.bus import BusScheduler

# --- Bus scheduler: fair order, one at a time, paced --------------------------------------


class BusLog:
    """Records turns taken on a scheduler, and checks that none overlap."""

    def __init__(self, scheduler: BusScheduler, work_s: float = 0.0) -> None:
        self.scheduler = scheduler
        self.work_s = work_s
        self.turns: list[tuple[int, int, float, float]] = []  # tick, key, start, end (loop time)
        self._holders = 0

    async def device(self, tick: int, key: int, requests: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(requests):
            async with self.scheduler.turn(key):
                self._holders += 1
                assert self._holders == 1, "two turns at once"
                start = loop.time()
                await asyncio.sleep(self.work_s)
                self.turns.append((tick, key, start, loop.time()))
                self._holders -= 1


async def test_each_tick_starts_with_the_next_device_and_every_device_waits_as_long_on_average() -> None:
    log = BusLog(BusScheduler("line"))
    keys, ticks, requests = (1, 2, 3), 6, 2

    for tick in range(ticks):
        await asyncio.gather(*(log.device(tick, key, requests) for key in keys))

    orders = [[key for t, key, _, _ in log.turns if t == tick] for tick in range(ticks)]
    # Round robin inside a tick (everyone's first request before anyone's second),
    # and the round starts one device further on each tick.
    assert orders == [
        [1, 2, 3, 1, 2, 3], [2, 3, 1, 2, 3, 1], [3, 1, 2, 3, 1, 2],
        [1, 2, 3, 1, 2, 3], [2, 3, 1, 2, 3, 1], [3, 1, 2, 3, 1, 2],
    ]
    # A device's Delay is set by its last request: its position in the tick.
    last_positions = {key: [max(i for i, k in enumerate(order) if k == key) for order in orders] for key in keys}
    assert {key: sum(p) for key, p in last_positions.items()} == {1: 24, 2: 24, 3: 24}


async def test_first_served_device_rotates_whatever_order_the_pollers_wake_in() -> None:
    log = BusLog(BusScheduler("line"))

    for tick in range(4):
        await asyncio.gather(*(log.device(tick, key, 1) for key in (3, 1, 2)))  # always woken 3, 1, 2

    firsts = [next(key for t, key, _, _ in log.turns if t == tick) for tick in range(4)]
    assert len(set(firsts)) == 3


async def test_a_busy_device_cannot_starve_the_others() -> None:
    log = BusLog(BusScheduler("line"))

    await asyncio.gather(log.device(0, 1, 10), log.device(0, 2, 2), log.device(0, 3, 2))

    order = [key for _, key, _, _ in log.turns]
    assert order[:6] == [1, 2, 3, 1, 2, 3]
    assert order[6:] == [1] * 8


async def test_inter_request_delay_keeps_the_bus_silent_after_every_transaction() -> None:
    gap_s = 0.03
    log = BusLog(BusScheduler("line", inter_request_delay_s=gap_s), work_s=0.005)

    await asyncio.gather(*(log.device(0, key, 2) for key in (1, 2)))
    await log.device(1, 1, 1)  # a request on an idle bus waits out the gap too

    spans = sorted((start, end) for _, _, start, end in log.turns)
    gaps = [start - previous_end for (_, previous_end), (start, _) in zip(spans, spans[1:])]
    assert len(gaps) == 4
    assert min(gaps) >= gap_s - 0.002  # the loop clock may round to the millisecond


async def test_request_cancelled_while_waiting_does_not_block_the_bus() -> None:
    scheduler = BusScheduler("line")
    log = BusLog(scheduler, work_s=0.02)
    first = asyncio.create_task(log.device(0, 1, 1))
    waiting = asyncio.create_task(log.device(0, 2, 1))
    await asyncio.sleep(0.01)  # 1 holds the bus, 2 waits

    waiting.cancel()
    await asyncio.gather(first, waiting, return_exceptions=True)
    await asyncio.wait_for(log.device(1, 3, 1), 1.0)

    assert [key for _, key, _, _ in log.turns] == [1, 3]


class CallbackTurns:
    """Turns taken through ``submit()``: each grant is recorded and ends at once or when told."""

    def __init__(self, scheduler: BusScheduler, hold: bool = False) -> None:
        self.scheduler = scheduler
        self.hold = hold  # keep the bus after the grant until release()
        self.granted: list[object] = []

    def submit(self, key: int, payload: object) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        self.scheduler.submit(key, waiter, self._grant, payload)
        return waiter

    def _grant(self, waiter: asyncio.Future, payload: object) -> None:
        self.granted.append(payload)
        waiter.set_result(payload)
        if not self.hold:
            self.scheduler.release()


async def test_device_alone_on_its_bus_is_granted_in_the_caller_without_a_loop_round_trip() -> None:
    turns = CallbackTurns(BusScheduler("meter"))

    for n in range(3):
        turns.submit(1, n)
        assert turns.granted == list(range(n + 1))  # before anything else ran


async def test_turns_ending_inside_their_grant_keep_the_round_robin_and_do_not_recurse() -> None:
    scheduler = BusScheduler("gateway")
    turns = CallbackTurns(scheduler)
    holder = CallbackTurns(scheduler, hold=True)
    holder.submit(9, "held")  # the bus is busy while the others queue
    for n in range(3000):  # far deeper than the recursion limit
        turns.submit(1 + n % 3, (1 + n % 3, n // 3))

    scheduler.release()  # the holder is done: every queued turn runs and ends inside its grant

    assert turns.granted == [(1 + n % 3, n // 3) for n in range(3000)]
    turns.submit(2, "next")
    await asyncio.sleep(scheduler.gather_s * 2)
    assert turns.granted[-1] == "next"  # the bus went idle, and a new round starts


async def test_a_round_starts_as_soon_as_every_device_of_the_bus_has_queued() -> None:
    scheduler = BusScheduler("gateway", gather_s=0.01)
    turns = CallbackTurns(scheduler)
    await asyncio.gather(*(turns.submit(key, ("first", key)) for key in (1, 2, 3)))  # the bus learns its devices
    scheduler.gather_s = 5.0
    loop = asyncio.get_running_loop()
    started = loop.time()

    await asyncio.wait_for(asyncio.gather(*(turns.submit(key, ("second", key)) for key in (1, 2, 3))), 1.0)

    assert loop.time() - started < 0.5  # the third device's request started the round: no 5 s gathering
    second = [key for tick, key in turns.granted if tick == "second"]
    assert sorted(second) == [1, 2, 3] and second[0] != turns.granted[0][1]  # the rotation still holds


async def test_a_round_waits_the_gathering_for_a_device_that_does_not_queue() -> None:
    scheduler = BusScheduler("gateway", gather_s=0.01)
    turns = CallbackTurns(scheduler)
    await asyncio.gather(*(turns.submit(key, ("first", key)) for key in (1, 2, 3)))
    scheduler.gather_s = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()

    await asyncio.gather(*(turns.submit(key, ("second", key)) for key in (1, 2)))  # 3 is backing off

    assert loop.time() - started >= 0.2 - 0.002  # the loop clock may round to the millisecond


async def test_submitted_turns_and_coroutine_turns_share_one_fair_order() -> None:
    scheduler = BusScheduler("gateway")
    log = BusLog(scheduler)
    turns = CallbackTurns(scheduler)

    futures = [turns.submit(1, "a1"), turns.submit(1, "a2")]
    await asyncio.gather(log.device(0, 2, 2), *futures)

    assert turns.granted == ["a1", "a2"]
    assert [key for _, key, _, _ in log.turns] == [2, 2]
    assert not scheduler._busy


# --- Backoff of silent devices ----------------------------------------------------------------


def _run_backoff(script: str, cap_ticks: int) -> str:
    """Feed poll outcomes to a Backoff; return what each tick was.

    ``script`` holds one outcome per poll actually made: T timed out, A answered,
    P answered in part (one block answered, one timed out), R refused (no
    answer, no timeout). Returned: one letter per tick, "." skipped.
    """
    backoff = Backoff("d01", cap_ticks)
    outcomes, ticks = iter(script), []
    while True:
        if backoff.skip():
            ticks.append(".")
            continue
        outcome = next(outcomes, None)
        if outcome is None:
            return "".join(ticks)
        backoff.record(timed_out=outcome in "TP", answered=outcome in "AP")
        ticks.append(outcome)


BACKOFF_SCHEDULES = {
    "doubles 1, 2, 4, 8": ("TTTTA", 64, "T.T..T....T........A"),
    "capped": ("TTTTTA", 4, "T.T..T....T....T....A"),
    "cap of one tick": ("TTTA", 1, "T.T.T.A"),
    "answer resets": ("TTATTA", 64, "T.T..AT.T..A"),
    "healthy device never skips": ("AAAA", 64, "AAAA"),
    "refused connect neither extends nor resets": ("TRRTA", 64, "T.RRT..A"),
    "a device answering some blocks is not backed off": ("PPTPT", 64, "PPT.PT."),
}


@pytest.mark.parametrize(("script", "cap_ticks", "ticks"), BACKOFF_SCHEDULES.values(), ids=BACKOFF_SCHEDULES.keys())
def test_backoff_schedule(script, cap_ticks, ticks) -> None:
    assert _run_backoff(script, cap_ticks) == ticks


@pytest.mark.parametrize(
    ("period_s", "cap_ticks"),
    [(1, 64), (4.5, 64), (5, 60), (10, 30), (60, 5), (300, 1), (900, 1)],
)
def test_backoff_cap_is_64_ticks_or_5_minutes(period_s, cap_ticks) -> None:
    assert backoff_cap_ticks(period_s) == cap_ticks
