"""Errors that are not outages, against the real MariaDB with a user made for the test.

A user without INSERT privilege, a database the user may not create, a column
dropped by hand: ``run`` exits 1 before sampling naming the privilege or the
column, ``check`` and ``migrate`` say the same; at run time such an error
spools the rows, is logged once a minute at most and counted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import pymysql
import pytest

from susee.config import WriterSettings
from susee.sample import Sample
from susee.sinks import create_sink
from susee.spool import Spool
from susee.store import Store
from susee.writer import Writer

from .test_cli import free_port, meters, run_cli, write_site

PASSWORD = "pw-" + secrets.token_hex(4)


async def until(condition, timeout_s: float) -> None:
    """Poll ``condition`` until it holds (bounded)."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


def admin(sql: str, *args) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, args or None)
    finally:
        conn.close()


@pytest.fixture
def db_user():
    """A MariaDB user with no privileges yet, dropped afterwards."""
    name = "susee_u" + secrets.token_hex(4)
    admin("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", name, PASSWORD)
    try:
        yield name
    finally:
        admin("DROP USER IF EXISTS %s@'127.0.0.1'", name)


async def migrated(target, job_id: str) -> None:
    sink = create_sink(target, job_id)
    await sink.open()
    await sink.migrate()
    await sink.close()


def user_url(user: str, database: str) -> str:
    return f"mysql://{user}@127.0.0.1:3306/{database}"


async def test_a_user_without_insert_privilege_stops_the_start_with_exit_1_naming_it(
        tmp_path, mariadb_target, job_id, db_user):
    await migrated(mariadb_target, job_id)
    admin(f"GRANT SELECT ON `{mariadb_target.database}`.* TO %s@'127.0.0.1'", db_user)
    site = write_site(tmp_path, devices=meters(free_port()), db_url=user_url(db_user, mariadb_target.database),
                      job_id=job_id)
    env = {"SUSEE_DATABASE__PASSWORD": PASSWORD}

    run = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "5", **env)
    check = await run_cli(tmp_path, "check", "--config", str(site), **env)

    assert run.returncode == 1, run.stderr
    assert "INSERT, UPDATE command denied" in run.stderr and f"see{job_id}Raw" in run.stderr
    assert "sampling" not in run.stderr, "stopped before sampling"
    assert PASSWORD not in run.stderr + check.stdout
    assert check.returncode == 1
    assert "CANNOT STORE ROWS" in check.stdout and "INSERT, UPDATE command denied" in check.stdout


async def test_a_database_the_user_may_not_create_stops_the_start_with_exit_1(tmp_path, mariadb_target, job_id,
                                                                               db_user):
    site = write_site(tmp_path, devices=meters(free_port()), db_url=user_url(db_user, mariadb_target.database),
                      job_id=job_id)

    run = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "5",
                        SUSEE_DATABASE__PASSWORD=PASSWORD)

    assert run.returncode == 1, run.stderr
    # A user with no privilege at all hears "access denied" for the database (1044) before it could be created.
    assert f"Access denied for user '{db_user}'@'127.0.0.1' to database '{mariadb_target.database}'" in run.stderr
    assert "sampling" not in run.stderr


async def test_a_column_dropped_by_hand_fails_migrate_and_the_start_naming_it(tmp_path, mariadb_target, job_id):
    await migrated(mariadb_target, job_id)
    admin(f"ALTER TABLE `{mariadb_target.database}`.`see{job_id}Raw` DROP COLUMN Delay")
    site = write_site(tmp_path, devices=meters(free_port()), db_url=f"mysql://root@127.0.0.1:3306/"
                      f"{mariadb_target.database}", job_id=job_id)

    migrate = await run_cli(tmp_path, "migrate", "--config", str(site))
    run = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "5")

    assert migrate.returncode == 1
    assert f"column see{job_id}Raw.Delay is missing" in migrate.stdout, migrate.stdout
    assert run.returncode == 1 and f"column see{job_id}Raw.Delay is missing" in run.stderr


async def test_at_run_time_a_refused_write_spools_logs_once_a_minute_and_counts(
        tmp_path, mariadb_target, job_id, caplog):
    caplog.set_level(logging.ERROR, logger="susee.store")
    await migrated(mariadb_target, job_id)
    sink = create_sink(mariadb_target, job_id)
    writer = Writer(Store(sink, Spool(tmp_path / "spool")), WriterSettings(batch_age=0.05))
    task = asyncio.create_task(writer.run())
    try:
        await writer.started.wait()
        admin(f"ALTER TABLE `{mariadb_target.database}`.`see{job_id}Raw` DROP COLUMN Delay")  # by hand, at run time
        rows = [Sample("d01", "104", 1613644200.0 + k, 1.0, 2.0, 0) for k in range(5)]
        for row in rows:
            writer.submit([row])
        await until(lambda: writer.store.stats().permanent_errors >= 3 and writer.store.spool.pending_rows == 5, timeout_s=30)
        errors = [r.getMessage() for r in caplog.records if "retrying cannot fix" in r.getMessage()]
        assert len(errors) == 1, errors
        assert "Unknown column" in errors[0] and "Delay" in errors[0]

        admin(f"ALTER TABLE `{mariadb_target.database}`.`see{job_id}Raw` ADD COLUMN Delay DOUBLE NULL")  # fixed
        await until(lambda: writer.store.stats().online and writer.store.spool.pending_rows == 0, timeout_s=60)
    finally:
        writer.close()
        await asyncio.wait_for(task, 10)
        await sink.close()
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=mariadb_target.database)
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM see{job_id}Raw")
        assert cursor.fetchone()[0] == 5, "every row stored once the column is back"
    conn.close()
