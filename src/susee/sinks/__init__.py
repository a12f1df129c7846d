"""Where batches of samples end up: MariaDB (the seed's database) or SQLite.

Both sinks write the seed's tables ``see{job}Raw``, ``see{job}Last`` and
``see{job}Params`` and share the row preparation below, so the two differ
only in SQL dialect and driver.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from susee.quality import Code
from susee.ticks import MICROS

if TYPE_CHECKING:
    from susee.config import DatabaseTarget
    from susee.sample import Sample

T = TypeVar("T")

# Rows per INSERT statement: ~100 bytes each, so ~100 kB, far below the
# server's max_allowed_packet (16 MB by default, 1 MB on old installs).
ROWS_PER_STATEMENT = 1000

# The Code of a value stored as NULL because no DOUBLE holds it (NaN, infinite, too large).
NOT_A_DOUBLE = int(Code.VALUE_NAN)

# (idDevice, Date, idParam, Value, Delay, Code): the column order of every INSERT.
Row = tuple[str, str, str, float | None, float, int]


@dataclass(frozen=True, slots=True)
class ParamRow:
    """One row of ``see{job}Params``: what a param id means."""

    param_id: str
    descr_ita: str
    descr_eng: str
    unit: str
    acronym: str


class SinkError(Exception):
    """The database could not be reached or written; the batch was not stored.

    The message names the target (password masked) and never holds the password.
    """


class PermanentSinkError(SinkError):
    """The database refuses the rows for a reason retrying cannot fix: a missing
    privilege, table or column, a value too long. Not an outage: someone must act."""


# What the writer needs of each table (role -> columns); the job's names come from migrations.table_names.
REQUIRED_COLUMNS = {
    "Raw": ("idDevice", "Date", "idParam", "Value", "Delay", "Code"),
    "Last": ("idDevice", "Date", "idParam", "Value", "Delay", "Code"),
    "Params": ("idParam", "descrITA", "descrENG", "um", "Acronimo"),
}
# The rows a write probe inserts, in a transaction that is rolled back.
PROBE_ROW: Row = ("susee-probe", "1970-01-02 00:00:00.000000", "probe", 0.0, 0.0, 0)
PROBE_PARAM = ("probe", "probe", "probe", "", "probe")


def column_problems(job_id: str, found: dict[str, set[str]]) -> list[str]:
    """Tables or columns the writer needs that ``found`` (table -> its columns) lacks.

    No table at all is a database not migrated yet (the service creates them), not a problem.
    """
    if not found:
        return []
    problems = []
    for role, columns in REQUIRED_COLUMNS.items():
        table = f"see{job_id}{role}"
        if table not in found:
            problems.append(f"table {table} is missing")
            continue
        have = {name.lower() for name in found[table]}
        problems += [f"column {table}.{column} is missing" for column in columns if column.lower() not in have]
    return problems


class Sink(Protocol):
    """A database the writer stores batches in."""

    target: DatabaseTarget

    async def open(self) -> None:
        """Connect (the database may not exist yet: ``migrate`` creates it)."""
        ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return one human-readable line per change."""
        ...

    async def write(self, samples: Sequence[Sample], *, last: Sequence[Sample] | None = None) -> None:
        """Store a batch in one transaction (Raw insert + Last upsert), or raise SinkError.

        ``last`` replaces ``samples`` as the source of Last's rows ([] for none).
        """
        ...

    async def upsert_params(self, rows: Iterable[ParamRow]) -> None:
        """Insert or update param descriptions by param id."""
        ...

    async def recent(self, table: str, limit: int) -> list[tuple]:
        """Newest rows of 'raw' or 'last' as (idDevice, Date, idParam, Value, Delay, Code)."""
        ...

    async def session(self, action: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(session)`` alone on the sink's connection (storage upkeep, reports); SinkError on failure.

        The session offers ``dialect``, ``placeholder``, ``fetch``, ``execute``,
        ``begin``, ``commit`` and ``rollback`` (see ``susee.rollup.Session``).
        """
        ...

    async def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Rows of one parameterised read-only query, or SinkError."""
        ...

    async def ping(self) -> None:
        """Raise SinkError unless the database answers."""
        ...

    async def verify(self) -> list[str]:
        """What stops the writer from storing rows: missing tables or columns, privileges
        (a write probe in a transaction rolled back). [] if nothing; SinkError if unreachable."""
        ...

    async def close(self) -> None: ...


def create_sink(target: DatabaseTarget, job_id: str, *, rollups: bool = True) -> Sink:
    """The sink for ``target.kind``, not yet opened.

    ``rollups``: mark the 15-minute buckets of every batch for the rollups
    (``storage.rollups``; off only to measure what they cost).
    """
    # Imported here so an SQLite deployment never imports the MySQL driver.
    if target.kind == "mysql":
        from susee.sinks.mariadb import MariaDBSink

        return MariaDBSink(target, job_id, rollups=rollups)
    if target.kind == "sqlite":
        from susee.sinks.sqlite import SQLiteSink

        return SQLiteSink(target, job_id, rollups=rollups)
    raise ValueError(f"unknown database kind {target.kind!r}")


def format_tick(tick_s: float) -> str:
    """``'2021-02-18 10:30:00.000000'``: the UTC tick to the microsecond."""
    seconds, micros = divmod(round(tick_s * MICROS), MICROS)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(seconds))}.{micros:06d}"


def sample_rows(samples: Sequence[Sample]) -> tuple[list[Row], list[Row]]:
    """Rows for Raw (batch order) and for Last (newest per device and param, sorted).

    Each distinct tick is formatted once: a batch holds many params of few ticks.
    Last rows are sorted by key so concurrent writers lock them in one order.
    """
    dates: dict[float, str] = {}
    raw: list[Row] = []
    newest: dict[tuple[str, str], tuple[float, Row]] = {}
    for sample in samples:
        date = dates.get(sample.tick_s)
        if date is None:
            date = dates[sample.tick_s] = format_tick(sample.tick_s)
        value, code = sample.value, int(sample.code)
        if value is not None:
            if type(value) is not float:
                value = as_double(value)  # sqlite3 would store an int, and refuse one >= 2**63
            if value is None or not math.isfinite(value):
                # Drivers refuse NaN and infinities: one bad value must not sink the batch.
                value, code = None, code | NOT_A_DOUBLE
        row = (sample.device_id, date, sample.param_id, value, float(sample.delay_ms), code)
        raw.append(row)
        key = (sample.device_id, sample.param_id)
        held = newest.get(key)
        if held is None or sample.tick_s >= held[0]:
            newest[key] = (sample.tick_s, row)
    return raw, [newest[key][1] for key in sorted(newest)]


def as_double(value: object) -> float | None:
    """``value`` as the DOUBLE the Value column holds, or None when no double can (Code 16).

    Decoders give floats, but an int may still arrive (a 64-bit register of
    a spool from an older version, a bit field): 0xFFFFFFFFFFFFFFFF, the "not
    available" of many meters, must become 1.8446744073709552e19, never an
    integer that a driver refuses and that would stop the sink.
    """
    if not isinstance(value, (int, float)):  # a bug upstream, not a reading: never stored as text
        raise TypeError(f"{type(value).__name__} {value!r} is not a number to store")
    try:
        return float(value)
    except OverflowError:  # an int beyond 1.8e308
        return None

def newest_samples(samples: Iterable[Sample]) -> list[Sample]:
    """The newest sample of each (device, param): all that Last needs of ``samples``."""
    newest: dict[tuple[str, str], Sample] = {}
    for sample in samples:
        key = (sample.device_id, sample.param_id)
        held = newest.get(key)
        if held is None or sample.tick_s >= held.tick_s:
            newest[key] = sample
    return list(newest.values())


def chunks(rows: Sequence, size: int = ROWS_PER_STATEMENT) -> Iterable[Sequence]:
    """``rows`` in slices of at most ``size``."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def param_values(row: ParamRow) -> tuple[str, str, str, str, str]:
    """(idParam, descrITA, descrENG, um, Acronimo)."""
    return (row.param_id, row.descr_ita, row.descr_eng, row.unit, row.acronym)


def recent_queries(raw: str, last: str, quote: str, placeholder: str) -> dict[str, str]:
    """SELECTs of the newest rows, for ``Sink.recent`` (table names are validated)."""
    columns = f"idDevice, {quote}Date{quote}, idParam, Value, Delay, Code"
    return {
        "last": f"SELECT {columns} FROM {quote}{last}{quote} ORDER BY idDevice, idParam LIMIT {placeholder}",
        "raw": f"SELECT {columns} FROM {quote}{raw}{quote} ORDER BY {quote}Date{quote} DESC, idNum DESC LIMIT {placeholder}",
    }
