"""Q15 rows of some devices and params over a time range, from MariaDB or SQLite.

Besides the rows inside the range, each (device, param) gets the last good
bucket before it and the first good bucket after it (within ``BRACKET_S``):
a gap across the range's edges is then apportioned like any other. Times come
back as epoch seconds computed by the database (no per-row date parsing).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from susee.config import DatabaseTarget
from susee.report.energy import Q15Row
from susee.report.intervals import utc_text

# How far before and after the range a bracketing reading is looked for: a
# gap longer than this at the range's edges is not bridged.
BRACKET_S = 31 * 86400

_SECONDS = {
    "mysql": "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {0}) / 1e6",
    # strftime('%s') drops the fraction; the text after position 19 is '.ffffff' or empty.
    "sqlite": "(CAST(strftime('%s', {0}) AS INTEGER) + COALESCE(CAST(substr({0}, 20) AS REAL), 0))",
}


class ReadError(Exception):
    """The rollups cannot be read (no table, no database); the message says what to do."""


Key = tuple[str, str]


def q15_table(job_id: str) -> str:
    return f"see{job_id}Q15"


def read_rows(target: DatabaseTarget, job_id: str, keys: Sequence[Key],
              start_s: int, end_s: int) -> dict[Key, list[Q15Row]]:
    """Q15 rows of ``keys`` (device, param) for buckets in [start_s, end_s), plus bracketing good buckets."""
    devices = sorted({device for device, _ in keys})
    params = sorted({param for _, param in keys})
    wanted = set(keys)
    table = q15_table(job_id)
    dialect = target.kind
    mark = "%s" if dialect == "mysql" else "?"
    seconds = _SECONDS[dialect]
    columns = ", ".join([
        "q.idDevice", "q.idParam", seconds.format("q.Bucket"), "q.Samples", "q.Good",
        seconds.format("q.FirstDate"), "q.FirstValue", seconds.format("q.LastDate"), "q.LastValue",
        "q.Rise", "q.Fall", "q.Drops", "q.MaxRise", "q.Codes",
    ])
    in_keys = (f"idDevice IN ({', '.join([mark] * len(devices))}) AND idParam IN ({', '.join([mark] * len(params))})")
    key_args = [*devices, *params]
    inside = (f"SELECT {columns} FROM {table} q WHERE q.{in_keys.replace('idParam', 'q.idParam')}"
              f" AND q.Bucket >= {mark} AND q.Bucket < {mark}")
    bracket = (f"SELECT {columns} FROM {table} q JOIN (SELECT idDevice, idParam, {{pick}}(Bucket) AS b FROM {table}"
               f" WHERE {in_keys} AND Bucket >= {mark} AND Bucket < {mark} AND Good > 0 GROUP BY idDevice, idParam) p"
               " ON q.idDevice = p.idDevice AND q.idParam = p.idParam AND q.Bucket = p.b")
    result: dict[Key, list[Q15Row]] = defaultdict(list)
    with _connection(target, table) as cursor:
        queries = [
            (bracket.format(pick="MAX"), [*key_args, utc_text(start_s - BRACKET_S), utc_text(start_s)]),
            (inside, [*key_args, utc_text(start_s), utc_text(end_s)]),
            (bracket.format(pick="MIN"), [*key_args, utc_text(end_s), utc_text(end_s + BRACKET_S)]),
        ]
        for sql, args in queries:
            cursor.execute(sql, args)
            for row in cursor.fetchall():
                key = (row[0], row[1])
                if key in wanted:
                    result[key].append(_q15(row))
    for rows in result.values():
        rows.sort(key=lambda r: r.bucket_s)
    return result


def _q15(row: Sequence[Any]) -> Q15Row:
    return Q15Row(
        bucket_s=int(round(float(row[2]))), samples=int(row[3]), good=int(row[4]),
        first_s=None if row[5] is None else float(row[5]), first_value=row[6],
        last_s=None if row[7] is None else float(row[7]), last_value=row[8],
        rise=row[9], fall=row[10], drops=int(row[11] or 0), max_rise=row[12], codes=int(row[13] or 0),
    )


@contextmanager
def _connection(target: DatabaseTarget, table: str) -> Iterator[Any]:
    if target.kind == "sqlite":
        assert target.path is not None
        if not target.path.is_file():
            raise ReadError(f"{target}: no such database file")
        conn = sqlite3.connect(f"file:{target.path}?mode=ro", uri=True)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                raise ReadError(f"{target}: table {table} not found: the rollups are made by the service")
            yield conn.cursor()
        finally:
            conn.close()
        return
    import pymysql

    try:
        conn = pymysql.connect(
            host=target.host, port=target.port, user=target.user,
            password=target.password.get_secret_value() if target.password else "",
            database=target.database, unix_socket=target.socket, connect_timeout=target.connect_timeout,
        )
    except pymysql.err.Error as exc:
        raise ReadError(f"{target}: cannot connect: {exc}") from exc
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                           (target.database, table))
            if cursor.fetchone() is None:
                raise ReadError(f"{target}: table {table} not found: the rollups are made by the service")
            yield cursor
    finally:
        conn.close()
