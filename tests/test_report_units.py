"""Pure parts of `susee report`: counter arithmetic, tariff calendars, intervals, expressions."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from susee.config import ConfigError, load_settings
from susee.report.energy import JUMP, RESET, WRAP, CounterRules, Q15Row, counter_series
from susee.expressions import ExpressionError, parse_expression
from susee.report.intervals import intervals, parse_duration, parse_local
from susee.report.tariffs import TariffError, load_calendar
from tests.integration.storage_support import expected_q15

CONFIG = Path(__file__).resolve().parent.parent / "config"
T0 = 1_775_000_700  # a bucket start (multiple of 900)
assert T0 % 900 == 0


def rows_of(values, step_s=300, start=T0, codes=None):
    """Q15Rows of one counter read every ``step_s``: None is a missing sample.

    The rows come from the rollup contract in plain Python (the oracle the
    rollup tests compare the real rollups with).
    """
    raw = [("d", f"{datetime.fromtimestamp(start + i * step_s, timezone.utc):%Y-%m-%d %H:%M:%S.%f}", "p", v,
            (codes or {}).get(i, 0 if v is not None else 1)) for i, v in enumerate(values)]
    out = []
    for (_, _, bucket), r in sorted(expected_q15(raw).items()):
        first, last = (epoch(text) if text else None for text in (r[5], r[7]))
        out.append(Q15Row(int(epoch(bucket)), r[0], r[1], first, r[6], last, r[8], r[9], r[10], r[11], r[12], r[13]))
    return out


def epoch(text: str) -> float:
    return datetime.fromisoformat(text + "+00:00").timestamp()


STEADY = CounterRules(300)


def energies(values, buckets, rules=STEADY, step_s=300):
    series = counter_series(rows_of(values, step_s), T0, buckets, rules)
    return [None if math.isnan(e) else round(e, 6) for e in series.energy], list(series.flags)


# (case, readings every 5 min, rules, energy per 15-min bucket, flags per bucket)
CASES = [
    ("steady", [0, 10, 20, 30, 40, 50, 60], CounterRules(300), [30, 30, 0], [0, 0, 0]),
    # A reset inside bucket 1 (30, 5, 15): 30 -> 5 counts nothing, 5 -> 15 and 15 -> 25 count.
    ("reset inside", [0, 10, 20, 30, 5, 15, 25], CounterRules(300), [30, 20, 0], [0, RESET, 0]),
    # A reset between buckets (20 at 00:10 -> 2 at 00:15): the step is lost, both buckets flagged.
    ("reset between", [0, 10, 20, 2, 12, 22, 32], CounterRules(300), [20, 30, 0], [RESET, RESET, 0]),
    # A known modulus turns the drop into a wrap: 95 -> 5 on modulus 100 is 10.
    ("wrap", [75, 85, 95, 5, 15, 25, 35], CounterRules(300, modulus=100), [30, 30, 0], [WRAP, WRAP, 0]),
    # 1 kW max: 10,000 Wh in 5 minutes is impossible: flagged, not counted.
    ("jump inside", [0, 10, 10_010, 10_020], CounterRules(300, max_power_w=1000), [20, 0], [JUMP, 0]),
    ("jump between", [0, 10, 20, 10_020, 10_030], CounterRules(300, max_power_w=1000), [20, 10], [JUMP, JUMP]),
    # A missing reading at 00:15 (the bucket starts with a gap): 20 -> 40 over 10 min, 5 in bucket 0.
    ("gap", [0, 10, 20, None, 40, 50, 60], CounterRules(300), [30, 30, 0], [0, 0, 0]),
]


@pytest.mark.parametrize("case, values, rules, expected, flags", CASES, ids=[c[0] for c in CASES])
def test_counter_series(case, values, rules, expected, flags):
    got, got_flags = energies(values, len(expected), rules)
    assert got == pytest.approx(expected)
    assert got_flags == flags


def test_a_bucket_no_reading_reaches_has_no_energy():
    # Readings stop at 00:10: bucket 1 (00:15-00:30) has nothing before or after it.
    got, _ = energies([0, 10, 20], 2)
    assert got == [20, None]


def test_a_gap_splits_in_proportion_to_time_and_records_the_span():
    # Good at 00:10 (20) and 00:40 (80): 60 Wh over 30 minutes; 5 min in bucket 0, 15 in 1, 10 in 2.
    series = counter_series(rows_of([0, 10, 20, None, None, None, None, None, 80, 90]), T0, 4, CounterRules(300))
    assert list(series.energy[:3]) == pytest.approx([20 + 10, 30, 20 + 10])
    assert [(s.first, s.last) for s in series.spans] == [(0, 2)]


ROME = ZoneInfo("Europe/Rome")


@pytest.mark.parametrize("when, band", [
    ("2026-04-02T07:59", "F2"), ("2026-04-02T08:00", "F1"), ("2026-04-02T18:59", "F1"),
    ("2026-04-02T19:00", "F2"), ("2026-04-02T22:59", "F2"), ("2026-04-02T23:00", "F3"),
    ("2026-04-02T06:59", "F3"), ("2026-04-04T07:00", "F2"), ("2026-04-04T06:59", "F3"),
    ("2026-04-05T12:00", "F3"),  # Sunday
    ("2026-04-06T12:00", "F3"),  # Easter Monday
    ("2026-04-25T12:00", "F3"),  # Liberation Day, a Saturday in 2026
    ("2026-12-08T10:00", "F3"),  # Immaculate Conception, a Tuesday
    ("2026-12-09T10:00", "F1"),
])
def test_arera_bands(when, band):
    assert load_calendar("arera").band_at(datetime.fromisoformat(when)) == band


@pytest.mark.parametrize("when, band", [
    ("2026-04-07T08:00", "PEAK"), ("2026-04-07T20:00", "OFFPEAK"), ("2026-04-04T12:59", "PEAK"),
    ("2026-04-04T13:00", "OFFPEAK"), ("2026-12-24T10:00", "OFFPEAK"), ("2026-04-06T10:00", "OFFPEAK"),
])
def test_yaml_calendar_example(when, band):
    calendar = load_calendar(str(CONFIG / "tariff.example.yaml"))
    assert calendar.band_at(datetime.fromisoformat(when)) == band
    assert calendar.bands == ("PEAK", "OFFPEAK")


@pytest.mark.parametrize("text, message", [
    ("default: X\nrules: [{days: mon-fry, hours: 8-9, band: A}]", "rules[0]: days"),
    ("default: X\nrules: [{days: mon, hours: 9-8, band: A}]", "rules[0]: hours"),
    ("default: X\nholidays: {country: XX}", "holidays.country"),
    ("default: X\ncombined: {Y: [Z]}", "combined.Y"),
    ("rules: []", "default"),
])
def test_bad_calendars_name_the_field(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TariffError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_calendar(str(path))


def test_unknown_tariff():
    with pytest.raises(TariffError, match="'nope'"):
        load_calendar("nope")


@pytest.mark.parametrize("text, terms", [
    ("main - hvac - lighting", [(1, "main"), (-1, "hvac"), (-1, "lighting")]),
    ("222 + 223", [(1, "222"), (1, "223")]),
    ("222+223", [(1, "222"), (1, "223")]),
    ("pv-roof - pv-wall", [(1, "pv-roof"), (-1, "pv-wall")]),
])
def test_expressions(text, terms):
    assert parse_expression(text) == terms


@pytest.mark.parametrize("text", ["", "a + ", "a -b", "a * b", "__import__('os')", "a + a"])
def test_bad_expressions(text):
    with pytest.raises(ExpressionError):
        parse_expression(text)


def test_intervals_follow_local_days_and_months():
    days = intervals(parse_local("2026-03-28", ROME), parse_local("2026-03-31", ROME), "day", ROME)
    assert [d.hours for d in days] == [24, 23, 24]
    months = intervals(parse_local("2026-10-01", ROME), parse_local("2026-12-01", ROME), "month", ROME)
    assert [m.hours for m in months] == [31 * 24 + 1, 30 * 24]
    assert parse_duration("7d") == 7 * 86400 and parse_duration("15min") == 900
    with pytest.raises(ValueError):
        parse_duration("0h")


@pytest.mark.parametrize("extra, message", [
    ("timezone: Mars/Olympus", "unknown IANA time zone"),
    ("virtual_meters: {rest: 'a - nobody'}", "virtual_meters.rest: 'nobody' not a device id"),
    ("virtual_meters: {a: 'a - a2'}", "virtual_meters.a: name is already a device id"),
    ("virtual_meters: {rest: 'a * 2'}", "virtual_meters.rest:"),
])
def test_report_settings_name_the_culprit(tmp_path, extra, message):
    path = tmp_path / "site.yaml"
    path.write_text("database: {url: 'sqlite:///x.db'}\ndevices:\n  - {id: a, host: h}\n  - {id: a2, host: h}\n"
                    + extra + "\n")
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        load_settings(path)


def test_tags_are_text(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("database: {url: 'sqlite:///x.db'}\ndevices:\n  - {id: a, host: h, tags: {floor: 2}}\n")
    assert load_settings(path).devices[0].tags == {"floor": "2"}


PROFILE = """name: m
params:
  - {id: E1, address: 0, kind: counter, unit: Wh}
  - {id: E2, address: 2, kind: counter, unit: Wh}
  - {id: Q1, address: 4, kind: counter, unit: VArh}
  - {id: P, address: 6, unit: W}
"""


@pytest.mark.parametrize("extra, message", [
    ("derived: {T: 'E1 + X'}", "derived.T: 'X' is not a param"),
    ("derived: {T: 'E1 + P'}", "derived.T: 'P' is not a counter"),
    ("derived: {T: 'E1 + Q1'}", "derived.T: parts have different units"),
    ("derived: {E1: 'E1 + E2'}", "derived.E1: name must be a new param id"),
    ("derived: {T: 'E1 +'}", "derived.T:"),
])
def test_bad_derived_counters_name_the_culprit(tmp_path, extra, message):
    from susee.profiles import ProfileError, load_profile

    path = tmp_path / "m.yaml"
    path.write_text(PROFILE + extra + "\n")
    with pytest.raises(ProfileError, match=message):
        load_profile(str(path))


def test_max_power_needs_a_counter(tmp_path):
    from susee.profiles import ProfileError, load_profile

    path = tmp_path / "m.yaml"
    path.write_text(PROFILE.replace("unit: W}", "unit: W, max_power: 5}"))
    with pytest.raises(ProfileError, match="params\\[3\\] \\(id 'P'\\): field 'kind'"):
        load_profile(str(path))


def test_pac3200_says_which_counters_it_reports():
    from susee.profiles import load_profile

    pac = load_profile("pac3200")
    assert {"222", "226"} <= set(pac.default_params)  # the tariff-1 registers
    assert pac.derived_terms("EP_IMP") == [(1, "222"), (1, "223")]
    assert all(pac.by_id[str(i)].kind == "counter" and pac.by_id[str(i)].max_power for i in range(222, 230))
