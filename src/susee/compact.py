"""``susee migrate --compact``: convert a Raw of today's or the seed's layout, while the service runs.

1. **copy**: a compact, day-partitioned ``see<job>RawCompact`` is filled from
   Raw in ranges of ``idNum`` (one transaction each, the position saved in
   ``see<job>CompactCopy`` in the same transaction, so an interrupted copy
   resumes where it stopped). The service keeps writing into Raw meanwhile.
2. **switch**: ``RENAME TABLE Raw TO RawBeforeCompact, RawCompact TO Raw``,
   atomic; it waits for the writer's transaction in progress, and the
   writer's next batch goes into the compact Raw.
3. **sweep**: every row of RawBeforeCompact missing from Raw is copied
   (rows committed during the copy with an ``idNum`` below its position,
   and rows written just before the switch), then every row is compared
   column by column. Only when none is missing or different is the old table
   dropped; otherwise it is kept and the command says so.

Rows are copied with ``INSERT ... SELECT``: the server moves the values, a
DOUBLE stays the same 8 bytes, nothing passes through Python. A row present
in both tables (a batch replayed twice) is kept once: the key is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta

from susee.migrations import check_job_id
from susee.partitions import from_days, partition_name, to_days
from susee.rollup import Session, prepare_session

log = logging.getLogger(__name__)

CHUNK_IDS = 50_000  # idNum values per transaction: a second or so of server work
MAX_DAY_PARTITIONS = 2_000  # older days share the first partition (MariaDB allows 8,192 partitions)
COLUMNS = "idDevice, `Date`, idParam, Value, Delay, Code"
SAME_KEY = "n.`Date` = o.`Date` AND n.idDevice = o.idDevice AND n.idParam = o.idParam"

Progress = Callable[[int], None]  # rows (idNum values) done since the last call


def compact_ddl(table: str, first_day: date, today: date, ahead_days: int) -> str:
    """The compact layout (as migration 0004 makes it), with day partitions from ``first_day``."""
    first_day = max(first_day, today - timedelta(days=MAX_DAY_PARTITIONS))
    days = [first_day + timedelta(days=n) for n in range((today - first_day).days + ahead_days + 1)]
    parts = ", ".join(
        f"PARTITION {partition_name(day)} VALUES LESS THAN ({to_days(day + timedelta(days=1))})" for day in days
    )
    return (
        f"CREATE TABLE `{table}` ("
        " idNum BIGINT UNSIGNED AS (TIMESTAMPDIFF(MICROSECOND, '1970-01-01', `Date`)) VIRTUAL,"
        " idDevice VARCHAR(20) NOT NULL, `Date` DATETIME(6) NOT NULL, idParam VARCHAR(20) NOT NULL,"
        " Value DOUBLE NULL, Delay FLOAT NULL, Code INT NOT NULL,"
        " PRIMARY KEY (`Date`, idDevice, idParam)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin PAGE_COMPRESSED=1"
        f" PARTITION BY RANGE (TO_DAYS(`Date`)) ({parts}, PARTITION pmax VALUES LESS THAN MAXVALUE)"
    )


class CompactCopy:
    """The three steps above for one job, resumable at every chunk."""

    def __init__(self, job_id: str, today: date, ahead_days: int = 7) -> None:
        check_job_id(job_id)
        self.raw = f"see{job_id}Raw"
        self.new = f"see{job_id}RawCompact"
        self.old = f"see{job_id}RawBeforeCompact"
        self.state = f"see{job_id}CompactCopy"
        self.today = today
        self.ahead_days = ahead_days

    async def run(self, session: Session, progress: Progress | None = None,
                  total: Callable[[int], None] | None = None) -> list[str]:
        """Convert (or resume converting); return what was done, one line each."""
        await prepare_session(session)
        lines: list[str] = []
        if not await self._exists(session, self.old):
            if not await self._exists(session, self.new):
                if await self._is_compact(session):
                    return [f"{self.raw} is already compact"]
                lines.append(await self._start(session))
            position = await self._position(session)
            last = await self._max_id(session, self.raw)
            if total is not None:
                total(max(0, last - position))
            await self._copy(session, self.raw, position, progress, sweep=False)
            await session.execute(f"RENAME TABLE `{self.raw}` TO `{self.old}`, `{self.new}` TO `{self.raw}`")
            await self._save(session, 0)
            await session.commit()
            lines.append(f"{self.raw}: switched to the compact layout; checking every row of the old table")
        position = await self._position(session)
        if total is not None:
            total(max(0, await self._max_id(session, self.old) - position))
        await self._copy(session, self.old, position, progress, sweep=True)
        missing, different = await self._differences(session)
        if missing or different:
            lines.append(f"{self.old} kept: {missing} rows missing and {different} rows different in {self.raw}")
            return lines
        rows = (await session.fetch(f"SELECT COUNT(*) FROM `{self.old}`"))[0][0]
        await session.execute(f"DROP TABLE `{self.old}`")
        await session.execute(f"DROP TABLE `{self.state}`")
        lines.append(f"{self.raw}: all {rows:,} rows of the old layout are in the compact one, identical;"
                     f" old table dropped")
        return lines

    async def _start(self, session: Session) -> str:
        first = (await session.fetch(f"SELECT TO_DAYS(MIN(`Date`)) FROM `{self.raw}`"))[0][0]
        first_day = from_days(int(first)) if first is not None else self.today
        await session.execute(compact_ddl(self.new, first_day, self.today, self.ahead_days))
        await session.execute(f"CREATE TABLE IF NOT EXISTS `{self.state}` (id TINYINT NOT NULL PRIMARY KEY,"
                              " Position BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB")
        await session.execute(f"INSERT IGNORE INTO `{self.state}` VALUES (1, 0)")
        await session.commit()
        return f"created {self.new} (compact, day partitions from {first_day}); copying {self.raw} into it"

    async def _copy(self, session: Session, source: str, position: int, progress: Progress | None,
                    sweep: bool) -> None:
        """Copy ``source`` from ``idNum`` > ``position`` in chunks; the sweep copies only rows missing."""
        target = self.new if not sweep else self.raw
        where = f" AND NOT EXISTS (SELECT 1 FROM `{target}` AS n WHERE {SAME_KEY})" if sweep else ""
        sql = (f"INSERT INTO `{target}` ({COLUMNS}) SELECT {COLUMNS.replace('`Date`', 'o.`Date`')}"
               f" FROM `{source}` AS o WHERE o.idNum > %s AND o.idNum <= %s{where}"
               " ON DUPLICATE KEY UPDATE idDevice = `" + target + "`.idDevice")
        last = await self._max_id(session, source)
        while position < last:
            end = min(position + CHUNK_IDS, last)
            await session.execute(sql, (position, end))
            await self._save(session, end)
            await session.commit()
            if progress is not None:
                progress(end - position)
            position = end
            if position >= last and not sweep:
                # The service wrote meanwhile: copy on while that is much, the sweep takes the rest.
                newest = await self._max_id(session, source)
                if newest - position > CHUNK_IDS:
                    last = newest

    async def _differences(self, session: Session) -> tuple[int, int]:
        ((missing, different),) = await session.fetch(
            f"SELECT SUM(n.idDevice IS NULL), SUM(n.idDevice IS NOT NULL AND NOT (n.Value <=> o.Value"
            f" AND n.Delay <=> o.Delay AND n.Code = o.Code)) FROM `{self.old}` AS o"
            f" LEFT JOIN `{self.raw}` AS n ON {SAME_KEY}"
        )
        return int(missing or 0), int(different or 0)

    async def _position(self, session: Session) -> int:
        rows = await session.fetch(f"SELECT Position FROM `{self.state}` WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    async def _save(self, session: Session, position: int) -> None:
        await session.execute(f"UPDATE `{self.state}` SET Position = %s WHERE id = 1", (position,))

    async def _max_id(self, session: Session, table: str) -> int:
        return int((await session.fetch(f"SELECT COALESCE(MAX(idNum), 0) FROM `{table}`"))[0][0])

    async def _exists(self, session: Session, table: str) -> bool:
        rows = await session.fetch(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,))
        return bool(rows)

    async def _is_compact(self, session: Session) -> bool:
        rows = await session.fetch(
            "SELECT 1 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
            " AND INDEX_NAME = 'PRIMARY' AND COLUMN_NAME = 'idNum'", (self.raw,))
        return not rows
