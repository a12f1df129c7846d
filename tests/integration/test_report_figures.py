"""`susee report` figures on a fixed dataset, by hand, through both databases.

Dataset (Europe/Rome, samples every 5 minutes = 300 s, ticks on the minute):
- ``main``: 3600 W constant -> 300 Wh per sample, 900 Wh per 15 min, 3600 Wh
  per hour; reactive counter 226 at 1800 var -> 150 varh per sample.
- ``hvac``: 1800 W constant -> 150 Wh per sample, 450 Wh per 15 min; but
  * Tue 2026-04-07: samples 07:40..08:15 are bad (Code 1, NULL); the counter
    read at 08:20 is 4500 Wh above the one at 07:35 (a gap across the
    F2 -> F1 boundary at 08:00);
  * Wed 2026-04-08 12:00: the counter is cleared (reads 0, then counts on).
The week Thu 2026-04-02 .. Thu 2026-04-09 holds a Saturday (04-04), Easter
Sunday (04-05) and Easter Monday (04-06, a national holiday: F3 all day).
The samples go through the real path: the sink's ``write`` into Raw, then
``susee rollup --from --to`` (the command's own function) over each part of the
dataset, then the report reads the Q15 rows the rollup made.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from susee.commands import load_site
from susee.config import DatabaseTarget
from susee.report.command import Report, build, parse_request
from susee.sample import Sample
from susee.sinks import create_sink
from susee.storage_commands import rollup

ROME = ZoneInfo("Europe/Rome")
STEP_S = 300


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ROME).timestamp()


def constant(device: str, param: str, start: str, end: str, per_step: float, first: float = 1_000_000.0):
    """Readings of a counter rising ``per_step`` every 5 minutes, from ``start`` to ``end`` inclusive."""
    t, value, rows = local(start), first, []
    while t <= local(end):
        rows.append((device, param, t, value, 0))
        t, value = t + STEP_S, value + per_step
    return rows


def hvac_week():
    rows, t, value, before_gap = [], local("2026-04-02T00:00"), 500_000.0, 0.0
    gap_from, gap_to, reset = local("2026-04-07T07:40"), local("2026-04-07T08:20"), local("2026-04-08T12:00")
    while t <= local("2026-04-09T00:00"):
        if gap_from <= t < gap_to:
            rows.append(("hvac", "222", t, None, 1))  # a timeout: bad row, no value
        else:
            if t == gap_to:
                value = before_gap + 4500
            elif t == reset:
                value = 0.0
            rows.append(("hvac", "222", t, value, 0))
            if t == local("2026-04-07T07:35"):
                before_gap = value
        t, value = t + STEP_S, value + 150
    return rows


WEEK = [
    *constant("main", "222", "2026-04-02T00:00", "2026-04-09T00:00", 300),
    *constant("main", "226", "2026-04-02T00:00", "2026-04-09T00:00", 150),
    *hvac_week(),
]
# ``pv`` (1200 W = 100 Wh per sample) jumps by 10^10 Wh at 2026-04-07 12:00 (a misread):
# far above what the PAC3200's max_power (10^8 W) gives in 5 minutes.
PV = [(d, p, t, v + (1e10 if t >= local("2026-04-07T12:00") else 0), c)
      for d, p, t, v, c in constant("pv", "222", "2026-04-07T00:00", "2026-04-08T00:00", 100)]
SPRING = constant("main", "222", "2026-03-28T00:00", "2026-03-31T00:00", 300)
AUTUMN = constant("main", "222", "2026-10-24T00:00", "2026-10-27T00:00", 300, first=5_000_000.0)

SITE = """
job_id: {job}
sample_time: 300
timezone: Europe/Rome
database: {{url: "{url}"}}
devices:
  - {{id: main, host: 127.0.0.1, params: [222, 226], tags: {{building: A, use: total}}}}
  - {{id: hvac, host: 127.0.0.1, params: [222], tags: {{building: A, use: hvac}}}}
  - {{id: pv, host: 127.0.0.1, params: [222]}}
virtual_meters:
  unmetered: "main - hvac"
"""


def utc_text(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(params=["sqlite", "mariadb"])
async def database(request, tmp_path, job_id) -> tuple[DatabaseTarget, str]:
    """A database holding the dataset in Raw and its Q15 rows, recomputed by ``susee rollup``; the site URL."""
    if request.param == "sqlite":
        target = DatabaseTarget(kind="sqlite", database="x", path=tmp_path / "site.db")
        url = f"sqlite:///{target.path}"
    else:
        target = request.getfixturevalue("mariadb_target")
        url = f"mysql://root@127.0.0.1:3306/{target.database}"
    sink = create_sink(target, job_id)
    try:
        await sink.open()
        await sink.migrate()
        await sink.write([Sample(device, param, t, value, 5.0, code) for device, param, t, value, code
                          in WEEK + PV + SPRING + AUTUMN])
    finally:
        await sink.close()
    site = load_site(str(write_site(tmp_path, job_id, url)))
    # Months lie between the parts: one range each keeps the recompute to the hours holding rows.
    for part in (WEEK + PV, SPRING, AUTUMN):
        ticks = [t for _, _, t, _, _ in part]
        assert await rollup(site, utc_text(min(ticks)), utc_text(max(ticks) + 1)) == 0
    return target, url


def write_site(tmp_path: Path, job_id: str, url: str) -> Path:
    config = tmp_path / "site.yaml"
    config.write_text(SITE.format(job=job_id, url=url))
    return config


def report(tmp_path: Path, job_id: str, url: str, **options) -> Report:
    site = load_site(str(write_site(tmp_path, job_id, url)))
    args = argparse.Namespace(**{"start": None, "end": None, "last": None, "every": "day", "by": "device",
                                 "params": None, "tariff": "arera", "devices": None, "out": None, **options})
    return build(site.settings, site.plans, site.path, parse_request(args, ROME, 0))


def cells(result: Report, meter: str, param: str = "222") -> dict[tuple[str, str], object]:
    return {(f.interval.label[:16], f.band): f for f in result.rows if (f.meter, f.param) == (meter, param)}


def energy(result: Report, meter: str, param: str = "222") -> dict[tuple[str, str], float | None]:
    return {key: f.energy for key, f in cells(result, meter, param).items()}


def test_week_by_day_and_band(tmp_path, job_id, database):
    _, url = database
    result = report(tmp_path, job_id, url, start="2026-04-02", end="2026-04-09", params="222,226")
    main = energy(result, "main")
    # A weekday: F1 08-19 = 11 h, F2 07-08 + 19-23 = 5 h, F3 = 8 h, at 3600 Wh an hour.
    weekday = {"all": 86_400, "F1": 11 * 3600, "F2": 5 * 3600, "F3": 8 * 3600, "F23": 13 * 3600}
    for day in ("2026-04-02", "2026-04-03", "2026-04-07", "2026-04-08"):
        assert {band: main[(f"{day}T00:00", band)] for band in weekday} == pytest.approx(weekday, abs=1e-6)
    # Saturday: F2 07-23 = 16 h, F3 8 h, no F1 row at all.
    assert main[("2026-04-04T00:00", "F2")] == pytest.approx(16 * 3600)
    assert main[("2026-04-04T00:00", "F3")] == pytest.approx(8 * 3600)
    assert ("2026-04-04T00:00", "F1") not in main
    # Easter Sunday and Easter Monday (a holiday on a Monday): F3 all day.
    for day in ("2026-04-05", "2026-04-06"):
        assert main[(f"{day}T00:00", "F3")] == pytest.approx(24 * 3600)
        assert (f"{day}T00:00", "F1") not in main and (f"{day}T00:00", "F2") not in main

    hvac = cells(result, "hvac")
    # Tue 04-07, hvac at 1800 W = 30 Wh a minute, with the gap 07:35 -> 08:20 worth 4500 Wh:
    # 25 of its 45 minutes are in F2 (07:35-08:00): 4500 * 25/45 = 2500 Wh; 20 in F1: 2000 Wh.
    # F2 = 07:00-07:35 (35 min * 30 = 1050) + 2500 + 19:00-23:00 (4 h * 1800 = 7200) = 10750
    # F1 = 2000 + 08:20-19:00 (640 min * 30 = 19200) = 21200;  F3 = 8 h * 1800 = 14400
    tuesday = {"F1": 21_200, "F2": 10_750, "F3": 14_400, "F23": 25_150, "all": 46_350}
    assert {band: hvac[("2026-04-07T00:00", band)].energy for band in tuesday} == pytest.approx(tuesday, abs=1e-6)
    # The gap lies inside the day: its total is measured for the day, but its split between
    # F1 and F2 is an estimate: 2500 / 10750 of F2, 2000 / 21200 of F1, 2500 / 25150 of F23.
    assert hvac[("2026-04-07T00:00", "all")].estimated_pct == 0
    assert hvac[("2026-04-07T00:00", "F2")].estimated_pct == pytest.approx(100 * 2500 / 10_750)
    assert hvac[("2026-04-07T00:00", "F1")].estimated_pct == pytest.approx(100 * 2000 / 21_200)
    assert hvac[("2026-04-07T00:00", "F23")].estimated_pct == pytest.approx(100 * 2500 / 25_150)
    # 8 of 288 samples were bad: (288 - 8) * 300 s / 86400 s; the Code bits are named.
    assert hvac[("2026-04-07T00:00", "all")].completeness_pct == pytest.approx(100 * 280 * 300 / 86_400)
    assert hvac[("2026-04-07T00:00", "all")].codes == 1
    # Peak 15 minutes: 07:45-08:00 and 08:00-08:15 each hold 15/45 of the gap = 1500 Wh = 6000 W;
    # the day's peak is the earlier, F2's is 07:45, F1's is 08:00.
    assert hvac[("2026-04-07T00:00", "all")].peak_w == pytest.approx(6000)
    assert hvac[("2026-04-07T00:00", "all")].peak_at == "2026-04-07T07:45:00+02:00"
    assert hvac[("2026-04-07T00:00", "F2")].peak_at == "2026-04-07T07:45:00+02:00"
    assert hvac[("2026-04-07T00:00", "F1")].peak_at == "2026-04-07T08:00:00+02:00"
    # Wed 04-08: the counter cleared at 12:00 loses the 11:55 -> 12:00 step (150 Wh), in F1.
    assert hvac[("2026-04-08T00:00", "F1")].energy == pytest.approx(11 * 1800 - 150)
    assert hvac[("2026-04-08T00:00", "all")].flags & 1  # reset
    assert not hvac[("2026-04-07T00:00", "all")].flags
    # Demand: the mean power of the cell; 46350 Wh over 24 h.
    assert hvac[("2026-04-07T00:00", "all")].demand_w == pytest.approx(46_350 / 24)

    # The virtual meter main - hvac, with the completeness of its worst part.
    unmetered = cells(result, "unmetered")
    assert unmetered[("2026-04-07T00:00", "all")].energy == pytest.approx(86_400 - 46_350)
    assert unmetered[("2026-04-07T00:00", "all")].completeness_pct == pytest.approx(100 * 280 * 300 / 86_400)
    assert unmetered[("2026-04-02T00:00", "all")].completeness_pct == pytest.approx(100)
    # Reactive 226 on main only (hvac does not read it): 1800 var -> 43200 varh a day.
    assert energy(result, "main", "226")[("2026-04-02T00:00", "all")] == pytest.approx(43_200)
    assert not cells(result, "hvac", "226") and not cells(result, "unmetered", "226")


def test_fifteen_minutes_and_hours_around_the_gap(tmp_path, job_id, database):
    _, url = database
    quarter = energy(report(tmp_path, job_id, url, start="2026-04-07T07:00", end="2026-04-07T09:00",
                            every="15min"), "hvac")
    # 07:30: inside 07:30 -> 07:35 (150) + gap 07:35-07:45 (4500 * 10/45 = 1000) = 1150
    # 07:45 and 08:00: 4500 * 15/45 = 1500 each
    # 08:15: gap 08:15-08:20 (500) + inside 08:20 -> 08:25 (150) + 08:25 -> 08:30 (150) = 800
    expected = {"07:00": 450, "07:15": 450, "07:30": 1150, "07:45": 1500, "08:00": 1500, "08:15": 800,
                "08:30": 450, "08:45": 450}
    assert {k[0][11:]: v for k, v in quarter.items() if k[1] == "all"} == pytest.approx(expected)
    hours = cells(report(tmp_path, job_id, url, start="2026-04-07T07:00", end="2026-04-07T09:00",
                         every="hour"), "hvac")
    # 07:00-08:00 = 450 + 450 + 1150 + 1500 = 3550, of which the gap's 1000 + 1500 are estimated.
    assert hours[("2026-04-07T07:00", "all")].energy == pytest.approx(3550)
    assert hours[("2026-04-07T07:00", "all")].estimated_pct == pytest.approx(100 * 2500 / 3550)
    assert hours[("2026-04-07T08:00", "F1")].energy == pytest.approx(1500 + 800 + 450 + 450)


def test_dst_days_have_23_and_25_hours(tmp_path, job_id, database):
    _, url = database
    spring = energy(report(tmp_path, job_id, url, start="2026-03-28", end="2026-03-31"), "main")
    # Sat 28 March: 24 h; Sun 29 March (02:00 -> 03:00): 23 h, all F3; Mon 30 March: 24 h.
    assert spring[("2026-03-28T00:00", "all")] == pytest.approx(24 * 3600)
    assert spring[("2026-03-28T00:00", "F2")] == pytest.approx(16 * 3600)
    assert spring[("2026-03-29T00:00", "all")] == pytest.approx(23 * 3600)
    assert spring[("2026-03-29T00:00", "F3")] == pytest.approx(23 * 3600)
    assert spring[("2026-03-30T00:00", "F1")] == pytest.approx(11 * 3600)
    autumn = report(tmp_path, job_id, url, start="2026-10-25", end="2026-10-26", every="hour")
    hours = [f for f in autumn.rows if (f.meter, f.param, f.band) == ("main", "222", "all")]
    # Sun 25 October (03:00 -> 02:00): 25 local hours, 02:00 twice (+02:00 then +01:00).
    assert len(hours) == 25 and all(f.energy == pytest.approx(3600) for f in hours)
    assert [f.interval.label for f in hours[2:4]] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    day = energy(report(tmp_path, job_id, url, start="2026-10-25", end="2026-10-26"), "main")
    assert day[("2026-10-25T00:00", "all")] == pytest.approx(25 * 3600)


def test_an_interval_without_data_has_no_consumption(tmp_path, job_id, database):
    _, url = database
    # main's last reading is at 2026-04-09 00:00; nothing brackets 01:00-02:00.
    hours = cells(report(tmp_path, job_id, url, start="2026-04-09T01:00", end="2026-04-09T02:00", every="hour"),
                  "main")
    empty = hours[("2026-04-09T01:00", "all")]
    assert empty.energy is None and empty.demand_w is None and empty.peak_w is None
    assert empty.completeness_pct == 0 and empty.estimated_pct is None


def test_tag_groups_sum_their_members(tmp_path, job_id, database):
    _, url = database
    by_use = report(tmp_path, job_id, url, start="2026-04-07", end="2026-04-08", by="tag:use", tariff=None)
    assert energy(by_use, "total")[("2026-04-07T00:00", "all")] == pytest.approx(86_400)
    assert energy(by_use, "hvac")[("2026-04-07T00:00", "all")] == pytest.approx(46_350)
    building = cells(report(tmp_path, job_id, url, start="2026-04-07", end="2026-04-08", by="tag:building",
                            tariff=None), "A")
    assert building[("2026-04-07T00:00", "all")].energy == pytest.approx(86_400 + 46_350)
    assert building[("2026-04-07T00:00", "all")].completeness_pct == pytest.approx(100 * 280 * 300 / 86_400)


def test_an_implausible_jump_is_flagged_and_not_counted(tmp_path, job_id, database):
    _, url = database
    pv = cells(report(tmp_path, job_id, url, start="2026-04-07", end="2026-04-08", every="hour", devices="pv"), "pv")
    # Every hour is 1200 Wh; at 12:00 the step 11:55 -> 12:00 (100 Wh + 10^10) is dropped: 1100 Wh.
    assert pv[("2026-04-07T11:00", "all")].energy == pytest.approx(1100)
    assert pv[("2026-04-07T11:00", "all")].flags == 2  # jump
    assert pv[("2026-04-07T12:00", "all")].energy == pytest.approx(1200)
    assert pv[("2026-04-07T10:00", "all")].energy == pytest.approx(1200)
