"""The live view's tap: last tick, last good tick and the Delay histogram, per device-tick."""

from __future__ import annotations

import pytest

from susee.sample import Sample
from susee.web.state import DELAY_BOUNDS_MS, Tap

# (delays of successive device-ticks in ms, expected histogram counts by bucket index)
DELAY_CASES = [
    ([0.1], {0: 1}),
    ([5.0], {0: 1}),  # a bound belongs to its own bucket (le="0.005")
    ([5.01, 9.9], {1: 2}),
    ([10_000.0], {len(DELAY_BOUNDS_MS) - 1: 1}),
    ([10_000.1, 99_999.0], {len(DELAY_BOUNDS_MS): 2}),  # above every bound: +Inf only
    ([1.0, 30.0, 30.0, 700.0], {0: 1, 3: 2, 7: 1}),
]


@pytest.mark.parametrize(("delays", "expected"), DELAY_CASES)
def test_each_device_tick_counts_once_in_its_delay_bucket(delays, expected) -> None:
    tap = Tap({"d1": "133"})
    emit = tap.wrap(lambda samples: None)
    for index, delay in enumerate(delays):
        emit([Sample("d1", "133", 100.0 + index, 1.0, delay / 2, 0), Sample("d1", "222", 100.0 + index, 2.0, delay, 0)])
    assert {i: n for i, n in enumerate(tap.delay_counts) if n} == expected
    assert tap.delay_sum_ms[0] == pytest.approx(sum(delays))  # the tick's Delay: its last answer


def test_last_good_tick_stays_while_later_ticks_fail_and_every_tick_reaches_the_writer() -> None:
    written: list[list[Sample]] = []
    tap = Tap({"d1": "133"})
    emit = tap.wrap(written.append)
    good = [Sample("d1", "133", 10.0, 5.0, 3.0, 0)]
    failed = [Sample("d1", "133", 11.0, None, 300.0, 1)]
    emit(good)
    emit(failed)
    emit([])  # nothing to keep, still handed over
    assert written == [good, failed, []]
    assert tap.last == {"d1": (11.0, 300.0, 1, None)} and tap.last_good_s == {"d1": 10.0}
    assert tap.newest_tick_s[0] == 11.0
