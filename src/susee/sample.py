"""The unit of data that flows from pollers to the writer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one param of one device at one nominal tick.

    ``tick_s`` is the nominal tick (seconds since the epoch, UTC), never the
    read time; ``delay_ms`` is how late the response carrying it arrived.
    ``value`` is None whenever ``code`` says the value is not usable.
    """

    device_id: str
    param_id: str
    tick_s: float
    value: float | None
    delay_ms: float
    code: int
