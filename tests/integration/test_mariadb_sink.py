"""The MariaDB sink against the real server on 127.0.0.1:3306."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket

import pymysql
import pytest
from pydantic import SecretStr

from susee.sample import Sample
from susee.sinks import SinkError, create_sink

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


# Values whose text form is easy to get wrong: the stored DOUBLE must be the very float.
AWKWARD_VALUES = [
    0.1, 1e-300, 1.7976931348623157e308, -1.7976931348623157e308, -0.0, 0.0, 123456789.123456789,
    5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 4.9406564584124654e-320, 1e16, 1e22, 1e-7,
    1 / 3, 2.0**53 + 2, 1234567890.123, 395.19, 65535, -32768, 2**53,
]


async def test_awkward_values_read_back_as_the_same_floats(sink, query, job_id):
    samples = [Sample("d01", f"p{n}", TICK, value, 0.1 * n, 0) for n, value in enumerate(AWKWARD_VALUES)]

    await sink.write(samples)

    stored = dict(query(f"SELECT idParam, Value FROM see{job_id}Raw"))
    for n, value in enumerate(AWKWARD_VALUES):
        assert stored[f"p{n}"] == value and isinstance(stored[f"p{n}"], float), (n, value, stored[f"p{n}"])
    last = dict(query(f"SELECT idParam, Value FROM see{job_id}Last"))
    assert last == stored


async def test_a_hostile_id_in_a_later_statement_stores_nothing_of_the_batch(sink, query, job_id):
    # 1500 rows: the first statement (1024 rows) is sent before the bad id is met in the second.
    batch = [Sample("d01", "104", TICK + n, float(n), 1.0, 0) for n in range(1499)]
    batch.append(Sample("d01'); DROP TABLE x; --", "104", TICK, 1.0, 1.0, 0))

    with pytest.raises(ValueError, match="refusing to store it"):
        await sink.write(batch)
    await sink.write([Sample("d02", "104", TICK, 2.0, 1.0, 0)])

    assert query(f"SELECT idDevice, COUNT(*) FROM see{job_id}Raw GROUP BY idDevice") == (("d02", 1),)
    assert query(f"SELECT idDevice FROM see{job_id}Last") == (("d02",),)
