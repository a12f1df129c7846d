"""MariaDB/MySQL sink: one aiomysql connection, one transaction per batch.

The connection is made lazily and dropped on any sign that the session is
gone; the next call reconnects with the target's timeout. Failures surface as
:class:`SinkError` so the writer keeps (or spools) the batch.

Rows go in as prepared multi-row INSERTs in the binary protocol
(``sinks.prepared``): every value a bound parameter, a DOUBLE its own 8
bytes; each statement of up to ``prepared.STATEMENT_ROWS`` rows is encoded
just before it is sent, so the event loop is never held for more than one
statement's worth of encoding. Everything else (migrations, params, reads)
is parameterised text.
"""

from __future__ import annotations

import asyncio
import logging
from operator import itemgetter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

import aiomysql
import pymysql

from susee.config import DATABASE_NAME_PATTERN
from susee.migrations import MigrationError, assemble, migrations_pending, run_migrations, table_names
from susee.rollup import Tables, bucket_of_tick, bucket_text, mark_sql
from susee.sinks import (
    PROBE_PARAM,
    PROBE_ROW,
    ParamRow,
    PermanentSinkError,
    SinkError,
    chunks,
    column_problems,
    param_values,
    recent_queries,
)
from susee.sinks.prepared import COLUMNS, Newest, PreparedInsert, RowEncoder, chunk_samples, newest_rows

if TYPE_CHECKING:
    from susee.config import DatabaseTarget
    from susee.sample import Sample

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Params and reads for people answer in milliseconds; one this slow means a
# stuck server. Not for writes: the store's database.write_timeout (10 s by
# default) bounds those, and a second, longer timeout would never fire.
QUERY_TIMEOUT_S = 30.0
# How long a process waits for another one's migration (a seed-era upgrade rebuilds tables).
MIGRATE_LOCK_WAIT_S = 600

ER_BAD_DB_ERROR = 1049
# "may not": no privilege on the database, bad credentials, missing grant.
ACCESS_DENIED = frozenset({1044, 1045, 1142, 1227})
# Server errors (< 2000) after which the session is gone (shutdown, KILL, idle
# timeout) or its prepared statements are (1243, unknown statement handler).
SESSION_GONE = frozenset({1053, 1243, 1927, 4031})
FIRST_CLIENT_ERROR = 2000  # CR_* codes: lost connection, cannot connect, ...
# Errors retrying cannot fix: access denied (database, user, table, column), unknown
# column or table, a value that does not fit. read_only (1290, 1836) is not among
# them: it is how a server says "not now" during a failover.
PERMANENT = ACCESS_DENIED | frozenset({1143, 1054, 1146, 1406, 1264, 1366, 1364, 1048})

FAILURES = (pymysql.err.Error, OSError, asyncio.TimeoutError, MigrationError)

PARAM_ROW = "(%s, %s, %s, %s, %s)"


class MariaDBSink:
    """Stores samples in ``see{job}Raw``/``Last`` of a MariaDB database."""

    def __init__(
        self, target: DatabaseTarget, job_id: str, *, query_timeout_s: float = QUERY_TIMEOUT_S, rollups: bool = True,
    ) -> None:
        if target.kind != "mysql":
            raise ValueError(f"MariaDBSink needs a mysql target, got {target.kind!r}")
        if not DATABASE_NAME_PATTERN.fullmatch(target.database):
            raise ValueError(f"database name {target.database!r} must match {DATABASE_NAME_PATTERN.pattern}")
        raw, last, params, _ = table_names(job_id)
        self.target = target
        self.job_id = job_id
        self.query_timeout_s = query_timeout_s
        self._conn: aiomysql.Connection | None = None
        # One statement at a time on the connection (a ping must not interleave a write).
        self._lock = asyncio.Lock()
        self._encoder = RowEncoder()
        # A replayed row hits the unique key and changes nothing (idNum is virtual in the compact layout).
        self._raw = PreparedInsert(f"INSERT INTO `{raw}` {COLUMNS} VALUES ", " ON DUPLICATE KEY UPDATE idDevice = idDevice")
        # Assignments run left to right and see the updated columns: Date goes last,
        # so every comparison above it still sees the stored Date.
        self._last = PreparedInsert(
            f"INSERT INTO `{last}` {COLUMNS} VALUES ",
            " ON DUPLICATE KEY UPDATE"
            " Value = IF(VALUES(`Date`) >= `Date`, VALUES(Value), Value),"
            " Delay = IF(VALUES(`Date`) >= `Date`, VALUES(Delay), Delay),"
            " Code = IF(VALUES(`Date`) >= `Date`, VALUES(Code), Code),"
            " `Date` = GREATEST(`Date`, VALUES(`Date`))",
        )
        self._recent_sql = recent_queries(raw, last, "`", "%s")
        # Buckets touched by a batch are marked in its transaction (see susee.rollup).
        self._dirty = Tables.of(job_id, "mariadb").dirty if rollups else None
        self._params_head = f"INSERT INTO `{params}` (idParam, descrITA, descrENG, um, Acronimo) VALUES "
        self._params_tail = (
            " ON DUPLICATE KEY UPDATE descrITA = VALUES(descrITA), descrENG = VALUES(descrENG),"
            " um = VALUES(um), Acronimo = VALUES(Acronimo)"
        )

    async def open(self) -> None:
        """Connect; the database itself may not exist until ``migrate``."""
        async with self._lock:
            await self._connection()

    async def migrate(self) -> list[str]:
        """Create the database if needed, apply pending migrations, report changes."""
        # No timeout: upgrading a large seed-era table rebuilds it, which takes a while.
        return await self._run("migrate", self._migrate, None)

    async def write(self, samples: Sequence[Sample], *, last: Sequence[Sample] | None = None) -> None:
        """Store ``samples`` in one transaction or raise SinkError (after rollback).

        ``last``: the samples whose newest go to Last instead of ``samples``' own
        (the replay splits a large batch into short transactions; [] for none).
        """
        if not samples and not last:
            return
        # No timeout here: the caller owns it (the store's database.write_timeout).
        await self._run("write", lambda conn: self._write_rows(conn, samples, last), None)

    async def upsert_params(self, rows: Iterable[ParamRow]) -> None:
        """Insert or update descriptions by idParam."""
        values = [param_values(row) for row in rows]
        if values:
            await self._run("upsert params", lambda conn: self._upsert_params(conn, values), self.query_timeout_s)

    async def recent(self, table: str, limit: int) -> list[tuple]:
        """Newest rows of ``table`` ('raw' or 'last') for people to look at."""
        sql = self._recent_sql[table]

        async def select(conn: aiomysql.Connection) -> list[tuple]:
            async with conn.cursor() as cursor:
                await cursor.execute(sql, (limit,))
                return list(await cursor.fetchall())

        return await self._run("read " + table, select, self.query_timeout_s)

    async def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Rows of one parameterised read-only query (the web's bounded reads). [web]"""

        async def run(conn: aiomysql.Connection) -> list[tuple]:
            async with conn.cursor() as cursor:
                await cursor.execute(sql, params)
                rows = list(await cursor.fetchall())
            await conn.rollback()  # autocommit is off: end the snapshot, the next read sees new rows
            return rows

        return await self._run("read", run, self.query_timeout_s)

    async def ping(self) -> None:
        """Raise SinkError unless the server answers within the connect timeout."""
        await self._run("ping", lambda conn: conn.ping(reconnect=False), self.target.connect_timeout)

    async def verify(self, *, create_database: bool = False) -> list[str]:
        """Missing tables or columns, and what a write probe (rolled back) is refused.

        ``create_database``: a missing database is created now (what the first
        migration would do), so that a user who may not create it hears it at once.
        """
        async def verify(conn: aiomysql.Connection) -> list[str]:
            return await self._verify(conn, create_database)

        return await self._run("verify", verify, self.query_timeout_s)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                await asyncio.wait_for(conn.ensure_closed(), self.target.connect_timeout)
            except FAILURES:
                pass  # closing anyway
            finally:
                conn.close()

    async def _write_rows(self, conn: aiomysql.Connection, samples: Sequence[Sample],
                          last: Sequence[Sample] | None = None) -> None:
        newest: Newest = {}
        for chunk in chunk_samples(samples):
            await self._raw.insert(conn, self._encoder.encode(chunk, newest))
        if last is not None:  # Last from other samples: encoding them only fills ``newest``
            newest = {}
            for chunk in chunk_samples(last):
                self._encoder.encode(chunk, newest)
        if newest:
            await self._last.insert(conn, newest_rows(newest))
        if self._dirty is not None and samples:
            await self._mark_buckets(conn, samples)
        await conn.commit()

    async def _mark_buckets(self, conn: aiomysql.Connection, samples: Sequence[Sample]) -> None:
        # Last statement before the commit: concurrent writers of one bucket
        # wait for each other's marker row only that long, and in bucket order.
        buckets = sorted({bucket_of_tick(tick) for tick in set(map(itemgetter(2), samples))})
        async with conn.cursor() as cursor:
            await cursor.execute(mark_sql("mariadb", self._dirty, len(buckets)), [bucket_text(b) for b in buckets])

    async def session(self, action: str, work: Callable[[_MariaDBSchema], Awaitable[T]]) -> T:
        """Run ``work`` on this sink's connection (rollups, retention, partitions); failures become SinkError."""
        return await self._run(action, lambda conn: work(_MariaDBSchema(conn)), None)

    async def _verify(self, conn: aiomysql.Connection, create_database: bool) -> list[str]:
        raw, last, params, versions = table_names(self.job_id)
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT DATABASE()")
            if (await cursor.fetchone())[0] is None:
                if not create_database:
                    return []  # not created yet: the first run creates it
                try:
                    await self._ensure_database(conn)
                except MigrationError as exc:
                    return [str(exc)]
            if await migrations_pending(_MariaDBSchema(conn), "mariadb", self.job_id):
                return []  # the writer migrates first; `susee migrate` checks after migrating
            await cursor.execute(
                "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (%s, %s, %s)", (raw, last, params))
            found: dict[str, set[str]] = {}
            for table, column in await cursor.fetchall():
                found.setdefault(table, set()).add(column)
        problems = column_problems(self.job_id, found)
        if problems or not found:
            return problems
        probes = [(self._raw, PROBE_ROW), (self._last, PROBE_ROW)]
        try:
            async with conn.cursor() as cursor:
                for insert, row in probes:  # the statements the writer runs, one row each
                    await cursor.execute(insert.head + "(%s, %s, %s, %s, %s, %s)" + insert.tail, _probe_values(row))
                await cursor.execute(_multi_row(self._params_head, PARAM_ROW, 1, self._params_tail), PROBE_PARAM)
        except pymysql.err.Error as exc:
            if not _permanent(exc):
                raise
            return [f"cannot write: {_describe(exc)}"]
        finally:
            await conn.rollback()
        return []

    async def _upsert_params(self, conn: aiomysql.Connection, values: list[tuple]) -> None:
        async with conn.cursor() as cursor:
            for chunk in chunks(values):
                sql = _multi_row(self._params_head, PARAM_ROW, len(chunk), self._params_tail)
                await cursor.execute(sql, _flat(chunk))
        await conn.commit()

    async def _migrate(self, conn: aiomysql.Connection) -> list[str]:
        # Several processes may migrate at once (the workers of one site when the
        # database comes back, or two sites sharing it): a named server lock lets
        # one migrate while the others wait, then find the schema current.
        lock = f"susee_migrate_{self.target.database}"
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT GET_LOCK(%s, %s)", (lock, MIGRATE_LOCK_WAIT_S))
            (granted,) = await cursor.fetchone()
        if granted != 1:
            raise MigrationError(f"another process held the migration lock {lock!r} for {MIGRATE_LOCK_WAIT_S} s")
        try:
            lines = await self._ensure_database(conn)
            return lines + await run_migrations(_MariaDBSchema(conn), "mariadb", self.job_id)
        finally:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT RELEASE_LOCK(%s)", (lock,))

    async def _ensure_database(self, conn: aiomysql.Connection) -> list[str]:
        name = self.target.database
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            if await cursor.fetchone() is not None:
                await conn.select_db(name)
                return []
            try:
                await cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            except pymysql.err.Error as exc:
                if exc.args and exc.args[0] in ACCESS_DENIED:
                    raise MigrationError(
                        f"database {name!r} does not exist and user {self.target.user!r} may not create it"
                        f" ({_describe(exc)})"
                    ) from exc
                raise
        await conn.select_db(name)
        return [f"created database {name}"]

    async def _run(
        self,
        action: str,
        operation: Callable[[aiomysql.Connection], Awaitable[T]],
        timeout_s: float | None,
    ) -> T:
        """Run ``operation`` alone on the connection; any failure becomes SinkError."""
        async with self._lock:
            conn = await self._connection()
            try:
                return await asyncio.wait_for(operation(conn), timeout_s)
            except FAILURES as exc:
                await self._abandon(conn, exc)
                message = self._scrub(f"{self.target}: {action} failed: {_describe(exc)}")
                logger.warning("%s", message)
                raise (PermanentSinkError if _permanent(exc) else SinkError)(message) from exc
            except BaseException:
                # Cancelled mid-statement (the protocol state is unknown), or a row that
                # cannot be written after earlier statements of the batch went in: a new
                # session starts clean, and the server rolls the old one back.
                self._drop()
                raise

    async def _connection(self) -> aiomysql.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        try:
            self._conn = await asyncio.wait_for(self._connect(), self.target.connect_timeout)
        except FAILURES as exc:
            message = self._scrub(f"{self.target}: cannot connect: {_describe(exc)}")
            logger.warning("%s", message)
            raise (PermanentSinkError if _permanent(exc) else SinkError)(message) from exc
        logger.info("%s: connected", self.target)
        return self._conn

    async def _connect(self) -> aiomysql.Connection:
        target = self.target
        conn = await aiomysql.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password.get_secret_value() if target.password is not None else "",
            unix_socket=target.socket,
            connect_timeout=target.connect_timeout,
            charset="utf8mb4",
            autocommit=False,
            # Notes such as "table already exists" would become Python warnings.
            init_command="SET SESSION sql_notes = 0",
        )
        try:
            await conn.select_db(target.database)
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != ER_BAD_DB_ERROR:  # a missing database is migrate's job
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    async def _abandon(self, conn: aiomysql.Connection, exc: BaseException) -> None:
        """Roll back, or drop the connection when the session is gone."""
        if _session_gone(exc.__cause__ if isinstance(exc, MigrationError) and exc.__cause__ else exc):
            self._drop()
            return
        try:
            await asyncio.wait_for(conn.rollback(), self.target.connect_timeout)
        except FAILURES:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            logger.info("%s: connection dropped", self.target)

    def _scrub(self, text: str) -> str:
        # Belt and braces: no driver message should carry the password, but check.
        secret = self.target.password.get_secret_value() if self.target.password is not None else ""
        return text.replace(secret, "***") if secret else text


class _MariaDBSchema:
    """The migration runner's (and the storage upkeep's) view of a MariaDB connection."""

    placeholder = "%s"
    dialect = "mariadb"

    def __init__(self, conn: aiomysql.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[object] | None = None) -> list[tuple]:
        async with self._conn.cursor() as cursor:
            await cursor.execute(sql, params or None)
            return list(await cursor.fetchall())

    async def execute(self, sql: str, params: Sequence[object] | None = None) -> int:
        # No params means no %-interpolation: migration SQL may hold a literal '%'.
        async with self._conn.cursor() as cursor:
            await cursor.execute(sql, params or None)
            return cursor.rowcount

    async def execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(sql, rows)

    async def begin(self) -> None:
        # DDL commits implicitly on MariaDB: each statement stands alone, which is
        # why every migration statement is written to be safe to re-run.
        pass

    async def commit(self) -> None:
        await self._conn.commit()

    async def rollback(self) -> None:
        await self._conn.rollback()

    async def snapshot(self, tables: Sequence[str]) -> dict:
        where = f"TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({', '.join(['%s'] * len(tables))})"
        options = await self.fetch(f"SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE {where}", tables)
        columns = await self.fetch(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES' FROM information_schema.COLUMNS"
            f" WHERE {where} ORDER BY TABLE_NAME, ORDINAL_POSITION",
            tables,
        )
        indexes = await self.fetch(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE = 0, COLUMN_NAME FROM information_schema.STATISTICS"
            f" WHERE {where} ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            tables,
        )
        return assemble(
            ((table, (("engine", engine), ("collation", collation))) for table, engine, collation in options),
            columns,
            indexes,
        )


def _multi_row(head: str, row: str, count: int, tail: str) -> str:
    return head + ", ".join([row] * count) + tail


def _flat(rows: Sequence[Sequence[object]]) -> list[object]:
    return [value for row in rows for value in row]


def _probe_values(row: tuple) -> tuple:
    """PROBE_ROW (in the sinks' Row order) in the order of the prepared COLUMNS."""
    device, date, param, value, delay, code = row
    return (device, param, date, delay, code, value)


def _permanent(exc: BaseException) -> bool:
    """An error retrying cannot fix (see PERMANENT); also behind a MigrationError."""
    cause = exc.__cause__ if isinstance(exc, MigrationError) and exc.__cause__ is not None else exc
    return isinstance(cause, pymysql.err.Error) and bool(cause.args) and cause.args[0] in PERMANENT


def _session_gone(exc: BaseException) -> bool:
    if isinstance(exc, (pymysql.err.InterfaceError, OSError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, pymysql.err.OperationalError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0] >= FIRST_CLIENT_ERROR or exc.args[0] in SESSION_GONE
    return False


def _describe(exc: BaseException) -> str:
    """A driver error as '(code) message (cause)'."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, pymysql.err.Error) and len(exc.args) == 2:
        text = f"({exc.args[0]}) {exc.args[1]}"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc.__cause__, OSError) and not isinstance(exc, MigrationError):
        text += f" ({exc.__cause__.strerror or type(exc.__cause__).__name__})"
    return text
