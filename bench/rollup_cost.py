"""What the 15-minute rollups cost: service CPU per device-tick, MariaDB CPU, with and without.

In-process and short (the fleet figures come from bench/fleet.py, run by the
lead on a quiet machine with ``storage.rollups: true|false``):

1. writes T ticks of N PAC3200 meters (8 params each, values from the
   simulator's model) through the real MariaDB sink, one batch per tick as
   the writer sends them at 1 s, once with the bucket markers
   (``rollups=True``) and once without, into two fresh databases; prints
   this process's CPU per device-tick (only the sink's write, not the value
   generation) and mariadbd's CPU over the same time (/proc/<pid>/stat:
   every client of the server counts, so run it on a quiet server);
2. recomputes the written buckets as the upkeep does and prints mariadbd's
   CPU per raw row and what that means per second for a site of N meters at
   1 s (every row is recomputed about twice with ``rollup_open_every`` 300 s:
   a third and two thirds of the open bucket, then the whole closed bucket).

    .venv/bin/python bench/rollup_cost.py --meters 1000 --ticks 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from susee.config import Settings  # noqa: E402
from susee.sample import Sample  # noqa: E402
from susee.simulator_model import UnitModel  # noqa: E402
from susee.sinks import create_sink  # noqa: E402
from susee.upkeep import StorageUpkeep  # noqa: E402

PARAMS = ("104", "107", "132", "133", "134", "135", "222", "226")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
RECOMPUTES_PER_ROW = 2.0  # open bucket at 1/3 and 2/3 (rollup_open_every 300 s), then closed: 1/3 + 2/3 + 1


def mariadbd_cpu_s() -> float:
    """utime + stime of the mariadbd process, in seconds."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S
            except OSError:
                continue
    raise SystemExit("no mariadbd process found in /proc")


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def tick_batch(models: list[UnitModel], tick: float) -> list[Sample]:
    batch = []
    for unit, model in enumerate(models, start=1):
        values = model.advance(tick)
        for param in PARAMS:
            batch.append(Sample(f"d{unit:04d}", param, tick, float32(values[param]), 12.0, 0))
    return batch


async def write_run(database: str, meters: int, ticks: int, rollups: bool, start_s: float) -> tuple[float, float]:
    """(service CPU s, mariadbd CPU s) for writing ``ticks`` ticks of ``meters`` meters."""
    settings = Settings(job_id="000", database={"url": f"mysql://root@127.0.0.1:3306/{database}"})
    sink = create_sink(settings.database_target(), "000", rollups=rollups)
    await sink.open()
    await sink.migrate()
    models = [UnitModel(unit) for unit in range(1, meters + 1)]
    service_s = 0.0
    server_before = mariadbd_cpu_s()
    try:
        for k in range(ticks):
            batch = tick_batch(models, start_s + k)
            began = time.process_time()
            await sink.write(batch)
            service_s += time.process_time() - began
    finally:
        await sink.close()
    return service_s, mariadbd_cpu_s() - server_before


async def recompute_run(database: str, after_s: float) -> tuple[int, float, float]:
    """(raw rows, mariadbd CPU s, wall s) for rolling up every marked bucket once, at ``after_s``."""
    settings = Settings(job_id="000", database={"url": f"mysql://root@127.0.0.1:3306/{database}"})
    closed = datetime.fromtimestamp(after_s + 3600, timezone.utc).replace(tzinfo=None)  # every bucket closed
    upkeep = StorageUpkeep(settings, now=lambda: closed)
    conn = pymysql.connect(host="127.0.0.1", user="root", database=database)
    with conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM see000Raw")
        (rows,) = cursor.fetchone()
    conn.close()
    server_before, began = mariadbd_cpu_s(), time.perf_counter()
    try:
        await upkeep.sink.session("bench", upkeep.run_once)
    finally:
        await upkeep.sink.close()
    return rows, mariadbd_cpu_s() - server_before, time.perf_counter() - began


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=60, help="ticks written per run (default 60: one minute at 1 s)")
    args = parser.parse_args()
    start_s = float(int(time.time()) // 900 * 900)
    names = {flag: f"susee_bench_rollup_{'on' if flag else 'off'}_{os.getpid()}" for flag in (False, True)}
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        results = {}
        for flag in (False, True, False, True):  # twice each, alternating: the machine's load drifts
            service_s, server_s = await write_run(names[flag], args.meters, args.ticks, flag, start_s)
            results.setdefault(flag, []).append((service_s, server_s))
            if not flag:
                with admin.cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS `{names[flag]}`")
            start_s += args.ticks  # the second round writes new ticks
        device_ticks = args.meters * args.ticks
        print(f"{args.meters} meters x {args.ticks} ticks, 8 params, one batch per tick")
        print(f"{'rollups':<8} {'service µs/device-tick':>24} {'mariadbd µs/device-tick':>24}")
        for flag in (False, True):
            for service_s, server_s in results[flag]:
                print(f"{'on' if flag else 'off':<8} {service_s / device_ticks * 1e6:>24.1f}"
                      f" {server_s / device_ticks * 1e6:>24.1f}")
        rows, server_s, wall_s = await recompute_run(names[True], start_s)
        per_row_us = server_s / rows * 1e6
        site_rows_per_s = args.meters * len(PARAMS)
        print(f"recompute: {rows:,} raw rows in {wall_s:.1f} s ({rows / wall_s:,.0f} rows/s),"
              f" mariadbd {per_row_us:.2f} µs CPU per raw row;"
              f" at {args.meters} meters, 1 s: ~{per_row_us * site_rows_per_s * RECOMPUTES_PER_ROW / 1e4:.0f} %"
              f" of one core of mariadbd on average")
    finally:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
