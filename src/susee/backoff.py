"""Backing off devices that went silent: the poller's, so that a dead meter does not hold its bus.

``Backoff`` skips the polls of a device whose requests time out, for 1, 2,
4 ... ticks (capped), so a dead meter costs its bus one timeout per backoff
period instead of one per tick.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)

# A silent device is probed again after at most this many skipped ticks...
BACKOFF_MAX_TICKS = 64
# ...and at most this long: at sample_time 10 s, 64 ticks would be 10 minutes
# before a repaired meter is noticed.
BACKOFF_MAX_S = 300.0


def backoff_cap_ticks(period_s: float) -> int:
    """The most ticks a silent device is skipped in a row at sampling ``period_s``."""
    return max(1, min(BACKOFF_MAX_TICKS, int(BACKOFF_MAX_S // period_s)))


class DeviceEvents(Protocol):
    """Collects one kind of event of many devices (the poller's ``TickLog``)."""

    def add(self, device_id: str, count: int = 1) -> None: ...


class BackoffReports(Protocol):
    """Where the backoffs of a site report, so that a gateway dying with 1,000
    meters behind it makes one line, not 1,000 (the poller's ``PollReports``)."""

    silent: DeviceEvents  # devices that stopped answering; count: ticks to skip
    answering: DeviceEvents  # devices that answer again; count: ticks skipped


class Backoff:
    """Which ticks to skip for a device whose requests time out.

    After a poll in which a request timed out and nothing was answered, the
    next 1, 2, 4 ... ticks (doubling with each such poll in a row, capped at
    ``cap_ticks``) are skipped; the poll after them probes the device. A poll
    the device answers, even in part or with an exception response, ends the
    backoff: the device is there. A poll that failed otherwise (connection
    refused, serial port missing) neither extends nor ends it: such failures
    do not hold the bus for a timeout.

    Going silent and answering again are warnings of their own, per device;
    with ``reports`` they are handed over to be logged with those of other
    devices, and the per-device lines go to DEBUG. Each further probe that
    gets no answer is DEBUG either way: the warning already said so.
    """

    def __init__(self, device_id: str, cap_ticks: int, reports: BackoffReports | None = None) -> None:
        self.device_id = device_id
        self.cap_ticks = cap_ticks
        self.reports = reports
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
                self._went_silent()
            else:
                log.debug(
                    "device %s: still no answer after %d timed-out polls, skipping the next %d tick(s)",
                    self.device_id, self.timeouts, self.skip_left,
                )
        elif answered and self.timeouts:
            self._answers_again()
            self.timeouts = self.skipped = 0

    def _went_silent(self) -> None:
        level = logging.WARNING
        if self.reports is not None:
            self.reports.silent.add(self.device_id, self.skip_left)
            level = logging.DEBUG
        log.log(level, "device %s: no answer, backing off: skipping the next %d tick(s)", self.device_id, self.skip_left)

    def _answers_again(self) -> None:
        level = logging.WARNING
        if self.reports is not None:
            self.reports.answering.add(self.device_id, self.skipped)
            level = logging.DEBUG
        log.log(
            level, "device %s: answers again, backoff ended after %d timed-out polls and %d skipped tick(s)",
            self.device_id, self.timeouts, self.skipped,
        )
