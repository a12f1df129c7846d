"""The MariaDB sink against the real server on 127.0.0.1:3306."""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import socket

import pymysql
import pytest
from pydantic import SecretStr

from susee.quality import Code
from susee.sample import Sample
from susee.sinks import ParamRow, SinkError, create_sink

pytestmark = pytest.mark.mariadb

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC, the seed README's example row


@pytest.fixture
def query(mariadb_target):
    """Run SQL in the test database on a connection of its own."""
    conn = None

    def run(sql, params=None):
        nonlocal conn
        if conn is None:
            conn = pymysql.connect(
                host=mariadb_target.host, port=mariadb_target.port, user="root", password="",
                database=mariadb_target.database, autocommit=True,
            )
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    yield run
    if conn is not None:
        conn.close()


@pytest.fixture
async def sink(mariadb_target, job_id):
    sink = create_sink(mariadb_target, job_id)
    await sink.open()
    await sink.migrate()
    yield sink
    await sink.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def raw_rows(query, job_id):
    return query(
        f"SELECT idDevice, CAST(Date AS CHAR), idParam, Value, Delay, Code FROM see{job_id}Raw"
        " ORDER BY idDevice, idParam, Date"
    )


def last_rows(query, job_id):
    return query(
        f"SELECT idDevice, idParam, CAST(Date AS CHAR), Value, Code FROM see{job_id}Last ORDER BY idDevice, idParam"
    )


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


async def test_write_stores_exact_rows(sink, query, job_id):
    await sink.write([sample for sample, _ in EXACT_ROWS])

    expected = sorted((row for _, row in EXACT_ROWS), key=lambda row: (row[0], row[2], row[1]))
    got = raw_rows(query, job_id)
    assert [row[:4] + row[5:] for row in got] == [row[:4] + row[5:] for row in expected]
    assert [row[4] for row in got] == pytest.approx([row[4] for row in expected], rel=1e-6)  # Delay is FLOAT


async def test_writing_the_same_batch_twice_adds_no_rows(sink, query, job_id):
    batch = [Sample(f"d{device:02d}", param, TICK, 1.0, 5.0, 0) for device in range(3) for param in ("104", "107")]

    await sink.write(batch)
    await sink.write(batch)

    assert query(f"SELECT COUNT(*) FROM see{job_id}Raw") == ((6,),)
    assert query(f"SELECT COUNT(*) FROM see{job_id}Last") == ((6,),)


async def test_write_splits_large_batches_into_statements(sink, query, job_id):
    batch = [Sample("d01", str(param), TICK + tick, float(param), 1.0, 0) for tick in range(5) for param in range(500)]

    await sink.write(batch)

    assert query(f"SELECT COUNT(*) FROM see{job_id}Raw") == ((2500,),)
    assert query(f"SELECT COUNT(*) FROM see{job_id}Last") == ((500,),)


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
async def test_last_holds_the_newest_sample(sink, query, job_id, batches, expected):
    for batch in batches:
        await sink.write([Sample("d01", "104", tick, value, 1.0, 0) for tick, value in batch])

    assert last_rows(query, job_id) == (("d01", "104", *expected),)


async def test_last_keeps_every_column_of_the_newest_sample_when_older_is_replayed(sink, query, job_id):
    await sink.write([Sample("d01", "104", TICK + 10, 2.0, 7.0, 0), Sample("d01", "107", TICK, 5.0, 1.0, 0)])
    await sink.write([Sample("d01", "104", TICK, None, 9.0, Code.SERVER_OFF), Sample("d01", "107", TICK + 10, 6.0, 1.0, 0)])

    assert query(f"SELECT idParam, CAST(Date AS CHAR), Value, Delay, Code FROM see{job_id}Last ORDER BY idParam") == (
        ("104", "2021-02-18 10:30:10.000000", 2.0, 7.0, 0),
        ("107", "2021-02-18 10:30:10.000000", 6.0, 1.0, 0),
    )


async def test_upsert_params_inserts_then_updates_by_param_id(sink, query, job_id):
    voltage = ParamRow("104", "Tensione UL1_L2", "Voltage UL1_L2", "V", "UL1_L2")
    power = ParamRow("133", "Potenza attiva totale", "Active Power - Total", "W", "P_TOT")

    await sink.upsert_params([voltage, power])
    await sink.upsert_params([dataclasses.replace(power, descr_eng="Total active power", unit="kW")])

    assert query(f"SELECT idParam, descrITA, descrENG, um, Acronimo FROM see{job_id}Params ORDER BY idParam") == (
        ("104", "Tensione UL1_L2", "Voltage UL1_L2", "V", "UL1_L2"),
        ("133", "Potenza attiva totale", "Total active power", "kW", "P_TOT"),
    )


async def test_unreachable_server_raises_sink_error_without_the_password(mariadb_target, job_id, caplog):
    caplog.set_level(logging.DEBUG)
    password = "pw-" + secrets.token_hex(8)
    target = dataclasses.replace(
        mariadb_target, port=free_port(), password=SecretStr(password), connect_timeout=2.0
    )
    sink = create_sink(target, job_id)

    with pytest.raises(SinkError) as opened:
        await sink.open()
    with pytest.raises(SinkError) as written:
        await sink.write([Sample("d01", "104", TICK, 1.0, 1.0, 0)])
    await sink.close()

    for error in (opened.value, written.value):
        assert password not in str(error)
        assert f"127.0.0.1:{target.port}" in str(error)
    assert password not in caplog.text


async def test_write_after_the_connection_died_raises_then_reconnects(sink, query, job_id, mariadb_target):
    await sink.write([Sample("d01", "104", TICK, 1.0, 1.0, 0)])
    for (thread_id,) in query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
        (mariadb_target.database,),
    ):
        query("KILL CONNECTION %s", (thread_id,))

    with pytest.raises(SinkError):
        await sink.write([Sample("d01", "104", TICK + 10, 2.0, 1.0, 0)])
    await sink.write([Sample("d01", "104", TICK + 10, 2.0, 1.0, 0)])
    await sink.ping()

    assert query(f"SELECT COUNT(*) FROM see{job_id}Raw") == ((2,),)
