"""``susee rollup``, the storage lines of ``susee check``, and chunked retention."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

import pytest

from susee.retention import expire_raw
from susee.sample import Sample
from susee.sinks import create_sink
from tests.integration.storage_support import Store, assert_rollups_equal_raw, store  # noqa: F401
from tests.integration.test_cli import run_cli, write_site
from tests.integration.test_compact import query, todays_layout

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC


def day_samples(days: int, per_day: int = 12) -> list[Sample]:
    return [Sample("d01", param, TICK + day * 86_400 + 300 * k, 10.0 * k + day, 2.0, 0)
            for day in range(days) for k in range(per_day) for param in ("104", "222")]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_rollup_command_recomputes_a_range_and_prints_rows_per_second(store, tmp_path):  # noqa: F811
    await store.sink.write(day_samples(3))
    store.query(f"DELETE FROM see{store.job_id}Q15Dirty")  # as if the markers were lost: the command repairs
    site = write_site(tmp_path, devices=[], db_url=store.settings.database.url, job_id=store.job_id)

    result = await run_cli(tmp_path, "rollup", "--config", str(site), "--from", "2021-02-18", "--to", "2021-02-20")

    assert result.returncode == 0, result.output
    assert "rolled up 2021-02-18 00:00:00 to 2021-02-20 00:00:00: 192 buckets, 48 raw rows" in result.stdout
    assert "rows/s" in result.stdout
    assert {key[2][:10] for key in store.q15()} == {"2021-02-18", "2021-02-19"}, "only the range asked for"
    result = await run_cli(tmp_path, "rollup", "--config", str(site))  # default: all of Raw
    assert result.returncode == 0, result.output
    assert_rollups_equal_raw(store)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_rollup_command_names_a_bad_date(store, tmp_path):  # noqa: F811
    site = write_site(tmp_path, devices=[], db_url=store.settings.database.url, job_id=store.job_id)
    result = await run_cli(tmp_path, "rollup", "--config", str(site), "--from", "yesterday")
    assert result.returncode == 2 and "'yesterday' is not a UTC date" in result.stderr


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_rollup_command_refuses_a_bad_site_tariff_with_exit_2_before_any_work(store, tmp_path):  # noqa: F811
    await store.sink.write(day_samples(1))
    (tmp_path / "bands.yaml").write_text("- not a calendar\n", encoding="utf-8")
    site = write_site(tmp_path, devices=[], db_url=store.settings.database.url, job_id=store.job_id,
                      tariff="bands.yaml")

    result = await run_cli(tmp_path, "rollup", "--config", str(site))

    assert result.returncode == 2, result.output
    assert "config error: tariff:" in result.stderr and "bands.yaml" in result.stderr, result.stderr
    assert store.q15() == {}, "refused before anything was recomputed"


async def test_check_prints_rows_per_day_sizes_and_retention(tmp_path, mariadb_target, job_id):
    sink = create_sink(mariadb_target, job_id)
    await sink.open()
    await sink.migrate()
    await sink.close()
    url = f"mysql://root@{mariadb_target.host}:{mariadb_target.port}/{mariadb_target.database}"
    devices = [{"id": "d01", "host": "127.0.0.1", "port": 1, "unit": 1, "timeout": 0.2}]
    site = write_site(tmp_path, devices=devices, db_url=url, job_id=job_id, storage={"raw_keep_days": 30})

    result = await run_cli(tmp_path, "check", "--config", str(site))

    assert "storage: 691,200 raw rows/day (1 devices, 8 params every 1 s), 768 rollup rows/day" in result.stdout
    assert "retention raw: 30 days; rows before" in result.stdout
    assert "retention rollups: keep everything" in result.stdout
    assert "Raw layout: compact, 1 day partition; ~29 bytes/sample measured: ~0.02 GB/day" in result.stdout
    assert re.search(rf"see{job_id}Q15: about 0 rows, 0\.\d MB on disk", result.stdout), result.stdout


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_sqlite_retention_deletes_in_chunks_exactly_the_days_before_the_horizon(  # noqa: F811
    store, monkeypatch, caplog
):
    await chunked_retention(store.sink, store.query, store.job_id, monkeypatch, caplog)


async def test_mariadb_retention_on_todays_layout_deletes_in_chunks(mariadb_target, job_id, monkeypatch, caplog):
    todays_layout(mariadb_target, job_id)  # not partitioned: DELETE in chunks
    sink = create_sink(mariadb_target, job_id)
    await sink.open()
    await sink.migrate()
    query(mariadb_target, f"DELETE FROM see{job_id}Raw")
    try:
        await chunked_retention(sink, lambda sql, p=(): query(mariadb_target, sql, p), job_id, monkeypatch, caplog)
    finally:
        await sink.close()


async def chunked_retention(sink, run_query, job_id, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="susee.retention")
    monkeypatch.setattr("susee.retention.CHUNK_ROWS", 7)
    await sink.write(day_samples(4))  # 24 rows a day, 2021-02-18 .. 2021-02-21
    keep_from = datetime(2021, 2, 20).date()

    expiry = await sink.session("test", lambda s: expire_raw(s, job_id, keep_from, None))

    assert expiry.rows == 48 and expiry.partitions == ()
    days = run_query(f"SELECT DISTINCT substr(CAST(`Date` AS CHAR), 1, 10) FROM see{job_id}Raw".replace(
        "`Date`", "Date"))
    assert sorted(day for (day,) in days) == ["2021-02-20", "2021-02-21"]
    assert any(f"see{job_id}Raw: expired 48 rows dated before 2021-02-20" in r.getMessage() for r in caplog.records)
    held = await sink.session("test", lambda s: expire_raw(s, job_id, keep_from + timedelta(days=1),
                                                           datetime(2021, 2, 20, 10, 45)))
    assert held is None, "a bucket of 2021-02-20 is still to roll up: that day stays"


async def test_migrate_compact_command_converts_then_says_already_compact(tmp_path, mariadb_target, job_id):
    todays_layout(mariadb_target, job_id)
    url = f"mysql://root@{mariadb_target.host}:{mariadb_target.port}/{mariadb_target.database}"
    site = write_site(tmp_path, devices=[], db_url=url, job_id=job_id)

    first = await run_cli(tmp_path, "migrate", "--compact", "--config", str(site))
    second = await run_cli(tmp_path, "migrate", "--compact", "--config", str(site))

    assert first.returncode == 0, first.output
    assert "migration 0004 compact_raw applied" in first.stdout
    assert f"see{job_id}Raw: all 1 rows of the old layout are in the compact one, identical; old table dropped" \
        in first.stdout
    assert second.returncode == 0 and f"see{job_id}Raw is already compact" in second.stdout, second.output
    assert query(mariadb_target, f"SELECT idDevice, CAST(`Date` AS CHAR), Value, Delay FROM see{job_id}Raw") == [
        ("d99", "2021-02-17 23:59:59.500000", 0.1, 1.5)]


async def test_migrate_compact_on_sqlite_says_it_has_no_compact_layout(tmp_path):
    site = write_site(tmp_path, devices=[], db_url=f"sqlite:///{tmp_path / 'x.db'}")
    result = await run_cli(tmp_path, "migrate", "--compact", "--config", str(site))
    assert result.returncode == 2 and "only MariaDB has the compact layout" in result.stdout
