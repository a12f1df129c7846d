"""The Device page's consumption by tariff band: the report's figures of today, from real rollups.

Counter readings are written through the real sink, rolled up by the real
recompute (``susee rollup``'s code), then ``consumption.today`` reads them
back, in both dialects. The expected figures are worked out by hand below.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from susee.commands import Site
from susee.config import ConfigError, Settings
from susee.devices import plan_devices
from susee.sample import Sample
from susee.sinks import create_sink
from susee.storage_commands import rollup
from susee.web.consumption import INSTALL, check_tariff, load_tariff, main_counter, today
from susee.report.meters import device_counters

ROME = ZoneInfo("Europe/Rome")
# Wednesday 2 December 2026, a working day: F2 07-08, F1 08-19 (ARERA).
DAY = datetime(2026, 12, 2, tzinfo=ROME)


def local(hour: int, minute: int) -> float:
    return DAY.replace(hour=hour, minute=minute).timestamp()


@pytest.fixture
def settings(database_url, job_id):
    return Settings(job_id=job_id, sample_time=60, timezone="Europe/Rome", database={"url": database_url},
                    http={"tariff": "arera"},
                    devices=[{"id": "m1", "host": "127.0.0.1", "port": 1502, "profile": "pac3200"}])


async def test_today_by_arera_band_with_a_gap_across_the_band_boundary(settings, tmp_path) -> None:
    # Counter 222 rises 10 Wh a minute, read every minute from 07:30 to 08:30 local time,
    # except 07:50 .. 08:10: a gap from the 07:49 reading (1190) to the 08:11 one (1410).
    minutes = [m for m in range(0, 61) if not 20 <= m <= 40]
    samples = [Sample("m1", "222", local(7, 30) + 60 * m, 1000.0 + 10 * m, 5.0, 0) for m in minutes]
    sink = create_sink(settings.database_target(), settings.job_id)
    await sink.open()
    await sink.migrate()
    try:
        await sink.write(samples)
    finally:
        await sink.close()
    path = tmp_path / "site.yaml"
    plans = plan_devices(settings, path)
    assert await rollup(Site(path, settings, plans), None, None) == 0

    figures, note = today(settings, plans[0], local(8, 40), load_tariff(settings))

    assert note == ""
    assert (figures["param"], figures["unit"], figures["tariff"]) == ("222", "Wh", "ARERA F1/F2/F3")
    assert figures["day"] == "2026-12-02" and figures["day_start_s"] == local(0, 0)
    assert figures["day_end_s"] - figures["day_start_s"] == 86400
    by_start = {i["start"][11:16]: i for i in figures["intervals"]}
    assert len(figures["intervals"]) == 35  # 00:00 .. 08:30, the 15 minutes in progress included
    assert all(by_start[f"{h:02d}:{m:02d}"]["energy"] is None for h in range(7) for m in (0, 15, 30, 45))
    assert by_start["00:00"]["completeness_pct"] == 0.0 and by_start["00:00"]["band"] == "F3"
    # 07:30: readings 07:30 .. 07:44 rise 140, the step to 07:45 adds 10: 150 Wh, all measured.
    # 07:45: 07:45 .. 07:49 rise 40, plus the gap's 11 minutes up to 08:00 (220 Wh x 11/22 = 110): 150 Wh,
    #        110 of them estimated (73.333 %); 5 good minutes of 15: 33.333 % complete.
    # 08:00: the gap's other 110, then 08:11 .. 08:14 rise 30 and the step to 08:15 10: 150 Wh, 73.333 %
    #        estimated, 4 good minutes: 26.667 % complete.
    # 08:15: 150 Wh measured; 08:30: one reading, no rise: 0 Wh, 1 good minute.
    expected = {"07:30": ("F2", 150.0, 0.0, 100.0), "07:45": ("F2", 150.0, 73.333, 33.333),
                "08:00": ("F1", 150.0, 73.333, 26.667), "08:15": ("F1", 150.0, 0.0, 100.0),
                "08:30": ("F1", 0.0, 0.0, 6.667)}
    for start, (band, energy, estimated, complete) in expected.items():
        got = by_start[start]
        assert (got["band"], got["energy"], got["estimated_pct"], got["completeness_pct"]) == pytest.approx(
            (band, energy, estimated, complete), abs=0.001), start
    totals = {t["band"]: t for t in figures["totals"]}
    # The whole day holds the gap in one cell: measured. Each band sees it cross its edge:
    # F2 300 Wh with 110 estimated (36.667 %), F1 300 Wh likewise.
    assert (totals["all"]["energy"], totals["all"]["estimated_pct"]) == (600.0, 0.0)
    assert (totals["F2"]["energy"], totals["F2"]["estimated_pct"]) == (300.0, pytest.approx(36.667, abs=0.001))
    assert (totals["F1"]["energy"], totals["F1"]["estimated_pct"]) == (300.0, pytest.approx(36.667, abs=0.001))
    assert totals["F3"]["energy"] is None  # no data is not zero
    assert totals["F23"]["energy"] == 300.0
    assert totals["all"]["peak_w"] == 600.0  # 150 Wh in 15 minutes


def _plans(tmp_path, params: list[str] | None, profile: str = "pac3200"):
    device = {"id": "m1", "host": "127.0.0.1", "port": 1502, "profile": profile}
    if params is not None:
        device["params"] = params
    settings = Settings(job_id="000", database={"url": f"sqlite:///{tmp_path / 'x.db'}"}, devices=[device])
    return plan_devices(settings, tmp_path / "site.yaml")


@pytest.mark.parametrize(("profile", "params", "expected"), [
    ("pac3200", None, "222"),  # the default set reads 222 and 226: tariff 1 active import
    ("pac3200", ["222", "223", "226", "227"], "EP_IMP"),  # both tariff registers: their derived total
    ("pac3200", ["226", "133"], None),  # reactive energy only: no active-energy counter
    ("umg604", None, "222"),
    ("generic", ["E_IMP_CNT", "P_TOT"], "E_IMP_CNT"),  # no 222: the first counter in Wh
    ("generic", None, None),  # its E_IMP is a gauge, not a counter
])
def test_the_main_counter_is_the_active_import_total(tmp_path, profile, params, expected) -> None:
    plan = _plans(tmp_path, params, profile)[0]
    assert main_counter(device_counters(plan, 1.0)) == expected


def test_an_unknown_tariff_is_a_config_error_naming_the_setting(tmp_path) -> None:
    settings = Settings(job_id="000", database={"url": "sqlite:///x.db"}, devices=[],
                        http={"tariff": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="http.tariff"):
        check_tariff(settings)
    check_tariff(settings.model_copy(update={"http": settings.http.model_copy(update={"tariff": "arera"})}))


def test_without_the_report_extra_the_page_says_what_to_install(tmp_path) -> None:
    # numpy made unimportable in a fresh interpreter, as on an install without susee[report].
    code = textwrap.dedent("""
        import asyncio, sys
        sys.modules["numpy"] = None
        from susee.config import Settings
        from susee.web.consumption import Consumption
        settings = Settings(job_id="000", database={"url": "sqlite:///x.db"}, devices=[], http={"tariff": "arera"})
        from susee.web.consumption import check_tariff
        check_tariff(settings)  # nothing to check without the report code: no error
        print(asyncio.run(Consumption(settings).of(None, True)))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr((None, INSTALL))
