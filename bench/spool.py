"""The spool on its own: append rate and raw read+ack rate, no database.

A 10,000-meter fleet at 1 s produces 80,000 rows a second (8 params each).
During an outage every one of them goes through ``Spool.append`` in the
writer's batches; when the database is back ``Spool.read`` + ``Spool.ack``
hand them to the replay, which must reach 50,000 rows/s. This appends
``--ticks`` ticks of ``--meters`` meters in batches of ``--batch-rows`` rows
(each fsync'ed, as the writer does), then reads and acknowledges them in
replay batches of 100,000 rows, and prints rows/s for both.

    .venv/bin/python bench/spool.py                      # 10,000 meters, 3 ticks
    .venv/bin/python bench/spool.py --batch-rows 2000    # the writer's default batch_rows

The folder is a temporary one (``--folder`` to put it on another disk).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from susee.sample import Sample
from susee.spool import Spool

PARAMS = ("101", "102", "103", "104", "105", "106", "107", "108")
REPLAY_ROWS = 100_000
TICK_S = 1613644200.0


def tick_rows(meters: int, tick: int) -> list[Sample]:
    return [Sample(f"d{m:05d}", p, TICK_S + tick, 230.0 + m / 7 + k, 12.5, 0)
            for m in range(meters) for k, p in enumerate(PARAMS)]


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="susee-bench-spool-", dir=args.folder))
    try:
        spool = Spool(root / "spool", 1 << 40, "stop_polling")
        spool.open()
        ticks = [tick_rows(args.meters, t) for t in range(args.ticks)]
        appended = 0
        started = time.perf_counter()
        for rows in ticks:
            for start in range(0, len(rows), args.batch_rows):
                batch = rows[start:start + args.batch_rows]
                spool.append(batch)
                appended += len(batch)
        append_s = time.perf_counter() - started
        size = spool.size_bytes
        started = time.perf_counter()
        read = 0
        while (batch := spool.read(REPLAY_ROWS)) is not None:
            read += len(batch.samples)
            spool.ack(batch)
        read_s = time.perf_counter() - started
        spool.close()
        ok = read == appended
        print(f"{'storage':<10} {'batch rows':>10} {'rows':>9} {'bytes/row':>9} {'append rows/s':>13}"
              f" {'read+ack rows/s':>15}")
        print(f"{Spool.STORAGE:<10} {args.batch_rows:>10} {appended:>9}"
              f" {size / max(appended, 1):>9.1f} {appended / append_s:>13.0f} {read / read_s:>15.0f}"
              f"{'' if ok else f'  MISMATCH: read {read}'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=None)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
