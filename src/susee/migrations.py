"""Versioned schema migrations: find the SQL, apply what is pending, say what changed.

The SQL lives in ``migrations/<dialect>/NNNN_name.sql`` (inside the wheel as
``susee/_migrations``). ``{job}`` stands for the job id; statements end with
``;`` at the end of a line; whole-line ``--`` comments are dropped.

The runner is dialect-neutral: a sink hands it a :class:`SchemaSession` on its
open connection. Before and after each migration it snapshots the job's
tables (columns, indexes, table options) and reports the differences, so an
operator reads "see000Raw.Value: float(20,4) -> double" rather than "ok".
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from susee.config import JOB_ID_PATTERN

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
COMMENT_LINE = re.compile(r"^[ \t]*--.*$", re.MULTILINE)
DELETE_FROM = re.compile(r"^DELETE\b.*?\bFROM\s+[`\"]?(\w+)", re.IGNORECASE | re.DOTALL)
TABLE_SUFFIXES = ("Raw", "Last", "Params", "SchemaVersion")
# Further tables a migration may create, reported with the others.
MORE_SUFFIXES = ("Q15", "Q15Dirty", "Q60", "Day", "DayGap", "DaySpec", "DayDirty")


class MigrationError(Exception):
    """A migration could not be found or applied; the message names it."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file."""

    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d} {self.name}"

    def statements(self, job_id: str) -> list[str]:
        """The statements of this migration for ``job_id``."""
        return split_statements(render(self.sql, job_id))


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    nullable: bool

    def describe(self, with_null: bool) -> str:
        return f"{self.type} {'NULL' if self.nullable else 'NOT NULL'}" if with_null else self.type


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    unique: bool
    columns: tuple[str, ...]

    def describe(self) -> str:
        columns = ", ".join(self.columns)
        if self.name == "PRIMARY":
            return f"primary key ({columns})"
        return f"{'unique key' if self.unique else 'key'} {self.name} ({columns})"


@dataclass(frozen=True, slots=True)
class TableShape:
    """What the runner compares: columns in order, indexes, table options."""

    columns: tuple[Column, ...] = ()
    indexes: tuple[Index, ...] = ()
    options: tuple[tuple[str, str], ...] = ()


Schema = Mapping[str, TableShape]


class SchemaSession(Protocol):
    """What the runner needs from one open connection of one dialect."""

    placeholder: str  # "%s" or "?"

    async def snapshot(self, tables: Sequence[str]) -> Schema:
        """Shapes of those ``tables`` that exist."""
        ...

    async def fetch(self, sql: str) -> list[tuple]: ...

    async def execute(self, sql: str, params: Sequence[object] | None = None) -> int:
        """Run one statement; return the affected row count."""
        ...

    async def begin(self) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


def table_names(job_id: str) -> tuple[str, ...]:
    """The job's tables, in report order."""
    check_job_id(job_id)
    return tuple(f"see{job_id}{suffix}" for suffix in TABLE_SUFFIXES)


def check_job_id(job_id: str) -> str:
    # The job id is pasted into table names: only ever a validated identifier.
    if not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"job id {job_id!r} must match {JOB_ID_PATTERN.pattern}")
    return job_id


def render(sql: str, job_id: str) -> str:
    """Substitute ``{job}`` once ``job_id`` is known to be a safe identifier."""
    return sql.replace("{job}", check_job_id(job_id))


def split_statements(sql: str) -> list[str]:
    """Statements separated by ``;`` at the end of a line, comment lines dropped."""
    text = COMMENT_LINE.sub("", sql)
    return [part.strip() for part in STATEMENT_END.split(text) if part.strip()]


def migrations_root() -> Traversable:
    """``susee/_migrations`` in a wheel, else the repository's ``migrations/``."""
    packaged = importlib.resources.files("susee").joinpath("_migrations")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


@functools.cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """All migrations of ``dialect`` ('mariadb' or 'sqlite'), by version."""
    folder = migrations_root().joinpath(dialect)
    if not folder.is_dir():
        raise MigrationError(f"no migrations for {dialect!r} at {folder}")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        version = int(match[1])
        if version in found:
            raise MigrationError(f"{dialect}: two migrations numbered {version:04d}")
        found[version] = Migration(version, match[2], entry.read_text(encoding="utf-8"))
    if not found:
        raise MigrationError(f"no migrations for {dialect!r} at {folder}")
    return tuple(found[version] for version in sorted(found))


async def migrations_pending(session: SchemaSession, dialect: str, job_id: str) -> bool:
    """True if some migration is not applied yet (or none is: a new database)."""
    version_table = table_names(job_id)[-1]
    shape = await session.snapshot([version_table])
    if version_table not in shape:
        return True
    applied = {int(row[0]) for row in await session.fetch(f"SELECT version FROM {version_table}")}
    return any(m.version not in applied for m in load_migrations(dialect))


async def run_migrations(session: SchemaSession, dialect: str, job_id: str) -> list[str]:
    """Apply the pending migrations; return what changed, one line per change."""
    version_table = table_names(job_id)[-1]
    tables = (*table_names(job_id), *(f"see{job_id}{suffix}" for suffix in MORE_SUFFIXES))
    migrations = load_migrations(dialect)
    shape = await session.snapshot(tables)
    applied: set[int] = set()
    if version_table in shape:
        applied = {int(row[0]) for row in await session.fetch(f"SELECT version FROM {version_table}")}
    pending = [m for m in migrations if m.version not in applied]
    if not pending:
        return [f"schema up to date (version {max(applied)})"]
    lines: list[str] = []
    for migration in pending:
        try:
            deleted = await _apply(session, migration, job_id, version_table)
        except MigrationError as exc:
            raise MigrationError(f"{exc}{await _partial_changes(session, shape, tables)}") from exc.__cause__
        after = await session.snapshot(tables)
        lines += describe_changes(shape, after, tables, deleted)
        lines.append(f"migration {migration.label} applied")
        shape = after
    return lines


async def _apply(session: SchemaSession, migration: Migration, job_id: str, version_table: str) -> Counter[str]:
    """Run one migration and record it; return rows deleted per table."""
    deleted: Counter[str] = Counter()
    mark = session.placeholder
    record = f"INSERT INTO {version_table} (version, name, applied_at) VALUES ({mark}, {mark}, {mark})"
    applied_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    await session.begin()
    try:
        for number, statement in enumerate(migration.statements(job_id), start=1):
            try:
                count = await session.execute(statement)
            except Exception as exc:
                first_line = statement.splitlines()[0]
                raise MigrationError(
                    f"migration {migration.label} failed at statement {number} ({first_line}): {exc}"
                ) from exc
            if (match := DELETE_FROM.match(statement)) and count > 0:
                deleted[match[1]] += count
        await session.execute(record, (migration.version, migration.name, applied_at))
        await session.commit()
    except BaseException:
        await _quiet_rollback(session)
        raise
    return deleted


async def _partial_changes(session: SchemaSession, before: Schema, tables: Sequence[str]) -> str:
    """What a failed migration changed anyway (MariaDB DDL cannot be rolled back)."""
    try:
        changes = describe_changes(before, await session.snapshot(tables), tables)
    except Exception:  # noqa: BLE001 - the connection may be gone; the failure is reported anyway
        return ""
    return f"; changed before the failure: {'; '.join(changes)}" if changes else ""


async def _quiet_rollback(session: SchemaSession) -> None:
    # The connection may be the thing that failed; the original error matters more.
    try:
        await session.rollback()
    except Exception:  # noqa: BLE001
        pass


def describe_changes(
    before: Schema, after: Schema, tables: Iterable[str], deleted: Mapping[str, int] | None = None
) -> list[str]:
    """Human-readable differences between two snapshots, table by table."""
    deleted = deleted or {}
    lines: list[str] = []
    for table in tables:
        old, new = before.get(table), after.get(table)
        if old is None and new is not None:
            lines.append(f"created table {table}")
        elif old is not None and new is None:
            lines.append(f"dropped table {table}")
        elif old is not None and new is not None:
            lines += _option_changes(table, old, new)
            lines += _column_changes(table, old, new)
        if count := deleted.get(table, 0):
            lines.append(f"{table}: removed {count} duplicate row{'s' if count != 1 else ''}")
        if old is not None and new is not None:
            lines += _index_changes(table, old, new)
    return lines


def _option_changes(table: str, old: TableShape, new: TableShape) -> list[str]:
    before, after = dict(old.options), dict(new.options)
    return [
        f"{table}: {name} {before.get(name)} -> {value}"
        for name, value in after.items()
        if before.get(name) != value
    ]


def _column_changes(table: str, old: TableShape, new: TableShape) -> list[str]:
    before = {column.name: column for column in old.columns}
    after = {column.name: column for column in new.columns}
    lines = []
    for column in new.columns:
        previous = before.get(column.name)
        if previous is None:
            lines.append(f"{table}: added column {column.name} {column.describe(True)}")
        elif previous != column:
            with_null = previous.nullable != column.nullable
            lines.append(f"{table}.{column.name}: {previous.describe(with_null)} -> {column.describe(with_null)}")
    lines += [f"{table}: removed column {name}" for name in before if name not in after]
    return lines


def _index_changes(table: str, old: TableShape, new: TableShape) -> list[str]:
    before = {index.name: index for index in old.indexes}
    after = {index.name: index for index in new.indexes}
    lines = []
    for index in new.indexes:
        previous = before.get(index.name)
        if previous is None:
            lines.append(f"{table}: added {index.describe()}")
        elif previous != index:
            lines.append(f"{table}: changed {previous.describe()} -> {index.describe()}")
    lines += [f"{table}: removed {index.describe()}" for name, index in before.items() if name not in after]
    return lines


def assemble(
    options: Iterable[tuple[str, Sequence[tuple[str, str]]]],
    columns: Iterable[tuple[str, str, str, bool]],
    indexes: Iterable[tuple[str, str, bool, str]],
) -> dict[str, TableShape]:
    """Build a snapshot from flat catalogue rows.

    ``options``: (table, ((name, value), ...)) for every existing table;
    ``columns``: (table, column, type, nullable) in column order;
    ``indexes``: (table, index, unique, column) in key order.
    """
    shapes = {table: ([], {}, tuple(pairs)) for table, pairs in options}
    for table, name, type_, nullable in columns:
        if table in shapes:
            shapes[table][0].append(Column(name, type_.lower(), bool(nullable)))
    for table, name, unique, column in indexes:
        if table in shapes:
            held = shapes[table][1].setdefault(name, (bool(unique), []))
            held[1].append(column)
    return {
        table: TableShape(
            columns=tuple(cols),
            indexes=tuple(Index(name, unique, tuple(keys)) for name, (unique, keys) in idx.items()),
            options=opts,
        )
        for table, (cols, idx, opts) in shapes.items()
    }
