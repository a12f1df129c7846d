"""The storage commands: ``susee rollup`` and the storage lines of ``susee check``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from susee.compact import CompactCopy
from susee.config import ConfigError, Settings
from susee.devices import DevicePlan
from susee.partitions import partitions_of
from susee.retention import horizon
from susee.rollup import BUCKET, Rollups, Session, as_datetime, bucket_of, epoch_s, now_utc
from susee.sinks import SinkError, create_sink

if TYPE_CHECKING:
    from susee.commands import Site
    from susee.report.daykeeper import DayKeeper

log = logging.getLogger(__name__)

# Bytes a sample takes on disk, measured by bench/storage.py (README "Storage").
COMPACT_BYTES_PER_SAMPLE = 29
TODAY_BYTES_PER_SAMPLE = 155
Q15_BYTES_PER_ROW = 60
# A cap on the default: each connection may hold up to 256 MB of temporary
# tables and a 64 MB sort buffer on the server (rollup.MARIADB_SESSION).
MAX_CONNECTIONS = 4


def parse_moment(text: str) -> datetime:
    """``2026-12-01`` or ``2026-12-01 13:45[:00]`` (UTC) -> naive UTC datetime."""
    for shape in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, shape)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a UTC date or time like 2026-12-01 or '2026-12-01 13:45'")


def default_connections() -> int:
    """``susee rollup``'s connections: one per CPU (MariaDB runs a statement on one core), at most 4."""
    return max(1, min(os.cpu_count() or 1, MAX_CONNECTIONS))


async def rollup(site: Site, start_text: str | None, end_text: str | None, connections: int | None = None) -> int:
    """Recompute Q15 (and Q60) over a range from Raw, with a progress bar on a terminal; print rows/s.

    MariaDB: the hour steps run on ``connections`` connections at once (each
    statement works on one server core); SQLite: one (a single writer).
    """
    settings = site.settings
    try:
        start = parse_moment(start_text) if start_text else None
        end = parse_moment(end_text) if end_text else None
    except ValueError as exc:
        print(f"susee rollup: {exc}", file=sys.stderr)
        return 2
    days = day_keeper(settings, site.plans)  # a bad site tariff stops it here, before any work
    target = settings.database_target()
    count = 1 if target.kind == "sqlite" else connections or default_connections()
    sinks = [create_sink(target, settings.job_id, rollups=False) for _ in range(count)]
    keep_from = horizon(now_utc().date(), settings.storage.raw_keep_days)
    keep_at = None if keep_from is None else datetime.combine(keep_from, datetime.min.time())

    async def bounds(session: Session) -> tuple[Rollups, datetime, datetime] | None:
        rollups = Rollups(settings.job_id, session.dialect)
        date = "`Date`" if session.dialect == "mariadb" else "Date"
        ((first, last),) = await session.fetch(f"SELECT MIN({date}), MAX({date}) FROM {rollups.tables.raw}")
        await session.rollback()  # autocommit is off: hold no snapshot while the range is recomputed
        if first is None:
            return None
        return rollups, bucket_of(start or as_datetime(first)), end or bucket_of(as_datetime(last)) + BUCKET

    try:
        await sinks[0].open()
        await sinks[0].migrate()
        found = await sinks[0].session("rollup", bounds)
        if found is None:
            print("Raw is empty: nothing to roll up")
            return 0
        rollups, start, end = found
        for sink in sinks[1:]:
            await sink.open()
        buckets = -(-(end - start) // BUCKET)
        began = time.perf_counter()
        with _progress(buckets) as bar:
            await rollups.recompute_range([sink.session for sink in sinks], start, end, keep_at, bar.update)
        elapsed = time.perf_counter() - began
        rows = await sinks[0].session("rollup", lambda session: _raw_rows(session, rollups, start, end))
        plural = "s" if len(sinks) > 1 else ""
        print(f"rolled up {start} to {end}: {buckets} buckets, {rows:,} raw rows in {elapsed:.1f} s"
              f" ({rows / elapsed if elapsed else 0:,.0f} rows/s, {len(sinks)} connection{plural})")
    except SinkError as exc:
        print(f"susee rollup stopped: {exc} (buckets done stay done; run it again for the range: recomputing is"
              " idempotent)")
        return 1
    finally:
        for sink in sinks:
            await sink.close()
    if days is None:
        print("daily rollups not built: they need the report extra (pip install 'susee[report]')")
    else:
        await daily_rollups(days, start, end)  # the days of the range, and those its gaps reach
    return 0


async def _raw_rows(session: Session, rollups: Rollups, start: datetime, end: datetime) -> int:
    """Raw rows of the range, as the rollups just counted them (reads Q15, not Raw again)."""
    mark = session.placeholder
    # A fresh snapshot: this connection's last one may predate the Q15 rows
    # that the other connections committed (it then counted 0 rows).
    await session.rollback()
    ((rows,),) = await session.fetch(
        f"SELECT COALESCE(SUM(Samples), 0) FROM {rollups.tables.q15} WHERE Bucket >= {mark} AND Bucket < {mark}",
        (f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}"),
    )
    return int(rows)


def day_keeper(settings: Settings, plans: Sequence[DevicePlan]) -> DayKeeper | None:
    """The daily rollups' keeper (``susee.report.daykeeper.DayKeeper``), None without the report extra;
    ConfigError for a bad site ``tariff``."""
    try:
        from susee.report.daykeeper import DayKeeper
        from susee.report.tariffs import TariffError
    except ImportError as exc:
        log.info("daily rollups not kept: they need the report extra (pip install 'susee[report]'): %s", exc)
        return None
    try:
        return DayKeeper(settings, plans)
    except TariffError as exc:
        raise ConfigError(f"tariff: {exc}") from None


async def daily_rollups(days: DayKeeper, start: datetime, end: datetime) -> None:
    """The daily rollups of the local days [start, end) (naive UTC) touches, and of the days its gaps reach."""
    began = time.perf_counter()
    built = await asyncio.to_thread(days.build_range, epoch_s(start), epoch_s(end), time.time())
    print(f"daily rollups: {built} counter-day(s) built in {time.perf_counter() - began:.1f} s")


def _progress(total: int | None, unit: str = "bucket"):
    """A tqdm bar (with its ETA) on a terminal, silent otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, disable=not sys.stderr.isatty(), dynamic_ncols=True)


async def migrate_compact(site: Site) -> int:
    """``susee migrate --compact``: the usual migrations, then Raw into the compact layout (resumable)."""
    settings = site.settings
    sink = create_sink(settings.database_target(), settings.job_id, rollups=False)
    if sink.target.kind != "mysql":
        print("susee migrate --compact: only MariaDB has the compact layout; SQLite keeps its own")
        return 2
    copy = CompactCopy(settings.job_id, now_utc().date(), settings.storage.partitions_ahead_days)

    async def work(session: Session) -> list[str]:
        with _progress(None, "row") as bar:
            def total(rows: int) -> None:
                bar.reset(total=rows)

            return await copy.run(session, bar.update, total)

    try:
        await sink.open()
        for line in await sink.migrate():
            print(line)
        for line in await sink.session("migrate --compact", work):
            print(line)
    except SinkError as exc:
        print(f"database {sink.target}: {exc} (run the command again: it resumes where it stopped)")
        return 1
    finally:
        await sink.close()
    return 0


async def storage_lines(site: Site) -> list[str]:
    """What ``check`` prints about storage: volume per day, sizes, retention, next expiry."""
    settings = site.settings
    params = sum(len(plan.param_ids) for plan in site.plans if plan.profile is not None)
    rows_per_day = params * 86_400 / settings.sample_time
    q15_per_day = params * 96
    lines = [f"storage: {rows_per_day:,.0f} raw rows/day ({len(site.plans)} devices, {params} params every"
             f" {settings.sample_time:g} s), {q15_per_day:,} rollup rows/day"]
    storage = settings.storage
    today = now_utc().date()
    for label, days in (("raw", storage.raw_keep_days), ("rollups", storage.rollup_keep_days)):
        if days is None:
            lines.append(f"  retention {label}: keep everything (storage.{label.rstrip('s')}_keep_days not set)")
        else:
            first = horizon(today, days)
            lines.append(f"  retention {label}: {days} days; rows before {first} expire; next expiry at"
                         f" {today + timedelta(days=1)} 00:00 UTC (the service checks hourly)")
    target = settings.database_target()
    if target.kind == "sqlite" and not target.path.exists():  # check is read-only: never create the file
        lines.append("  sizes: no database file yet")
        return lines
    sink = create_sink(target, settings.job_id, rollups=False)
    try:
        await sink.open()
        lines += await sink.session("storage figures", lambda session: _sizes(session, site, rows_per_day))
    except SinkError as exc:
        lines.append(f"  sizes: unavailable ({exc})")
    finally:
        await sink.close()
    return lines


async def _sizes(session: Session, site: Site, rows_per_day: float) -> list[str]:
    job = site.settings.job_id
    if session.dialect != "mariadb":
        ((pages,),), ((page_size,),) = await session.fetch("PRAGMA page_count"), await session.fetch("PRAGMA page_size")
        return [f"  database file: {pages * page_size / 1e6:,.1f} MB (SQLite, all tables)"]
    partitions = [p for p in await partitions_of(session, f"see{job}Raw") if p.below is not None]
    per_sample = COMPACT_BYTES_PER_SAMPLE if partitions else TODAY_BYTES_PER_SAMPLE
    shape = (f"compact, {len(partitions)} day partition{'s' if len(partitions) != 1 else ''}" if partitions
             else "not compact (susee migrate --compact converts it)")
    lines = [f"  Raw layout: {shape}; ~{per_sample} bytes/sample measured: ~{rows_per_day * per_sample / 1e9:,.2f}"
             " GB/day at this configuration"]
    for table in (f"see{job}Raw", f"see{job}Q15"):
        ((rows,),) = await session.fetch(
            "SELECT COALESCE(SUM(TABLE_ROWS), 0) FROM information_schema.PARTITIONS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,))
        allocated = await _allocated(session, table)
        size = f"{allocated / 1e6:,.1f} MB on disk" if allocated is not None else "size on disk needs the PROCESS privilege"
        lines.append(f"  {table}: about {int(rows):,} rows, {size}")
    return lines


async def _allocated(session: Session, table: str) -> int | None:
    """Bytes the table's files occupy (compressed pages count as what they take), every partition."""
    ((database,),) = await session.fetch("SELECT DATABASE()")
    name = f"{database}/{table}"
    try:
        ((allocated,),) = await session.fetch(
            "SELECT COALESCE(SUM(ALLOCATED_SIZE), 0) FROM information_schema.INNODB_SYS_TABLESPACES"
            " WHERE NAME = %s OR LEFT(NAME, %s) = %s", (name, len(name) + 3, name + "#P#"))
    except Exception as exc:  # noqa: BLE001 - a missing privilege must not hide the other figures
        if exc.args[:1] != (1227,):  # ER_SPECIFIC_ACCESS_DENIED_ERROR
            raise
        return None
    return int(allocated)
