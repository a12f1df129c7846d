"""The SQLite sink on a real file, and the row preparation both sinks share."""

from __future__ import annotations

import math
import sqlite3

import pytest

from susee.config import DatabaseTarget
from susee.quality import Code
from susee.sample import Sample
from susee.sinks import SinkError, create_sink, format_tick, sample_rows

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC, the seed README's example row


@pytest.fixture
def target(tmp_path):
    return DatabaseTarget(kind="sqlite", database="seedb000", path=tmp_path / "susee.db")


@pytest.fixture
def query(target):
    """Run SQL on the file through a connection of its own."""
    conn = sqlite3.connect(target.path)

    def run(sql, params=()):
        return conn.execute(sql, params).fetchall()

    yield run
    conn.close()


@pytest.fixture
async def sink(target, job_id):
    sink = create_sink(target, job_id)
    await sink.open()
    await sink.migrate()
    yield sink
    await sink.close()


# --- shared row preparation ---

TICK_TEXT = [
    (TICK, "2021-02-18 10:30:00.000000"),
    (TICK + 0.25, "2021-02-18 10:30:00.250000"),
    (TICK + 0.000001, "2021-02-18 10:30:00.000001"),
    (0.0, "1970-01-01 00:00:00.000000"),
    (4102444799.999999, "2099-12-31 23:59:59.999999"),
]


@pytest.mark.parametrize("tick_s, text", TICK_TEXT)
def test_format_tick_is_utc_to_the_microsecond(tick_s, text):
    assert format_tick(tick_s) == text


def test_sample_rows_keep_every_sample_for_raw_and_the_newest_per_key_for_last():
    samples = [
        Sample("d02", "104", TICK + 10, 2.0, 1.0, 0),
        Sample("d01", "104", TICK + 10, 3.0, 1.0, 0),
        Sample("d02", "104", TICK, 1.0, 1.0, 0),
        Sample("d01", "107", TICK, math.inf, 1.0, Code.OK),
    ]

    raw, last = sample_rows(samples)

    assert [(row[0], row[2], row[3]) for row in raw] == [
        ("d02", "104", 2.0), ("d01", "104", 3.0), ("d02", "104", 1.0), ("d01", "107", None),
    ]
    assert [(row[0], row[2], row[1], row[3], row[5]) for row in last] == [
        ("d01", "104", "2021-02-18 10:30:10.000000", 3.0, 0),
        ("d01", "107", "2021-02-18 10:30:00.000000", None, int(Code.VALUE_NAN)),
        ("d02", "104", "2021-02-18 10:30:10.000000", 2.0, 0),
    ]


# --- the SQLite sink ---

SAMPLE_COLUMNS = [
    ("idNum", "integer", 0),
    ("idDevice", "varchar(20)", 1),
    ("Date", "text", 1),
    ("idParam", "varchar(20)", 1),
    ("Value", "double", 0),
    ("Delay", "float", 0),
    ("Code", "integer", 1),
]
# table suffix -> (columns as (name, type, notnull), unique column sets)
TABLES = {
    "Raw": (SAMPLE_COLUMNS, [("idDevice", "idParam", "Date")]),
    "Last": (SAMPLE_COLUMNS, [("idDevice", "idParam")]),
    "Params": (
        [("idNum", "integer", 0), ("idParam", "varchar(20)", 0), ("descrITA", "varchar(255)", 0),
         ("descrENG", "varchar(255)", 0), ("um", "varchar(10)", 0), ("Acronimo", "varchar(30)", 0)],
        [("idParam",)],
    ),
    "SchemaVersion": ([("version", "integer", 0), ("name", "varchar(100)", 1), ("applied_at", "text", 1)], []),
}


def unique_column_sets(query, table):
    sets = []
    for _, name, unique, _, _ in query(f'PRAGMA index_list("{table}")'):
        if unique:
            sets.append(tuple(column for _, _, column in query(f'PRAGMA index_info("{name}")')))
    return sorted(sets)


async def test_migrate_creates_the_tables_in_wal_mode(target, query, job_id):
    sink = create_sink(target, job_id)
    await sink.open()
    lines = await sink.migrate()
    await sink.close()

    assert lines == [
        f"created table see{job_id}Raw",
        f"created table see{job_id}Last",
        f"created table see{job_id}Params",
        f"created table see{job_id}SchemaVersion",
        "migration 0001 create_tables applied",
        f"created table see{job_id}Q15",
        f"created table see{job_id}Q15Dirty",
        "migration 0002 rollups applied",
        f"created table see{job_id}Q60",
        "migration 0003 hourly_rollups applied",
        f"created table see{job_id}Day",
        f"created table see{job_id}DayGap",
        f"created table see{job_id}DaySpec",
        f"created table see{job_id}DayDirty",
        "migration 0004 daily_rollups applied",
    ]
    for suffix, (columns, uniques) in TABLES.items():
        table = f"see{job_id}{suffix}"
        info = query(f'PRAGMA table_info("{table}")')
        assert [(name, type_.lower(), notnull) for _, name, type_, notnull, _, _ in info] == columns, suffix
        assert unique_column_sets(query, table) == sorted(uniques), suffix
    assert query("PRAGMA journal_mode") == [("wal",)]


async def test_migrate_twice_says_up_to_date_and_changes_nothing(sink, query, job_id):
    await sink.write([Sample("d01", "104", TICK, 1.5, 1.0, 0)])
    schema = query("SELECT name, sql FROM sqlite_master ORDER BY name")

    assert await sink.migrate() == ["schema up to date (version 4)"]
    assert query("SELECT name, sql FROM sqlite_master ORDER BY name") == schema
    assert query(f"SELECT COUNT(*) FROM see{job_id}Raw") == [(1,)]


async def test_unopenable_file_raises_sink_error(tmp_path, job_id):
    target = DatabaseTarget(kind="sqlite", database="seedb000", path=tmp_path / "missing" / "susee.db")
    sink = create_sink(target, job_id)

    with pytest.raises(SinkError, match="cannot open"):
        await sink.open()
    with pytest.raises(SinkError):
        await sink.write([Sample("d01", "104", TICK, 1.0, 1.0, 0)])
    await sink.close()


async def test_write_to_missing_tables_raises_sink_error_and_the_sink_recovers(target, job_id, query):
    sink = create_sink(target, job_id)
    await sink.open()

    with pytest.raises(SinkError, match="write failed"):
        await sink.write([Sample("d01", "104", TICK, 1.0, 1.0, 0)])
    await sink.migrate()
    await sink.write([Sample("d01", "104", TICK, 1.0, 1.0, 0)])
    await sink.ping()
    await sink.close()

    assert query(f"SELECT COUNT(*) FROM see{job_id}Raw") == [(1,)]
