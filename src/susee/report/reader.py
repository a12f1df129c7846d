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

import numpy as np

from susee.config import DatabaseTarget
from susee.report.intervals import utc_text

# How far before and after the range a bracketing reading is looked for: a
# gap longer than this at the range's edges is not bridged.
BRACKET_S = 31 * 86400
# SQLite waits this long for the service's writer instead of failing at once.
SQLITE_BUSY_S = 30
# A month of one key packed as text is ~0.4 MB; the server's default limit is 1 MB.
PACKED_MAX_BYTES = 64 << 20

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
              start_s: int, end_s: int) -> dict[Key, np.ndarray]:
    """Q15 rows (``energy.as_array`` layout) of ``keys`` (device, param) for buckets in
    [start_s, end_s), plus the bracketing good buckets; sorted by bucket."""
    devices = sorted({device for device, _ in keys})
    params = sorted({param for _, param in keys})
    wanted = set(keys)
    table = q15_table(job_id)
    mark = "%s" if target.kind == "mysql" else "?"
    seconds = _SECONDS[target.kind]
    values = [seconds.format("q.Bucket"), "q.Samples", "q.Good", seconds.format("q.FirstDate"), "q.FirstValue",
              seconds.format("q.LastDate"), "q.LastValue", "q.Rise", "q.Fall", "q.Drops", "q.MaxRise", "q.Codes"]
    in_keys = f"idDevice IN ({', '.join([mark] * len(devices))}) AND idParam IN ({', '.join([mark] * len(params))})"
    key_args = [*devices, *params]
    bracket = (f"SELECT q.idDevice, q.idParam, {', '.join(values)} FROM {table} q JOIN (SELECT idDevice, idParam,"
               f" {{pick}}(Bucket) AS b FROM {table} WHERE {in_keys} AND Bucket >= {mark} AND Bucket < {mark}"
               " AND Good > 0 GROUP BY idDevice, idParam) p"
               " ON q.idDevice = p.idDevice AND q.idParam = p.idParam AND q.Bucket = p.b")
    where = f"WHERE q.{in_keys.replace(' idParam', ' q.idParam')} AND q.Bucket >= {mark} AND q.Bucket < {mark}"
    if target.kind == "mysql":
        # One packed text per key and month instead of one protocol row per
        # bucket: pymysql's per-row decoding is what limits a long report.
        packed = ", ".join(f"COALESCE({value}, 'nan')" for value in values)
        inside = (f"SELECT q.idDevice, q.idParam, GROUP_CONCAT(CONCAT_WS(',', {packed}) ORDER BY q.Bucket"
                  f" SEPARATOR ',') FROM {table} q {where}"
                  " GROUP BY q.idDevice, q.idParam, EXTRACT(YEAR_MONTH FROM q.Bucket)")
    else:
        inside = f"SELECT q.idDevice, q.idParam, {', '.join(values)} FROM {table} q {where}"
    parts: dict[Key, list[np.ndarray]] = defaultdict(list)
    with _connection(target, table) as cursor:
        if target.kind == "mysql":
            cursor.execute("SET SESSION group_concat_max_len = %s", (PACKED_MAX_BYTES,))
        queries = [
            (bracket.format(pick="MAX"), [*key_args, utc_text(start_s - BRACKET_S), utc_text(start_s)]),
            (inside, [*key_args, utc_text(start_s), utc_text(end_s)]),
            (bracket.format(pick="MIN"), [*key_args, utc_text(end_s), utc_text(end_s + BRACKET_S)]),
        ]
        for sql, args in queries:
            cursor.execute(sql, args)
            rows = cursor.fetchall()
            if sql is inside and target.kind == "mysql":
                for device, param, text in rows:
                    if (device, param) in wanted:
                        parts[(device, param)].append(np.array(text.split(","), dtype=np.float64).reshape(-1, 12))
                continue
            for row in rows:
                if (row[0], row[1]) in wanted:
                    parts[(row[0], row[1])].append(np.array([row[2:]], dtype=np.float64))
    result = {}
    for key, arrays in parts.items():
        array = np.concatenate(arrays)
        result[key] = array[np.argsort(array[:, 0], kind="stable")]
    return result


@contextmanager
def connection(target: DatabaseTarget, writable: bool = False) -> Iterator[Any]:
    """A DB-API connection of the reports (the caller commits); ReadError when there is no database to read."""
    if target.kind == "sqlite":
        assert target.path is not None
        if not target.path.is_file():
            raise ReadError(f"{target}: no such database file")
        uri = f"file:{target.path}" + ("" if writable else "?mode=ro")
        conn = sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_S)
    else:
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
        yield conn
    finally:
        conn.close()


@contextmanager
def _connection(target: DatabaseTarget, table: str) -> Iterator[Any]:
    """A cursor on a read-only connection, once ``table`` is known to exist."""
    with connection(target) as conn:
        if target.kind == "sqlite":
            sql, args = "SELECT 1 FROM sqlite_master WHERE name = ?", (table,)
        else:
            sql = "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            args = (target.database, table)
        cursor = conn.cursor()
        cursor.execute(sql, args)
        if cursor.fetchone() is None:
            raise ReadError(f"{target}: table {table} not found: the rollups are made by the service")
        yield cursor
