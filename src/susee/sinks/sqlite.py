"""SQLite sink: the same tables in one file, for a single box or a demo.

sqlite3 blocks, so every call runs in a worker thread (``asyncio.to_thread``)
on one dedicated connection, one call at a time (an asyncio lock). WAL mode
lets readers (dashboards, the sqlite3 shell) read while the writer writes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from susee.migrations import MigrationError, assemble, migrations_pending, run_migrations, table_names
from susee.rollup import Tables, bucket_of_tick, bucket_text, mark_sql
from susee.sinks import (
    PROBE_PARAM,
    PROBE_ROW,
    ParamRow,
    PermanentSinkError,
    Row,
    SinkError,
    column_problems,
    param_values,
    recent_queries,
    sample_rows,
)

if TYPE_CHECKING:
    from susee.config import DatabaseTarget
    from susee.sample import Sample

logger = logging.getLogger(__name__)

T = TypeVar("T")

FAILURES = (sqlite3.Error, OSError, MigrationError)
COLUMNS = "(idDevice, Date, idParam, Value, Delay, Code)"


class SQLiteSink:
    """Stores samples in ``see{job}Raw``/``Last`` of an SQLite file."""

    def __init__(self, target: DatabaseTarget, job_id: str, *, rollups: bool = True) -> None:
        if target.kind != "sqlite" or target.path is None:
            raise ValueError(f"SQLiteSink needs an sqlite target with a path, got {target}")
        raw, last, params, _ = table_names(job_id)
        self.target = target
        self.job_id = job_id
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        # A replayed row hits uq_sample and is skipped.
        self._recent_sql = recent_queries(raw, last, '"', "?")
        self._raw_sql = f'INSERT OR IGNORE INTO "{raw}" {COLUMNS} VALUES (?, ?, ?, ?, ?, ?)'
        # SET sees the old row on every right-hand side; WHERE keeps Last from going back in time.
        self._last_sql = (
            f'INSERT INTO "{last}" {COLUMNS} VALUES (?, ?, ?, ?, ?, ?)'
            " ON CONFLICT (idDevice, idParam) DO UPDATE SET"
            " Date = excluded.Date, Value = excluded.Value, Delay = excluded.Delay, Code = excluded.Code"
            f' WHERE excluded.Date >= "{last}".Date'
        )
        self._dirty = Tables.of(job_id, "sqlite").dirty if rollups else None
        self._params_sql = (
            f'INSERT INTO "{params}" (idParam, descrITA, descrENG, um, Acronimo) VALUES (?, ?, ?, ?, ?)'
            " ON CONFLICT (idParam) DO UPDATE SET descrITA = excluded.descrITA,"
            " descrENG = excluded.descrENG, um = excluded.um, Acronimo = excluded.Acronimo"
        )

    async def open(self) -> None:
        """Open (and create) the file, in WAL mode."""
        async with self._lock:
            await self._connection()

    async def migrate(self) -> list[str]:
        """Apply pending migrations; report what changed."""
        return await self._run("migrate", lambda conn: run_migrations(_SQLiteSchema(conn), "sqlite", self.job_id))

    async def write(self, samples: Sequence[Sample], *, last: Sequence[Sample] | None = None) -> None:
        """Store ``samples`` in one transaction or raise SinkError (after rollback).

        ``last``: the samples whose newest go to Last instead of ``samples``' own ([] for none).
        """
        if not samples and not last:
            return
        raw, newest = sample_rows(samples)
        if last is not None:
            newest = sample_rows(last)[1] if last else []
        buckets = sorted({bucket_of_tick(sample.tick_s) for sample in samples}) if self._dirty else []
        await self._run("write", lambda conn: _in_thread(self._write_rows, conn, raw, newest, buckets))

    async def upsert_params(self, rows: Iterable[ParamRow]) -> None:
        """Insert or update descriptions by idParam."""
        values = [param_values(row) for row in rows]
        if values:
            await self._run("upsert params", lambda conn: _in_thread(self._upsert_params, conn, values))

    async def recent(self, table: str, limit: int) -> list[tuple]:
        """Newest rows of ``table`` ('raw' or 'last') for people to look at."""
        sql = self._recent_sql[table]
        return await self._run("read " + table, lambda conn: _in_thread(lambda: conn.execute(sql, (limit,)).fetchall()))

    async def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Rows of one parameterised read-only query (the web's bounded reads). [web]"""
        return await self._run("read", lambda conn: _in_thread(lambda: conn.execute(sql, tuple(params)).fetchall()))

    async def ping(self) -> None:
        """Raise SinkError unless the file can be read."""
        await self._run("ping", lambda conn: _in_thread(lambda: conn.execute("SELECT 1").fetchone()))

    async def verify(self, *, create_database: bool = False) -> list[str]:
        """Missing tables or columns, and what a write probe (rolled back) is refused."""
        async def verify(conn: sqlite3.Connection) -> list[str]:
            if await migrations_pending(_SQLiteSchema(conn), "sqlite", self.job_id):
                return []  # the writer migrates first; `susee migrate` checks after migrating
            return await _in_thread(self._verify, conn)

        return await self._run("verify", verify)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await _in_thread(conn.close)

    def _write_rows(self, conn: sqlite3.Connection, raw: list[Row], last: list[Row], buckets: list[int]) -> None:
        # executemany re-runs one prepared statement: in-process, there are no
        # round trips to save by building multi-row statements.
        with _transaction(conn):
            conn.executemany(self._raw_sql, raw)
            conn.executemany(self._last_sql, last)
            if buckets:  # the buckets to roll up again, in the same transaction (see susee.rollup)
                conn.execute(mark_sql("sqlite", self._dirty, len(buckets)), [bucket_text(b) for b in buckets])

    async def session(self, action: str, work: Callable[[_SQLiteSchema], Awaitable[T]]) -> T:
        """Run ``work`` on this sink's connection (rollups, retention); failures become SinkError."""
        return await self._run(action, lambda conn: work(_SQLiteSchema(conn)))

    def _verify(self, conn: sqlite3.Connection) -> list[str]:
        found: dict[str, set[str]] = {}
        for table in table_names(self.job_id)[:3]:
            columns = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
            if columns:
                found[table] = columns
        problems = column_problems(self.job_id, found)
        if problems or not found:
            return problems
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(self._raw_sql, PROBE_ROW)
            conn.execute(self._last_sql, PROBE_ROW)
            conn.execute(self._params_sql, PROBE_PARAM)
        except sqlite3.Error as exc:
            if not _permanent(exc):
                raise
            return [f"cannot write: {exc}"]
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return []

    def _upsert_params(self, conn: sqlite3.Connection, values: list[tuple]) -> None:
        with _transaction(conn):
            conn.executemany(self._params_sql, values)

    async def _run(self, action: str, operation: Callable[[sqlite3.Connection], Awaitable[T]]) -> T:
        """Run ``operation`` alone on the connection; any failure becomes SinkError."""
        async with self._lock:
            conn = await self._connection()
            try:
                return await operation(conn)
            except FAILURES as exc:
                # Reopening is cheap and clears whatever state the failure left.
                await self._drop()
                message = f"{self.target}: {action} failed: {exc}"
                logger.warning("%s", message)
                raise (PermanentSinkError if _permanent(exc) else SinkError)(message) from exc

    async def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = await _in_thread(self._connect)
            except FAILURES as exc:
                message = f"{self.target}: cannot open: {exc}"
                logger.warning("%s", message)
                raise SinkError(message) from exc
            logger.info("%s: opened", self.target)
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        # check_same_thread=False: worker threads vary, the asyncio lock serialises.
        conn = sqlite3.connect(
            str(self.target.path),
            timeout=self.target.connect_timeout,
            isolation_level=None,
            check_same_thread=False,
            # No statement cache: a cached statement run again from another worker
            # thread failed now and then with "bad parameter or other API misuse"
            # (the rollup's executemany; CPython's sqlite3, cf. python/cpython#118172).
            # Preparing a statement per call costs microseconds a batch.
            cached_statements=0,
        )
        # SQLite has no BIT_OR: the rollups' Codes column needs it.
        conn.create_aggregate("bit_or", 1, _BitOr)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if mode != "wal":
            logger.warning("%s: journal mode is %s, not wal (filesystem without shared memory?)", self.target, mode)
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await _in_thread(conn.close)
            except FAILURES:
                pass


class _BitOr:
    """The aggregate ``bit_or(x)``: the bitwise OR of the non-NULL values (0 for none)."""

    def __init__(self) -> None:
        self.bits = 0

    def step(self, value: int | None) -> None:
        if value is not None:
            self.bits |= value

    def finalize(self) -> int:
        return self.bits


class _SQLiteSchema:
    """The migration runner's view of an SQLite connection (the sink's lock is held)."""

    placeholder = "?"
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[object] | None = None) -> list[tuple]:
        return await _in_thread(lambda: self._conn.execute(sql, tuple(params or ())).fetchall())

    async def execute(self, sql: str, params: Sequence[object] | None = None) -> int:
        return await _in_thread(lambda: self._conn.execute(sql, tuple(params or ())).rowcount)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await _in_thread(lambda: self._conn.executemany(sql, rows))

    async def begin(self) -> None:
        # SQLite DDL is transactional: a migration applies entirely or not at all.
        await self.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        await self.execute("COMMIT")

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            await self.execute("ROLLBACK")

    async def snapshot(self, tables: Sequence[str]) -> dict:
        return await _in_thread(_snapshot, self._conn, tables)


def _snapshot(conn: sqlite3.Connection, tables: Sequence[str]) -> dict:
    options, columns, indexes = [], [], []
    for table in tables:
        info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        if not info:
            continue
        options.append((table, ()))
        columns += [(table, name, type_, not notnull) for _, name, type_, notnull, _, _ in info]
        for _, index, unique, _, _ in conn.execute(f'PRAGMA index_list("{table}")').fetchall():
            for _, _, column in conn.execute(f'PRAGMA index_info("{index}")').fetchall():
                indexes.append((table, index, bool(unique), column))
    return assemble(options, columns, indexes)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # some errors already rolled it back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _permanent(exc: BaseException) -> bool:
    """A read-only file, a missing table or column: retrying cannot fix it."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return True
    text = str(exc)
    return any(sign in text for sign in ("no such table", "no such column", "has no column named", "readonly"))


async def _in_thread(function: Callable[..., T], *args: object) -> T:
    """Run ``function`` in a worker thread; if cancelled, still wait for the thread.

    The connection must not be handed to the next call while a thread still
    uses it, so cancellation takes effect once the thread is done.
    """
    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the caller was cancelled, the outcome is moot
        raise
