"""Spool replay while live acquisition goes on: how fast it drains, and whether live keeps its ticks.

An outage leaves rows in the spool; when the database is back the service
replays them, oldest first, while it keeps sampling. This fills the spool
folder of a generated site with ``--rows`` rows of old ticks of the same
meters (what an outage of that length would have left), starts the real
service (``python -m susee``, same as bench/fleet.py) on a live fleet of
``--meters`` meters and MariaDB, watches the spool drain from outside
(``susee.spool.inspect``, read-only), and prints:

- the replay: rows, seconds from the service's start to an empty spool,
  rows/s, and the old rows found in the Raw table (exactly ``--rows``: each
  written once);
- the live ticks while the spool was draining: rows written and expected,
  on time (Code 0, Delay under the period), Delay p50/p99/max, missed
  device-ticks.

    .venv/bin/python bench/replay.py --meters 1000 --rows 1000000
    .venv/bin/python bench/replay.py --meters 5000 --rows 2000000 --workers 2

Uses bench/fleet.py's fleet server (the C one unless ``--fleet python``),
site file and analysis; creates a database ``susee_bench_<random>`` and drops
it at the end. Nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import fleet
from susee.planner import plan_reads
from susee.profiles import load_profile
from susee.sample import Sample
from susee.spool import Spool, inspect

FILL_BATCH_ROWS = 20_000
POLL_S = 0.25
OLD_TICKS_BEFORE_S = 7 * 86400  # the outage's ticks: a week ago, far from the live ones


def fill_spool(folder: Path, meters: int, rows: int) -> int:
    """Append ``rows`` rows (whole device-ticks, 1 s apart, a week old) to the spool in ``folder``."""
    params = [pid for block in plan_reads(load_profile("pac3200"), load_profile("pac3200").default_params)
              for pid in block.param_ids]
    start_s = math.floor(time.time()) - OLD_TICKS_BEFORE_S
    spool = Spool(folder, 1 << 40, "stop_polling")
    spool.open()
    written, batch, tick = 0, [], 0
    rng = random.Random(1)
    try:
        while written < rows:
            for device in range(meters):
                batch.extend(Sample(f"d{device:05d}", pid, float(start_s + tick), rng.uniform(0, 400), 10.0, 0)
                             for pid in params)
                if len(batch) >= FILL_BATCH_ROWS or written + len(batch) >= rows:
                    batch = batch[: rows - written]
                    spool.append(batch)
                    written += len(batch)
                    batch = []
                    if written >= rows:
                        break
            tick += 1
    finally:
        spool.close()
    return start_s


def old_rows(database: str, job: str, before_s: float) -> int:
    with fleet.connect(database) as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM `see{job}Raw` WHERE `Date` < %s", (fleet.utc_text(before_s),))
        return int(cursor.fetchone()[0])


def run(args: argparse.Namespace) -> int:
    fleet.raise_open_files_limit()
    server = fleet.fleet_server(args.fleet)
    print(f"fleet server: {server.description}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="susee-replay-"))
    database = fleet.create_database()
    fleet_server = None
    service = None
    try:
        secrets_dir = tmp / "secrets"
        secrets_dir.mkdir()
        env = fleet.with_susee_src(fleet.clean_environment(secrets_dir), args.susee_src)
        fleet_server = fleet.Fleet(args.meters, args.units_per_port, tmp, env, server)
        site = fleet.write_site(tmp, database, fleet_server.ports, args.meters, args.units_per_port, args.workers)
        job = fleet.susee_job(args.workers)
        # One process owns the root spool folder; with workers it is an orphan the parent replays.
        # (the default folder of one process is per site: spool/<config name>-<job>)
        folder = tmp / ("spool" if args.workers == 1 else f"spool-w{args.workers}")
        if args.workers == 1 and not args.old_spool_folder:
            folder = folder / f"{site.stem}-{job}"
        print(f"filling {folder} with {args.rows} rows ...", flush=True)
        old_start_s = fill_spool(folder, args.meters, args.rows)
        print(f"N={args.meters} workers={args.workers}: susee for up to {args.duration:g} s ...", flush=True)
        command = [sys.executable, "-m", "susee", "--config", str(site), "--duration", str(args.duration),
                   "--log-level", "WARNING"]
        service = fleet.Child("susee", command, tmp, env)
        started_s = service.started_s
        drained_s = None
        while service.alive() and time.time() < started_s + args.duration:
            if inspect(folder).rows == 0:
                drained_s = time.time()
                break
            time.sleep(POLL_S)
        service.stop()
        code = service.wait(fleet.STOP_WAIT_S)
        replayed = old_rows(database, job, old_start_s + OLD_TICKS_BEFORE_S / 2)
        if drained_s is None:
            print(f"the spool did not drain within {args.duration:g} s ({inspect(folder).rows} rows left);"
                  f" exit code {code}\n{service.stderr_text()[-2000:]}")
            return 1
        replay_s = drained_s - started_s
        # Live ticks while the spool drained: from the first full tick after start-up to the last before empty.
        first_tick = math.ceil(started_s + args.startup)
        window_s = max(0, math.floor(drained_s) - first_tick)
        rows = fleet.analyse(database, job, args.meters, first_tick, window_s, started_s) if window_s else None
        print()
        print(f"{'N':>6} {'workers':>7} {'spooled':>9} {'replay s':>9} {'rows/s':>8} {'in Raw':>9}"
              f" {'live ticks':>10} {'live written':>12} {'on-time %':>9} {'p50 ms':>7} {'p99 ms':>7}"
              f" {'max ms':>7} {'missed':>7}")
        expected = args.meters * window_s * fleet.PARAMS_PER_DEVICE
        live = (f"{window_s:>10} {rows.written:>12} {100 * rows.on_time / expected:>9.2f}"
                f" {rows.delay_ms['p50']:>7.1f} {rows.delay_ms['p99']:>7.1f} {rows.delay_ms['max']:>7.1f}"
                f" {rows.missed:>7}") if rows and expected else f"{0:>10} (the replay ended within start-up)"
        print(f"{args.meters:>6} {args.workers:>7} {args.rows:>9} {replay_s:>9.1f} {args.rows / replay_s:>8.0f}"
              f" {replayed:>9} {live}")
        print(f"\nreplay time counts from the service's start (interpreter, plan, connects: about"
              f" {args.startup:g} s of it); live ticks from {fleet.utc_text(first_tick)} for {window_s} s;"
              f" exit code {code}")
        return 0 if replayed == args.rows else 1
    finally:
        if service is not None:
            service.stop()
        if fleet_server is not None:
            fleet_server.stop()
        fleet.drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the spool at start")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--units-per-port", type=int, default=10)
    parser.add_argument("--duration", type=float, default=120.0, help="give up after this many seconds")
    parser.add_argument("--startup", type=float, default=3.0,
                        help="seconds after the start not counted as live ticks (start-up)")
    parser.add_argument("--susee-src", type=Path, default=None)
    parser.add_argument("--old-spool-folder", action="store_true",
                        help="a --susee-src from before the per-site spool folder (spool/ beside the site file)")
    fleet.add_fleet_option(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
