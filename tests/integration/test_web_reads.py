"""The web's database reads in both dialects: Last, Raw series and the Q15 rollups of CONTRACT.md."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pymysql
import pytest

from susee.config import Settings
from susee.sample import Sample
from susee.sinks import create_sink
from susee.web.reads import BUCKET_S, Reads, bucket_text


@pytest.fixture
def settings(database_url, job_id):
    return Settings(job_id=job_id, sample_time=1, database={"url": database_url}, devices=[])


async def _prepared_sink(settings: Settings):
    sink = create_sink(settings.database_target(), settings.job_id)
    await sink.open()
    await sink.migrate()
    return sink


async def test_last_and_series_read_what_was_written(settings) -> None:
    sink = await _prepared_sink(settings)
    day = (time.time() // 86400) * 86400
    samples = [Sample("d1", "133", day + 60 + t, 100.0 + t, 5.0, 0) for t in range(120)]
    samples.append(Sample("d1", "133", day + 300, None, 5.0, 1))  # a failed read: not in the series
    samples.append(Sample("d2", "133", day + 60, 7.0, 5.0, 0))
    try:
        await sink.write(samples)
        reads = Reads(settings)
        try:
            last = await reads.last("d1")
            assert [(row[0], row[2], row[4]) for row in last] == [("133", None, 1)]
            series = await reads.series("d1", "133", day, day + 3600, 60)
            # Minute 1: t = 0..59 -> mean 129.5; minute 2: t = 60..119 -> mean 189.5.
            assert series.step_s == 60
            assert series.points == [(day + 60, pytest.approx(129.5)), (day + 120, pytest.approx(189.5))]
            # The migrations made the Q15 table; nothing is rolled up yet.
            assert await reads.has_rollups() is True
            assert await reads.quality_strip("d1", time.time()) == []
            # The rows just written left their buckets marked: the oldest ends at day + 900.
            now = time.time()
            assert await reads.rollup_lag_s(now) == pytest.approx(max(0.0, now - (day + BUCKET_S)), abs=1)
        finally:
            await reads.close()
    finally:
        await sink.close()


async def test_completeness_strip_and_lag_come_from_the_q15_table(settings) -> None:
    sink = await _prepared_sink(settings)
    job = settings.job_id
    now = time.time()
    end = (now // BUCKET_S) * BUCKET_S  # the newest complete bucket ends here
    mark = "%s" if settings.database_target().kind == "mysql" else "?"
    insert = f"INSERT INTO see{job}Q15 (idDevice, idParam, Bucket, Samples, Good, Drops, Codes) VALUES " \
             f"({mark}, {mark}, {mark}, {mark}, {mark}, 0, {mark})"
    try:
        for index in range(1, 5):  # the last hour: four buckets, half of the rows good
            for param in ("133", "222"):
                code = 1 if param == "133" else 16  # the strip ORs the params' Codes: 17
                await _execute(settings, insert, ("d1", param, bucket_text(end - index * BUCKET_S), 900, 450, code))
        reads = Reads(settings)
        try:
            assert await reads.has_rollups() is True
            assert reads.completeness({"d1": 2.0, "d2": 2.0}, now) == {}  # computed in the background
            await reads._completeness_task
            shares = reads.completeness({"d1": 2.0, "d2": 2.0}, now)
            assert shares["d1"] == (pytest.approx(0.5), pytest.approx(3600 / (2 * 86400)))
            assert shares["d2"] == (0.0, 0.0)
            strip = await reads.quality_strip("d1", now)
            day = time.strftime("%Y-%m-%d", time.gmtime(now))
            today = [b for b in strip if b["bucket"][:10] == day]
            assert len(today) == sum(bucket_text(end - i * BUCKET_S)[:10] == day for i in range(1, 5))
            assert all(b["samples"] == 1800 and b["good"] == 900 and b["codes"] == 17 for b in today)
            assert await reads.rollup_lag_s(now) == 0.0  # no bucket marked: the rollups are not behind
            dirty = f"INSERT INTO see{job}Q15Dirty (Bucket, Version) VALUES ({mark}, 1)"
            await _execute(settings, dirty, (bucket_text(end - 2 * BUCKET_S),))
            await _execute(settings, dirty, (bucket_text(end),))  # the bucket being written: not late
            assert await reads.rollup_lag_s(now) == pytest.approx(now - (end - BUCKET_S), abs=1)
        finally:
            await reads.close()
    finally:
        await sink.close()


async def _execute(settings: Settings, sql: str, params: tuple = ()) -> None:
    """Rows put straight into the Q15 table (made by the migrations), standing in for a recompute."""
    target = settings.database_target()

    def run() -> None:
        if target.kind == "mysql":
            conn = pymysql.connect(host=target.host, port=target.port, user=target.user, password="",
                                   database=target.database, autocommit=True)
        else:
            conn = sqlite3.connect(str(target.path), isolation_level=None)
        try:
            conn.cursor().execute(sql, params)
        finally:
            conn.close()

    await asyncio.to_thread(run)
