"""The unit of data that flows from pollers to the writer."""

from __future__ import annotations

from typing import NamedTuple


class Sample(NamedTuple):
    """One value of one param of one device at one nominal tick.

    ``tick_s`` is the nominal tick (seconds since the epoch, UTC), never the
    read time; ``delay_ms`` is how late the response carrying it arrived.
    ``value`` is None whenever ``code`` says the value is not usable.

    A NamedTuple, not a frozen dataclass: a 1,000-meter site makes 8,000 of
    them a second, and a frozen dataclass costs three times as much to build.
    """

    device_id: str
    param_id: str
    tick_s: float
    value: float | None
    delay_ms: float
    code: int


# Builds a tuple subclass (a Sample, an Answer) from a tuple of its fields in C:
# ``Sample(...)`` goes through a Python-level ``__new__`` that costs twice as
# much, and the hot paths (the poller, eight times per device-tick; a replay,
# 100,000 rows at a time) build millions of them. Only for NamedTuples, whose
# fields are exactly the tuple's items: ``fast_tuple(Sample, (device, param, ...))``.
fast_tuple = tuple.__new__
