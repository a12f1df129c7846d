"""A migrated sink on MariaDB or SQLite, and the rollup contract computed in Python.

``expected_q15`` is an independent implementation of CONTRACT.md's Q15
columns (plain Python over the rows of Raw), so a test can say "the rollups
equal a recomputation from Raw" without trusting the SQL under test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pymysql
import pytest

from susee.config import DatabaseTarget, Settings
from susee.sinks import Sink, create_sink

Q15_NAMES = ("idDevice", "idParam", "Bucket", "Samples", "Good", "MinValue", "MaxValue", "MeanValue", "FirstDate",
             "FirstValue", "LastDate", "LastValue", "Rise", "Fall", "Drops", "MaxRise", "Codes")


@dataclass
class Store:
    """A migrated sink, its settings and a way to query its tables from outside."""

    sink: Sink
    settings: Settings
    query: Callable[..., list[tuple]]  # SQL with %s placeholders -> rows as tuples
    dialect: str
    job_id: str

    def text(self, column: str) -> str:
        """SQL reading a DATETIME column as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text in both dialects."""
        return f"CAST(`{column}` AS CHAR)" if self.dialect == "mariadb" else column

    def raw(self) -> list[tuple]:
        return self.query(f"SELECT idDevice, {self.text('Date')}, idParam, Value, Code FROM see{self.job_id}Raw")

    def q15(self, table: str = "Q15") -> dict[tuple, tuple]:
        columns = ", ".join(self.text(c) if c.endswith("Date") or c == "Bucket" else
                            ("`MaxValue`" if c == "MaxValue" and self.dialect == "mariadb" else c) for c in Q15_NAMES)
        rows = self.query(f"SELECT {columns} FROM see{self.job_id}{table}")
        return {tuple(row[:3]): tuple(row[3:]) for row in rows}

    def q60(self) -> dict[tuple, tuple]:
        return self.q15("Q60")

    def dirty(self) -> int:
        return self.query(f"SELECT COUNT(*) FROM see{self.job_id}Q15Dirty")[0][0]


@pytest.fixture(params=["mariadb", "sqlite"])
async def store(request, job_id, tmp_path):
    if request.param == "mariadb":
        target = request.getfixturevalue("mariadb_target")
        url = f"mysql://root@{target.host}:{target.port}/{target.database}"
        conn = None

        def query(sql, params=()):
            return mariadb_query(target, sql, params)
    else:
        target = DatabaseTarget(kind="sqlite", database="seedb000", path=tmp_path / "susee.db")
        url = f"sqlite:///{target.path}"
        conn = None

        def query(sql, params=()):
            nonlocal conn
            conn = conn or sqlite3.connect(target.path, isolation_level=None)
            return conn.execute(sql.replace("%s", "?").replace("`", '"'), params).fetchall()

    settings = Settings(job_id=job_id, database={"url": url})
    sink = create_sink(settings.database_target(), job_id)
    await sink.open()
    await sink.migrate()
    yield Store(sink, settings, query, request.param, job_id)
    await sink.close()
    if conn is not None:
        conn.close()


def mariadb_query(target: DatabaseTarget, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one query on the test's database, on a connection of its own."""
    conn = pymysql.connect(host=target.host, port=target.port, user="root", password="", database=target.database,
                           autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()]
    finally:
        conn.close()


def bucket_text(date: str, minutes: int = 15) -> str:
    moment = datetime.strptime(date[:19], "%Y-%m-%d %H:%M:%S")
    return moment.replace(minute=moment.minute // minutes * minutes, second=0).strftime("%Y-%m-%d %H:%M:%S")


def expected_q15(raw: list[tuple], minutes: int = 15) -> dict[tuple, tuple]:
    """The Q15 rows of ``raw`` rows (idDevice, Date text, idParam, Value, Code), by the contract.

    ``minutes=60``: the same columns per hour (what Q60 holds).
    """
    groups: dict[tuple, list[tuple]] = {}
    for device, date, param, value, code in raw:
        groups.setdefault((device, param, bucket_text(date, minutes)), []).append((date, value, code))
    result = {}
    for key, rows in groups.items():
        rows.sort()
        good = [(date, value) for date, value, code in rows if code == 0 and value is not None]
        values = [value for _, value in good]
        diffs = [b - a for a, b in zip(values, values[1:])]
        codes = 0
        for _, _, code in rows:
            codes |= code
        result[key] = (
            len(rows), len(good),
            min(values) if values else None, max(values) if values else None,
            sum(values) / len(values) if values else None,
            good[0][0] if good else None, good[0][1] if good else None,
            good[-1][0] if good else None, good[-1][1] if good else None,
            sum(d for d in diffs if d > 0) if good else None,
            sum(-d for d in diffs if d < 0) if good else None,
            sum(1 for d in diffs if d < 0),
            max((d for d in diffs if d > 0), default=None),
            codes,
        )
    return result


def same_row(got: tuple, want: tuple, rel: float = 1e-9) -> bool:
    """Equal column by column; floats (sums in another order) to ``rel``."""
    return len(got) == len(want) and all(
        a == pytest.approx(b, rel=rel, abs=rel) if isinstance(b, float) and a is not None else a == b
        for a, b in zip(got, want)
    )


def assert_rollups_equal_raw(store: Store) -> None:
    """Q15 and Q60 equal the contract computed from Raw (floating sums to 1e-9)."""
    raw = store.raw()
    for minutes, actual in ((15, store.q15()), (60, store.q60())):
        expected = expected_q15(raw, minutes)
        assert set(actual) == set(expected), minutes
        for key, want in expected.items():
            assert same_row(actual[key], want), (minutes, key, actual[key], want)
