"""Expiry of old samples and rollups (``storage.raw_keep_days``, ``rollup_keep_days``).

susee deletes nothing unless told. With a retention set, data is removed by
whole UTC days: the horizon is midnight ``keep_days`` days before today, and
every row dated before it goes. A partitioned Raw (the compact MariaDB
layout) loses whole day partitions, in milliseconds whatever their size;
any other table (SQLite, a Raw of today's or the seed's layout, the rollups)
is cleared by DELETEs of ``CHUNK_ROWS`` rows, each its own transaction, so
the writer never waits long for a lock.

Raw is never expired past a bucket whose rollup is still due (a marker in
Q15Dirty): the rollup is computed from the rows first.
A late row older than the horizon (a spool replayed after a long outage) is
still written: on a partitioned Raw it lands in the oldest partition kept,
and the next expiry removes it with that day, logged like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from susee.partitions import drop_expired, partitions_of
from susee.rollup import Session, Tables

log = logging.getLogger(__name__)

# Rows per DELETE: a few hundred milliseconds of work on the server, so the
# writer's transactions never queue behind one for long.
CHUNK_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class Expiry:
    """What one expiry removed."""

    table: str
    horizon: date
    rows: int
    partitions: tuple[str, ...] = ()


def horizon(today: date, keep_days: int | None) -> date | None:
    """The first day kept, or None when everything is kept."""
    return None if keep_days is None else today - timedelta(days=keep_days)


async def expire_raw(session: Session, job_id: str, keep_from: date, oldest_due: datetime | None) -> Expiry | None:
    """Remove Raw rows before ``keep_from``, never past ``oldest_due`` (a bucket still to roll up)."""
    if oldest_due is not None and oldest_due.date() < keep_from:
        log.info("see%sRaw: expiry held at %s, rollups of %s onwards are still due", job_id, oldest_due.date(), oldest_due)
        keep_from = oldest_due.date()
    table = f"see{job_id}Raw"
    if session.dialect == "mariadb" and await partitions_of(session, table):
        gone = await drop_expired(session, table, keep_from)
        if not gone:
            return None
        return Expiry(table, keep_from, sum(p.rows for p in gone), tuple(p.name for p in gone))
    return await _delete_before(session, Tables.of(job_id, session.dialect).raw, table, "Date", keep_from)


async def expire_rollups(session: Session, job_id: str, keep_from: date) -> Expiry | None:
    """Remove Q15 and Q60 rows of buckets before ``keep_from``; the Q15 expiry is returned."""
    tables = Tables.of(job_id, session.dialect)
    await _delete_before(session, tables.q60, f"see{job_id}Q60", "Bucket", keep_from)
    return await _delete_before(session, tables.q15, f"see{job_id}Q15", "Bucket", keep_from)


async def _delete_before(session: Session, quoted: str, table: str, column: str, keep_from: date) -> Expiry | None:
    limit = f"{session.placeholder}"
    if session.dialect == "mariadb":
        sql = f"DELETE FROM {quoted} WHERE `{column}` < {limit} LIMIT {CHUNK_ROWS}"
    else:
        sql = (f"DELETE FROM {quoted} WHERE rowid IN"
               f" (SELECT rowid FROM {quoted} WHERE {column} < {limit} LIMIT {CHUNK_ROWS})")
    bound = f"{keep_from:%Y-%m-%d} 00:00:00"
    removed = 0
    while True:
        await session.begin()
        try:
            count = await session.execute(sql, (bound,))
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        removed += count
        if count < CHUNK_ROWS:
            break
    if removed:
        log.info("%s: expired %d rows dated before %s", table, removed, keep_from)
        return Expiry(table, keep_from, removed)
    return None
