"""One task per device: read its planned blocks on every tick of the grid.

This is the one place where read failures become quality codes. A failed
block still yields one row per param, so gaps show in the table. Reads of a
device never overlap: a poll that overruns skips the ticks it missed (counted
and logged), it never queues them up. A tick's blocks are read with one
``read_many`` call (each still a turn of its own on the bus): the task wakes
once for the tick and once for all the answers, each stamped with its
arrival time, which gives its Delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from susee.backoff import Backoff, backoff_cap_ticks
from susee.codec import registers_to_bytes
from susee.devices import DevicePlan
from susee.planner import BlockRead
from susee.quality import DRIVER_NOT_FOUND_PARAM, Code, code_for_exception_response, mark_late
from susee.sample import Sample, fast_tuple
from susee.shown import first_few
from susee.ticks import Clock, StepWatch, TickGrid
from susee.links import Answer, ExceptionResponse, Link, LinkError, Read

log = logging.getLogger(__name__)

# Plain ints: an IntFlag operation costs a Python-level call, on every device-tick.
_NO_ANSWER = int(Code.ERR_CONNECTION)
_VALUE_NAN = int(Code.VALUE_NAN)

Emit = Callable[[list[Sample]], None]


def _never() -> bool:
    return False



class TickLog:
    """One warning per period for an event that many devices may have at once.

    At a site of thousands of meters, one line per device and tick would
    write thousands of lines a second exactly when the machine is short of
    time (overruns). The events of one period are logged together: how many
    devices, a total and the first few ids. Each poller still counts its own
    in ``PollStats``.
    """

    def __init__(self, what: str, period_s: float) -> None:
        self.what = what  # e.g. "overran their poll, skipping %d tick(s)": %d gets the total
        self.period_s = period_s
        self._ids: dict[str, None] = {}  # the devices, in order of their first event
        self._total = 0

    def add(self, device_id: str, count: int = 1) -> None:
        if not self._ids:
            asyncio.get_running_loop().call_later(self.period_s, self.flush)
        self._ids[device_id] = None
        self._total += count

    def flush(self) -> None:
        """Log what was added since the last flush, if anything (also called at shutdown)."""
        ids, total = self._ids, self._total
        if not ids:
            return
        self._ids, self._total = {}, 0
        log.warning("%d device(s) " + self.what + " in the last %g s: %s", len(ids), total, self.period_s, first_few(ids))


class PollReports:
    """The aggregated logs the pollers of a site share."""

    def __init__(self, period_s: float) -> None:
        self.overruns = TickLog("overran their poll, skipping %d tick(s) in all", period_s)
        # The first unexpected error of each device is logged with its traceback; the rest go here.
        self.errors = TickLog("had %d unexpected read or decode error(s) (Code 2)", period_s)
        # Backoffs (``BackoffReports``): a gateway that dies takes all its meters with it at once.
        self.silent = TickLog("stopped answering, backing off: skipping %d tick(s) in all", period_s)
        self.answering = TickLog("answer again, backoff ended after %d skipped tick(s) in all", period_s)
        # Devices that answer, but with an exception instead of values (a gateway whose meter is
        # silent: 0x0B), and that answer with values again: once per change, not at every tick.
        self.refusing = TickLog("answer with an exception instead of values (%d poll(s)); the Code column says which",
                                period_s)
        self.values_again = TickLog("answer with values again after %d poll(s) with exceptions in all", period_s)
        self.steps = StepWatch(period_s)  # [spool branch] wall-clock steps, logged once for the site

    def flush(self) -> None:
        self.overruns.flush()
        self.errors.flush()
        self.silent.flush()
        self.answering.flush()
        self.refusing.flush()
        self.values_again.flush()


def code_for_failure(exc: BaseException) -> int:
    """The quality code of a read that raised ``exc``."""
    if isinstance(exc, LinkError):
        return Code.ERR_CONNECTION
    if isinstance(exc, ExceptionResponse):
        return code_for_exception_response(exc.exception_code)
    return Code.DRIVER_ERROR


@dataclass
class PollStats:
    """Counters a device's poller keeps, for logs and ``check``."""

    ticks: int = 0
    missed_ticks: int = 0
    failed_blocks: int = 0
    skipped_polls: int = 0  # ticks not read while backing off a silent device (rows still written)
    codes: dict[int, int] = field(default_factory=dict)


class Poller:
    """Polls one device on the shared tick grid and emits its samples."""

    def __init__(self, plan: DevicePlan, link: Link | None, grid: TickGrid, clock: Clock, emit: Emit,
                 reports: PollReports | None = None, paused: Callable[[], bool] | None = None) -> None:
        self.plan = plan
        self.reports = reports or PollReports(grid.period_s)
        self._told_unexpected = False  # this device's first unexpected error was logged in full
        self._refused_polls = 0  # polls in a row answered with an exception response (0: answering with values)
        self.link = link
        self.grid = grid
        self.clock = clock
        self.emit = emit
        # Asked before every tick: True skips it (the store's "spool full: acquisition paused").
        self.paused: Callable[[], bool] = paused or _never
        self.stats = PollStats()
        self.backoff = Backoff(plan.id, backoff_cap_ticks(grid.period_s), self.reports)
        self._reads = tuple(Read(block.function, block.address, block.count) for block in plan.blocks)
        self.busy = False  # inside a poll: let it finish rather than cancel it
        self.next_tick_s = float("inf")
        self._stop_after_s: float | None = None

    async def run(self) -> None:
        """Poll on every tick until cancelled or, after the current poll, stopped."""
        grid, clock = self.grid, self.clock
        index = grid.index_at_or_after(clock.now())
        tick_s = grid.time_of(index)
        while True:
            self.next_tick_s = tick_s
            if self._stop_after_s is not None and tick_s > self._stop_after_s:
                return
            self.reports.steps.waits(tick_s, clock.now())  # [spool branch, issue 15 item 7]
            await clock.sleep_until(tick_s)
            if not self.paused():  # paused: the writer counts the tick as not acquired
                self.busy = True
                try:
                    woke_s = clock.now()
                    samples = await self.poll(tick_s)
                    if clock.now() - tick_s > grid.period_s:  # [spool branch] clock step, pause, slow poll: Code 128
                        self.reports.steps.woke(tick_s, woke_s)
                        samples = mark_late(samples, grid.period_s * 1000.0)
                    self.emit(samples)
                finally:
                    self.busy = False
                self.stats.ticks += 1
            index += 1
            tick_s = grid.time_of(index)
            now_s = clock.now()
            if now_s > tick_s:  # the poll overran: skip the ticks it missed, never queue them up
                following = grid.index_at_or_after(now_s)
                skipped = following - index
                if skipped > 0:
                    self.stats.missed_ticks += skipped
                    self.reports.overruns.add(self.plan.id, skipped)
                    index = following
                    tick_s = grid.time_of(index)

    def snapshot(self) -> PollStats:
        """A copy of this device's counters, for summaries and status: polling goes on changing its own."""
        return replace(self.stats, codes=dict(self.stats.codes))

    def stop(self, at_s: float) -> bool:
        """Poll no tick later than ``at_s``; True if the caller may cancel now.

        Ticks already due are still polled, so a stop leaves every device with
        the same last tick: no tick ends up with rows from only some devices.
        """
        self._stop_after_s = at_s
        return not self.busy and self.next_tick_s > at_s

    async def poll(self, tick_s: float) -> list[Sample]:
        """Read every block once for the tick at ``tick_s``."""
        if self.plan.profile is None or self.link is None:
            delay_ms = (self.clock.now() - tick_s) * 1000.0
            return [Sample(self.plan.id, DRIVER_NOT_FOUND_PARAM, tick_s, None, delay_ms, Code.DRIVER_NOT_FOUND)]
        if self.backoff.skip():  # a silent device's tick: every block gets Code 1, unread
            self.stats.skipped_polls += 1
            delay_ms = (self.clock.now() - tick_s) * 1000.0
            samples = [sample for block in self.plan.blocks
                       for sample in self._failed(block, tick_s, delay_ms, _NO_ANSWER)]
        else:
            settings = self.plan.settings
            try:  # one turn of the bus per read, one wake-up for all of them
                answers = await self.link.read_many(settings.unit, self._reads, settings.timeout)
            except Exception as exc:  # a link that raised instead of answering: every block gets Code 2
                answers = [Answer(exc, self.clock.now())] * len(self._reads)
            samples = self._samples(answers, tick_s)
        finish = self.plan.finish  # scale registers: apply exponents, drop their rows
        return samples if finish is None else finish(samples)

    def _samples(self, answers: list[Answer], tick_s: float) -> list[Sample]:
        """Rows of every block from its answer; the Delay of each is when its own answer came."""
        samples: list[Sample] = []
        timed_out = answered = unreachable = refused = False
        for block, (outcome, received_s) in zip(self.plan.blocks, answers):
            delay_ms = (received_s - tick_s) * 1000.0
            if unreachable:  # not sent after a connection failure: the same code, not counted again
                samples += self._failed(block, tick_s, delay_ms, _NO_ANSWER)
            elif not isinstance(outcome, Exception):
                answered = True
                samples += self._received(block, outcome, tick_s, delay_ms)
            else:
                samples += self._read_failed(block, outcome, tick_s, delay_ms)
                if isinstance(outcome, LinkError):
                    unreachable = True
                    timed_out |= outcome.timed_out
                else:
                    answered = True  # an exception response is an answer: the device is there
                    refused |= isinstance(outcome, ExceptionResponse)
        self.backoff.record(timed_out=timed_out, answered=answered)
        if answered and (refused or self._refused_polls):
            self._track_refusals(refused)
        return samples

    def _track_refusals(self, refused: bool) -> None:
        """Log a device starting or ceasing to answer with exceptions once, not at every tick."""
        if refused:
            self._refused_polls += 1
            if self._refused_polls == 1:
                self.reports.refusing.add(self.plan.id)
                log.debug("device %s: answers with an exception instead of values", self.plan.id)
            return
        self.reports.values_again.add(self.plan.id, self._refused_polls)
        log.debug("device %s: answers with values again after %d poll(s) with exceptions",
                  self.plan.id, self._refused_polls)
        self._refused_polls = 0

    def _read_failed(self, block: BlockRead, exc: Exception, tick_s: float, delay_ms: float) -> list[Sample]:
        code = code_for_failure(exc)  # every failure becomes a code, in this one place
        self._count_failure(code)
        if code == Code.DRIVER_ERROR:
            self._unexpected("unexpected error reading %d+%d", block.address, block.count, exc_info=exc)
        else:
            log.debug("device %s: read %d+%d failed: %s", self.plan.id, block.address, block.count, exc)
        return self._failed(block, tick_s, delay_ms, code)

    def _received(self, block: BlockRead, data: bytes | list[int], tick_s: float, delay_ms: float) -> list[Sample]:
        # Registers come as their wire bytes, bits as 0/1 ints (see the links).
        received = len(data) >> 1 if block.function >= 3 else len(data)
        if received < block.count:
            self._count_failure(Code.LENREG_ZERO)
            log.debug("device %s: %d of %d registers at %d", self.plan.id, received, block.count, block.address)
            return self._failed(block, tick_s, delay_ms, Code.LENREG_ZERO)
        return self._decoded(block, data, tick_s, delay_ms)

    def _decoded(self, block: BlockRead, data: bytes | list[int], tick_s: float, delay_ms: float) -> list[Sample]:
        device_id = self.plan.id
        if block.function >= 3:
            buffer = data if len(data) == 2 * block.count else data[: 2 * block.count]
        else:
            try:
                buffer = registers_to_bytes(data[: block.count])  # one word per bit, as the decoders expect
            except Exception:
                self._unexpected("bits at %d are not 0/1", block.address)
                return self._failed(block, tick_s, delay_ms, Code.DRIVER_ERROR)
        try:
            values = block.decode_values(buffer)
        except Exception:  # field by field, so that only the culprit gets Code 2
            return self._decoded_by_field(block, buffer, tick_s, delay_ms)
        samples = [fast_tuple(Sample, (device_id, param_id, tick_s, value, delay_ms, 0))
                   for param_id, value in zip(block.param_ids, values)]
        if None in values:  # not finite: Code 16
            for index, value in enumerate(values):
                if value is None:
                    samples[index] = samples[index]._replace(code=_VALUE_NAN)
                    self._count_failure(_VALUE_NAN)
        return samples

    def _decoded_by_field(self, block: BlockRead, buffer: bytes, tick_s: float, delay_ms: float) -> list[Sample]:
        device_id = self.plan.id
        samples = []
        for planned in block.fields:
            try:
                value, code = planned.decode(buffer)
            except Exception:
                self._unexpected("cannot decode param %s", planned.param_id)
                value, code = None, Code.DRIVER_ERROR
            if code:
                self._count_failure(code)
            samples.append(Sample(device_id, planned.param_id, tick_s, value, delay_ms, int(code)))
        return samples

    def _failed(self, block: BlockRead, tick_s: float, delay_ms: float, code: int) -> list[Sample]:
        return [Sample(self.plan.id, pid, tick_s, None, delay_ms, int(code)) for pid in block.param_ids]

    def _unexpected(self, message: str, *args: object, exc_info: BaseException | bool = True) -> None:
        """Log an unexpected error (by default the one being handled): in full the first time,
        then in the shared per-period line."""
        if self._told_unexpected:
            self.reports.errors.add(self.plan.id)
            return
        self._told_unexpected = True
        log.error("device %s: " + message + " (further ones are counted, not shown)", self.plan.id, *args,
                  exc_info=exc_info)

    def _count_failure(self, code: int) -> None:
        self.stats.failed_blocks += 1
        self.stats.codes[int(code)] = self.stats.codes.get(int(code), 0) + 1
