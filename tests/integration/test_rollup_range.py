"""``susee rollup``'s path: hour steps on several connections, and today's Q15 SQL against the previous one."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from susee import rollup, storage_commands
from susee.config import Settings
from susee.quality import Code
from susee.rollup import Rollups, bucket_steps
from susee.sample import Sample
from susee.sinks import create_sink
from tests.integration.storage_support import (  # noqa: F401
    Store, assert_rollups_equal_raw, mariadb_query, same_row, store)
from tests.integration.test_cli import run_cli, write_site

TICK = 1613644200.0  # 2021-02-18 10:30:00 UTC
START, END = datetime(2021, 2, 18, 10, 30), datetime(2021, 2, 18, 12, 45)


def previous_select_sql(dialect: str, tables) -> str:
    """The Q15 SELECT before LastValue became a key lookup (LAG and LEAD over one window), verbatim."""
    mark = "%s" if dialect == "mariadb" else "?"
    if dialect == "mariadb":
        bucket = "TIMESTAMPDIFF(MINUTE, '1970-01-01', `Date`) DIV 15"
        bucket_out = "TIMESTAMPADD(MINUTE, Bucket * 15, '1970-01-01')"
        rise, fall, codes, date = "GREATEST(diff, 0)", "GREATEST(-diff, 0)", "BIT_OR(Code)", "`Date`"
    else:
        bucket = "substr(Date, 1, 14) || printf('%02d', CAST(substr(Date, 15, 2) AS INTEGER) / 15 * 15) || ':00'"
        bucket_out = "Bucket"
        rise, fall, codes, date = "MAX(diff, 0)", "MAX(-diff, 0)", "bit_or(Code)", "Date"
    window = f"PARTITION BY idDevice, idParam, Bucket, gv IS NULL ORDER BY {date}"
    return f"""
SELECT idDevice, idParam, {bucket_out}, COUNT(*), COUNT(gv), MIN(gv), MAX(gv), AVG(gv),
    MIN(gd), MAX(CASE WHEN prev IS NULL THEN gv END), MAX(gd), MAX(CASE WHEN nxt IS NULL THEN gv END),
    CASE WHEN COUNT(gv) > 0 THEN COALESCE(SUM({rise}), 0) END,
    CASE WHEN COUNT(gv) > 0 THEN COALESCE(SUM({fall}), 0) END,
    COALESCE(SUM(diff < 0), 0), MAX(CASE WHEN diff > 0 THEN diff END), {codes}
FROM (
    SELECT idDevice, idParam, Bucket, Code, gv, CASE WHEN gv IS NOT NULL THEN {date} END AS gd, prev, nxt,
        gv - prev AS diff
    FROM (
        SELECT idDevice, idParam, Bucket, {date}, Code, gv,
            LAG(gv) OVER ({window}) AS prev, LEAD(gv) OVER ({window}) AS nxt
        FROM (
            SELECT idDevice, idParam, {bucket} AS Bucket, {date}, Code, CASE WHEN Code = 0 THEN Value END AS gv
            FROM {tables.raw} WHERE {date} >= {mark} AND {date} < {mark}
        ) AS r
    ) AS l
) AS w
GROUP BY idDevice, idParam, Bucket"""


def messy_samples(seed: int = 7) -> list[Sample]:
    """Two hours and a quarter of 4 devices x 3 params at irregular times: failed reads (NULL), values
    with a Modbus exception Code, NaN, a counter that resets, a param with no good value in a bucket."""
    rng = random.Random(seed)
    samples = []
    counters = {f"d{unit:02d}": rng.uniform(1e5, 1e6) for unit in range(4)}
    moment = TICK
    while moment < TICK + 8100:
        for device in counters:
            counters[device] += rng.uniform(0, 3.7)
            if rng.random() < 0.003:
                counters[device] = rng.uniform(0, 5)  # the meter's counter reset
            for param, value in (("222", counters[device]), ("104", rng.gauss(230, 3)), ("107", rng.gauss(0.3, 1))):
                draw = rng.random()
                if draw < 0.08:
                    samples.append(Sample(device, param, moment, None, 1000.0, Code.ERR_CONNECTION))
                elif draw < 0.12:
                    samples.append(Sample(device, param, moment, value, 5.0, Code.ERR_REGISTER))
                elif draw < 0.13:
                    samples.append(Sample(device, param, moment, float("nan"), 5.0, 0))
                elif not (device == "d03" and param == "107" and 3600 <= moment - TICK < 4500):
                    samples.append(Sample(device, param, moment, value, 5.0, 0))
                else:
                    samples.append(Sample(device, param, moment, None, 1000.0, Code.SERVER_OFF))
        moment += rng.choice((7.0, 10.0, 10.0, 10.0, 13.25))
    return samples


async def write_shuffled(store: Store, samples: list[Sample]) -> None:
    batches = [samples[i:i + 500] for i in range(0, len(samples), 500)]
    random.Random(3).shuffle(batches)  # late batches across buckets, as a replay writes them
    for batch in batches:
        await store.sink.write(batch)


async def recompute(store: Store, connections: int) -> None:
    sinks = [store.sink] + [create_sink(store.settings.database_target(), store.job_id, rollups=False)
                            for _ in range(connections - 1)]
    for sink in sinks[1:]:
        await sink.open()
    try:
        await Rollups(store.job_id, store.dialect).recompute_range([s.session for s in sinks], START, END, None)
    finally:
        for sink in sinks[1:]:
            await sink.close()


@pytest.mark.parametrize(("start", "end", "buckets"), [
    (datetime(2021, 2, 18, 10, 40), datetime(2021, 2, 18, 11, 5), ["10:30", "10:45", "11:00"]),
    (datetime(2021, 2, 18, 11), datetime(2021, 2, 18, 11, 0, 0, 1), ["11:00"]),
    (datetime(2021, 2, 18, 11), datetime(2021, 2, 18, 12), ["11:00", "11:15", "11:30", "11:45"]),
    (datetime(2021, 2, 18, 23, 50), datetime(2021, 2, 19, 0, 10), ["23:45", "00:00"]),
])
def test_bucket_steps_widen_the_range_to_whole_buckets(start, end, buckets):
    assert [f"{bucket:%H:%M}" for bucket in bucket_steps(start, end)] == buckets


async def test_an_hours_buckets_run_on_every_connection_and_its_q60_once_after_all_of_them(store):  # noqa: F811
    await write_shuffled(store, [s for s in messy_samples() if TICK + 1800 <= s.tick_s < TICK + 5400])  # 11:00-12:00
    sinks = [store.sink] + [create_sink(store.settings.database_target(), store.job_id, rollups=False)
                            for _ in range(1 if store.dialect == "sqlite" else 2)]
    for sink in sinks[1:]:
        await sink.open()
    done: list[tuple[int, str]] = []

    def recording(number, run):
        async def recorded(action, work):
            result = await run(action, work)
            if action.startswith("rollup of"):
                await asyncio.sleep(0.05)  # each bucket holds its connection: every one is ready before they run out
            done.append((number, action))
            return result
        return recorded

    try:
        await Rollups(store.job_id, store.dialect).recompute_range(
            [recording(number, sink.session) for number, sink in enumerate(sinks)],
            datetime(2021, 2, 18, 11), datetime(2021, 2, 18, 12), None)
    finally:
        for sink in sinks[1:]:
            await sink.close()
    actions = [action for _, action in done if action != "rollup session"]
    assert actions[-1] == "hourly rollup of 2021-02-18 11:00:00 to 2021-02-18 12:00:00"
    assert sorted(actions[:-1]) == [f"rollup of 2021-02-18 11:{m:02d}:00 to 2021-02-18 {h}:{n:02d}:00"
                                    for m, h, n in ((0, 11, 15), (15, 11, 30), (30, 11, 45), (45, 12, 0))]
    if store.dialect == "mariadb":
        assert {number for number, action in done if action.startswith("rollup of")} == {0, 1, 2}
    assert_rollups_equal_raw(store)


async def test_q15_and_q60_equal_the_previous_sql_exactly_on_messy_data(store, monkeypatch):  # noqa: F811
    await write_shuffled(store, messy_samples())
    connections = 2 if store.dialect == "mariadb" else 1
    with monkeypatch.context() as patch:
        patch.setattr(rollup, "select_sql", previous_select_sql)
        tables = rollup.Tables.of(store.job_id, store.dialect)
        assert "LEAD(gv)" in (rollup.recompute_sql(tables, False) if store.dialect == "mariadb"
                              else rollup.select_sql(store.dialect, tables)), "the previous SQL is the one run"
        await recompute(store, connections)
    before_q15, before_q60 = store.q15(), store.q60()
    store.query(f"DELETE FROM see{store.job_id}Q15")
    store.query(f"DELETE FROM see{store.job_id}Q60")

    await recompute(store, connections)

    assert len(before_q15) == 4 * 3 * 9 and len(before_q60) == 4 * 3 * 3
    assert store.q15() == before_q15, "every column equal, floats to the last bit"
    assert store.q60() == before_q60
    assert_rollups_equal_raw(store)


async def site_holding(mariadb_target, job_id: str, folder: Path, samples: list[Sample]) -> Path:
    """A site file (no devices) on a MariaDB database holding ``samples``, written by the sink."""
    sink = create_sink(mariadb_target, job_id)
    await sink.open()
    await sink.migrate()
    try:
        await sink.write(samples)
    finally:
        await sink.close()
    url = f"mysql://root@{mariadb_target.host}:{mariadb_target.port}/{mariadb_target.database}"
    return write_site(folder, devices=[], db_url=url, job_id=job_id)


async def test_rollup_command_stops_at_a_failed_step_and_names_its_range(mariadb_target, job_id, tmp_path):
    site = await site_holding(mariadb_target, job_id, tmp_path, messy_samples()[:3000])
    mariadb_query(mariadb_target, f"DROP TABLE see{job_id}Q60")  # every step's Q60 upsert fails

    result = await run_cli(tmp_path, "rollup", "--config", str(site), "--from", "2021-02-18 10:30",
                           "--to", "2021-02-18 14:00", "--connections", "2")

    assert result.returncode == 1, result.output
    assert "susee rollup stopped:" in result.stdout
    assert "hourly rollup of 2021-02-18 1" in result.stdout and f"see{job_id}Q60" in result.stdout, result.stdout
    # An hour's Q60 failed (10:00's, unless the other connection finished 11:00's first under load) and
    # stopped both connections after their bucket in flight: the buckets done stay done, no later hour
    # was started (at most 10:30 .. 11:45 of the range's 14 buckets).
    buckets = [row[0] for row in mariadb_query(
        mariadb_target, f"SELECT DISTINCT Bucket FROM see{job_id}Q15 ORDER BY Bucket")]
    assert buckets[:2] == [datetime(2021, 2, 18, 10, 30), datetime(2021, 2, 18, 10, 45)]
    assert buckets[-1] <= datetime(2021, 2, 18, 11, 45), buckets


async def test_rollup_command_writes_nothing_for_a_bucket_that_failed(mariadb_target, job_id, tmp_path):
    site = await site_holding(mariadb_target, job_id, tmp_path, messy_samples()[:3000])
    mariadb_query(mariadb_target, f"ALTER TABLE see{job_id}Q15 DROP COLUMN MaxRise")  # every Q15 upsert fails

    result = await run_cli(tmp_path, "rollup", "--config", str(site), "--connections", "2")

    assert result.returncode == 1, result.output
    assert "susee rollup stopped:" in result.stdout and "rollup of 2021-02-18 10:" in result.stdout, result.stdout
    assert mariadb_query(mariadb_target, f"SELECT COUNT(*) FROM see{job_id}Q15")[0][0] == 0
    assert mariadb_query(mariadb_target, f"SELECT COUNT(*) FROM see{job_id}Q60")[0][0] == 0


@pytest.mark.parametrize("connections", ["1", "3"])
async def test_rollup_command_on_mariadb_equals_raw_with_any_number_of_connections(
    mariadb_target, job_id, tmp_path, connections
):
    site = await site_holding(mariadb_target, job_id, tmp_path, messy_samples())
    url = f"mysql://root@{mariadb_target.host}:{mariadb_target.port}/{mariadb_target.database}"

    result = await run_cli(tmp_path, "rollup", "--config", str(site), "--connections", connections)

    assert result.returncode == 0, result.output
    rows = len(messy_samples())
    assert f"{rows:,} raw rows" in result.stdout and f"{connections} connection" in result.stdout, result.stdout
    settings = Settings(job_id=job_id, database={"url": url})
    check = Store(create_sink(settings.database_target(), job_id), settings,
                  lambda sql, params=(): mariadb_query(mariadb_target, sql, params), "mariadb", job_id)
    assert_rollups_equal_raw(check)


def test_messy_samples_cover_what_the_comparison_needs():
    samples = messy_samples()
    assert {s.code for s in samples} >= {0, Code.ERR_CONNECTION, Code.ERR_REGISTER, Code.SERVER_OFF}
    assert any(s.value is not None and s.value != s.value for s in samples)  # NaN
    counters = [s.value for s in samples if s.device_id == "d00" and s.param_id == "222" and s.code == 0
                and s.value == s.value]
    assert any(b < a for a, b in zip(counters, counters[1:])), "a counter reset"
    assert datetime(2021, 2, 18, 10, 30) + timedelta(seconds=8100) == END


async def test_rollup_command_counts_rows_that_another_connection_rolled_up(mariadb_target, job_id):
    """The rows/s line once said "0 raw rows" when every step ran on the other connections: the counting
    connection read Q15 in its snapshot from before the recompute (autocommit is off)."""
    counting, other = create_sink(mariadb_target, job_id), create_sink(mariadb_target, job_id, rollups=False)
    await counting.open()
    try:
        await counting.migrate()
        await other.open()  # once the database exists
        samples = messy_samples()
        await counting.write(samples)
        rollups = Rollups(job_id, "mariadb")

        async def count_after_the_others(session) -> int:
            await session.fetch(f"SELECT COUNT(*) FROM {rollups.tables.q15}")  # a snapshot, as the range's bounds
            await rollups.recompute_range([other.session], START, END, None)
            return await storage_commands._raw_rows(session, rollups, START, END)

        assert await counting.session("count", count_after_the_others) == len(samples)
    finally:
        await other.close()
        await counting.close()


def test_slice_seconds_keep_a_bucket_whole_until_it_holds_more_than_slice_rows():
    assert rollup.SLICE_ROWS == 300_000
    table = [(0, 900), (1, 900), (300_000, 900), (300_001, 450), (900_001, 225),
             (3_505_433, 75),  # the optimizer's estimate for a bucket of 1,000 meters at 1 s (7.2 M rows)
             (10**12, 1)]
    assert [(rows, rollup.slice_seconds(rows)) for rows, _ in table] == table
    assert all(900 % seconds == 0 for seconds in rollup.SLICE_SECONDS)


def q15_and_q60(store: Store) -> tuple[dict, dict]:
    return store.q15(), store.q60()


def assert_same_rollups(got: dict, want: dict, why: str = "") -> None:
    """Equal; the sums (Mean, Rise, Fall) to 1e-12, as slices add them in another order."""
    assert set(got) == set(want), why
    for key, row in want.items():
        exact = [index for index in range(len(row)) if index not in (4, 9, 10)]  # Samples .. Codes after the key
        assert [got[key][i] for i in exact] == [row[i] for i in exact], key
        assert same_row(got[key], row, rel=1e-12), (key, got[key], row)


# Slices are MariaDB's: SQLite computes a bucket in the client.
@pytest.mark.parametrize("store", ["mariadb"], indirect=True)
@pytest.mark.parametrize("slice_rows", [100, 450])
async def test_a_bucket_recomputed_in_slices_equals_the_whole_bucket(store, monkeypatch, slice_rows):  # noqa: F811
    await write_shuffled(store, messy_samples())
    await recompute(store, 2)
    whole = q15_and_q60(store)
    store.query(f"DELETE FROM see{store.job_id}Q15")
    store.query(f"DELETE FROM see{store.job_id}Q60")
    monkeypatch.setattr(rollup, "SLICE_ROWS", slice_rows)
    ((plan,),) = [store.query(f"EXPLAIN SELECT 1 FROM see{store.job_id}Raw WHERE `Date` >= %s AND `Date` < %s",
                              ("2021-02-18 11:00:00", "2021-02-18 11:15:00"))]
    assert rollup.slice_seconds(int(plan[8])) < 900, "the buckets are sliced"

    await recompute(store, 2)

    for got, want in zip(q15_and_q60(store), whole):
        assert_same_rollups(got, want)
    assert_rollups_equal_raw(store)


@pytest.mark.parametrize("store", ["mariadb"], indirect=True)
async def test_sliced_buckets_before_the_horizon_only_gain_the_keys_they_lack(store, monkeypatch):  # noqa: F811
    await write_shuffled(store, messy_samples())
    await recompute(store, 1)
    whole, _ = q15_and_q60(store)
    q15 = f"see{store.job_id}Q15"
    store.query(f"UPDATE {q15} SET Samples = 999 WHERE idDevice = 'd00' AND idParam = '222'")
    store.query(f"DELETE FROM {q15} WHERE idDevice = 'd01'")
    monkeypatch.setattr(rollup, "SLICE_ROWS", 100)
    await Rollups(store.job_id, "mariadb").recompute_range([store.sink.session], START, END, horizon=END)

    got, _ = q15_and_q60(store)
    assert {key: row[0] for key, row in got.items() if key[:2] == ("d00", "222")} == {
        key: 999 for key in whole if key[:2] == ("d00", "222")}, "kept as they were"
    assert_same_rollups({key: row for key, row in got.items() if key[0] == "d01"},
                        {key: row for key, row in whole.items() if key[0] == "d01"}, "the missing keys added")
