"""Bytes on disk per raw sample and per rollup row, for several Raw layouts.

Fills a scratch MariaDB database with N meters x H hours of PAC3200 values
from the simulator's value model (``susee.simulator_model``, float32-rounded
as the codec decodes them; the counters as float64), the default eight params
per device-tick, in tick order as the service writes them (tick by tick,
device by device within the tick). The rows are generated once into a
staging table, then copied into each layout with ``INSERT ... SELECT ...
ORDER BY seq``, so every layout receives the same rows in the same order.

Bytes on disk are the blocks the ``.ibd`` files really occupy (``st_blocks``
x 512: page compression punches holes, so the file length says nothing),
read after ``FLUSH TABLES ... FOR EXPORT`` wrote every dirty page. The
script needs to read the server's data directory (run it as root on the
database host).

    .venv/bin/python bench/storage.py --meters 200 --hours 3
    .venv/bin/python bench/storage.py --meters 200 --hours 24 --layouts today compact
"""

from __future__ import annotations

import argparse
import math
import os
import random
import struct
import sys
import time
from pathlib import Path

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from susee.rollup import MARIADB_SESSION, Tables, recompute_sql  # noqa: E402
from susee.simulator_model import UnitModel  # noqa: E402

PARAMS = ("104", "107", "132", "133", "134", "135", "222", "226")
COUNTERS = {"222", "226"}  # float64 in the meter; the others are float32 registers
GB = 1e9
DISK_BYTES = 100 * GB
FLEET = 1000
COLUMNS = "idNum, idDevice, `Date`, idParam, Value, Delay, Code"

BASE = """(
    idDevice VARCHAR(20) NOT NULL,
    `Date` DATETIME(6) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Value DOUBLE NULL,
    Delay FLOAT NULL,
    Code INT NOT NULL,
    {extra}
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin {options}"""

AUTO_ID = "idNum BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,"
VIRTUAL_ID = "idNum BIGINT UNSIGNED AS (TIMESTAMPDIFF(MICROSECOND, '1970-01-01', `Date`)) VIRTUAL,"
DAY_PARTITIONS = "PARTITION BY RANGE (TO_DAYS(`Date`)) ({parts}, PARTITION pmax VALUES LESS THAN MAXVALUE)"

# name -> (idNum definition, keys, table options, partitioned by day)
LAYOUTS: dict[str, tuple[str, str, str, bool]] = {
    "today": (AUTO_ID, "PRIMARY KEY (idNum), UNIQUE KEY uq_sample (idDevice, idParam, `Date`), KEY ix_date (`Date`)", "", False),
    "dev_pk": (AUTO_ID, "PRIMARY KEY (idDevice, idParam, `Date`), KEY ix_num (idNum)", "", False),
    "date_pk": (AUTO_ID, "PRIMARY KEY (`Date`, idDevice, idParam), KEY ix_num (idNum)", "", False),
    "dev_pk_pc": (AUTO_ID, "PRIMARY KEY (idDevice, idParam, `Date`), KEY ix_num (idNum)", "PAGE_COMPRESSED=1", False),
    "date_pk_pc": (AUTO_ID, "PRIMARY KEY (`Date`, idDevice, idParam), KEY ix_num (idNum)", "PAGE_COMPRESSED=1", False),
    "date_pk_pc9": (AUTO_ID, "PRIMARY KEY (`Date`, idDevice, idParam), KEY ix_num (idNum)",
                    "PAGE_COMPRESSED=1 PAGE_COMPRESSION_LEVEL=9", False),
    "date_pk_virtual_pc": (
        VIRTUAL_ID, "PRIMARY KEY (`Date`, idDevice, idParam)", "PAGE_COMPRESSED=1", False,
    ),
    "date_pk_rc8": (AUTO_ID, "PRIMARY KEY (`Date`, idDevice, idParam), KEY ix_num (idNum)",
                    "ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=8", False),
    "date_pk_rc4": (AUTO_ID, "PRIMARY KEY (`Date`, idDevice, idParam), KEY ix_num (idNum)",
                    "ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=4", False),
    "date_pk_pc_days": (AUTO_ID, "PRIMARY KEY (`Date`, idDevice, idParam), KEY ix_num (idNum)", "PAGE_COMPRESSED=1", True),
    # What new databases get (migrations/mariadb/0003_compact_raw.sql).
    "compact": (VIRTUAL_ID, "PRIMARY KEY (`Date`, idDevice, idParam)", "PAGE_COMPRESSED=1", True),
}

Q15_TABLE = """(
    idDevice VARCHAR(20) NOT NULL, idParam VARCHAR(20) NOT NULL, Bucket DATETIME NOT NULL,
    Samples INT NOT NULL, Good INT NOT NULL, MinValue DOUBLE NULL, `MaxValue` DOUBLE NULL, MeanValue DOUBLE NULL,
    FirstDate DATETIME(6) NULL, FirstValue DOUBLE NULL, LastDate DATETIME(6) NULL, LastValue DOUBLE NULL,
    Rise DOUBLE NULL, Fall DOUBLE NULL, Drops INT NOT NULL, MaxRise DOUBLE NULL, Codes INT NOT NULL,
    PRIMARY KEY (idDevice, idParam, Bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin {options}"""


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def generate(meters: int, hours: float, period_s: int, start_s: int):
    """Rows (seq, idDevice, Date, idParam, Value, Delay, Code) in the service's order."""
    models = [UnitModel(unit) for unit in range(1, meters + 1)]
    jitter = random.Random(12)
    seq = 0
    for tick in range(start_s, start_s + int(hours * 3600), period_s):
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(tick)) + ".000000"
        for unit, model in enumerate(models, start=1):
            values = model.advance(tick)
            delay = round(jitter.uniform(2.0, 40.0), 3)  # ms; two requests per PAC3200 tick
            for param in PARAMS:
                value = values[param] if param in COUNTERS else float32(values[param])
                seq += 1
                yield (seq, f"d{unit:04d}", date, param, value, float32(delay if param < "200" else delay + 3), 0)


def insert_generated(cursor, insert: str, rows) -> int:
    """Insert ``rows`` (tuples for ``insert``'s placeholders) 20,000 a statement; return how many."""
    batch: list[tuple] = []
    count = 0
    for row in rows:
        batch.append(row)
        if len(batch) == 20_000:
            cursor.executemany(insert, batch)
            count += len(batch)
            batch.clear()
    if batch:
        cursor.executemany(insert, batch)
        count += len(batch)
    return count


def allocated_bytes(datadir: Path, database: str, table: str) -> int:
    """Blocks really allocated to the table's .ibd files (every partition)."""
    folder = datadir / database
    return sum(
        entry.stat().st_blocks * 512
        for entry in folder.iterdir()
        if entry.name.endswith(".ibd") and (entry.name == f"{table}.ibd" or entry.name.startswith(f"{table}#P#"))
    )


def flush(cursor, table: str) -> None:
    cursor.execute(f"FLUSH TABLES `{table}` FOR EXPORT")
    cursor.execute("UNLOCK TABLES")


def day_parts(first_s: int, days: int) -> str:
    parts = []
    for day in range(days + 1):
        label = time.strftime("%Y%m%d", time.gmtime(first_s + day * 86400))
        bound = time.strftime("%Y-%m-%d", time.gmtime(first_s + (day + 1) * 86400))
        parts.append(f"PARTITION p{label} VALUES LESS THAN (TO_DAYS('{bound}'))")
    return ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--period", type=int, default=10, help="sample_time of the generated rows, s (default 10)")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True, local_infile=False, init_command="SET time_zone = '+00:00'")
    cursor = conn.cursor()
    cursor.execute("SELECT @@datadir")
    datadir = Path(cursor.fetchone()[0])
    database = f"susee_bench_storage_{os.getpid()}"
    cursor.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    cursor.execute(f"USE `{database}`")
    try:
        return run(cursor, datadir, database, args)
    finally:
        if not args.keep:
            cursor.execute(f"DROP DATABASE `{database}`")


def run(cursor, datadir: Path, database: str, args) -> int:
    start_s = 1_780_000_000 // 86400 * 86400  # a UTC midnight
    cursor.execute("CREATE TABLE staging (seq BIGINT PRIMARY KEY, idDevice VARCHAR(20), `Date` DATETIME(6),"
                   " idParam VARCHAR(20), Value DOUBLE, Delay FLOAT, Code INT) ENGINE=InnoDB")
    began = time.perf_counter()
    rows = insert_generated(cursor, "INSERT INTO staging VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            generate(args.meters, args.hours, args.period, start_s))
    print(f"{rows:,} rows ({args.meters} meters x {args.hours:g} h at {args.period} s, 8 params) generated"
          f" in {time.perf_counter() - began:.0f} s", flush=True)
    days = max(1, int(args.hours // 24) + 1)
    print(f"{'layout':<20} {'MB on disk':>10} {'bytes/row':>10} {'load s':>7} {'days to 100 GB @1000 meters: 1 s':>34} {'10 s':>6}")
    for name in args.layouts:
        id_column, keys, options, partitioned = LAYOUTS[name]
        table = f"raw_{name}"
        ddl = BASE.format(extra=id_column + "\n    " + keys, options=options)
        if partitioned:
            ddl += " " + DAY_PARTITIONS.format(parts=day_parts(start_s, days))
        cursor.execute(f"CREATE TABLE `{table}` {ddl}")
        began = time.perf_counter()
        cursor.execute(f"INSERT INTO `{table}` (idDevice, `Date`, idParam, Value, Delay, Code)"
                       " SELECT idDevice, `Date`, idParam, Value, Delay, Code FROM staging ORDER BY seq")
        load_s = time.perf_counter() - began
        flush(cursor, table)
        size = allocated_bytes(datadir, database, table)
        per_row = size / rows
        print(f"{name:<20} {size / 1e6:>10.1f} {per_row:>10.1f} {load_s:>7.1f} "
              f"{fill_days(per_row, 1):>34.1f} {fill_days(per_row, 10):>6.0f}", flush=True)
        if name != args.layouts[-1]:
            cursor.execute(f"DROP TABLE `{table}`")
    q15_rows(cursor, datadir, database, table, rows, start_s, args.hours)
    return 0


def q15_rows(cursor, datadir: Path, database: str, raw_table: str, raw_rows: int, start_s: int, hours: float) -> None:
    """The real rollup SQL over the last layout loaded: raw rows/s, then bytes per Q15 row."""
    for options in ("", "PAGE_COMPRESSED=1"):
        cursor.execute("DROP TABLE IF EXISTS q15")
        cursor.execute("CREATE TABLE q15 " + Q15_TABLE.format(options=options))
        sql = recompute_sql(Tables(raw=f"`{raw_table}`", q15="q15", dirty="unused"), keep_existing=False)
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start_s + int(hours * 3600)))
        for statement in MARIADB_SESSION:
            cursor.execute(statement)
        began = time.perf_counter()
        for quarter in range(math.ceil(hours * 4)):  # a bucket a statement, as susee rollup does
            cursor.execute(sql, (step(start_s, quarter), min(step(start_s, quarter + 1), last)))
        elapsed = time.perf_counter() - began
        cursor.execute("SELECT COUNT(*) FROM q15")
        (computed,) = cursor.fetchone()
        # Enough rows for the table's size to be its rows, not its first extents:
        # the computed rows again, a day later each time (same values, new keys).
        for day in range(1, max(1, 300_000 // computed) + 1):
            cursor.execute(f"INSERT INTO q15 SELECT idDevice, idParam, Bucket + INTERVAL {day} DAY, Samples, Good,"
                           " MinValue, `MaxValue`, MeanValue, FirstDate, FirstValue, LastDate, LastValue, Rise, Fall,"
                           " Drops, MaxRise, Codes FROM q15 WHERE Bucket < %s", (last,))
        cursor.execute("SELECT COUNT(*) FROM q15")
        (count,) = cursor.fetchone()
        flush(cursor, "q15")
        size = allocated_bytes(datadir, database, "q15")
        print(f"Q15 {options or 'uncompressed':<18} {count:,} rows, {size / count:.1f} bytes/row"
              f" ({raw_rows / computed:.0f} raw rows per rollup row at this period);"
              f" rollup of {raw_rows:,} raw rows into {computed:,} rows in {elapsed:.1f} s"
              f" = {raw_rows / elapsed:,.0f} raw rows/s", flush=True)


def step(start_s: int, quarter: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start_s + quarter * 900))


def fill_days(bytes_per_row: float, period_s: int) -> float:
    rows_per_day = FLEET * len(PARAMS) * 86400 / period_s
    return DISK_BYTES / (bytes_per_row * rows_per_day)


if __name__ == "__main__":
    sys.exit(main())
