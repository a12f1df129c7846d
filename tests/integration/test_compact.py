"""``migrate --compact``: every row kept, identical, resumed after an interrupt, while the service writes."""

from __future__ import annotations

import asyncio
from datetime import date

import pymysql
import pytest

from susee.compact import CompactCopy
from susee.sample import Sample
from susee.sinks import create_sink
from tests.integration.storage_support import mariadb_query
from tests.integration.test_migrations import create_seed_database

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC
TODAY = date(2021, 2, 20)


class Interrupted(Exception):
    """Ctrl-C in the middle of the copy."""


def query(target, sql, params=()):
    return mariadb_query(target, sql, params)


def all_rows(target, job_id):
    return sorted(query(target, f"SELECT idDevice, CAST(`Date` AS CHAR), idParam, Value, Delay, Code"
                                f" FROM see{job_id}Raw"))


def todays_layout(target, job_id):
    """A Raw as today's migrations 0001-0002 made it (before compact existed), with a row."""
    conn = pymysql.connect(host=target.host, port=target.port, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{target.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            cursor.execute(f"USE `{target.database}`")
            cursor.execute(
                f"CREATE TABLE see{job_id}Raw (idNum BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, idDevice VARCHAR(20)"
                " NOT NULL, Date DATETIME(6) NOT NULL, idParam VARCHAR(20) NOT NULL, Value DOUBLE NULL,"
                " Delay FLOAT NULL, Code INT NOT NULL, PRIMARY KEY (idNum), UNIQUE KEY uq_sample (idDevice,"
                " idParam, Date), KEY ix_date (Date)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
            cursor.execute(f"INSERT INTO see{job_id}Raw (idDevice, Date, idParam, Value, Delay, Code)"
                           " VALUES ('d99', '2021-02-17 23:59:59.5', '222', 0.1, 1.5, 0)")
    finally:
        conn.close()


def batch(device: str, start: float, ticks: int) -> list[Sample]:
    return [Sample(device, param, start + 10 * k, 1000.0 / (k + 1) + int(param), 3.25, 0 if k % 17 else 1)
            for k in range(ticks) for param in ("104", "222", "226")]


@pytest.mark.parametrize("layout", ["today", "seed"])
async def test_migrate_compact_keeps_every_row_identical_resumes_and_lets_the_service_write(
    layout, mariadb_target, job_id, monkeypatch
):
    monkeypatch.setattr("susee.compact.CHUNK_IDS", 500)  # many chunks from a few thousand rows
    (todays_layout if layout == "today" else create_seed_database)(mariadb_target, job_id)
    sink = create_sink(mariadb_target, job_id)
    await sink.open()
    await sink.migrate()  # a Raw with rows keeps its layout
    for device in ("d01", "d02", "d03"):
        await sink.write(batch(device, TICK, 1000))  # 9,000 rows over two days
    written = [0]
    stop = asyncio.Event()

    async def service_writing() -> None:
        """Live batches, and now and then a replayed one, until told to stop."""
        k = 0
        while not stop.is_set():
            await sink.write(batch("d10", TICK + 86_400 + 100 * k, 10))
            if k % 5 == 0:
                await sink.write(batch("d01", TICK, 10))  # a replay: already stored
            written[0] += 1
            k += 1
            await asyncio.sleep(0.005)

    copier = create_sink(mariadb_target, job_id, rollups=False)
    await copier.open()
    service = asyncio.create_task(service_writing())
    try:
        copy = CompactCopy(job_id, TODAY)
        chunks = [0]

        def interrupt_after_three_chunks(rows: int) -> None:
            chunks[0] += 1
            if chunks[0] == 3:
                raise Interrupted

        with pytest.raises(Interrupted):
            await copier.session("compact", lambda s: copy.run(s, interrupt_after_three_chunks))
        before_resume = written[0]
        lines = await copier.session("compact", lambda s: copy.run(s))
        assert written[0] > before_resume, "the service wrote while the copy ran"
        during = written[0]
        while written[0] < during + 3:  # and goes on writing into the compact Raw
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await service
        await copier.close()
        await sink.close()

    assert lines[-1].endswith("identical; old table dropped"), lines
    expected = sorted({*[(s.device_id, s.tick_s, s.param_id) for d in ("d01", "d02", "d03") for s in batch(d, TICK, 1000)]})
    rows = all_rows(mariadb_target, job_id)
    keys = [(r[0], r[1], r[2]) for r in rows]
    assert len(keys) == len(set(keys)), "no row twice"
    live = [r for r in rows if r[0] == "d10"]
    assert len(live) == written[0] * 30
    assert len([r for r in rows if r[0] in ("d01", "d02", "d03")]) == len(expected)
    sample = {(r[0], r[2], r[1]): r for r in rows}
    assert sample[("d02", "222", "2021-02-18 10:30:10.000000")] == (
        "d02", "2021-02-18 10:30:10.000000", "222", 1000.0 / 2 + 222, 3.25, 0)
    if layout == "today":
        assert sample[("d99", "222", "2021-02-17 23:59:59.500000")][3:] == (0.1, 1.5, 0)
    else:  # the seed's rows, as the upgrade kept them
        assert ("395.19" in {str(r[3]) for r in rows}) and ("123456.7891" in {str(r[3]) for r in rows})
    tables = {r[0] for r in query(mariadb_target, "SHOW TABLES")}
    assert f"see{job_id}RawBeforeCompact" not in tables and f"see{job_id}CompactCopy" not in tables
    primary = query(mariadb_target, "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM"
                    " information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
                    " AND INDEX_NAME = 'PRIMARY'", (f"see{job_id}Raw",))
    assert primary == [("Date,idDevice,idParam",)]
