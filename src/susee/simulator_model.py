"""The electrical behaviour of a simulated PAC3200: values as functions of time.

Everything except the energy counters is a pure function of (unit id, time), so
a test can ask for the value at any instant and two runs repeat exactly. The
counters carry state: they integrate the power from one request to the next,
which is what makes them grow only while the clock moves forward.

Values are keyed by the ``pac3200`` profile's param ids (see
``profiles/pac3200.yaml``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

NOMINAL_LN_V = 230.0
NOMINAL_HZ = 50.0
SECONDS_PER_DAY = 86_400.0
SECONDS_PER_HOUR = 3_600.0

# Counters are integrated in steps no longer than this, so a clock that jumps
# hours (a test, a long fault) still follows the daily load shape...
MAX_STEP_S = 300.0
# ...but never with more steps than this: a jump of days stays cheap.
MAX_STEPS = 2_000

# Counters that integrate a power, and which total: the others stay constant
# (tariff 2 is never active, a pure load never exports).
INTEGRATED = {"222": "133", "226": "134", "230": "132"}
COUNTER_IDS = tuple(str(i) for i in range(222, 232))

Values = dict[str, float]


@dataclass(frozen=True, slots=True)
class UnitTraits:
    """What makes one simulated meter differ from another; drawn once per unit."""

    peak_a: float  # phase current at the day plateau
    base_fraction: float  # night load as a share of the peak
    shift_h: float  # the unit's working day starts a little earlier or later
    imbalance: tuple[float, float, float]  # per-phase share of the current
    v_offset: tuple[float, float, float]  # per-phase steady deviation from 230 V
    v_period_s: tuple[float, float, float]  # slow per-phase voltage drift
    pf_day: float  # power factor at full load; lower when motors idle at night
    thd_u_pct: float
    thd_i_pct: float
    phases: tuple[float, ...]  # phase angles that decorrelate the wobbles
    energy: tuple[float, ...]  # counter start values, in COUNTER_IDS order


def traits_for(unit: int) -> UnitTraits:
    """Deterministic traits for ``unit``: same id, same meter, every run."""
    rng = random.Random(f"pac3200-unit-{unit}")
    active_wh = rng.uniform(1e7, 1e9)
    energy = (
        active_wh,  # 222 active import T1
        round(active_wh * rng.uniform(0.2, 0.5)),  # 223 active import T2
        round(rng.uniform(1e3, 1e5)),  # 224 active export T1
        0.0,  # 225 active export T2
        active_wh * rng.uniform(0.3, 0.5),  # 226 reactive import T1
        round(active_wh * rng.uniform(0.05, 0.2)),  # 227 reactive import T2
        round(rng.uniform(1e3, 1e5)),  # 228 reactive export T1
        0.0,  # 229 reactive export T2
        active_wh * rng.uniform(1.05, 1.15),  # 230 apparent T1
        round(active_wh * rng.uniform(0.2, 0.5)),  # 231 apparent T2
    )
    return UnitTraits(
        peak_a=rng.uniform(20.0, 120.0),
        base_fraction=rng.uniform(0.15, 0.35),
        shift_h=rng.uniform(-0.75, 0.75),
        imbalance=_per_phase(rng, 0.93, 1.07),
        v_offset=_per_phase(rng, -0.004, 0.004),
        v_period_s=_per_phase(rng, 600.0, 1800.0),
        pf_day=rng.uniform(0.90, 0.96),
        thd_u_pct=rng.uniform(1.5, 3.0),
        thd_i_pct=rng.uniform(4.0, 10.0),
        phases=tuple(rng.uniform(0.0, 2 * math.pi) for _ in range(12)),
        energy=energy,
    )


def _per_phase(rng: random.Random, low: float, high: float) -> tuple[float, float, float]:
    return rng.uniform(low, high), rng.uniform(low, high), rng.uniform(low, high)


def smoothstep(x: float) -> float:
    """0 below 0, 1 above 1, an S-curve in between (no kinks in the load)."""
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def day_activity(hour: float) -> float:
    """Share of the daytime load that is on at ``hour`` (UTC): 0 at night, 1 by day."""
    if hour < 6.0 or hour >= 22.0:
        return 0.0
    if hour < 9.0:
        return smoothstep((hour - 6.0) / 3.0)  # morning ramp
    if hour < 17.0:
        return 1.0  # day plateau
    return 1.0 - smoothstep((hour - 17.0) / 5.0)  # evening fall


def wobble(t: float, phase: float) -> float:
    """Deterministic stand-in for noise, in [-1, 1]; incommensurate periods never repeat visibly."""
    return (
        0.5 * math.sin(t * 2 * math.pi / 7.3 + phase)
        + 0.3 * math.sin(t * 2 * math.pi / 17.9 + 2 * phase)
        + 0.2 * math.sin(t * 2 * math.pi / 41.1 + 3 * phase)
    )


def line_to_line(u_a: float, u_b: float) -> float:
    """Magnitude of the difference of two phasors 120 degrees apart."""
    return math.sqrt(u_a * u_a + u_b * u_b + u_a * u_b)


def instant_values(traits: UnitTraits, t: float) -> Values:
    """Params 101..135 of a unit at time ``t`` (seconds since the epoch, UTC)."""
    ph = traits.phases
    hour = ((t / SECONDS_PER_HOUR) - traits.shift_h) % 24.0
    activity = day_activity(hour)
    load = traits.base_fraction + (1.0 - traits.base_fraction) * activity
    pf_mid = traits.pf_day - 0.05 * (1.0 - activity)  # idle motors draw reactive power
    voltages, currents, pfs = [], [], []
    for k in range(3):
        drift = 0.004 * math.sin(2 * math.pi * t / traits.v_period_s[k] + ph[k])
        # Load pulls the voltage down a little; offset + drift + sag stay within 1 %.
        voltages.append(NOMINAL_LN_V * (1.0 + traits.v_offset[k] + drift - 0.002 * load))
        currents.append(traits.peak_a * load * traits.imbalance[k] * (1.0 + 0.02 * wobble(t, ph[3 + k])))
        pfs.append(min(max(pf_mid + 0.01 * wobble(t, ph[6 + k]), 0.85), 0.98))
    values: Values = {}
    s_phase = [u * i for u, i in zip(voltages, currents)]
    p_phase = [s * pf for s, pf in zip(s_phase, pfs)]
    q_phase = [math.sqrt(max(s * s - p * p, 0.0)) for s, p in zip(s_phase, p_phase)]
    u_ll = [line_to_line(voltages[k], voltages[(k + 1) % 3]) for k in range(3)]
    for k in range(3):
        values[str(101 + k)] = voltages[k]
        values[str(104 + k)] = u_ll[k]
        values[str(107 + k)] = currents[k]
        values[str(110 + k)] = s_phase[k]
        values[str(113 + k)] = p_phase[k]
        values[str(116 + k)] = q_phase[k]
        values[str(119 + k)] = pfs[k]
        values[str(122 + k)] = traits.thd_u_pct * (1.0 + 0.1 * wobble(t, ph[9 + k]))
        # Current distortion weighs more when the linear loads are off.
        values[str(125 + k)] = traits.thd_i_pct * (1.5 - 0.5 * activity) * (1.0 + 0.1 * wobble(t, ph[k]))
    values["128"] = NOMINAL_HZ + 0.03 * math.sin(2 * math.pi * t / 97.0 + ph[11]) + 0.01 * wobble(t, ph[10])
    values["129"] = sum(voltages) / 3.0
    values["130"] = sum(u_ll) / 3.0
    values["131"] = sum(currents) / 3.0
    values["132"] = sum(s_phase)
    values["133"] = sum(p_phase)
    values["134"] = sum(q_phase)
    values["135"] = values["133"] / values["132"]
    return values


class UnitModel:
    """One simulated meter: instantaneous values plus energy counters."""

    def __init__(self, unit: int) -> None:
        self.unit = unit
        self.traits = traits_for(unit)
        self._counters: Values = dict(zip(COUNTER_IDS, self.traits.energy))
        self._counted_until: float | None = None  # time of the last committed request

    def values_at(self, t: float) -> Values:
        """All values at ``t`` without committing the counters (for tests, debug)."""
        values = instant_values(self.traits, t)
        values.update(self._counters_at(t))
        return values

    def advance(self, t: float) -> Values:
        """All values at ``t``, committing the counters: call once per answered request."""
        counters = self._counters_at(t)
        if self._counted_until is None or t > self._counted_until:
            self._counters = counters
            self._counted_until = t
        values = instant_values(self.traits, t)
        values.update(counters)
        return values

    def _counters_at(self, t: float) -> Values:
        counters = dict(self._counters)
        start = self._counted_until
        if start is None or t <= start:
            return counters  # a clock that steps back must not shrink a counter
        steps = min(MAX_STEPS, math.ceil((t - start) / MAX_STEP_S))
        step_s = (t - start) / steps
        before = instant_values(self.traits, start)
        for n in range(1, steps + 1):
            after = instant_values(self.traits, start + n * step_s)
            for counter_id, power_id in INTEGRATED.items():  # trapezoid rule, Wh from W and s
                counters[counter_id] += (before[power_id] + after[power_id]) * step_s / (2 * SECONDS_PER_HOUR)
            before = after
        return counters
