"""TEST-ONLY stand-in for the `storage` branch's Q15 rollups (CONTRACT.md).

Until that branch lands, report tests need ``see<job>Q15`` rows: this module
creates the table exactly as the contract fixes it (both dialects) when it
does not exist, and fills it from raw samples with ``q15_rows_from_samples``,
a small *reference* implementation of the contract's column rules. The lead
swaps it for the real migration + recompute when merging; it never ships.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import pymysql

from susee.config import DatabaseTarget

BUCKET_S = 900
Sample = tuple[str, str, float, "float | None", int]  # device, param, epoch s, value, code

# MAXVALUE is a reserved word in MariaDB (partitioning): the column is always quoted.
MARIADB_DDL = """CREATE TABLE IF NOT EXISTS `see{job}Q15` (
  idDevice VARCHAR(20) NOT NULL, idParam VARCHAR(20) NOT NULL, Bucket DATETIME NOT NULL,
  Samples INT NOT NULL, Good INT NOT NULL,
  MinValue DOUBLE NULL, `MaxValue` DOUBLE NULL, MeanValue DOUBLE NULL,
  FirstDate DATETIME(6) NULL, FirstValue DOUBLE NULL, LastDate DATETIME(6) NULL, LastValue DOUBLE NULL,
  Rise DOUBLE NULL, Fall DOUBLE NULL, Drops INT NOT NULL, MaxRise DOUBLE NULL, Codes INT NOT NULL,
  PRIMARY KEY (idDevice, idParam, Bucket))"""
SQLITE_DDL = """CREATE TABLE IF NOT EXISTS "see{job}Q15" (
  idDevice TEXT NOT NULL, idParam TEXT NOT NULL, Bucket TEXT NOT NULL,
  Samples INTEGER NOT NULL, Good INTEGER NOT NULL,
  MinValue REAL, MaxValue REAL, MeanValue REAL,
  FirstDate TEXT, FirstValue REAL, LastDate TEXT, LastValue REAL,
  Rise REAL, Fall REAL, Drops INTEGER NOT NULL, MaxRise REAL, Codes INTEGER NOT NULL,
  PRIMARY KEY (idDevice, idParam, Bucket))"""
COLUMNS = ("idDevice, idParam, Bucket, Samples, Good, MinValue, MaxValue, MeanValue, FirstDate, FirstValue,"
           " LastDate, LastValue, Rise, Fall, Drops, MaxRise, Codes")


def _text(t: float, micro: bool) -> str:
    moment = datetime.fromtimestamp(t, timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f" if micro else "%Y-%m-%d %H:%M:%S")


def q15_rows_from_samples(samples: Iterable[Sample]) -> list[tuple]:
    """Reference rollup: one contract row per (device, param, 15-minute UTC bucket)."""
    groups: dict[tuple[str, str, int], list[tuple[float, float | None, int]]] = defaultdict(list)
    for device, param, t, value, code in samples:
        groups[(device, param, int(t // BUCKET_S * BUCKET_S))].append((t, value, code))
    rows = []
    for (device, param, bucket), items in sorted(groups.items()):
        items.sort()
        good = [(t, v) for t, v, code in items if code == 0 and v is not None]
        codes = 0
        for _, _, code in items:
            codes |= code
        steps = [b[1] - a[1] for a, b in zip(good, good[1:], strict=False)]
        rises = [s for s in steps if s > 0]
        rows.append((
            device, param, _text(bucket, False), len(items), len(good),
            min(v for _, v in good) if good else None,
            max(v for _, v in good) if good else None,
            sum(v for _, v in good) / len(good) if good else None,
            _text(good[0][0], True) if good else None, good[0][1] if good else None,
            _text(good[-1][0], True) if good else None, good[-1][1] if good else None,
            sum(rises) if good else None,
            sum(-s for s in steps if s < 0) if good else None,
            sum(1 for s in steps if s < 0),
            max(rises) if rises else None,
            codes,
        ))
    return rows


def write_q15(target: DatabaseTarget, job_id: str, rows: Sequence[tuple]) -> None:
    """Create ``see<job>Q15`` (and the MariaDB database) if missing, then insert ``rows``."""
    if target.kind == "sqlite":
        assert target.path is not None
        conn = sqlite3.connect(target.path)
        try:
            conn.execute(SQLITE_DDL.format(job=job_id))
            conn.executemany(f'INSERT INTO "see{job_id}Q15" ({COLUMNS}) VALUES ({", ".join("?" * 17)})', rows)
            conn.commit()
        finally:
            conn.close()
        return
    conn = pymysql.connect(host=target.host, port=target.port, user=target.user, password="", autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{target.database}`")
            cursor.execute(f"USE `{target.database}`")
            cursor.execute(MARIADB_DDL.format(job=job_id))
            columns = COLUMNS.replace("MaxValue", "`MaxValue`")  # a reserved word in MariaDB
            cursor.executemany(f"INSERT INTO `see{job_id}Q15` ({columns}) VALUES ({', '.join(['%s'] * 17)})", rows)
    finally:
        conn.close()


def raw_samples(target: DatabaseTarget, job_id: str) -> list[Sample]:
    """Every row of ``see<job>Raw`` as samples, for rolling up what the service wrote."""
    if target.kind == "sqlite":
        conn = sqlite3.connect(target.path)
        try:
            rows = conn.execute(f'SELECT idDevice, idParam, Date, Value, Code FROM "see{job_id}Raw"').fetchall()
        finally:
            conn.close()
        return [(device, param, datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp(), value, code)
                for device, param, date, value, code in rows]
    conn = pymysql.connect(host=target.host, port=target.port, user=target.user, password="",
                           database=target.database)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT idDevice, idParam, Date, Value, Code FROM `see{job_id}Raw`")
            return [(device, param, date.replace(tzinfo=timezone.utc).timestamp(), value, code)
                    for device, param, date, value, code in cursor.fetchall()]
    finally:
        conn.close()
