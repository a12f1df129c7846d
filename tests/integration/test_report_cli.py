"""`susee report` end to end: the service runs on the simulator, its rows are rolled up, the report reads them.

On MariaDB the service runs a few ticks, then `susee rollup --from --to`
recomputes the Q15 rows from what it wrote to Raw. The demo (SQLite) rolls
up by itself, as `scripts/demo` does: only the service, then the report.
"""

from __future__ import annotations

import asyncio
import csv
import io
import signal
import sqlite3
import struct
import time
import zlib
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook

from tests.integration.storage_support import mariadb_query
from tests.integration.test_cli import (  # noqa: F401 - simulator is a fixture
    DEMO_CONFIG,
    finish,
    free_port,
    meters,
    mysql_url,
    run_cli,
    simulator,
    sqlite_rows,
    start_cli,
    write_site,
)

PNG_SIZE = (1200, 800)  # outputs.PNG_SIZE_IN x PNG_DPI


def png_size_and_colours(data: bytes) -> tuple[tuple[int, int], int]:
    """(width, height) from IHDR, and the number of distinct bytes in the image data (1: blank)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"IDAT":
            chunks.append(data[position + 8:position + 8 + length])
        position += 12 + length
    return (width, height), len(set(zlib.decompress(b"".join(chunks))))


@pytest.fixture
async def site(tmp_path, simulator, mariadb_target, job_id):  # noqa: F811 - the fixture imported above
    """A site whose service ran a few ticks, then `susee rollup` over the minutes it wrote; and its Raw rows."""
    devices = meters(simulator.port)
    devices[0]["tags"] = {"building": "A"}
    devices[1]["tags"] = {"building": "B"}
    path = write_site(tmp_path, devices=devices, db_url=mysql_url(mariadb_target), job_id=job_id,
                      timezone="Europe/Rome", virtual_meters={"rest": "d01 - d02"})
    result = await run_cli(tmp_path, "run", "--config", str(path), "--duration", "3")
    assert result.returncode == 0, result.stderr
    raw = mariadb_query(mariadb_target, f"SELECT idDevice, idParam, `Date`, Value, Code FROM see{job_id}Raw")
    first, last = min(row[2] for row in raw), max(row[2] for row in raw)
    rolled = await run_cli(tmp_path, "rollup", "--config", str(path), "--from", f"{first:%Y-%m-%d %H:%M}",
                           "--to", f"{last + timedelta(minutes=1):%Y-%m-%d %H:%M}")
    assert rolled.returncode == 0 and "rolled up" in rolled.stdout, rolled.stderr
    return path, raw


def counter_rise(raw, device: str, param: str) -> float:
    """Last minus first good reading in Raw rows (idDevice, idParam, Date, Value, Code)."""
    values = [v for d, p, _, v, code in sorted(raw, key=lambda r: r[2]) if (d, p) == (device, param) and not code]
    return values[-1] - values[0]


async def test_report_reads_what_the_service_wrote_as_csv_xlsx_and_png(tmp_path, site):
    path, samples = site
    common = ("report", "--config", str(path), "--last", "1h", "--every", "15min", "--tariff", "arera")
    shown = await run_cli(tmp_path, *common)
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for row in rows:
        if row["band"] == "all" and row["energy"]:
            totals[(row["meter"], row["param"])] += float(row["energy"])
    # The consumption over the hour is the counter's rise over the run, per meter and counter.
    for device in ("d01", "d02"):
        for param in ("222", "226"):
            assert totals[(device, param)] == pytest.approx(counter_rise(samples, device, param), abs=2e-3)
            assert totals[(device, param)] > 0
    assert totals[("rest", "222")] == pytest.approx(totals[("d01", "222")] - totals[("d02", "222")], abs=2e-3)
    assert {row["unit"] for row in rows if row["param"] == "226"} == {"VArh"}
    assert {row["power_unit"] for row in rows if row["param"] == "222"} == {"W"}
    # A run across a 15-minute boundary can leave an interval with no energy at all: no cos phi there.
    assert all(row["cos_phi"] for row in rows if row["param"] == "226" and row["energy"] and float(row["energy"]))

    assert (await run_cli(tmp_path, *common, "--out", "r.xlsx")).returncode == 0
    book = load_workbook(tmp_path / "r.xlsx", read_only=True)
    assert book.sheetnames == ["Summary", "Intervals", "Chart"]
    table = [[("" if v is None else v) for v in row] for row in book["Intervals"].iter_rows(values_only=True)]
    assert table[0] == list(rows[0].keys())
    for from_csv, from_xlsx in zip(rows, table[1:], strict=True):
        for column, cell in zip(from_csv, from_xlsx, strict=True):
            expected = from_csv[column]
            numeric = isinstance(cell, (int, float)) and expected != ""
            assert (cell == pytest.approx(float(expected)) if numeric else str(cell) == expected), (column, cell)

    assert (await run_cli(tmp_path, *common, "--out", "r.png")).returncode == 0
    size, colours = png_size_and_colours((tmp_path / "r.png").read_bytes())
    assert size == PNG_SIZE and colours > 10

    by_tag = await run_cli(tmp_path, "report", "--config", str(path), "--last", "1h", "--by", "tag:building")
    groups = {row["meter"] for row in csv.DictReader(io.StringIO(by_tag.stdout))}
    assert by_tag.returncode == 0 and groups == {"A", "B"}


@pytest.mark.parametrize("arguments, culprit", [
    (("--last", "1h", "--params", "999"), "param '999'"),
    (("--last", "1h", "--params", "104"), "param '104': not a counter"),
    (("--last", "1h", "--params", "223"), "param '223': no device reads it"),
    (("--from", "2026-11-02", "--to", "2026-11-01"), "--to 2026-11-01"),
    (("--last", "1h", "--tariff", "nowhere.yaml"), "tariff 'nowhere.yaml'"),
    (("--last", "1h", "--by", "tag:floor"), "tag 'floor'"),
    (("--last", "1h", "--devices", "d09"), "'d09'"),
    (("--last", "1h", "--out", "r.pdf"), "--out r.pdf"),
])
async def test_bad_arguments_exit_2_naming_the_culprit(tmp_path, mariadb_target, job_id, arguments, culprit):
    # Arguments are checked before the database is read: no service run needed.
    path = write_site(tmp_path, devices=meters(5020), db_url=mysql_url(mariadb_target), job_id=job_id)
    result = await run_cli(tmp_path, "report", "--config", str(path), *arguments)
    assert result.returncode == 2, result.output
    assert culprit in result.stderr


def rolled_up_readings(database: Path, job: str) -> int:
    """The fewest good counter (222) readings any demo meter has in Q15 (0 before the tables exist)."""
    if not database.exists():
        return 0
    try:
        rows = sqlite_rows(database, f"SELECT idDevice, SUM(Good) FROM see{job}Q15 WHERE idParam = '222'"
                                     " GROUP BY idDevice")
    except sqlite3.OperationalError:  # no table yet
        return 0
    return min((good for _, good in rows), default=0) if len(rows) == 3 else 0


async def test_the_readme_demo_report_shows_real_figures(tmp_path):
    """`scripts/demo`, then `susee report --config config/demo.yaml --last 1h --every 15min` (SQLite).

    Nothing but the service makes the rollups here, as in the demo; its
    upkeep passes come quicker than the demo's to keep the test short.
    """
    port = free_port()
    demo = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    demo["simulator"]["port"] = port
    for device in demo["devices"]:
        device["port"] = port
    site = tmp_path / "demo.yaml"
    site.write_text(yaml.safe_dump(demo, sort_keys=False), encoding="utf-8")  # the demo's relative SQLite file
    database, job = tmp_path / "susee-demo.db", demo["job_id"]
    quick = {"SUSEE_SAMPLE_TIME": "1", "SUSEE_STORAGE__ROLLUP_EVERY": "0.3", "SUSEE_STORAGE__ROLLUP_OPEN_EVERY": "0.3"}
    process = await start_cli(tmp_path, "--config", str(site), "--duration", "45", **quick)
    try:
        deadline = time.monotonic() + 40
        while rolled_up_readings(database, job) < 2:  # two readings of each counter: a consumption
            assert process.returncode is None and time.monotonic() < deadline, "the service rolled nothing up"
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGINT)
        result = await finish(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert result.returncode == 0, result.stderr

    shown = await run_cli(tmp_path, "report", "--config", str(site), "--last", "1h", "--every", "15min", **quick)
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    reported = {(row["meter"], row["param"]) for row in rows}
    assert reported == {(device, param) for device in ("d00", "d01", "d02") for param in ("222", "226")}
    raw = sqlite_rows(database, f'SELECT idDevice, idParam, Date, Value, Code FROM "see{job}Raw"')
    for device in ("d00", "d01", "d02"):
        energy = sum(float(row["energy"]) for row in rows if (row["meter"], row["param"]) == (device, "222")
                     and row["energy"])
        # Ticks stored after the service's last upkeep pass are not in Q15 yet: at most what Raw holds.
        assert 0 < energy <= counter_rise(raw, device, "222") + 2e-3
