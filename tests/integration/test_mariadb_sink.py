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
