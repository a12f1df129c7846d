"""What every sink promises, checked on MariaDB and on SQLite alike."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import pymysql
import pytest

from susee.config import DatabaseTarget
from susee.quality import Code
from susee.sample import Sample
from susee.sinks import ParamRow, Sink, create_sink

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC, the seed README's example row


@dataclass
class Store:
    """A migrated sink and a way to look at its tables from outside."""

    sink: Sink
    query: Callable[..., list[tuple]]  # SQL with %s placeholders -> rows as tuples
    date: str  # the SQL expression that reads Date as 'YYYY-MM-DD HH:MM:SS.ffffff'
    job_id: str


@pytest.fixture(params=["mariadb", "sqlite"])
async def store(request, job_id, tmp_path):
    if request.param == "mariadb":
        target = request.getfixturevalue("mariadb_target")
        conn = None

        def query(sql, params=()):
            nonlocal conn
            if conn is None:  # the database exists once the sink migrated
                conn = pymysql.connect(host=target.host, port=target.port, user="root", password="",
                                       database=target.database, autocommit=True)
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return [tuple(row) for row in cursor.fetchall()]

        date = "CAST(Date AS CHAR)"
    else:
        target = DatabaseTarget(kind="sqlite", database="seedb000", path=tmp_path / "susee.db")
        conn = None

        def query(sql, params=()):
            nonlocal conn
            conn = conn or sqlite3.connect(target.path)
            return conn.execute(sql.replace("%s", "?"), params).fetchall()

        date = "Date"
    sink = create_sink(target, job_id)
    await sink.open()
    await sink.migrate()
    yield Store(sink, query, date, job_id)
    await sink.close()
    if conn is not None:
        conn.close()


def raw_rows(store: Store) -> list[tuple]:
    return store.query(
        f"SELECT idDevice, {store.date}, idParam, Value, Delay, Code FROM see{store.job_id}Raw"
        " ORDER BY idDevice, idParam, Date"
    )


def count(store: Store, table: str) -> int:
    return store.query(f"SELECT COUNT(*) FROM see{store.job_id}{table}")[0][0]


# (sample, the row read back: idDevice, Date, idParam, Value, Delay, Code)
EXACT_ROWS = [
    (Sample("d01", "222", TICK, 1234567890.123, 178.778, 0),
     ("d01", "2021-02-18 10:30:00.000000", "222", 1234567890.123, 178.778, 0)),
    (Sample("d01", "104", TICK, None, 12.5, Code.ERR_CONNECTION),
     ("d01", "2021-02-18 10:30:00.000000", "104", None, 12.5, 1)),
    (Sample("d02", "104", TICK + 0.25, 395.19, 1.0, 0),
     ("d02", "2021-02-18 10:30:00.250000", "104", 395.19, 1.0, 0)),
    (Sample("d02", "135", TICK, math.nan, 2.0, 0),
     ("d02", "2021-02-18 10:30:00.000000", "135", None, 2.0, int(Code.VALUE_NAN))),
]


async def test_write_stores_exact_rows(store):
    await store.sink.write([sample for sample, _ in EXACT_ROWS])

    expected = sorted((row for _, row in EXACT_ROWS), key=lambda row: (row[0], row[2], row[1]))
    got = raw_rows(store)
    assert [row[:4] + row[5:] for row in got] == [row[:4] + row[5:] for row in expected]
    assert [row[4] for row in got] == pytest.approx([row[4] for row in expected], rel=1e-6)  # MariaDB Delay is FLOAT


# Integers as a decoder or an older spool may hand them over: (value, Value read back, Code).
WIDE_INTEGERS = [
    (2**64 - 1, 18446744073709551615.0, 0),  # 0xFFFFFFFFFFFFFFFF: "not available" on many meters
    (2**63, 9223372036854775808.0, 0),  # one above SQLite's largest INTEGER
    (-(2**63) - 1, -9223372036854775808.0, 0),
    (2**53 + 1, 9007199254740992.0, 0),
    (10**400, None, int(Code.VALUE_NAN)),  # no DOUBLE holds it: NULL, and the Code says why
]


async def test_an_integer_of_any_size_never_stops_the_sink_and_is_stored_as_a_double(store):
    batch = [Sample("d01", f"p{n}", TICK, value, 1.0, 0) for n, (value, _, _) in enumerate(WIDE_INTEGERS)]

    await store.sink.write(batch)
    await store.sink.write([Sample("d01", "p0", TICK + 1, 1.5, 1.0, 0)])  # the sink still takes the next batch

    rows = raw_rows(store)  # by param, then Date: p0's first row is the batch's
    stored = {param: (value, code) for _, _, param, value, _, code in reversed(rows)}
    assert stored == {f"p{n}": (value, code) for n, (_, value, code) in enumerate(WIDE_INTEGERS)}
    assert len(rows) == len(WIDE_INTEGERS) + 1
    if store.sink.target.kind == "sqlite":  # a REAL, as the DOUBLE column says, not an INTEGER
        assert {kind for (kind,) in store.query(f"SELECT DISTINCT typeof(Value) FROM see{store.job_id}Raw")} == \
            {"real", "null"}


async def test_writing_the_same_batch_twice_adds_no_rows(store):
    batch = [Sample(f"d{device:02d}", param, TICK, 1.0, 5.0, 0) for device in range(3) for param in ("104", "107")]

    await store.sink.write(batch)
    await store.sink.write(batch)

    assert (count(store, "Raw"), count(store, "Last")) == (6, 6)


async def test_write_splits_large_batches_into_statements(store):
    batch = [Sample("d01", str(param), TICK + tick, float(param), 1.0, 0) for tick in range(5) for param in range(500)]

    await store.sink.write(batch)

    assert (count(store, "Raw"), count(store, "Last")) == (2500, 500)


@pytest.mark.parametrize("rows", [1, 3, 1023, 1025, 2500])
async def test_failed_reads_anywhere_in_a_batch_store_null_and_their_code(store, rows):
    # MariaDB cuts a batch into statements of 1024, 512, ... rows: NULLs at and around every cut.
    nulls = {0, 1, 511, 512, 513, 1022, 1023, 1024, 1025, 2047, 2048, 2049, rows - 1}
    batch = [Sample("d01", f"p{n}", TICK, None if n in nulls else n + 0.5, 1.0, 1 if n in nulls else 0)
             for n in range(rows)]

    await store.sink.write(batch)

    stored = {param: (value, code) for _, _, param, value, _, code in raw_rows(store)}
    assert stored == {f"p{n}": (None, 1) if n in nulls else (n + 0.5, 0) for n in range(rows)}
    assert count(store, "Last") == rows


# Batches written in order, then what Last holds for (d01, 104): (Date, Value, Code).
LAST_CASES = {
    "newest in the batch wins": (
        [[(TICK + 10, 2.0), (TICK, 1.0), (TICK + 5, 1.5)]],
        ("2021-02-18 10:30:10.000000", 2.0, 0),
    ),
    "an older batch does not go back": (
        [[(TICK + 10, 2.0)], [(TICK, 1.0)]],
        ("2021-02-18 10:30:10.000000", 2.0, 0),
    ),
    "a newer batch moves forward": (
        [[(TICK, 1.0)], [(TICK + 10, 2.0)]],
        ("2021-02-18 10:30:10.000000", 2.0, 0),
    ),
    "the same tick again replaces": (
        [[(TICK, 1.0)], [(TICK, 3.0)]],
        ("2021-02-18 10:30:00.000000", 3.0, 0),
    ),
}


@pytest.mark.parametrize("batches, expected", LAST_CASES.values(), ids=LAST_CASES.keys())
async def test_last_holds_the_newest_sample(store, batches, expected):
    for batch in batches:
        await store.sink.write([Sample("d01", "104", tick, value, 1.0, 0) for tick, value in batch])

    assert store.query(
        f"SELECT idDevice, idParam, {store.date}, Value, Code FROM see{store.job_id}Last"
    ) == [("d01", "104", *expected)]


async def test_last_keeps_every_column_of_the_newest_sample_when_older_is_replayed(store):
    await store.sink.write([Sample("d01", "104", TICK + 10, 2.0, 7.0, 0), Sample("d01", "107", TICK, 5.0, 1.0, 0)])
    await store.sink.write([Sample("d01", "104", TICK, None, 9.0, Code.SERVER_OFF),
                            Sample("d01", "107", TICK + 10, 6.0, 1.0, 0)])

    assert store.query(
        f"SELECT idParam, {store.date}, Value, Delay, Code FROM see{store.job_id}Last ORDER BY idParam"
    ) == [("104", "2021-02-18 10:30:10.000000", 2.0, 7.0, 0), ("107", "2021-02-18 10:30:10.000000", 6.0, 1.0, 0)]


async def test_upsert_params_inserts_then_updates_by_param_id(store):
    voltage = ParamRow("104", "Tensione UL1_L2", "Voltage UL1_L2", "V", "UL1_L2")
    power = ParamRow("133", "Potenza attiva totale", "Active Power - Total", "W", "P_TOT")

    await store.sink.upsert_params([voltage, power])
    await store.sink.upsert_params([dataclasses.replace(power, descr_eng="Total active power", unit="kW")])

    assert store.query(
        f"SELECT idParam, descrITA, descrENG, um, Acronimo FROM see{store.job_id}Params ORDER BY idParam"
    ) == [
        ("104", "Tensione UL1_L2", "Voltage UL1_L2", "V", "UL1_L2"),
        ("133", "Potenza attiva totale", "Total active power", "kW", "P_TOT"),
    ]


async def test_recent_returns_last_per_key_and_newest_raw_first(store):
    await store.sink.write([Sample("d01", "104", TICK + t, float(t), 1.0, 0) for t in range(3)])

    last = await store.sink.recent("last", 10)
    raw = await store.sink.recent("raw", 2)

    assert [(r[0], r[2], r[3]) for r in last] == [("d01", "104", 2.0)]
    assert [r[3] for r in raw] == [2.0, 1.0]
