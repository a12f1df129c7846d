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
    # The gap itself (epoch s, Wh): the daily rollups keep it to split it over any report's grid.
    t0: float = 0.0
    t1: float = 0.0
    delta: float = 0.0


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


# Columns of a Q15 row array (``as_array``), in Q15Row field order.
(BUCKET, SAMPLES, GOOD, FIRST_S, FIRST_V, LAST_S, LAST_V, RISE, FALL, DROPS, MAX_RISE, CODES) = range(12)


def as_array(rows: Iterable[Q15Row]) -> np.ndarray:
    """Q15 rows as a float array, one row per bucket, NaN for NULL (``counter_series``'s input)."""
    values = [[np.nan if getattr(row, name) is None else getattr(row, name) for name in Q15Row.__slots__]
              for row in rows]
    return np.array(values, dtype=np.float64).reshape(-1, 12)


def counter_series(rows: np.ndarray | Iterable[Q15Row], start_s: int, count: int, rules: CounterRules) -> Series:
    """Energy per bucket of the grid [start_s, start_s + count * 900) from Q15 rows sorted by bucket.

    ``rows`` is an ``as_array`` array (or Q15Rows). Rows outside the grid (the
    good buckets just before and after it) only bracket the spans that reach into it.
    """
    table = rows if isinstance(rows, np.ndarray) else as_array(rows)
    total = np.zeros(count)
    covered = np.zeros(count, dtype=bool)
    flags = np.zeros(count, dtype=np.int64)
    good = np.zeros(count, dtype=np.int64)
    samples = np.zeros(count, dtype=np.int64)
    codes = np.zeros(count, dtype=np.int64)
    index = ((table[:, BUCKET] - start_s) // BUCKET_S).astype(np.int64)
    inside = (index >= 0) & (index < count)
    samples[index[inside]] = table[inside, SAMPLES]
    good[index[inside]] = table[inside, GOOD]
    codes[index[inside]] = table[inside, CODES]
    readable = (table[:, GOOD] > 0) & ~np.isnan(table[:, FIRST_S]) & ~np.isnan(table[:, LAST_S])
    rows_in = table[readable & inside]
    at = index[readable & inside]
    wh, flag = _inside(rows_in, rules)
    total[at] += wh
    covered[at] = True
    flags[at] |= flag
    spans = _spans(table[readable], start_s, count, rules, total, covered, flags)
    energy = np.where(covered, total, np.nan)
    return Series(start_s, energy, flags, good, samples, codes, spans, rules.sample_time_s)


def _inside(rows: np.ndarray, rules: CounterRules) -> tuple[np.ndarray, np.ndarray]:
    """Energy between each bucket's own good readings, and its flags."""
    counted = (rows[:, GOOD] >= 2) & ~np.isnan(rows[:, RISE])
    wh = np.where(counted, rows[:, RISE], 0.0)
    flag = np.zeros(len(rows), dtype=np.int64)
    dropped = counted & (rows[:, DROPS] > 0)
    if rules.modulus is not None:
        wh = wh + np.where(dropped, rows[:, DROPS] * rules.modulus - np.nan_to_num(rows[:, FALL]), 0.0)
        flag[dropped] |= WRAP
    else:
        flag[dropped] |= RESET
    if rules.max_power_w is not None:
        # The largest single rise happened within the bucket's readings: if even
        # their whole span could not produce it, it is a jump.
        limit = rules.max_power_w * (rows[:, LAST_S] - rows[:, FIRST_S]) / 3600
        jump = counted & ~np.isnan(rows[:, MAX_RISE]) & (np.nan_to_num(rows[:, MAX_RISE]) > limit)
        wh = wh - np.where(jump, np.nan_to_num(rows[:, MAX_RISE]), 0.0)
        flag[jump] |= JUMP
    return wh, flag


def _spans(rows: np.ndarray, start_s: int, count: int, rules: CounterRules, total: np.ndarray,
           covered: np.ndarray, flags: np.ndarray) -> list[GapSpan]:
    """Split each change between consecutive good buckets (last reading -> first reading) over the buckets between."""
    t0, v0 = rows[:-1, LAST_S], rows[:-1, LAST_V]
    t1, v1 = rows[1:, FIRST_S], rows[1:, FIRST_V]
    keep = t1 > t0
    t0, v0, t1, v1 = t0[keep], v0[keep], t1[keep], v1[keep]
    delta = v1 - v0
    flag = np.zeros(len(delta), dtype=np.int64)
    down = delta < 0
    if rules.modulus is not None:
        delta = np.where(down, delta + rules.modulus, delta)
        flag[down] |= WRAP
    else:
        delta = np.where(down, 0.0, delta)  # the old count is lost; counting resumes from the new reading
        flag[down] |= RESET
    if rules.max_power_w is not None:
        jump = delta > rules.max_power_w * (t1 - t0) / 3600
        delta = np.where(jump, 0.0, delta)
        flag[jump] |= JUMP
    first = np.floor((t0 - start_s) / BUCKET_S).astype(np.int64)
    last = np.floor((t1 - start_s) / BUCKET_S).astype(np.int64)  # the bucket of the new reading
    end = np.ceil((t1 - start_s) / BUCKET_S).astype(np.int64) - 1  # the last bucket the span covers
    # Most spans lie in one bucket or straddle one boundary: vectorised.
    boundary = start_s + (first + 1) * BUCKET_S
    share = np.where(end == first, 1.0, (boundary - t0) / (t1 - t0))
    simple = end <= first + 1
    for bucket, part in ((first, share), (end, 1.0 - share)):
        ok = simple & (bucket >= 0) & (bucket < count) & ((part > 0) | (bucket == first))
        np.add.at(total, bucket[ok], (delta * part)[ok])
        covered[bucket[ok]] = True
        np.bitwise_or.at(flags, bucket[ok], flag[ok])
    marked = (flag != 0) & (last >= 0) & (last < count)
    np.bitwise_or.at(flags, last[marked], flag[marked])  # the bucket of the new reading shows the reset or jump
    spans = []
    long_span = t1 - t0 > GAP_PERIODS * rules.sample_time_s
    gaps = np.nonzero((first != end) & long_span | ~simple)[0]
    for number in gaps:
        pieces = pieces_of(float(t0[number]), float(t1[number]), float(delta[number]), start_s, count)
        if not simple[number]:
            for bucket, wh in pieces:
                total[bucket] += wh
                covered[bucket] = True
                flags[bucket] |= flag[number]
        if delta[number] > 0 and first[number] != end[number] and long_span[number]:
            spans.append(GapSpan(int(first[number]), int(end[number]), tuple(pieces),
                                 float(t0[number]), float(t1[number]), float(delta[number])))
    return spans


def pieces_of(t0: float, t1: float, delta: float, start_s: int, count: int) -> list[tuple[int, float]]:
    """(bucket, Wh) of a change ``delta`` from ``t0`` to ``t1``, in proportion to the time in each bucket."""
    first = int((t0 - start_s) // BUCKET_S)
    end = -int(-(t1 - start_s) // BUCKET_S) - 1
    pieces = []
    for index in range(max(first, 0), min(end, count - 1) + 1):
        bucket_start = start_s + index * BUCKET_S
        overlap = min(t1, bucket_start + BUCKET_S) - max(t0, bucket_start)
        if overlap > 0:
            pieces.append((index, delta * overlap / (t1 - t0)))
    return pieces
