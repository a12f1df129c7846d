"""Shared fixtures."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from uuid import uuid4

import pymysql
import pytest

from susee.config import DatabaseTarget

# pymodbus logs every timeout with a dump of recent frames; for susee a timeout
# is a quality code, asserted by the tests, so the dumps are only noise.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

# The service serves its live view by default on 127.0.0.1:8050: tests (and
# the services they start as subprocesses) take any free port instead, so
# they never collide with each other or with a susee running on the machine.
os.environ.setdefault("SUSEE_HTTP__LISTEN", "127.0.0.1:0")

MARIADB_HOST = "127.0.0.1"
MARIADB_PORT = 3306


@pytest.fixture
def job_id() -> str:
    """A fresh job id, so table names never clash between tests."""
    return "t" + secrets.token_hex(3)


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
        admin = _admin()
        try:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()


def _admin() -> pymysql.connections.Connection:
    try:
        return pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="", connect_timeout=3)
    except pymysql.err.Error as exc:
        pytest.fail(f"MariaDB on {MARIADB_HOST}:{MARIADB_PORT} (user root) does not answer: {exc}", pytrace=False)
