"""Wall-clock steps with an injected clock: late readings flagged, steps logged once, no Date twice."""

from __future__ import annotations

import logging

import pytest

from support import FakeClock
from susee.poller import Poller
from susee.quality import Code, describe
from susee.ticks import TickGrid
from test_poller import T0, FakeLink, make_plan, pac3200_memory


class SteppingRecorder:
    """Keeps each poll's samples; steps the clock by ``step_s`` after poll ``at``; stops after ``polls``."""

    def __init__(self, clock: FakeClock, polls: int, at: int, step_s: float) -> None:
        self.clock, self.limit, self.at, self.step_s = clock, polls, at, step_s
        self.polls: list[list] = []

    def __call__(self, samples) -> None:
        self.polls.append(samples)
        if len(self.polls) == self.at:
            self.clock.advance(self.step_s)
        if len(self.polls) >= self.limit:
            raise StopAsyncIteration


async def run(poller: Poller) -> None:
    with pytest.raises(StopAsyncIteration):
        await poller.run()


class StepDuringRead(FakeLink):
    """The wall clock steps forward while the tick's read is in flight (a VM paused mid-poll)."""

    def __init__(self, *args, step_at_read: int, step_s: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_at_read, self.step_s, self.count = step_at_read, step_s, 0

    async def read(self, *args, **kwargs):
        self.count += 1
        if self.count == self.step_at_read:
            self.clock.advance(self.step_s)
        return await super().read(*args, **kwargs)


async def test_a_forward_step_flags_the_late_reading_logs_once_and_skips_the_gap(caplog):
    caplog.set_level(logging.WARNING)
    clock = FakeClock(T0 - 0.5)
    link = StepDuringRead(clock, pac3200_memory(), read_s=0.1, step_at_read=3, step_s=60.0)
    recorder = SteppingRecorder(clock, polls=5, at=0, step_s=0)
    poller = Poller(make_plan(["133"]), link, TickGrid(1), clock, recorder)

    await run(poller)

    ticks = [poll[0].tick_s for poll in recorder.polls]
    codes = [poll[0].code for poll in recorder.polls]
    assert ticks == [T0, T0 + 1, T0 + 2, T0 + 63, T0 + 64]
    assert codes == [0, 0, Code.LATE, 0, 0], [describe(c) for c in codes]
    assert recorder.polls[2][0].delay_ms > 60_000
    assert len(set(ticks)) == len(ticks)


async def test_a_tick_woken_late_is_logged_once_for_all_devices(caplog):
    caplog.set_level(logging.WARNING, logger="susee.ticks")
    clock = FakeClock(T0 + 30.2)  # woke 30 s after the tick: an NTP step during the sleep
    grid = TickGrid(1)
    first = Poller(make_plan(["133"]), FakeLink(clock, pac3200_memory(), read_s=0.1), grid, clock, lambda s: None)
    second = Poller(make_plan(["133"]), FakeLink(clock, pac3200_memory(), read_s=0.1), grid, clock, lambda s: None,
                    first.reports)
    for poller in (first, second):
        poller.reports.steps.woke(T0, clock.now())

    (line,) = [r.getMessage() for r in caplog.records]
    assert "jumped forward" in line and "30.2 s" in line and "30 tick(s)" in line


async def test_a_backward_step_waits_for_the_next_unread_tick_and_says_so_once(caplog):
    caplog.set_level(logging.WARNING, logger="susee.ticks")
    clock = FakeClock(T0 - 0.5)
    link = FakeLink(clock, pac3200_memory(), read_s=0.1)
    recorder = SteppingRecorder(clock, polls=5, at=2, step_s=-120.0)  # NTP steps the clock back 2 minutes
    poller = Poller(make_plan(["133"]), link, TickGrid(1), clock, recorder)

    await run(poller)

    ticks = [poll[0].tick_s for poll in recorder.polls]
    assert ticks == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4], "no Date is written twice"
    assert all(poll[0].code == 0 for poll in recorder.polls)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "stepped back by about 119" in line and "pauses" in line
