"""The poller on a virtual clock: nominal ticks, Delay, overruns, failures as codes, backoff, pause, stats."""

from __future__ import annotations

import asyncio
import struct

import pytest

from support import FakeClock, ReadsInTurn
from susee.codec import registers_to_bytes
from susee.config import DeviceSettings
from susee.devices import DevicePlan
from susee.links import ExceptionResponse, LinkError
from susee.planner import plan_reads
from susee.poller import Poller, code_for_failure
from susee.profiles import load_profile
from susee.quality import Code
from susee.sample import Sample
from susee.ticks import TickGrid

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, a multiple of 10 s and of 15 min + 100 s


# --- Poller on a virtual clock --------------------------------------------------------


class FakeLink(ReadsInTurn):
    """A device that answers after ``read_s`` virtual seconds, one request at a time, as a link does.

    ``memory`` maps register address -> word (unmapped words read as 0);
    ``short`` caps how many registers the answer to a block carries.
    """

    def __init__(
        self,
        clock: FakeClock,
        memory: dict[int, int],
        read_s: float = 0.25,
        failures: dict[int, Exception] | None = None,
        short: dict[int, int] | None = None,
    ) -> None:
        self.clock = clock
        self.memory = memory
        self.read_s = read_s
        self.failures = failures or {}
        self.short = short or {}
        self.reads: list[tuple[float, float, int, int]] = []  # start, end, address, count
        self._busy = False

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> bytes | list[int]:
        assert not self._busy, "reads overlap"
        self._busy = True
        start = self.clock.now()
        try:
            await asyncio.sleep(0)
            self.clock.advance(self.read_s)
        finally:
            self._busy = False
        self.reads.append((start, self.clock.now(), address, count))
        if address in self.failures:
            raise self.failures[address]
        words = [self.memory.get(a, 0) for a in range(address, address + count)]
        return registers_to_bytes(words[: self.short.get(address, count)])  # registers come as their wire bytes


class Enough(Exception):
    """Raised by the recorder to end ``Poller.run`` after enough polls."""


class Recorder:
    """The poller's emit callback: keeps each poll's samples, stops after ``polls``."""

    def __init__(self, polls: int) -> None:
        self.limit = polls
        self.polls: list[list[Sample]] = []

    def __call__(self, samples: list[Sample]) -> None:
        self.polls.append(samples)
        if len(self.polls) >= self.limit:
            raise Enough


# param id -> (register address, value), inside the PAC3200 default blocks 7+64 and 801+20;
# every value is exact in its type, so equality checks are exact.
PAC_VALUES_F32 = {"104": (7, 400.25), "107": (13, 12.5), "132": (63, 8660.0), "133": (65, 8000.5),
                  "134": (67, -3300.75), "135": (69, -0.921875)}
PAC_VALUES_F64 = {"222": (801, 123456789.0), "226": (817, 98765.4375)}
EXPECTED_VALUES = {pid: value for pid, (_, value) in (PAC_VALUES_F32 | PAC_VALUES_F64).items()}


def pac3200_memory() -> dict[int, int]:
    """The meter's registers holding the known values, address -> word."""
    memory = {}
    for fmt, values in (("f", PAC_VALUES_F32), ("d", PAC_VALUES_F64)):
        for address, value in values.values():
            raw = struct.pack(">" + fmt, value)
            words = struct.unpack(f">{len(raw) // 2}H", raw)
            memory.update(zip(range(address, address + len(words)), words))
    return memory


def make_plan(params: list[str] | None = None) -> DevicePlan:
    profile = load_profile("pac3200")
    settings = DeviceSettings(id="pac1", host="127.0.0.1", params=params)
    return DevicePlan(settings=settings, profile=profile, blocks=plan_reads(profile, params or profile.default_ids))


async def run_until_enough(poller: Poller) -> None:
    with pytest.raises(Enough):
        await poller.run()


@pytest.mark.parametrize(
    ("period_s", "shift_s", "start_s", "ticks"),
    [
        pytest.param(10, 0, T0 + 3.2, [T0 + 10, T0 + 20, T0 + 30], id="p10-lands-on-00-10-20"),
        pytest.param(10, 3, T0 + 3.2, [T0 + 13, T0 + 23, T0 + 33], id="p10-shift3-lands-on-03-13-23"),
        pytest.param(10, 0, T0, [T0, T0 + 10, T0 + 20], id="p10-start-exactly-on-tick-polls-it"),
        pytest.param(1, 0, T0 + 0.5, [T0 + 1, T0 + 2, T0 + 3], id="p1"),
        pytest.param(900, 0, T0 + 101, [T0 + 1000, T0 + 1900, T0 + 2800], id="p15min"),
    ],
)
async def test_samples_carry_nominal_tick_and_read_duration_as_delay(period_s, shift_s, start_s, ticks) -> None:
    clock = FakeClock(start_s)
    link = FakeLink(clock, pac3200_memory(), read_s=0.25)
    recorder = Recorder(polls=len(ticks))
    poller = Poller(make_plan(["133"]), link, TickGrid(period_s, shift_s), clock, recorder)

    await run_until_enough(poller)

    assert recorder.polls == [[Sample("pac1", "133", tick, 8000.5, 250.0, Code.OK)] for tick in ticks]
    assert [start for start, _, _, _ in link.reads] == ticks  # each read starts on its tick
    assert poller.stats.missed_ticks == 0


async def test_two_block_device_delay_grows_per_block_and_values_decode() -> None:
    clock = FakeClock(T0 - 1)
    link = FakeLink(clock, pac3200_memory(), read_s=0.125)
    recorder = Recorder(polls=1)
    poller = Poller(make_plan(), link, TickGrid(10), clock, recorder)

    await run_until_enough(poller)

    (samples,) = recorder.polls
    assert {s.param_id: s.value for s in samples} == EXPECTED_VALUES
    assert {s.param_id: s.delay_ms for s in samples} == {
        **{pid: 125.0 for pid in PAC_VALUES_F32},
        **{pid: 250.0 for pid in PAC_VALUES_F64},
    }
    assert {(s.device_id, s.tick_s, s.code) for s in samples} == {("pac1", T0, Code.OK)}
    assert [(address, count) for _, _, address, count in link.reads] == [(7, 64), (801, 20)]


async def test_overrunning_poll_skips_missed_ticks_and_resumes_on_the_grid() -> None:
    period_s = 10
    clock = FakeClock(T0 - 0.5)
    link = FakeLink(clock, pac3200_memory(), read_s=2.5 * period_s)
    recorder = Recorder(polls=3)
    poller = Poller(make_plan(["133"]), link, TickGrid(period_s), clock, recorder)

    await run_until_enough(poller)

    ticks = [poll[0].tick_s for poll in recorder.polls]
    # Each 25 s read ends at :25, so :10 and :20 are skipped and :30 is next.
    assert ticks == [T0, T0 + 30, T0 + 60]
    assert [start for start, _, _, _ in link.reads] == ticks  # never a queued-up tick read late
    assert [poll[0].delay_ms for poll in recorder.polls] == [25000.0] * 3
    # Two ticks missed after each of the first two polls (the third was stopped in emit).
    assert poller.stats.missed_ticks == 4
    assert poller.stats.ticks == 2


async def test_reads_of_a_device_never_overlap() -> None:
    clock = FakeClock(T0 - 0.5)
    link = FakeLink(clock, pac3200_memory(), read_s=7.5)  # two blocks: 15 s per poll
    recorder = Recorder(polls=4)
    poller = Poller(make_plan(), link, TickGrid(10), clock, recorder)

    await run_until_enough(poller)

    assert len(link.reads) == 8
    for (_, previous_end, _, _), (start, _, _, _) in zip(link.reads, link.reads[1:]):
        assert start >= previous_end
    assert [poll[0].tick_s for poll in recorder.polls] == [T0, T0 + 20, T0 + 40, T0 + 60]
    assert poller.stats.missed_ticks == 3


# --- Failures become codes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        pytest.param(LinkError("cannot connect to 127.0.0.1:502"), 1, id="link-error-is-err-connection"),
        pytest.param(ExceptionResponse(0x0A), 4, id="gateway-path-unavailable-0x0A-is-server-off"),
        pytest.param(ExceptionResponse(0x0B), 4, id="gateway-target-failed-0x0B-is-server-off"),
        pytest.param(ExceptionResponse(0x02), 8, id="illegal-address-0x02-is-err-register"),
        pytest.param(ExceptionResponse(0x01), 8, id="illegal-function-0x01-is-err-register"),
        pytest.param(RuntimeError("boom"), 2, id="anything-else-is-driver-error"),
    ],
)
def test_code_for_failure(exc, code) -> None:
    assert code_for_failure(exc) == code


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        pytest.param(ExceptionResponse(0x0B), Code.SERVER_OFF, id="gateway-0x0B"),
        pytest.param(ExceptionResponse(0x02), Code.ERR_REGISTER, id="illegal-address-0x02"),
        pytest.param(RuntimeError("boom"), Code.DRIVER_ERROR, id="unexpected-error"),
    ],
)
async def test_block_failure_that_is_not_a_link_error_still_reads_next_block(failure, code) -> None:
    clock = FakeClock(T0)
    link = FakeLink(clock, pac3200_memory(), failures={7: failure})
    poller = Poller(make_plan(), link, TickGrid(10), clock, lambda samples: None)

    samples = await poller.poll(T0)

    assert [address for _, _, address, _ in link.reads] == [7, 801]
    assert {s.param_id: (s.value, s.code) for s in samples} == {
        **{pid: (None, code) for pid in PAC_VALUES_F32},
        **{pid: (EXPECTED_VALUES[pid], Code.OK) for pid in PAC_VALUES_F64},
    }


async def test_link_error_on_first_block_gives_second_block_code_1_without_reading_it() -> None:
    clock = FakeClock(T0)
    link = FakeLink(clock, pac3200_memory(), read_s=1.0, failures={7: LinkError("timeout")})
    poller = Poller(make_plan(), link, TickGrid(10), clock, lambda samples: None)

    samples = await poller.poll(T0)

    assert [address for _, _, address, _ in link.reads] == [7]
    assert [s.param_id for s in samples] == ["104", "107", "132", "133", "134", "135", "222", "226"]
    assert {(s.value, s.code, s.tick_s, s.delay_ms) for s in samples} == {(None, Code.ERR_CONNECTION, T0, 1000.0)}


@pytest.mark.parametrize("returned", [10, 0], ids=["short", "empty"])
async def test_short_register_list_gives_code_32_for_every_field_of_the_block(returned) -> None:
    clock = FakeClock(T0)
    link = FakeLink(clock, pac3200_memory(), short={7: returned})
    poller = Poller(make_plan(), link, TickGrid(10), clock, lambda samples: None)

    samples = await poller.poll(T0)

    assert {s.param_id: (s.value, s.code) for s in samples} == {
        **{pid: (None, Code.LENREG_ZERO) for pid in PAC_VALUES_F32},
        **{pid: (EXPECTED_VALUES[pid], Code.OK) for pid in PAC_VALUES_F64},
    }
    assert poller.stats.codes == {int(Code.LENREG_ZERO): 1}


async def test_nan_in_one_field_marks_only_that_field() -> None:
    clock = FakeClock(T0)
    memory = pac3200_memory()
    memory.update({65: 0x7FC0, 66: 0x0000})  # P_TOT (133) is NaN
    link = FakeLink(clock, memory)
    poller = Poller(make_plan(), link, TickGrid(10), clock, lambda samples: None)

    samples = await poller.poll(T0)

    assert {s.param_id: (s.value, s.code) for s in samples} == {
        **{pid: (value, Code.OK) for pid, value in EXPECTED_VALUES.items()},
        "133": (None, Code.VALUE_NAN),
    }


async def test_device_without_profile_yields_one_driver_not_found_row() -> None:
    clock = FakeClock(T0 + 0.25)
    link = FakeLink(clock, {})
    settings = DeviceSettings(id="pac9", host="127.0.0.1", profile="missing.yaml")
    plan = DevicePlan(settings=settings, profile=None, blocks=(), profile_error="profile 'missing.yaml' not found")
    poller = Poller(plan, link, TickGrid(10), clock, lambda samples: None)

    samples = await poller.poll(T0)

    assert len(samples) == 1
    (sample,) = samples
    assert (sample.device_id, sample.param_id, sample.tick_s, sample.value, sample.code) == (
        "pac9", "100", T0, None, Code.DRIVER_NOT_FOUND
    )
    assert sample.code == 64
    assert sample.delay_ms == 250.0
    assert link.reads == []


# stop(at) with the poller waiting for its next tick: (next tick relative to
# the stop time, may the caller cancel at once, ticks polled after the stop).
STOP_CASES = {
    "next tick later than the stop: cancel now": (1.0, True, 0),
    "next tick due exactly at the stop: poll it, then end": (0.0, False, 1),
    "next tick already overdue: poll it, then end": (-0.5, False, 1),
}


@pytest.mark.parametrize(("next_tick_rel_s", "cancel_now", "polls_after"), STOP_CASES.values(), ids=STOP_CASES.keys())
async def test_stop_polls_ticks_already_due_and_nothing_later(next_tick_rel_s, cancel_now, polls_after) -> None:
    clock = FakeClock(T0 + 0.5)
    polls: list[list[Sample]] = []
    poller = Poller(make_plan(), FakeLink(clock, pac3200_memory(), read_s=0.1), TickGrid(1), clock, polls.append)
    poller.next_tick_s = T0 + 1  # what run() sets while it waits for tick T0+1

    assert poller.stop(T0 + 1 - next_tick_rel_s) is cancel_now
    if not cancel_now:
        await poller.run()  # returns by itself once past the stop time
    assert len(polls) == polls_after
    assert all(s.tick_s == T0 + 1 for poll in polls for s in poll)


# --- Backoff of silent devices ----------------------------------------------------------------


class SilentLink(ReadsInTurn):
    """A device that times out (after ``timeout_s`` virtual seconds) until ``heal()``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.silent = True
        self.reads: list[float] = []

    async def read(self, unit, function, address, count, timeout_s):
        self.reads.append(self.clock.now())
        await asyncio.sleep(0)
        if self.silent:
            self.clock.t += timeout_s
            raise LinkError(f"no answer within {timeout_s:g} s", timed_out=True)
        self.clock.t += 0.05
        return bytes(2 * count) if function >= 3 else [0] * count  # registers come as their wire bytes


async def test_backed_off_device_still_writes_code_1_rows_every_tick_and_recovers_on_answer() -> None:
    clock = FakeClock(T0 - 0.5)
    link = SilentLink(clock)
    profile = load_profile("pac3200")
    settings = DeviceSettings(id="dead", host="127.0.0.1", timeout=0.3)
    plan = DevicePlan(settings=settings, profile=profile, blocks=plan_reads(profile, profile.default_ids))
    polls: list[list] = []
    poller = Poller(plan, link, TickGrid(1), clock, polls.append)

    task = asyncio.create_task(poller.run())
    while len(polls) < 8:
        await asyncio.sleep(0)
    link.silent = False
    while len(polls) < 12:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert [poll[0].tick_s - T0 for poll in polls[:12]] == list(range(12))  # a row set every tick
    for poll in polls[:8]:
        assert {(s.value, s.code) for s in poll} == {(None, Code.ERR_CONNECTION)}
        assert len(poll) == len(plan.param_ids)
    # Probes on ticks 0, 2, 5 (timeouts), then 10: answered; 1, 3-4, 6-9 skipped.
    assert [t - T0 for t in link.reads[:3]] == [0, 2, 5]
    assert link.reads[3] - T0 == 10 and all(s.code == 0 for s in polls[10])
    assert all(s.code == 0 for s in polls[11])
    assert poller.stats.skipped_polls == 7
    assert poller.stats.missed_ticks == 0


# --- Pause and stats ------------------------------------------------------------------------


@pytest.mark.parametrize(("refused", "polled"), [
    pytest.param([False, False, False], 3, id="never-paused-polls-every-tick"),
    pytest.param([False, True, True, False], 2, id="paused-ticks-are-not-read-nor-counted"),
])
async def test_the_pause_check_given_at_construction_is_asked_before_every_tick(refused, polled) -> None:
    clock = FakeClock(T0 - 0.5)
    link = FakeLink(clock, pac3200_memory())
    recorder = Recorder(polls=polled)
    asked = iter(refused)
    poller = Poller(make_plan(["133"]), link, TickGrid(1), clock, recorder, paused=lambda: next(asked))

    await run_until_enough(poller)

    tick_reads = [start - T0 for start, _, _, _ in link.reads]
    assert tick_reads == [index for index, refuse in enumerate(refused) if not refuse]
    assert len(recorder.polls) == polled


async def test_snapshot_is_a_copy_that_later_polls_do_not_change() -> None:
    clock = FakeClock(T0 - 0.5)
    link = FakeLink(clock, pac3200_memory(), failures={801: LinkError("no answer")})
    recorder = Recorder(polls=1)
    poller = Poller(make_plan(), link, TickGrid(1), clock, recorder)
    await run_until_enough(poller)
    first = poller.snapshot()

    recorder.limit = 2
    await run_until_enough(poller)

    later = poller.snapshot()
    assert first.codes == {Code.ERR_CONNECTION: 1}
    assert later.codes == {Code.ERR_CONNECTION: 2}
    assert (first.failed_blocks, later.failed_blocks) == (1, 2)
