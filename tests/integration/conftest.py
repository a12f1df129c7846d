"""Fixtures for tests that run the service against real components."""

from __future__ import annotations

import aiomysql
import pytest

from susee.config import DatabaseTarget


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

