"""The tick grid: clock-aligned ticks that never drift (the poller on it: tests/test_poller.py)."""

from __future__ import annotations

import pytest

from susee.ticks import TickGrid

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, a multiple of 10 s and of 15 min + 100 s
DAY_TICKS_10S = 8640  # 86400 s / 10 s


# --- TickGrid -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period_s", "shift_s", "t_s", "index", "tick_s"),
    [
        pytest.param(10, 0, T0, 170_000_000, T0, id="p10-exactly-on-tick"),
        pytest.param(10, 0, T0 - 0.001, 170_000_000, T0, id="p10-just-before-tick"),
        pytest.param(10, 0, T0 + 0.001, 170_000_001, T0 + 10, id="p10-just-after-tick"),
        pytest.param(10, 0, 1_700_000_000.000001, 170_000_001, T0 + 10, id="p10-one-microsecond-after"),
        pytest.param(10, 0, 1_699_999_999.999999, 170_000_000, T0, id="p10-one-microsecond-before"),
        pytest.param(10, 0, T0 + 3.2, 170_000_001, T0 + 10, id="p10-between-ticks"),
        pytest.param(10, 3, T0, 170_000_000, T0 + 3, id="p10-shift3-before-shifted-tick"),
        pytest.param(10, 3, T0 + 3, 170_000_000, T0 + 3, id="p10-shift3-exactly-on-tick"),
        pytest.param(10, 3, T0 + 2.999, 170_000_000, T0 + 3, id="p10-shift3-just-before"),
        pytest.param(10, 3, T0 + 3.001, 170_000_001, T0 + 13, id="p10-shift3-just-after"),
        pytest.param(1, 0, T0 + 0.2, 1_700_000_001, T0 + 1, id="p1-between-ticks"),
        pytest.param(1, 0, T0, 1_700_000_000, T0, id="p1-exactly-on-tick"),
        pytest.param(900, 0, T0 + 100, 1_888_889, T0 + 100, id="p15min-exactly-on-tick"),
        pytest.param(900, 0, T0 + 99.999, 1_888_889, T0 + 100, id="p15min-just-before"),
        pytest.param(900, 0, T0 + 101, 1_888_890, T0 + 1000, id="p15min-just-after"),
        pytest.param(10, 0, 0.0, 0, 0.0, id="p10-epoch"),
    ],
)
def test_tick_grid_index_at_or_after_and_time_of(period_s, shift_s, t_s, index, tick_s) -> None:
    grid = TickGrid(period_s, shift_s)

    assert grid.index_at_or_after(t_s) == index
    assert grid.time_of(index) == tick_s


@pytest.mark.parametrize(
    ("period_s", "shift_s", "message"),
    [
        pytest.param(10, 10, "shift", id="shift-equal-to-period"),
        pytest.param(10, 12, "shift", id="shift-above-period"),
        pytest.param(10, -1, "shift", id="negative-shift"),
        pytest.param(0, 0, "period", id="period-zero"),
        pytest.param(-10, 0, "period", id="negative-period"),
    ],
)
def test_tick_grid_rejects_impossible_grid(period_s, shift_s, message) -> None:
    with pytest.raises(ValueError, match=message):
        TickGrid(period_s, shift_s)


def test_tick_grid_does_not_drift_over_a_day_of_10s_ticks() -> None:
    grid = TickGrid(10)
    first = grid.index_at_or_after(T0)

    times = [grid.time_of(first + k) for k in range(DAY_TICKS_10S)]

    assert times == [(first + k) * 10.0 for k in range(DAY_TICKS_10S)]
    assert grid.index_at_or_after(times[-1]) == first + DAY_TICKS_10S - 1


def test_tick_grid_with_shift_does_not_drift_over_a_day() -> None:
    grid = TickGrid(10, 3)
    first = grid.index_at_or_after(T0)

    assert all(grid.time_of(first + k) == (first + k) * 10.0 + 3.0 for k in range(DAY_TICKS_10S))
