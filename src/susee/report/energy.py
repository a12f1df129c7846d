"""Counter arithmetic on Q15 rows: energy per 15-minute bucket, never a sum of samples.

The counter is a piecewise-linear function of time through its good readings
(Q15 FirstDate/FirstValue and LastDate/LastValue). The energy of a bucket is

- inside it: ``Rise`` (the rises between its consecutive good readings), less
  one implausible ``MaxRise``; a drop is a reset (flagged, the energy counts
  again from the new reading) unless a rollover ``modulus`` turns it into a
  wrap (``Drops * modulus - Fall`` more);
- plus its share of each *span* between the last good reading of a bucket and
  the first good reading of the next bucket that has one, in proportion to the
  time the span spends in the bucket. That is the counter interpolated
  linearly at the bucket's boundaries: a gap (missing or bad samples) has its
  energy apportioned in proportion to time. A span longer than 1.5 sample
  periods is a *gap*: its pieces are estimates wherever the gap crosses the
  boundary of a reported interval (``GapSpan``).

A span whose counter went down is a reset (or a wrap with a modulus); one
rising faster than ``max_power`` is a jump: flagged, not counted. A bucket no
reading and no span reaches has no energy (NaN), which is not zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from susee.report.intervals import BUCKET_S

RESET, JUMP, WRAP = 1, 2, 4
FLAG_NAMES = {RESET: "reset", JUMP: "jump", WRAP: "rollover"}
# A span between consecutive good readings longer than this many sample
# periods had missing or bad samples in it: its split is an estimate.
GAP_PERIODS = 1.5


@dataclass(frozen=True, slots=True)
class Q15Row:
    """The columns of one ``see<job>Q15`` row that counter arithmetic reads (times in epoch s)."""

    bucket_s: int
    samples: int
    good: int
    first_s: float | None = None
    first_value: float | None = None
    last_s: float | None = None
    last_value: float | None = None
    rise: float | None = None
    fall: float | None = None
    drops: int = 0
    max_rise: float | None = None
    codes: int = 0


@dataclass(frozen=True, slots=True)
class CounterRules:
    """What the profile says about a counter."""

    sample_time_s: float
    max_power_w: float | None = None  # W; for varh counters var
    modulus: float | None = None


@dataclass(frozen=True, slots=True)
class GapSpan:
    """A gap's energy split over buckets: ``pieces`` (grid index, Wh) inside the grid.

    ``first``/``last`` are the grid indices of the buckets it touches (they may
    lie outside the grid): a piece is measured only for a cell holding them all.
    """

    first: int
    last: int
    pieces: tuple[tuple[int, float], ...]


@dataclass
class Series:
    """One counter's figures per bucket of the report grid ``start_s + 900 * i``."""

    start_s: int
    energy: np.ndarray  # Wh per bucket, NaN where nothing is known
    flags: np.ndarray  # RESET | JUMP | WRAP bits per bucket
    good: np.ndarray
    samples: np.ndarray
    codes: np.ndarray
    spans: list[GapSpan]
    sample_time_s: float


def flag_words(flags: int) -> str:
    """``RESET | JUMP`` -> ``"reset|jump"``; empty when no flag."""
    return "|".join(name for bit, name in FLAG_NAMES.items() if flags & bit)


def counter_series(rows: Iterable[Q15Row], start_s: int, count: int, rules: CounterRules) -> Series:
    """Energy per bucket of the grid [start_s, start_s + count * 900) from Q15 rows sorted by bucket.

    Rows outside the grid (the good buckets just before and after it) only
    bracket the spans that reach into it.
    """
    energy = np.full(count, np.nan)
    flags = np.zeros(count, dtype=np.int64)
    good = np.zeros(count, dtype=np.int64)
    samples = np.zeros(count, dtype=np.int64)
    codes = np.zeros(count, dtype=np.int64)
    spans: list[GapSpan] = []
    previous: Q15Row | None = None
    for row in rows:
        index = (row.bucket_s - start_s) // BUCKET_S
        inside = 0 <= index < count
        if inside:
            samples[index], good[index], codes[index] = row.samples, row.good, row.codes
        if row.good <= 0 or row.first_s is None or row.last_s is None:
            continue
        if previous is not None:
            _add_span(previous, row, start_s, count, rules, energy, flags, spans)
        if inside:
            wh, flag = _inside(row, rules)
            energy[index] = (0.0 if np.isnan(energy[index]) else energy[index]) + wh
            flags[index] |= flag
        previous = row
    return Series(start_s, energy, flags, good, samples, codes, spans, rules.sample_time_s)


def _inside(row: Q15Row, rules: CounterRules) -> tuple[float, int]:
    """Energy between the bucket's own good readings, and its flags."""
    if row.good < 2 or row.rise is None:
        return 0.0, 0
    wh, flag = row.rise, 0
    if row.drops:
        if rules.modulus is not None:
            wh += row.drops * rules.modulus - (row.fall or 0.0)
            flag |= WRAP
        else:
            flag |= RESET
    # The largest single rise happened within the bucket's readings: if even
    # their whole span could not produce it, it is a jump.
    if (rules.max_power_w is not None and row.max_rise is not None
            and row.max_rise > rules.max_power_w * (row.last_s - row.first_s) / 3600):  # type: ignore[operator]
        wh -= row.max_rise
        flag |= JUMP
    return wh, flag


def _add_span(before: Q15Row, after: Q15Row, start_s: int, count: int, rules: CounterRules,
              energy: np.ndarray, flags: np.ndarray, spans: list[GapSpan]) -> None:
    """Split the counter's change from ``before``'s last reading to ``after``'s first over the buckets between."""
    t0, t1 = before.last_s, after.first_s
    assert t0 is not None and t1 is not None and before.last_value is not None and after.first_value is not None
    if t1 <= t0:
        return
    delta, flag = after.first_value - before.last_value, 0
    if delta < 0:
        if rules.modulus is not None:
            delta, flag = delta + rules.modulus, WRAP
        else:
            delta, flag = 0.0, RESET  # the old count is lost; counting resumes from the new reading
    if rules.max_power_w is not None and delta > rules.max_power_w * (t1 - t0) / 3600:
        delta, flag = 0.0, flag | JUMP
    first = int((t0 - start_s) // BUCKET_S)
    last = int((t1 - start_s) // BUCKET_S)  # the bucket of the new reading
    end = -int(-(t1 - start_s) // BUCKET_S) - 1  # the last bucket the span covers
    pieces = []
    for index in range(max(first, 0), min(end, count - 1) + 1):
        bucket_start = start_s + index * BUCKET_S
        overlap = min(t1, bucket_start + BUCKET_S) - max(t0, bucket_start)
        if overlap <= 0:
            continue
        wh = delta * overlap / (t1 - t0)
        energy[index] = (0.0 if np.isnan(energy[index]) else energy[index]) + wh
        flags[index] |= flag
        pieces.append((index, wh))
    if flag and 0 <= last < count:
        flags[last] |= flag  # the bucket of the new reading shows the reset or jump
    if delta > 0 and first != end and t1 - t0 > GAP_PERIODS * rules.sample_time_s:
        spans.append(GapSpan(first, end, tuple(pieces)))
