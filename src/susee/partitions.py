"""Day partitions of a compact MariaDB Raw: made ahead, dropped when expired.

The compact Raw (migration 0004) is ``PARTITION BY RANGE (TO_DAYS(Date))``:
partition ``pYYYYMMDD`` holds that day (the lowest one also every older day)
and ``pmax`` everything after the last day partition. The service splits new
days off ``pmax`` ahead of time (``storage.partitions_ahead_days``), so rows
land in their day's partition; if it did not (the service was stopped for
longer), rows still go into ``pmax`` and move into their day when it is made:
an insert never fails for want of a partition.

Day partitions, not month partitions: retention then removes data to the day
(a month partition would keep up to 30 days more than ``raw_keep_days``), and
bench/storage.py measured no size difference per sample (the per-partition
overhead is a few hundred kB, a few seconds of a 1,000-meter site).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

from susee.rollup import Session

log = logging.getLogger(__name__)

# TO_DAYS('2000-01-01') = 730485; date(2000, 1, 1).toordinal() = 730120.
TO_DAYS_OFFSET = 365
CATCH_ALL = "pmax"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its name and its exclusive upper bound (a day), None for MAXVALUE."""

    name: str
    below: date | None
    rows: int = 0  # the server's estimate

    @property
    def last_day(self) -> date | None:
        return None if self.below is None else self.below - timedelta(days=1)


def to_days(day: date) -> int:
    """MariaDB's TO_DAYS(day)."""
    return day.toordinal() + TO_DAYS_OFFSET


def from_days(number: int) -> date:
    return date.fromordinal(number - TO_DAYS_OFFSET)


def partition_name(day: date) -> str:
    return f"p{day:%Y%m%d}"


def days_to_add(partitions: list[Partition], today: date, ahead_days: int) -> list[date]:
    """Days that need a partition of their own so that today + ``ahead_days`` has one."""
    bounded = [p.below for p in partitions if p.below is not None]
    first = max(bounded) if bounded else today
    last = today + timedelta(days=ahead_days)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def expired(partitions: list[Partition], horizon: date) -> list[Partition]:
    """Day partitions holding only days before ``horizon`` (never ``pmax``)."""
    return [p for p in partitions if p.below is not None and p.below <= horizon]


def split_sql(raw: str, days: list[date]) -> str:
    """Split the new ``days`` off ``pmax`` (cheap while pmax is empty, as it is when made ahead)."""
    parts = ", ".join(
        f"PARTITION {partition_name(day)} VALUES LESS THAN ({to_days(day + timedelta(days=1))})" for day in days
    )
    return (f"ALTER TABLE `{raw}` REORGANIZE PARTITION {CATCH_ALL} INTO"
            f" ({parts}, PARTITION {CATCH_ALL} VALUES LESS THAN MAXVALUE)")


async def partitions_of(session: Session, table: str) -> list[Partition]:
    """The partitions of ``table`` in order; empty if it is not partitioned."""
    rows = await session.fetch(
        "SELECT PARTITION_NAME, PARTITION_DESCRIPTION, TABLE_ROWS FROM information_schema.PARTITIONS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND PARTITION_NAME IS NOT NULL"
        " ORDER BY PARTITION_ORDINAL_POSITION",
        (table,),
    )
    return [
        Partition(name, None if description == "MAXVALUE" else from_days(int(description)), int(rows or 0))
        for name, description, rows in rows
    ]


async def make_ahead(session: Session, table: str, today: date, ahead_days: int) -> list[date]:
    """Create the missing day partitions up to today + ``ahead_days``; return the days made."""
    partitions = await partitions_of(session, table)
    if not partitions:
        return []
    days = days_to_add(partitions, today, ahead_days)
    if days:
        await session.execute(split_sql(table, days))
        log.info("%s: made day partitions %s to %s", table, days[0], days[-1])
    return days


async def drop_expired(session: Session, table: str, horizon: date) -> list[Partition]:
    """Drop the day partitions entirely before ``horizon``; each logged with what it held."""
    gone = expired(await partitions_of(session, table), horizon)
    if gone:
        await session.execute(f"ALTER TABLE `{table}` DROP PARTITION {', '.join(p.name for p in gone)}")
        for partition in gone:
            log.info("%s: expired partition %s (days before %s, about %d rows) dropped",
                     table, partition.name, partition.below, partition.rows)
    return gone
