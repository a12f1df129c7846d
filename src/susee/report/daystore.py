"""``see<job>Day``, ``DayGap`` and ``DaySpec``: write a counter's daily rows, read them back (MariaDB or SQLite).

Synchronous like the report's reader (pymysql, sqlite3): the service's
upkeep runs it in a thread. Days are local dates, stored as DATE (MariaDB)
or 'YYYY-MM-DD' text (SQLite) and handed around as days since 1970-01-01.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np

from susee.config import DatabaseTarget
from susee.report.days import EPOCH_ORDINAL, DayGrid, DayRows, Gap
from susee.report.reader import PACKED_MAX_BYTES, Key

# The DayRows columns of a Day row; ``Packed`` repeats them, after day and band, as doubles.
COLUMNS = ("Energy", "Magnitude", "Known", "Good", "Codes", "Flags", "Peak", "PeakAt")
PACKED_WIDTH = 2 + len(COLUMNS)
_DAYS = {"mysql": "DATEDIFF({0}, '1970-01-01')", "sqlite": "CAST(julianday({0}) - 2440587.5 AS INTEGER)"}


def day_text(day: int) -> str:
    """Days since 1970-01-01 -> 'YYYY-MM-DD'."""
    return date.fromordinal(day + EPOCH_ORDINAL).isoformat()


def has_tables(conn: Any, target: DatabaseTarget, job_id: str) -> bool:
    """Whether the daily tables exist (a database the migration 0006/0004 has not reached yet has none)."""
    cursor = conn.cursor()
    if target.kind == "sqlite":
        cursor.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (f"see{job_id}DaySpec",))
    else:
        cursor.execute("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                       (f"see{job_id}DaySpec",))
    return cursor.fetchone() is not None


def _keys_sql(target: DatabaseTarget, keys: Sequence[Key]) -> tuple[str, list[str]]:
    mark = "%s" if target.kind == "mysql" else "?"
    devices = sorted({device for device, _ in keys})
    params = sorted({param for _, param in keys})
    sql = (f"idDevice IN ({', '.join([mark] * len(devices))}) AND idParam IN ({', '.join([mark] * len(params))})")
    return sql, [*devices, *params]


def write(conn: Any, target: DatabaseTarget, job_id: str, grid: DayGrid, rows: dict[Key, DayRows],
          gaps: dict[Key, list[Gap]], specs: dict[Key, str]) -> None:
    """Replace the keys' rows of the grid's days and gaps, and extend what their DaySpec says is covered; one
    transaction."""
    mark = "%s" if target.kind == "mysql" else "?"
    replace = "REPLACE" if target.kind == "mysql" else "INSERT OR REPLACE"
    day = "`Day`" if target.kind == "mysql" else "Day"
    keys = list(rows)
    if not keys:
        return
    where, args = _keys_sql(target, keys)
    first, end = grid.first_day, grid.first_day + grid.days
    cursor = conn.cursor()
    cursor.execute(f"DELETE FROM see{job_id}Day WHERE {where} AND {day} >= {mark} AND {day} < {mark}",
                   [*args, day_text(first), day_text(end)])
    cursor.execute(f"DELETE FROM see{job_id}DayGap WHERE {where} AND T1 > {mark} AND T0 < {mark}",
                   [*args, grid.start_s, grid.start_s + grid.count * 900])
    days = [day_text(int(d)) for d in grid.element_day]
    values = []
    for (device, param), found in rows.items():
        present = np.nonzero((found.known > 0) | (found.good > 0) | (found.codes != 0))[0]  # no row: nothing at all
        packed = packed_rows(grid, found, present)
        columns = [found.energy[present].tolist(), found.magnitude[present].tolist(), found.known[present].tolist(),
                   found.good[present].tolist(), found.codes[present].tolist(), found.flags[present].tolist(),
                   [None if np.isnan(v) else v for v in found.peak[present].tolist()],
                   [None if v < 0 else v for v in found.peak_at[present].tolist()]]
        for row, number in enumerate(present.tolist()):
            values.append((device, param, days[number], int(grid.element_band[number]),
                           *(column[row] for column in columns), packed[row]))
    marks = ", ".join([mark] * 13)
    if values:
        cursor.executemany(f"INSERT INTO see{job_id}Day (idDevice, idParam, {day}, Band, {', '.join(COLUMNS)}, Packed)"
                           f" VALUES ({marks})", values)
    spans = [(device, param, t0, t1, delta) for (device, param), found in gaps.items() for t0, t1, delta in found]
    if spans:
        cursor.executemany(f"{replace} INTO see{job_id}DayGap (idDevice, idParam, T0, T1, Delta)"
                           f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark})", spans)
    covered = read_specs(conn, target, job_id, keys)
    updates = []
    for key in keys:
        spec, old_first, old_end = covered.get(key, (None, 0, 0))
        new_first, new_end = first, end
        if spec == specs[key] and old_first <= end and first <= old_end:  # overlapping or adjacent: one range
            new_first, new_end = min(first, old_first), max(end, old_end)
        elif spec == specs[key] and old_first > end:
            new_first, new_end = old_first, old_end  # a later range is kept: the service extends it
        updates.append((*key, specs[key], day_text(new_first), day_text(new_end)))
    cursor.executemany(f"{replace} INTO see{job_id}DaySpec (idDevice, idParam, Spec, FromDay, ToDay)"
                       f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark})", updates)
    conn.commit()


def packed_rows(grid: DayGrid, found: DayRows, present: np.ndarray) -> list[bytes]:
    """The ``Packed`` value of each element in ``present``: its PACKED_WIDTH values as little-endian doubles."""
    table = np.column_stack([grid.element_day[present], grid.element_band[present], found.energy[present],
                             found.magnitude[present], found.known[present], found.good[present],
                             found.codes[present], found.flags[present], found.peak[present],
                             np.where(found.peak_at[present] < 0, np.nan, found.peak_at[present])]).astype("<f8")
    return [row.tobytes() for row in table]


def read_specs(conn: Any, target: DatabaseTarget, job_id: str,
               keys: Sequence[Key]) -> dict[Key, tuple[str, int, int]]:
    """(spec, first day, end day) per key that has daily rows."""
    where, args = _keys_sql(target, keys)
    days = _DAYS[target.kind]
    cursor = conn.cursor()
    cursor.execute(f"SELECT idDevice, idParam, Spec, {days.format('FromDay')}, {days.format('ToDay')}"
                   f" FROM see{job_id}DaySpec WHERE {where}", args)
    wanted = set(keys)
    return {(d, p): (s, int(f), int(e)) for d, p, s, f, e in cursor.fetchall() if (d, p) in wanted}


def read_rows(conn: Any, target: DatabaseTarget, job_id: str, keys: Sequence[Key], first_day: int,
              end_day: int) -> dict[Key, np.ndarray]:
    """Day rows of ``keys`` for days [first_day, end_day): per key an array (day, band, *COLUMNS), NaN for NULL
    (their ``Packed`` values)."""
    where, args = _keys_sql(target, keys)
    mark = "%s" if target.kind == "mysql" else "?"
    day = "`Day`" if target.kind == "mysql" else "Day"
    cursor = conn.cursor()
    parts: dict[Key, list[bytes]] = defaultdict(list)
    wanted = set(keys)
    span = [*args, day_text(first_day), day_text(end_day)]
    if target.kind == "mysql":
        # One binary string per key: the server copies the packed rows (formatting
        # doubles as text was most of a report's time), numpy reads them as they are.
        cursor.execute("SET SESSION group_concat_max_len = %s", (PACKED_MAX_BYTES,))
        cursor.execute(f"SELECT idDevice, idParam, GROUP_CONCAT(Packed SEPARATOR '') FROM see{job_id}Day"
                       f" WHERE {where} AND {day} >= {mark} AND {day} < {mark} GROUP BY idDevice, idParam", span)
    else:
        cursor.execute(f"SELECT idDevice, idParam, Packed FROM see{job_id}Day"
                       f" WHERE {where} AND {day} >= ? AND {day} < ?", span)
    for device, param, blob in cursor.fetchall():
        if (device, param) in wanted:
            parts[(device, param)].append(bytes(blob))
    return {key: np.frombuffer(b"".join(blobs), dtype="<f8").reshape(-1, PACKED_WIDTH)
            for key, blobs in parts.items()}


def read_gaps(conn: Any, target: DatabaseTarget, job_id: str, keys: Sequence[Key], start_s: int,
              end_s: int) -> dict[Key, list[Gap]]:
    """The gaps of ``keys`` that reach into [start_s, end_s)."""
    where, args = _keys_sql(target, keys)
    mark = "%s" if target.kind == "mysql" else "?"
    cursor = conn.cursor()
    cursor.execute(f"SELECT idDevice, idParam, T0, T1, Delta FROM see{job_id}DayGap"
                   f" WHERE {where} AND T1 > {mark} AND T0 < {mark}", [*args, start_s, end_s])
    result: dict[Key, list[Gap]] = defaultdict(list)
    wanted = set(keys)
    for device, param, t0, t1, delta in cursor.fetchall():
        if (device, param) in wanted:
            result[(device, param)].append((float(t0), float(t1), float(delta)))
    return result


def as_day_rows(array: np.ndarray, grid: DayGrid, into: DayRows) -> None:
    """Put a ``read_rows`` array into ``into`` (elements of ``grid``); rows of other days or bands are dropped."""
    at = grid.index(array[:, 0].astype(np.int64), array[:, 1].astype(np.int64))
    peak_at = np.where(np.isnan(array[:, 9]), -1, np.nan_to_num(array[:, 9])).astype(np.int64)
    into.put(at, DayRows(array[:, 2], array[:, 3], array[:, 4].astype(np.int64), array[:, 5].astype(np.int64),
                         array[:, 6].astype(np.int64), array[:, 7].astype(np.int64), array[:, 8], peak_at))
