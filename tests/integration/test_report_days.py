"""The daily rollups give the daily and monthly report the figures of the 15-minute path, through both databases.

Dataset (Europe/Rome, samples every 5 minutes, site tariff ARERA: bands F1,
F2, F3 and F23), 2026-03-26 .. 2026-04-06:
- ``a``: a counter rising 100 + 10 x (local hour) + (day of month mod 3) Wh
  per sample (peaks that tie across days, and that do not), with
  * bad samples 2026-03-27 23:30 .. 03-28 00:35 (a gap across midnight, F3);
  * the DST change of Sunday 2026-03-29 (a 23-hour day);
  * bad samples 2026-03-31 22:10 .. 04-01 00:55 (a gap across the end of the
    month and from F2 into F3);
  * a reset on 2026-04-01 12:00 (the counter reads 0 and counts on);
  * no samples at all from 2026-04-02 10:05 to 04-04 08:55 (offline for two
    days: the energy between the bracketing readings is apportioned over them).
- ``b``: 150 Wh per sample throughout.
The rows go through the real path (sink -> Raw -> ``susee rollup`` or the
service's upkeep -> Q15 -> daily rollups); each report is built twice, from
the daily rows and from Q15 (``use_days=False``), and compared field by field.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from susee.commands import load_site
from susee.config import DatabaseTarget
from susee.report.command import Report, build, parse_request
from susee.report.daybuild import build_days, site_counters
from susee.report.days import site_calendar
from susee.report.daykeeper import DayKeeper
from susee.report.reader import connection
from susee.sample import Sample
from susee.sinks import create_sink
from susee.storage_commands import rollup
from susee.upkeep import StorageUpkeep

ROME = ZoneInfo("Europe/Rome")
STEP_S = 300


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ROME).timestamp()


def utc_text(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def meter_a(skip_offline: bool = True) -> list[tuple]:
    rows, t, value = [], local("2026-03-26T00:00"), 2_000_000.0
    bad = [(local("2026-03-27T23:30"), local("2026-03-28T00:40")),
           (local("2026-03-31T22:10"), local("2026-04-01T01:00"))]
    offline = (local("2026-04-02T10:05"), local("2026-04-04T09:00"))
    reset = local("2026-04-01T12:00")
    while t <= local("2026-04-06T00:00"):
        moment = datetime.fromtimestamp(t, ROME)
        if t == reset:
            value = 0.0
        if any(a <= t < b for a, b in bad):
            rows.append(("a", "222", t, None, 1))
        elif not (skip_offline and offline[0] <= t < offline[1]):
            rows.append(("a", "222", t, value, 0))
        t, value = t + STEP_S, value + 100 + 10 * moment.hour + moment.day % 3
    return rows


def meter_b() -> list[tuple]:
    rows, t, value = [], local("2026-03-26T00:00"), 10_000.0
    while t <= local("2026-04-06T00:00"):
        rows.append(("b", "222", t, value, 0))
        t, value = t + STEP_S, value + 150
    return rows


# The readings the offline meter sends late, on 2026-04-03 (its counter kept counting).
LATE = [row for row in meter_a(skip_offline=False)
        if local("2026-04-03T06:00") <= row[2] < local("2026-04-03T18:00")]

SITE = """
job_id: {job}
sample_time: 300
timezone: Europe/Rome
tariff: arera
database: {{url: "{url}"}}
devices:
  - {{id: a, host: 127.0.0.1, params: [222]}}
  - {{id: b, host: 127.0.0.1, params: [222]}}
"""


@pytest.fixture(params=["sqlite", "mariadb"])
def target(request, tmp_path) -> tuple[DatabaseTarget, str]:
    if request.param == "sqlite":
        path = tmp_path / "site.db"
        return DatabaseTarget(kind="sqlite", database="x", path=path), f"sqlite:///{path}"
    target = request.getfixturevalue("mariadb_target")
    return target, f"mysql://root@127.0.0.1:3306/{target.database}"


async def write(target: DatabaseTarget, job_id: str, rows: list[tuple]) -> None:
    sink = create_sink(target, job_id)
    try:
        await sink.open()
        await sink.migrate()
        await sink.write([Sample(device, param, t, value, 5.0, code) for device, param, t, value, code in rows])
    finally:
        await sink.close()


def site_of(tmp_path: Path, job_id: str, url: str):
    config = tmp_path / "site.yaml"
    config.write_text(SITE.format(job=job_id, url=url))
    return load_site(str(config))


def report(site, every: str, start: str, end: str, use_days: bool) -> Report:
    args = argparse.Namespace(start=start, end=end, last=None, every=every, by="device", params=None, tariff=None,
                              devices=None, out=None)
    return build(site.settings, site.plans, site.path, parse_request(args, ROME, 0), use_days=use_days)


def assert_same(days: Report, q15: Report) -> None:
    """Every row and total equal: energy to far below a Wh (sums in another order), the rest exactly."""
    for ours, theirs in ((days.rows, q15.rows), (days.totals, q15.totals)):
        assert [(f.meter, f.interval, f.band) for f in ours] == [(f.meter, f.interval, f.band) for f in theirs]
        for mine, expected in zip(ours, theirs):
            where = (mine.meter, mine.interval.label, mine.band)
            for name in ("energy", "demand_w", "estimated_pct"):
                a, b = getattr(mine, name), getattr(expected, name)
                assert (a is None) == (b is None), (where, name)
                if a is not None:
                    assert a == pytest.approx(b, rel=1e-12, abs=1e-6), (where, name)
            for name in ("hours", "peak_w", "peak_at", "completeness_pct", "codes", "flags"):
                assert getattr(mine, name) == getattr(expected, name), (where, name)


async def upkeep_pass(site) -> DayKeeper:
    """One pass of the service's storage upkeep (its clock long after the data): marked buckets, then their days."""
    keeper = DayKeeper(site.settings, site.plans)
    upkeep = StorageUpkeep(site.settings, now=lambda: datetime(2026, 12, 1), days=keeper)
    try:
        await upkeep.sink.open()
        await upkeep.sink.migrate()
        await upkeep.sink.session("test upkeep", upkeep.run_once)
    finally:
        await upkeep.sink.close()
    return keeper


@pytest.mark.parametrize("start, end", [("2026-03-26", "2026-04-06"), ("2026-03-28", "2026-04-03")])
async def test_day_and_month_reports_from_the_daily_rollups_equal_the_15_minute_path(tmp_path, job_id, target,
                                                                                      start, end):
    database, url = target
    await write(database, job_id, meter_a() + meter_b())
    site = site_of(tmp_path, job_id, url)
    assert await rollup(site, "2026-03-25 22:00", "2026-04-06 00:00") == 0  # also builds the daily rollups

    for every in ("day", "month"):
        days, q15 = report(site, every, start, end, True), report(site, every, start, end, False)
        # The rollups cover the local days 03-25 .. 04-06 (13); the other 48 days of March and April
        # that a monthly report holds are computed from Q15 (they have no rows either way).
        assert days.day_rows_read > 0 and days.days_from_q15 == (0 if every == "day" else 61 - 13)
        assert_same(days, q15)
    daily = {(f.meter, f.interval.label[:10], f.band): f for f in report(site, "day", start, end, True).rows}
    # What the dataset holds shows in the rows compared: a 23-hour day, the gaps' estimates, the reset, the bands.
    if start == "2026-03-26":
        assert daily[("a", "2026-03-29", "all")].hours == 23
        assert daily[("a", "2026-03-28", "F3")].estimated_pct > 0  # the gap across midnight
        assert daily[("a", "2026-04-01", "all")].flags & 1  # the reset
        assert daily[("a", "2026-04-03", "all")].estimated_pct == pytest.approx(100.0)  # offline: all apportioned
        assert {band for _, _, band in daily} == {"all", "F1", "F2", "F3", "F23"}


async def test_a_changed_site_tariff_or_time_zone_is_computed_from_q15_not_read(tmp_path, job_id, target):
    database, url = target
    await write(database, job_id, meter_b())
    site = site_of(tmp_path, job_id, url)
    assert await rollup(site, "2026-03-25 22:00", "2026-04-06 00:00") == 0
    moved = site.settings.model_copy(update={"timezone": "Europe/London"})
    args = argparse.Namespace(start="2026-03-27", end="2026-04-02", last=None, every="month", by="device",
                              params=None, tariff=None, devices=None, out=None)
    request = parse_request(args, ZoneInfo("Europe/London"), 0)
    days = build(moved, site.plans, site.path, request)
    assert days.day_rows_read == 0 and days.days_from_q15 > 0
    assert_same(days, build(moved, site.plans, site.path, request, use_days=False))


async def test_late_data_rebuilds_every_day_its_gap_spanned(tmp_path, job_id, target):
    """The offline meter's readings of 04-03 arrive late: the upkeep recomputes their buckets and the days from
    the last reading before them (04-02) to the first after them (04-04), whose shares of the gap changed."""
    database, url = target
    await write(database, job_id, meter_a() + meter_b())
    site = site_of(tmp_path, job_id, url)
    assert await rollup(site, "2026-03-25 22:00", "2026-04-06 00:00") == 0
    await upkeep_pass(site)  # the markers of the first write: every bucket again, every day
    before = report(site, "day", "2026-04-01", "2026-04-06", True)

    await write(database, job_id, LATE)
    keeper = await upkeep_pass(site)
    # The late buckets lie on 04-03 only; a's days rebuilt reach its bracketing readings (04-02 .. 04-04),
    # b's (recomputed too: markers are per bucket) stay on 04-03.
    assert keeper.counter_days == 3 + 1 and not keeper.marked(local("2026-12-01T00:00"))

    after = report(site, "day", "2026-04-01", "2026-04-06", True)
    q15 = report(site, "day", "2026-04-01", "2026-04-06", False)
    assert after.days_from_q15 == 0
    assert_same(after, q15)
    old = {(f.meter, f.interval.label[:10], f.band): f for f in before.rows}
    new = {(f.meter, f.interval.label[:10], f.band): f for f in after.rows}
    for day in ("2026-04-02", "2026-04-04"):  # the gap's ends moved: the apportioned energy changed
        assert new[("a", day, "all")].energy != pytest.approx(old[("a", day, "all")].energy, abs=1.0)
    assert new[("a", "2026-04-03", "all")].completeness_pct > 0 == old[("a", "2026-04-03", "all")].completeness_pct


async def test_days_before_the_rollup_horizon_are_never_rebuilt(tmp_path, job_id, target):
    """Past ``storage.rollup_keep_days`` Q15 may be gone: the daily rows are all that is left of those days."""
    database, url = target
    await write(database, job_id, meter_b())
    site = site_of(tmp_path, job_id, url)
    assert await rollup(site, "2026-03-25 22:00", "2026-04-06 00:00") == 0
    settings = site.settings
    kept = report(site, "month", "2026-03-26", "2026-04-06", True)
    counters = site_counters(site.plans, settings.sample_time)
    with connection(database, writable=True) as conn:  # as if the rollups of March had expired
        conn.cursor().execute(f"DELETE FROM see{job_id}Q15 WHERE Bucket < '2026-04-01'")
        conn.commit()
    built = build_days(database, job_id, counters, settings.timezone, site_calendar(settings),
                       local("2026-03-26T00:00"), local("2026-04-06T00:00"), not_before_s=local("2026-04-01T00:00"))
    assert built == 5 + 6  # from 04-01: a (no rows) to 04-05, b to 04-06 (its reading at 04-06 00:00)
    after = report(site, "month", "2026-03-26", "2026-04-06", True)
    march = [f for f in after.rows if f.interval.label.startswith("2026-03")]
    assert march and march == [f for f in kept.rows if f.interval.label.startswith("2026-03")]
    with connection(database, writable=False) as conn:  # Packed repeats the columns
        cursor = conn.cursor()
        cursor.execute(f"SELECT Energy, Good, Peak, Packed FROM see{job_id}Day")
        for energy, good, peak, packed in cursor.fetchall():
            values = np.frombuffer(bytes(packed), dtype="<f8")
            assert (values[2], values[5], values[8]) == (energy, good, peak)


async def test_the_keeper_rebuilds_a_day_once_it_is_over_never_today_and_its_markers_outlive_a_restart(
        tmp_path, job_id):
    site = site_of(tmp_path, job_id, f"sqlite:///{tmp_path / 'site.db'}")
    database = site.settings.database_target()
    sink = create_sink(database, job_id)
    try:
        await sink.open()
        await sink.migrate()
    finally:
        await sink.close()
    now = local("2026-04-02T12:00")

    def mark(text: str) -> None:  # as the upkeep's recomputation marks a bucket (Rollups(mark_days=True))
        bucket = datetime.fromtimestamp(local(text), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        with connection(database, writable=True) as conn:
            conn.execute(f'INSERT INTO "see{job_id}DayDirty" (Bucket, Version) VALUES (?, 1)', (bucket,))
            conn.commit()

    def marked() -> list[str]:
        with connection(database, writable=False) as conn:
            return [row[0] for row in conn.execute(f'SELECT Bucket FROM "see{job_id}DayDirty" ORDER BY Bucket')]

    keeper = DayKeeper(site.settings, site.plans)
    assert keeper.build(now) == 0  # nothing marked
    mark("2026-04-02T11:45")
    keeper.build(now)
    assert marked() == ["2026-04-02 09:45:00"]  # today: kept, reports compute it from Q15
    mark("2026-04-01T23:45")  # a late row for yesterday, then the service stops before the next pass
    restarted = DayKeeper(site.settings, site.plans)
    restarted.build(now)  # the next start: the marker was in the database
    assert marked() == ["2026-04-02 09:45:00"] and restarted.counter_days > 0
    restarted.build(local("2026-04-03T00:00"))  # over at midnight
    assert marked() == []


async def test_today_is_computed_from_q15_even_when_its_daily_rows_exist(tmp_path, job_id, target):
    """Today is still changing: its daily rows (``susee rollup`` up to now builds them) are not read."""
    database, url = target
    now = time.time()
    first = now - now % STEP_S - 2 * 3600
    await write(database, job_id, [("b", "222", first + i * STEP_S, 1000.0 + 150 * i, 0) for i in range(25)])
    site = site_of(tmp_path, job_id, url)
    assert await rollup(site, utc_text(first - 86400), utc_text(now + 900)) == 0
    today = datetime.fromtimestamp(now, ROME).date()
    start, end = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=1)).isoformat()
    days, q15 = report(site, "day", start, end, True), report(site, "day", start, end, False)
    assert days.days_from_q15 == 1
    assert_same(days, q15)
