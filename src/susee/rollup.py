"""15-minute rollups: ``see<job>Q15`` recomputed from Raw, bucket by bucket.

How the rollups stay equal to Raw (late rows, replays, duplicates, crashes):

- Every write transaction of a sink upserts the 15-minute buckets its rows
  fall in into ``see<job>Q15Dirty`` (``Version = Version + 1``), in the same
  transaction as the rows: a committed row always leaves its bucket marked.
- :func:`refresh_bucket` reads a marker's Version, recomputes the bucket from
  Raw (a ``SELECT ... GROUP BY`` with window functions, upserted by
  (idDevice, idParam, Bucket), so a recomputation is idempotent) and
  deletes the marker only if its Version is unchanged, all in one
  transaction. A write that committed after the recompute's snapshot bumped
  the Version, so the marker stays and the bucket is done again. On MariaDB
  the recompute reads at READ COMMITTED (a consistent read: it takes no lock
  on Raw, writers never wait for it).
- A crash anywhere leaves the marker: the next start recomputes the bucket.
- A bucket entirely before the Raw retention horizon is never overwritten:
  only keys with no Q15 row yet are added, so a late row
  arriving for an expired day cannot shrink the rollup of that day.

The open bucket (still being written) is recomputed every
``storage.rollup_open_every`` seconds so that recent figures show up; a
closed bucket once, when its marker stops moving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol, TypeVar

from susee.migrations import check_job_id

log = logging.getLogger(__name__)
T = TypeVar("T")

BUCKET_S = 900  # the European metering and settlement interval
BUCKET = timedelta(seconds=BUCKET_S)
EPOCH = datetime(1970, 1, 1)
# ``recompute_range`` recomputes a bucket a transaction (a Q15 statement each:
# an hour of 1,000 meters at 10 s, 2.9 M rows, in one statement overflows the
# session's in-memory temporary table and sort buffer and runs 2-3 times
# slower than its four buckets, bench/README.md), then each hour's Q60 rows
# once its buckets are done.
HOUR = timedelta(hours=1)
# A bucket estimated to hold more raw rows than this is recomputed in time
# slices, a statement each, combined exactly into its Q15 rows: a statement
# over 480,000 rows sorts in memory (1.2 s), one over 1.4 M spills to disk
# and takes 4.5 times as long (a bucket of 1,000 meters at 1 s is 7.2 M rows,
# bench/README.md). The estimate (the optimizer's) can be twice off either way.
SLICE_ROWS = 300_000
SLICE_SECONDS = tuple(s for s in range(BUCKET_S, 0, -1) if BUCKET_S % s == 0)  # 900, 450, 300, ... 1

# MaxValue is a reserved word of MariaDB (MAXVALUE): always quoted.
Q15_NAMES = (
    "idDevice", "idParam", "Bucket", "Samples", "Good", "MinValue", "MaxValue", "MeanValue", "FirstDate",
    "FirstValue", "LastDate", "LastValue", "Rise", "Fall", "Drops", "MaxRise", "Codes",
)


class Session(Protocol):
    """One open connection of a sink (see ``Sink.session``)."""

    dialect: str  # "mariadb" or "sqlite"
    placeholder: str

    async def fetch(self, sql: str, params: Sequence[object] | None = None) -> list[tuple]: ...

    async def execute(self, sql: str, params: Sequence[object] | None = None) -> int: ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    async def begin(self) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


# Session settings for the recomputing connection (MariaDB): a consistent
# read without locks, so the recompute never blocks the writer; and room to
# sort and group a bucket in memory: with the server's defaults (16 MB temp
# tables, 2 MB sort buffer) the window sort spills to disk and the rollup is
# 2.5 times slower (bench/README.md).
MARIADB_SESSION = (
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION tmp_table_size = 268435456, max_heap_table_size = 268435456, sort_buffer_size = 67108864",
)


# A sink's ``session``: runs ``work`` alone on its connection under an action name.
Runner = Callable[[str, Callable[[Session], Awaitable[object]]], Awaitable[object]]


async def prepare_session(session: Session) -> None:
    """Ready a session for recomputing (see ``MARIADB_SESSION``)."""
    if session.dialect == "mariadb":
        for statement in MARIADB_SESSION:
            await session.execute(statement)


def bucket_of(moment: datetime) -> datetime:
    """The start of the 15-minute UTC bucket holding ``moment`` (naive UTC)."""
    seconds = (moment - EPOCH) // timedelta(seconds=1)
    return EPOCH + timedelta(seconds=seconds // BUCKET_S * BUCKET_S)


def bucket_of_tick(tick_s: float) -> int:
    """The bucket of a tick, as seconds since the epoch."""
    return int(tick_s // BUCKET_S) * BUCKET_S


def bucket_text(bucket_s: int) -> str:
    """``'2026-12-04 13:45:00'``: a bucket as both dialects store it."""
    return (EPOCH + timedelta(seconds=bucket_s)).strftime("%Y-%m-%d %H:%M:%S")


def epoch_s(moment: datetime) -> float:
    """A naive UTC datetime (as Date and Bucket are compared in) as epoch seconds."""
    return (moment - EPOCH).total_seconds()


def as_datetime(value: object) -> datetime:
    """A Bucket or Date as read back (datetime on MariaDB, text on SQLite)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    text = str(value)
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class Tables:
    """The job's table names, quoted for the dialect."""

    raw: str
    q15: str
    dirty: str
    q60: str = ""
    day_dirty: str = ""  # buckets whose days the daily rollups must rebuild (susee.report.daykeeper)
    slices: str = ""  # a session's temporary table of a bucket's slices (MariaDB, ``Rollups._recompute_part``)

    @classmethod
    def of(cls, job_id: str, dialect: str) -> Tables:
        check_job_id(job_id)
        quote = "`" if dialect == "mariadb" else '"'
        suffixes = ("Raw", "Q15", "Q15Dirty", "Q60", "DayDirty", "Q15Slices")
        return cls(*(f"{quote}see{job_id}{suffix}{quote}" for suffix in suffixes))


def mark_sql(dialect: str, dirty: str, buckets: int) -> str:
    """The marker upsert a sink runs in its write transaction for ``buckets`` buckets."""
    mark = "%s" if dialect == "mariadb" else "?"
    values = ", ".join([f"({mark}, 1)"] * buckets)
    if dialect == "mariadb":
        return f"INSERT INTO {dirty} (Bucket, Version) VALUES {values} ON DUPLICATE KEY UPDATE Version = Version + 1"
    return f"INSERT INTO {dirty} (Bucket, Version) VALUES {values} ON CONFLICT (Bucket) DO UPDATE SET Version = Version + 1"


def select_sql(dialect: str, tables: Tables, slice_s: int = BUCKET_S) -> str:
    """SELECT of the Q15 rows of Raw rows with ``from <= Date < to`` (two parameters), in Q15's column order.

    ``slice_s`` (MariaDB): rows per slice of that many seconds instead of per
    bucket, in Q15's columns, Bucket being the slice's start (``slices_sql``
    combines them).

    Rise, Fall, Drops and MaxRise come from the difference of each good value
    to the previous good value of its key and bucket (LAG over the good rows
    alone: the window is partitioned by ``gv IS NULL``); FirstValue is the
    good value with no previous one. LastValue is the Value of the row at
    LastDate, read by its unique key (Date, idDevice, idParam are unique in
    every Raw layout): one lookup per Q15 row instead of a LEAD over every
    raw row, about 30 % faster (bench/README.md). FIRST_VALUE and LAST_VALUE
    with their frames cost more still.
    """
    mark = "%s" if dialect == "mariadb" else "?"
    if dialect == "mariadb":
        # The bucket as a number (quarter hours since the epoch) while sorting and
        # grouping, a DATETIME only in the output: 30 % faster (bench/README.md).
        bucket = "TIMESTAMPDIFF(MINUTE, '1970-01-01', `Date`) DIV 15"
        bucket_out = "TIMESTAMPADD(MINUTE, Bucket * 15, '1970-01-01')"
        if slice_s != BUCKET_S:
            bucket = f"TIMESTAMPDIFF(SECOND, '1970-01-01', `Date`) DIV {int(slice_s)}"
            bucket_out = f"TIMESTAMPADD(SECOND, Bucket * {int(slice_s)}, '1970-01-01')"
        rise, fall, codes, date = "GREATEST(diff, 0)", "GREATEST(-diff, 0)", "BIT_OR(Code)", "`Date`"
    else:
        bucket = "substr(Date, 1, 14) || printf('%02d', CAST(substr(Date, 15, 2) AS INTEGER) / 15 * 15) || ':00'"
        bucket_out = "Bucket"
        rise, fall, codes, date = "MAX(diff, 0)", "MAX(-diff, 0)", "bit_or(Code)", "Date"
    # One window, one sort: the first good row of a key and bucket is the one
    # with no previous good value.
    window = f"PARTITION BY idDevice, idParam, Bucket, gv IS NULL ORDER BY {date}"
    # Aliases unlike Q15's column names: the upsert's VALUES(...) must not see them.
    select = f"""
SELECT idDevice, idParam, {bucket_out}, n, n_good, lo, hi, mean, first_date, first_value,
    last_date, (SELECT Value FROM {tables.raw} AS v
                WHERE v.{date} = q.last_date AND v.idDevice = q.idDevice AND v.idParam = q.idParam),
    rise, fall, drops, max_rise, codes
FROM (
SELECT idDevice, idParam, Bucket, COUNT(*) AS n, COUNT(gv) AS n_good, MIN(gv) AS lo, MAX(gv) AS hi, AVG(gv) AS mean,
    MIN(gd) AS first_date, MAX(CASE WHEN prev IS NULL THEN gv END) AS first_value, MAX(gd) AS last_date,
    CASE WHEN COUNT(gv) > 0 THEN COALESCE(SUM({rise}), 0) END AS rise,
    CASE WHEN COUNT(gv) > 0 THEN COALESCE(SUM({fall}), 0) END AS fall,
    COALESCE(SUM(diff < 0), 0) AS drops, MAX(CASE WHEN diff > 0 THEN diff END) AS max_rise, {codes} AS codes
FROM (
    SELECT idDevice, idParam, Bucket, Code, gv, CASE WHEN gv IS NOT NULL THEN {date} END AS gd, prev,
        gv - prev AS diff
    FROM (
        SELECT idDevice, idParam, Bucket, {date}, Code, gv, LAG(gv) OVER ({window}) AS prev
        FROM (
            SELECT idDevice, idParam, {bucket} AS Bucket, {date}, Code, CASE WHEN Code = 0 THEN Value END AS gv
            FROM {tables.raw} WHERE {date} >= {mark} AND {date} < {mark}
        ) AS r
    ) AS l
) AS w
GROUP BY idDevice, idParam, Bucket
) AS q"""
    return select


def _columns(dialect: str) -> list[str]:
    quote = "`" if dialect == "mariadb" else '"'
    return [f"{quote}{name}{quote}" for name in Q15_NAMES]


def recompute_sql(tables: Tables, keep_existing: bool) -> str:
    """MariaDB: INSERT ... SELECT of the Q15 rows of a Date range, the server moves the rows.

    ``keep_existing``: only keys with no Q15 row are added (an upsert that
    changes nothing, not INSERT IGNORE, which would turn every other error
    into a warning too).
    """
    return _mariadb_upsert(tables.q15, select_sql("mariadb", tables), keep_existing)


def _mariadb_upsert(table: str, select: str, keep_existing: bool = False) -> str:
    """MariaDB: INSERT ... SELECT of rows in Q15's columns into ``table`` (Q15 or Q60), by key."""
    names = _columns("mariadb")
    head = f"INSERT INTO {table} ({', '.join(names)}){select}\nON DUPLICATE KEY UPDATE "
    if keep_existing:
        return head + f"{table}.idDevice = {table}.idDevice"  # qualified: the SELECT has an idDevice too
    return head + ", ".join(f"{column} = VALUES({column})" for column in names[3:])


def values_sql(tables: Tables, keep_existing: bool) -> str:
    """SQLite: INSERT of one computed Q15 row (17 parameters), see ``Rollups.stage``."""
    names = _columns("sqlite")
    head = (f"INSERT {'OR IGNORE ' if keep_existing else ''}INTO {tables.q15} ({', '.join(names)})"
            f" VALUES ({', '.join(['?'] * len(names))})")
    if keep_existing:
        return head
    updates = ", ".join(f"{column} = excluded.{column}" for column in names[3:])
    return f"{head} ON CONFLICT (idDevice, idParam, Bucket) DO UPDATE SET {updates}"


def hourly_sql(dialect: str, tables: Tables) -> str:
    """Upsert Q60 from the Q15 rows with ``from <= Bucket < to`` (hour-aligned, two parameters)."""
    if dialect == "mariadb":
        return _mariadb_upsert(tables.q60, combine_sql(dialect, tables.q15, "TIMESTAMPDIFF(HOUR, '1970-01-01', Bucket)",
                                                       "TIMESTAMPADD(HOUR, Span, '1970-01-01')"))
    names = _columns(dialect)
    select = combine_sql(dialect, tables.q15, "substr(Bucket, 1, 13) || ':00:00'", "Span")
    updates = ", ".join(f"{column} = excluded.{column}" for column in names[3:])
    return (f"INSERT INTO {tables.q60} ({', '.join(names)}) SELECT * FROM ({select}) WHERE true\n"
            f"ON CONFLICT (idDevice, idParam, Bucket) DO UPDATE SET {updates}")


def slices_sql(tables: Tables, keep_existing: bool) -> str:
    """MariaDB: upsert Q15 from a bucket's slices (``tables.slices``, rows with ``from <= Bucket < to``)."""
    select = combine_sql("mariadb", tables.slices, "TIMESTAMPDIFF(MINUTE, '1970-01-01', Bucket) DIV 15",
                         "TIMESTAMPADD(MINUTE, Span * 15, '1970-01-01')")
    return _mariadb_upsert(tables.q15, select, keep_existing)


def combine_sql(dialect: str, source: str, span: str, span_out: str) -> str:
    """SELECT combining consecutive rows of Q15's columns (``source``, ``from <= Bucket < to``) per ``span``.

    Exact, not an approximation: the consecutive good readings of a span are
    those inside each of its rows (their Rise, Fall, Drops, MaxRise) plus,
    between two rows with good readings, the last of one and the first of
    the next (``step``, from LAG over the rows with Good > 0). Q60 is made
    so from Q15 (``span``: the hour of Bucket), and a sliced bucket's Q15
    rows from its slices (``span``: the bucket).
    """
    mark = "%s" if dialect == "mariadb" else "?"
    maximum = "MAX" if dialect == "sqlite" else "GREATEST"
    codes, max_value = ("BIT_OR(Codes)", "`MaxValue`") if dialect == "mariadb" else ("bit_or(Codes)", "MaxValue")
    window = f"PARTITION BY idDevice, idParam, {span}, Good > 0 ORDER BY Bucket"
    return f"""
SELECT idDevice, idParam, {span_out}, SUM(Samples), SUM(Good), MIN(MinValue), MAX({max_value}),
    SUM(MeanValue * Good) / SUM(CASE WHEN Good > 0 THEN Good END),
    MIN(FirstDate), MAX(CASE WHEN Good > 0 AND prev IS NULL THEN FirstValue END),
    MAX(LastDate), MAX(CASE WHEN Good > 0 AND nxt IS NULL THEN LastValue END),
    CASE WHEN SUM(Good) > 0 THEN COALESCE(SUM(Rise), 0) + COALESCE(SUM({maximum}(step, 0)), 0) END,
    CASE WHEN SUM(Good) > 0 THEN COALESCE(SUM(Fall), 0) + COALESCE(SUM({maximum}(-step, 0)), 0) END,
    SUM(Drops) + COALESCE(SUM(step < 0), 0),
    NULLIF({maximum}(COALESCE(MAX(MaxRise), 0), COALESCE(MAX(CASE WHEN step > 0 THEN step END), 0)), 0),
    {codes}
FROM (
    SELECT idDevice, idParam, Span, Samples, Good, MinValue, {max_value}, MeanValue, FirstDate, FirstValue,
        LastDate, LastValue, Rise, Fall, Drops, MaxRise, Codes, prev, nxt,
        CASE WHEN Good > 0 THEN FirstValue - prev END AS step
    FROM (
        SELECT q.*, {span} AS Span,
            LAG(LastValue) OVER ({window}) AS prev,
            LEAD(FirstValue) OVER ({window}) AS nxt
        FROM {source} AS q WHERE Bucket >= {mark} AND Bucket < {mark}
    ) AS l
) AS w
GROUP BY idDevice, idParam, Span"""


def slice_seconds(estimated_rows: int) -> int:
    """The length of the slices of a bucket of ``estimated_rows`` raw rows: the longest that divides the
    bucket into slices of at most ``SLICE_ROWS`` (the whole bucket, 900 s, when it holds no more)."""
    wanted = -(-max(estimated_rows, 1) // SLICE_ROWS)
    return next((seconds for seconds in SLICE_SECONDS if BUCKET_S // seconds >= wanted), 1)


class Rollups:
    """Recomputes Q15 buckets of one job on one session.

    On MariaDB one ``INSERT ... SELECT`` per bucket (or per slice of a bucket
    with many rows, then one combining them: ``SLICE_ROWS``), at READ
    COMMITTED: it locks nothing in Raw, so the writer never waits. On SQLite the rows are
    computed first (``stage``: a read, which in WAL mode never blocks the
    writer) and written in a short transaction: a write transaction around
    the whole computation would hold SQLite's single write lock for seconds.
    """

    def __init__(self, job_id: str, dialect: str, mark_days: bool = False) -> None:
        """``mark_days``: each recomputed bucket is also marked for the daily rollups (the service
        keeps them), in the recomputation's transaction, so a stop or crash never loses one."""
        self.dialect = dialect
        self.tables = Tables.of(job_id, dialect)
        mark = "%s" if dialect == "mariadb" else "?"
        if dialect == "mariadb":
            self._write = {keep: recompute_sql(self.tables, keep) for keep in (False, True)}
            self._combine = {keep: slices_sql(self.tables, keep) for keep in (False, True)}
            self._estimate = f"EXPLAIN SELECT 1 FROM {self.tables.raw} WHERE `Date` >= %s AND `Date` < %s"
            self._new_slices = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.tables.slices} LIKE {self.tables.q15}",
                                f"DELETE FROM {self.tables.slices}")
        else:
            self._select = select_sql(dialect, self.tables)
            self._write = {keep: values_sql(self.tables, keep) for keep in (False, True)}
        self._hourly = hourly_sql(dialect, self.tables)
        self._dirty = f"SELECT Bucket, Version FROM {self.tables.dirty} ORDER BY Bucket"
        self._clear = f"DELETE FROM {self.tables.dirty} WHERE Bucket = {mark} AND Version = {mark}"
        self._mark_day = mark_sql(dialect, self.tables.day_dirty, 1) if mark_days else None

    async def dirty(self, session: Session) -> list[tuple[datetime, int]]:
        """Buckets due, oldest first, with their marker Version."""
        return [(as_datetime(bucket), int(version)) for bucket, version in await session.fetch(self._dirty)]

    async def stage(self, session: Session, start: datetime, end: datetime,
                    horizon: datetime | None) -> list[tuple[bool, tuple, list[tuple]]]:
        """The parts of ``[start, end)``: (keep existing rows?, bounds, computed rows on SQLite).

        Buckets before ``horizon`` (the Raw retention horizon) only gain keys they lack.
        """
        parts = []
        if horizon is not None and start < horizon:
            split = min(end, horizon)
            parts.append((True, (_text(start), _text(split))))
            start = split
        if start < end:
            parts.append((False, (_text(start), _text(end))))
        if self.dialect == "mariadb":
            return [(keep, bounds, []) for keep, bounds in parts]
        return [(keep, bounds, await session.fetch(self._select, bounds)) for keep, bounds in parts]

    async def write(self, session: Session, staged: list[tuple[bool, tuple, list[tuple]]]) -> None:
        """Write staged parts into Q15, then the hours they touch into Q60 (the caller's transaction)."""
        await self._write_q15(session, staged)
        if staged:
            first, last = as_datetime(staged[0][1][0]), as_datetime(staged[-1][1][1])
            await self.write_hours(session, hour_of(first), hour_of(last - timedelta(microseconds=1)) + HOUR)

    async def write_hours(self, session: Session, start: datetime, end: datetime) -> None:
        """Upsert the Q60 rows of the hours ``[start, end)`` from their Q15 rows (the caller's transaction)."""
        await session.execute(self._hourly, (_text(start), _text(end)))

    async def refresh_bucket(self, session: Session, bucket: datetime, version: int, horizon: datetime | None) -> bool:
        """Recompute one marked bucket; True if its marker was cleared (no write meanwhile)."""
        staged = await self.stage(session, bucket, bucket + BUCKET, horizon)

        async def work() -> bool:
            await self.write(session, staged)
            cleared = await session.execute(self._clear, (_text(bucket), version)) == 1
            if self._mark_day is not None:
                await session.execute(self._mark_day, (_text(bucket),))
            return cleared

        return await self._in_transaction(session, work)

    async def recompute_bucket(self, session: Session, bucket: datetime, horizon: datetime | None) -> None:
        """Recompute one bucket's Q15 rows, in a transaction of its own (Q60 is the caller's: ``write_hours``)."""
        staged = await self.stage(session, bucket, bucket + BUCKET, horizon)
        await self._in_transaction(session, lambda: self._write_q15(session, staged))

    async def recompute_hour(self, session: Session, hour: datetime) -> None:
        """Recompute one hour's Q60 rows from its Q15 rows, in a transaction of its own."""
        await self._in_transaction(session, lambda: self.write_hours(session, hour, hour + HOUR))

    async def recompute_range(self, runners: Sequence[Runner], start: datetime, end: datetime,
                              horizon: datetime | None, progress: Callable[[int], object] | None = None) -> None:
        """Recompute ``[start, end)``, widened to whole buckets, a bucket at a time on whichever runner is free.

        A runner is a sink's ``session``: one connection each, so MariaDB works
        on as many cores as runners, whatever the length of the range (an
        hour's four buckets run side by side too). Buckets are independent and
        idempotent; the runner that commits an hour's last bucket then makes
        that hour's Q60 rows from its committed Q15 rows, so no two statements
        race on a Q60 row. The first failure stops every runner after its
        bucket in flight (and that bucket's hour, if it was the hour's last)
        and is raised (its message names the range);
        buckets done stay done, and an hour whose Q60 was not made yet is
        made by running the range again (recomputing is idempotent).
        """
        buckets = bucket_steps(start, end)
        left = Counter(hour_of(bucket) for bucket in buckets)  # buckets of each hour not committed yet
        queue = iter(buckets)  # shared: each bucket is taken once
        failed = False

        async def work(run: Runner) -> None:
            nonlocal failed
            await run("rollup session", prepare_session)
            for bucket in queue:
                if failed:
                    return
                hour = hour_of(bucket)
                try:
                    await run(f"rollup of {_text(bucket)} to {_text(bucket + BUCKET)}",
                              functools.partial(self.recompute_bucket, bucket=bucket, horizon=horizon))
                    left[hour] -= 1
                    if left[hour] == 0:  # the hour's other buckets have committed: its Q60 sees them all
                        await run(f"hourly rollup of {_text(hour)} to {_text(hour + HOUR)}",
                                  functools.partial(self.recompute_hour, hour=hour))
                except BaseException:
                    failed = True
                    raise
                if progress is not None:
                    progress(1)

        results = await asyncio.gather(*(work(run) for run in runners), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _write_q15(self, session: Session, staged: list[tuple[bool, tuple, list[tuple]]]) -> None:
        for keep, bounds, rows in staged:
            if self.dialect == "mariadb":
                await self._recompute_part(session, keep, bounds)
            elif rows:
                await session.execute_many(self._write[keep], rows)

    async def _recompute_part(self, session: Session, keep: bool, bounds: tuple[str, str]) -> None:
        """MariaDB: the Q15 rows of ``bounds`` in one statement, or slice by slice when its rows are many."""
        slice_s = slice_seconds(await self._estimated_rows(session, bounds))
        if slice_s == BUCKET_S:
            await session.execute(self._write[keep], bounds)
            return
        for statement in self._new_slices:  # a temporary table: the session's own, no implicit commit
            await session.execute(statement)
        columns = ", ".join(_columns("mariadb"))
        insert = f"INSERT INTO {self.tables.slices} ({columns}){select_sql('mariadb', self.tables, slice_s)}"
        start, end = as_datetime(bounds[0]), as_datetime(bounds[1])
        while start < end:
            step_end = min(end, start + timedelta(seconds=slice_s))
            await session.execute(insert, (_text(start), _text(step_end)))
            start = step_end
        await session.execute(self._combine[keep], bounds)

    async def _estimated_rows(self, session: Session, bounds: tuple[str, str]) -> int:
        """The optimizer's estimate of the Raw rows in ``bounds`` (index dives: milliseconds; 0 if it has none)."""
        plan = await session.fetch(self._estimate, bounds)
        try:
            return int(plan[0][8])  # EXPLAIN's "rows" column (text)
        except (IndexError, TypeError, ValueError):  # no plan ("Impossible WHERE"): no slices
            return 0

    @staticmethod
    async def _in_transaction(session: Session, work: Callable[[], Awaitable[T]]) -> T:
        await session.begin()
        try:
            result = await work()
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        return result


def bucket_steps(start: datetime, end: datetime) -> list[datetime]:
    """The buckets of ``[start, end)`` widened to whole buckets, oldest first."""
    bucket, last = bucket_of(start), bucket_of(end - timedelta(microseconds=1))
    steps = []
    while bucket <= last:
        steps.append(bucket)
        bucket += BUCKET
    return steps


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding ``moment`` (naive UTC)."""
    return moment.replace(minute=0, second=0, microsecond=0)


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def now_utc() -> datetime:
    """Naive UTC now, the form Date and Bucket are compared in."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
