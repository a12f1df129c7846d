"""Fixtures for tests that run the service against real components."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import aiomysql
import pymysql
import pytest

from susee.config import DatabaseTarget

MARIADB_HOST = "127.0.0.1"
MARIADB_PORT = 3306


async def fetch_rows(target: DatabaseTarget, sql: str, args: tuple = ()) -> list[dict]:
    """Run one query on the test's own database and return dict rows."""
    conn = await aiomysql.connect(host=target.host, port=target.port, user=target.user, password="", db=target.database)
    try:
        async with conn.cursor(aiomysql.DictCursor) as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture
def fetch(mariadb_target):
    async def _fetch(sql: str, args: tuple = ()) -> list[dict]:
        return await fetch_rows(mariadb_target, sql, args)

    return _fetch


@pytest.fixture
def mariadb_target() -> Iterator[DatabaseTarget]:
    """A uniquely named database on the local MariaDB, dropped afterwards.

    The database is not created here: the code under test creates it. A server
    that does not answer fails the test (an integration test that skips proves nothing).
    """
    _admin().close()  # fail fast, before the test, when the server is not there
    name = f"susee_test_{uuid4().hex[:10]}"
    try:
        yield DatabaseTarget(
            kind="mysql", database=name, host=MARIADB_HOST, port=MARIADB_PORT, user="root", password=None
        )
    finally:
        _drop_database(name)


def _drop_database(name: str) -> None:
    """Drop the test's database; a connection the test left open in a transaction fails the test.

    Such a connection holds a metadata lock that would make the DROP wait
    forever: it is killed first, and the test is told which code leaked it.
    """
    admin = _admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT ID, COMMAND, TIME FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                (name,),
            )
            leaked = [row for row in cursor.fetchall() if row[1] == "Sleep"]
            for connection_id, _, _ in leaked:
                cursor.execute(f"KILL {int(connection_id)}")
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        admin.close()
    if leaked:
        pytest.fail(f"{len(leaked)} connection(s) to {name} were left open by the test (killed before the drop)",
                    pytrace=False)


def _admin() -> pymysql.connections.Connection:
    try:
        return pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="", connect_timeout=3)
    except pymysql.err.Error as exc:
        pytest.fail(f"MariaDB on {MARIADB_HOST}:{MARIADB_PORT} (user root) does not answer: {exc}", pytrace=False)


@pytest.fixture(params=["mariadb", "sqlite"])
def database_url(request, tmp_path) -> str:
    """``database.url`` of a fresh database, once on the local MariaDB and once in a SQLite file."""
    if request.param == "mariadb":
        target = request.getfixturevalue("mariadb_target")
        return f"mysql://root@{target.host}:{target.port}/{target.database}"
    return f"sqlite:///{tmp_path / 'site.db'}"
