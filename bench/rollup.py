"""``susee rollup`` end to end, as an operator runs it, over a filled Raw.

Creates a scratch MariaDB database with susee's own migrations (compact Raw,
Q15, Q60), fills Raw with N meters x H hours of the simulator's values in
tick order (``bench/storage.py``'s generator, 8 params per device-tick), then
runs ``python -m susee rollup --config site.yaml`` (all of Raw) as a
subprocess ``--runs`` times and prints what each run printed (raw rows/s),
its wall time and the load average before it. Extra arguments after ``--``
go to ``susee rollup`` (for example ``-- --connections 1``).

    .venv/bin/python bench/rollup.py --meters 200 --hours 3
    .venv/bin/python bench/rollup.py --meters 200 --hours 3 --runs 3 -- --connections 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymysql
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from storage import generate, insert_generated  # noqa: E402

from susee.config import Settings  # noqa: E402
from susee.sinks import create_sink  # noqa: E402

JOB = "000"
START_S = 1_780_000_000 // 86400 * 86400  # a UTC midnight (2026-05-28)


async def migrate(url: str) -> None:
    sink = create_sink(Settings(job_id=JOB, database={"url": url}).database_target(), JOB, rollups=False)
    await sink.open()
    try:
        await sink.migrate()
    finally:
        await sink.close()


def fill(cursor, meters: int, hours: float, period: int) -> int:
    insert = f"INSERT INTO see{JOB}Raw (idDevice, `Date`, idParam, Value, Delay, Code) VALUES (%s, %s, %s, %s, %s, %s)"
    return insert_generated(cursor, insert, (row[1:] for row in generate(meters, hours, period, START_S)))


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--period", type=int, default=10, help="sample_time of the generated rows, s (default 10)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--database", help="reuse this filled database (made by --keep) instead of a new one")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its name is printed)")
    args = parser.parse_args(argv)

    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True,
                           init_command="SET time_zone = '+00:00'")
    cursor = conn.cursor()
    database = args.database or f"susee_bench_rollup_{os.getpid()}"
    url = f"mysql://root@127.0.0.1:3306/{database}"
    try:
        if not args.database:
            cursor.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            asyncio.run(migrate(url))
            cursor.execute(f"USE `{database}`")
            began = time.perf_counter()
            rows = fill(cursor, args.meters, args.hours, args.period)
            print(f"{database}: {rows:,} raw rows ({args.meters} meters x {args.hours:g} h at {args.period} s,"
                  f" 8 params) written in {time.perf_counter() - began:.0f} s", flush=True)
        return run(url, args, extra)
    finally:
        if args.keep or args.database:
            print(f"kept {database}")
        else:
            cursor.execute(f"DROP DATABASE `{database}`")


def run(url: str, args, extra: list[str]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder) / "site.yaml"
        site.write_text(yaml.safe_dump({"job_id": JOB, "database": {"url": url}, "devices": []}), encoding="utf-8")
        command = [sys.executable, "-m", "susee", "rollup", "--config", str(site), *extra]  # all of Raw
        for number in range(1, args.runs + 1):
            load = Path("/proc/loadavg").read_text().split()[:3]
            began = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
            wall = time.perf_counter() - began
            if done.returncode != 0:
                print(done.stdout + done.stderr)
                return done.returncode
            print(f"run {number} (load {' '.join(load)}): {done.stdout.strip()}; process wall {wall:.1f} s",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
