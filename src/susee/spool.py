"""The durable local buffer: the batches the database did not take, in an SQLite file.

Layout of the spool folder::

    spool.db (+ -wal, -shm)  one row per batch, in WAL mode, every commit fsync'ed
    lock                     held (flock) by the one process using the folder; holds its pid
    reserve                  a few MiB kept free for the last rows in memory at stop on a full disk
    damaged-*                what was moved aside: a batch that failed its checksum, or a
                             database file SQLite found malformed (its readable batches are kept)

A batch is a zlib'd payload of struct-packed samples (floats round-trip
exactly) with its row count, first and last tick, devices and a CRC32 in
columns beside it: a damaged payload is found by its checksum, and what it
held is still known from the other columns. SQLite makes each append and
acknowledgement one atomic transaction: a crash, a kill -9 or a full disk
leaves the spool as it was before or after, never in between. A batch
leaves the spool (DELETE) only after its rows were committed; a crash in
between replays it once more, which the database's unique key turns into a
no-op.

The spool records its destination (database kind, host, port, name and job
id; never a user or password) and refuses to be opened for another one while
it holds rows: rows are only ever replayed where they were meant to go.

Everything here blocks (file I/O, fsync): the writer calls it from one
worker thread, which also keeps appends in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from susee.config import ConfigError
from susee.sample import Sample, fast_tuple

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one process per folder is up to the user
    fcntl = None

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: about 150 million rows, weeks of a large site
ZLIB_LEVEL = 1  # fast; the packed rows still shrink to about a fifth
DB_FILE = "spool.db"
LOCK_FILE = "lock"
RESERVE_FILE = "reserve"
DAMAGED_PREFIX = "damaged-"
# Kept free for the exit spill: the queue of a 10,000-meter site (5 ticks) packs into ~3 MiB.
RESERVE_BYTES = 16 << 20
# Bytes a batch costs beyond its payload (row header, columns, b-tree): what max_bytes counts.
BATCH_OVERHEAD = 64
# Kept free on the spool's disk: the policy (when_full) applies before the disk is
# really full, so that SQLite still has room for its WAL and for deleting batches.
DISK_MARGIN_BYTES = 4 << 20
BUSY_TIMEOUT_S = 10.0  # ``inspect`` (susee check) reads while the service writes: WAL lets both go

NAMES_LENGTH = struct.Struct("<I")
# device index, param index, tick_s, has value, value, delay_ms, code
ROW = struct.Struct("<IIdBddq")

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rows INTEGER NOT NULL,
    first_tick REAL NOT NULL,
    last_tick REAL NOT NULL,
    devices TEXT NOT NULL,
    crc INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SpoolError(Exception):
    """The spool cannot store or read (I/O error, damage, folder used by another process)."""


class SpoolFull(SpoolError):
    """No room for the batch (``max_bytes`` or a full disk) and the policy is ``stop_polling``."""


class SpoolLocked(SpoolError):
    """Another process holds the folder."""


class SpoolMismatch(SpoolError):
    """The spool holds rows for another database than this site's."""


@dataclass(frozen=True)
class SpoolBatch:
    """Rows read from the head of the spool; ``Spool.ack`` removes them once committed."""

    samples: list[Sample]
    first_id: int
    last_id: int


@dataclass(frozen=True)
class Damage:
    """What a damaged batch (or file) held, as far as it can still be told."""

    name: str  # the file it was moved to
    size_bytes: int
    rows: int | None = None
    first_tick_s: float | None = None
    last_tick_s: float | None = None
    devices: str | None = None

    def describe(self) -> str:
        if self.rows is None:
            return f"{self.name} ({self.size_bytes} bytes, contents unknown)"
        return (f"{self.name} ({self.size_bytes} bytes): {self.rows} rows of ticks {_utc(self.first_tick_s)} to "
                f"{_utc(self.last_tick_s)} UTC, devices {self.devices or '?'}")


@dataclass(frozen=True)
class SpoolStats:
    """What ``check`` shows: the spool as found on disk, read without changing it."""

    folder: Path
    size_bytes: int
    rows: int
    oldest_tick_s: float | None
    damage: str | None = None  # batches that fail their checksum, and damaged-* files set aside
    destination: str | None = None


class Spool:
    """A crash-safe queue of sample batches in ``folder``. Not thread-safe: use it from one thread."""

    STORAGE = "sqlite"  # what bench/spool.py prints

    def __init__(
        self,
        folder: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        when_full: str = "stop_polling",
        destination: str | None = None,
    ) -> None:
        if when_full not in ("stop_polling", "drop_oldest"):
            raise ValueError(f"when_full must be stop_polling or drop_oldest, not {when_full!r}")
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.destination = destination  # None: any (tests, orphan replays that read it from the file)
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._rows = 0
        self._bytes = 0
        self._margin = DISK_MARGIN_BYTES
        self.damage: list[Damage] = []  # found while this process used the spool

    @property
    def size_bytes(self) -> int:
        """Bytes the stored batches take (what ``max_bytes`` limits)."""
        return self._bytes

    @property
    def pending_rows(self) -> int:
        """Rows stored and not yet acknowledged."""
        return self._rows

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def open(self) -> None:
        """Take the folder's lock (SpoolLocked), check the destination (SpoolMismatch), recover.

        Called at start, before sampling; a second call does nothing.
        """
        if self._db is not None:
            return
        self._take_lock()
        try:
            legacy = sorted(self.folder.glob("segment-*.log"))
            if legacy:
                raise SpoolError(
                    f"spool {self.folder} holds {len(legacy)} segment file(s) of an older susee version: replay them "
                    f"with that version first (its next start does it), or move them out of the folder")
            self._db = self._connect_checked()
            self._rows, self._bytes = self._totals()
            self._claim_destination()
            if self._rows == 0:
                self._make_reserve()
        except BaseException:
            self.close()
            raise

    def append(self, samples: Sequence[Sample], *, force: bool = False) -> int:
        """Store one batch durably (all of it or nothing); return the rows dropped to make room.

        Over ``max_bytes``, or on a full disk, the policy decides:
        ``stop_polling`` raises SpoolFull, ``drop_oldest`` deletes the oldest
        batches. ``force`` ignores the limit and uses the reserve on a full
        disk (the last rows in memory at shutdown). An empty spool always
        takes one batch, however large.
        """
        if not samples:
            return 0
        db = self._opened()
        payload = encode_payload(samples)
        cost = len(payload) + BATCH_OVERHEAD
        dropped = 0
        if not force and self._rows and self._bytes + cost > self.max_bytes:
            if self.when_full == "stop_polling":
                raise SpoolFull(f"spool {self.folder} is full ({self._bytes} of {self.max_bytes} bytes)")
            dropped = self._drop_oldest(self._bytes + cost - self.max_bytes)
        elif not force and self._rows and self._disk_short_by(cost) > 0:
            # The disk is nearly full: the same policy, while SQLite still has room to delete.
            if self.when_full == "stop_polling":
                raise SpoolFull(f"spool {self.folder}: the disk is full (less than {self._margin} bytes free)")
            dropped = self._drop_oldest(cost)
        row = _batch_row(samples, payload)
        try:
            self._insert(db, row)
        except sqlite3.Error as exc:
            if not _disk_full(exc):
                raise SpoolError(f"spool {self.folder}: cannot append: {exc}") from exc
            dropped += self._append_on_full_disk(db, row, force, exc)
        self._rows += len(samples)
        self._bytes += cost
        return dropped

    def read(self, max_rows: int) -> SpoolBatch | None:
        """The oldest batches, at least one, until ``max_rows`` rows; None if empty.

        A batch that fails its checksum is moved aside (reported once, see
        ``damage``) and the read goes on with the next one.
        """
        db = self._opened()
        samples: list[Sample] = []
        first_id = last_id = None
        after = 0
        while len(samples) < max_rows:
            try:
                found = db.execute(
                    "SELECT id, rows, first_tick, last_tick, devices, crc, payload FROM batches WHERE id > ? "
                    "ORDER BY id LIMIT 16", (after,)).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.folder}: cannot read: {exc}") from exc
            if not found:
                break
            for batch_id, rows, first_tick, last_tick, devices, crc, payload in found:
                after = batch_id
                decoded = _decode_checked(payload, rows, crc)
                if decoded is None:
                    self._set_aside(batch_id, rows, first_tick, last_tick, devices, payload)
                    continue
                samples.extend(decoded)
                first_id = batch_id if first_id is None else first_id
                last_id = batch_id
                if len(samples) >= max_rows:
                    break
        if first_id is None:
            return None
        return SpoolBatch(samples, first_id, last_id)

    def ack(self, batch: SpoolBatch) -> None:
        """Forget the batches of ``batch``: their rows are committed. One transaction."""
        db = self._opened()
        span = (batch.first_id, batch.last_id)
        try:
            with db:
                rows, size, count = db.execute(
                    "SELECT COALESCE(SUM(rows), 0), COALESCE(SUM(length(payload)), 0), COUNT(*) "
                    "FROM batches WHERE id BETWEEN ? AND ?", span).fetchone()
                db.execute("DELETE FROM batches WHERE id BETWEEN ? AND ?", span)
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.folder}: cannot acknowledge: {exc}") from exc
        self._rows -= rows  # batches dropped meanwhile (drop_oldest) are no longer counted here
        self._bytes -= size + count * BATCH_OVERHEAD
        if self._rows <= 0:
            self._rows = self._bytes = 0
            self._make_reserve()

    def close(self) -> None:
        """Close the database and release the folder's lock."""
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass  # every commit is already durable
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- inside ---

    def _opened(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        return self._db

    def _connect_checked(self) -> sqlite3.Connection:
        """The database, set aside and rebuilt from its readable batches if SQLite finds it malformed."""
        path = self.folder / DB_FILE
        try:
            db = _connect(path)
            verdict = db.execute("PRAGMA quick_check").fetchone()[0] if path.stat().st_size else "ok"
            if verdict == "ok":
                return db
            db.close()
            problem = verdict
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        return self._salvage(path, problem)

    def _salvage(self, path: Path, problem: str) -> sqlite3.Connection:
        """Copy every readable batch into a new file; move the damaged file aside."""
        aside = self._aside_path("spool.db")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(path) + suffix)
            if source.exists():
                os.replace(source, Path(str(aside) + suffix))
        fresh = _connect(path)
        kept = kept_rows = 0
        try:
            old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True, check_same_thread=False)
            ids = _readable_ids(old)
            for batch_id in ids:
                try:
                    row = old.execute("SELECT rows, first_tick, last_tick, devices, crc, payload FROM batches "
                                      "WHERE id = ?", (batch_id,)).fetchone()
                    meta = old.execute("SELECT key, value FROM meta").fetchall() if kept == 0 else []
                except sqlite3.Error:
                    continue
                if row is None:
                    continue
                with fresh:
                    fresh.execute("INSERT INTO batches (id, rows, first_tick, last_tick, devices, crc, payload) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?)", (batch_id, *row))
                    fresh.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
                kept += 1
                kept_rows += row[0]
            old.close()
        except sqlite3.Error:
            pass  # nothing more is readable
        size = sum(Path(str(aside) + s).stat().st_size for s in ("", "-wal") if Path(str(aside) + s).exists())
        self.damage.append(Damage(aside.name, size))
        log.error(
            "spool %s: the database file is damaged (%s): kept the %d readable batches (%d rows), moved the file "
            "(%d bytes) to %s; rows in its unreadable pages are lost",
            self.folder, problem, kept, kept_rows, size, aside.name,
        )
        return fresh

    def _totals(self) -> tuple[int, int]:
        rows, size, count = self._db.execute(
            "SELECT COALESCE(SUM(rows), 0), COALESCE(SUM(length(payload)), 0), COUNT(*) FROM batches").fetchone()
        return rows, size + count * BATCH_OVERHEAD

    def _claim_destination(self) -> None:
        if self.destination is None:
            return
        found = self._db.execute("SELECT value FROM meta WHERE key = 'destination'").fetchone()
        if found is not None and found[0] != self.destination and self._rows:
            raise SpoolMismatch(
                f"spool {self.folder} holds {self._rows} rows for {found[0]}, but this site now writes to "
                f"{self.destination}: they are only replayed into their own database. Point database.url (and job_id) "
                f"back to it until the spool is empty, or move the folder away to keep its rows aside")
        if found is None or found[0] != self.destination:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('destination', ?)",
                                 (self.destination,))

    def _insert(self, db: sqlite3.Connection, row: tuple) -> None:
        with db:
            db.execute("INSERT INTO batches (rows, first_tick, last_tick, devices, crc, payload) "
                       "VALUES (?, ?, ?, ?, ?, ?)", row)

    def _disk_short_by(self, cost: int) -> int:
        """Bytes missing on the disk for ``cost`` more plus the margin SQLite needs (WAL, deletes)."""
        try:
            usage = shutil.disk_usage(self.folder)
        except OSError:
            return 0  # cannot tell: the insert finds out
        self._margin = min(DISK_MARGIN_BYTES, usage.total // 8)
        return cost + self._margin - usage.free

    def _append_on_full_disk(self, db: sqlite3.Connection, row: tuple, force: bool, exc: sqlite3.Error) -> int:
        """The disk is full: the reserve, then the oldest batches (drop_oldest), make room; else SpoolFull.

        The reserve goes first: finishing the WAL checkpoint needs a little room, and
        after it the WAL is reused from its start instead of growing.
        """
        if not (force or self.when_full == "drop_oldest"):
            raise SpoolFull(f"spool {self.folder}: the disk is full ({exc})") from exc
        reserve = self.folder / RESERVE_FILE
        if reserve.exists():
            reserve.unlink()
            log.warning("spool %s: the disk is full: released the space reserved for it", self.folder)
        dropped = 0
        while True:
            try:
                db.execute("PRAGMA wal_checkpoint(RESTART)")
            except sqlite3.Error:
                pass  # the database file could not grow for it: the insert may still fit
            try:
                self._insert(db, row)
            except sqlite3.Error as again:
                if not _disk_full(again):
                    raise SpoolError(f"spool {self.folder}: cannot append: {again}") from again
                problem = again
            else:
                if dropped:  # give the dropped batches' pages back to the disk, and keep a reserve again
                    try:
                        db.execute("PRAGMA incremental_vacuum")
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    except sqlite3.Error:
                        pass
                    self._make_reserve()
                return dropped
            if force or self.when_full != "drop_oldest" or not self._rows:
                raise SpoolFull(f"spool {self.folder}: the disk is full ({problem})") from problem
            try:  # a quarter of the spool at once: the deletes themselves need room in the WAL
                dropped += self._drop_oldest(max(len(row[5]) + BATCH_OVERHEAD, self._bytes // 4))
            except SpoolError:
                raise SpoolFull(f"spool {self.folder}: the disk is full, even to drop the oldest rows "
                                f"({problem})") from problem

    def _drop_oldest(self, needed: int) -> int:
        """Delete the oldest batches until ``needed`` bytes are freed; return the rows lost."""
        db = self._opened()
        freed = dropped = 0
        try:
            with db:
                for batch_id, rows, size in db.execute(
                        "SELECT id, rows, length(payload) FROM batches ORDER BY id").fetchall():
                    if freed >= needed:
                        break
                    db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
                    freed += size + BATCH_OVERHEAD
                    dropped += rows
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.folder}: cannot drop the oldest batches: {exc}") from exc
        self._rows -= dropped
        self._bytes -= freed
        return dropped

    def _set_aside(self, batch_id: int, rows: int, first: float, last: float, devices: str, payload: bytes) -> None:
        """Write a damaged batch to its own file, then delete it from the spool."""
        aside = self._aside_path(f"batch-{batch_id}.bin")
        with open(aside, "xb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        try:
            with self._db:
                self._db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.folder}: cannot set a damaged batch aside: {exc}") from exc
        self._rows -= rows
        self._bytes -= len(payload) + BATCH_OVERHEAD
        damage = Damage(aside.name, len(payload), rows, first, last, devices)
        self.damage.append(damage)
        log.error("spool %s: a batch failed its checksum and is lost: %s; the other batches are replayed",
                  self.folder, damage.describe())

    def _aside_path(self, name: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.folder / f"{DAMAGED_PREFIX}{stamp}-{name}"
        counter = 1
        while path.exists():
            counter += 1
            path = self.folder / f"{DAMAGED_PREFIX}{stamp}-{counter}-{name}"
        return path

    def _make_reserve(self) -> None:
        """Keep a few MiB for the exit spill (best effort: a disk already full gets none)."""
        path = self.folder / RESERVE_FILE
        try:
            size = min(RESERVE_BYTES, self.max_bytes // 16, shutil.disk_usage(self.folder).free // 8)
            if path.exists() and path.stat().st_size >= size:
                return
            with open(path, "wb") as file:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(file.fileno(), 0, size)
                else:
                    file.write(bytes(size))
        except OSError:
            path.unlink(missing_ok=True)

    def _take_lock(self) -> None:
        if self._lock_fd is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"spool {self.folder}: cannot create: {exc.strerror}") from exc
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise SpoolLocked(f"spool {self.folder} is in use by another susee process (pid {holder})") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd


async def open_spool(spool: Spool) -> None:
    """Open ``spool`` before sampling starts; a folder held by another process, or holding
    rows for another database, is a ConfigError (exit 2) naming it."""
    try:
        await asyncio.to_thread(spool.open)
    except SpoolError as exc:
        raise ConfigError(str(exc)) from None


def check_not_in_use(folder: Path) -> None:
    """ConfigError if another process holds the spool in ``folder`` (a quick look, taking nothing).

    ``open`` takes the lock for real; this lets a second process stop with one
    line before it connects to anything.
    """
    path = Path(folder) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        raise ConfigError(f"spool {folder} is in use by another susee process (pid {holder})") from None
    finally:
        os.close(fd)  # releases the shared lock too


def folder_problem(folder: Path) -> str | None:
    """Why a spool could not be written in ``folder`` (None if it can), without creating it."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def inspect(folder: Path) -> SpoolStats:
    """Size, pending rows, oldest tick, destination and damage of the spool in ``folder``, changing nothing.

    Safe while the service runs (WAL: readers do not block the writer).
    Every batch's checksum is verified, so damage shows before a replay meets it.
    """
    folder = Path(folder)
    aside = [p for p in sorted(folder.glob(f"{DAMAGED_PREFIX}*")) if p.is_file()] if folder.is_dir() else []
    problems = [f"{p.name} ({p.stat().st_size} bytes, set aside)" for p in aside]
    path = folder / DB_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return SpoolStats(folder, 0, 0, None, "; ".join(problems) or None)
    rows = size = 0
    oldest = destination = None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            found = db.execute("SELECT value FROM meta WHERE key = 'destination'").fetchone()
            destination = found[0] if found else None
            for batch_id, count, first, last, devices, crc, payload in db.execute(
                    "SELECT id, rows, first_tick, last_tick, devices, crc, payload FROM batches ORDER BY id"):
                if _decode_checked(payload, count, crc, decode=False) is None:
                    problems.append(Damage(f"batch {batch_id}", len(payload), count, first, last, devices).describe()
                                    + " fails its checksum")
                    continue
                rows += count
                size += len(payload) + BATCH_OVERHEAD
                oldest = first if oldest is None else min(oldest, first)
        finally:
            db.close()
    except sqlite3.Error as exc:
        problems.append(f"{DB_FILE} unreadable: {exc}")
    return SpoolStats(folder, size, rows, oldest, "; ".join(problems) or None, destination)


def encode_payload(samples: Sequence[Sample]) -> bytes:
    """Names once per batch (JSON), then one packed struct per row, zlib'd."""
    devices: dict[str, int] = {}
    params: dict[str, int] = {}
    packed = bytearray()
    pack = ROW.pack
    for sample in samples:
        device = devices.setdefault(sample.device_id, len(devices))
        param = params.setdefault(sample.param_id, len(params))
        has_value = sample.value is not None
        packed += pack(device, param, sample.tick_s, has_value, sample.value if has_value else 0.0,
                       sample.delay_ms, int(sample.code))
    names = json.dumps([list(devices), list(params)]).encode()
    return zlib.compress(NAMES_LENGTH.pack(len(names)) + names + bytes(packed), ZLIB_LEVEL)


def decode_payload(payload: bytes) -> list[Sample]:
    """The samples of one batch, exactly as they were appended."""
    raw = zlib.decompress(payload)
    (names_length,) = NAMES_LENGTH.unpack_from(raw)
    start = NAMES_LENGTH.size + names_length
    devices, params = json.loads(raw[NAMES_LENGTH.size : start])
    new = fast_tuple  # each Sample built in C: a replay decodes 100,000 rows at a time
    return [
        new(Sample, (devices[device], params[param], tick_s, value if has_value else None, delay_ms, code))
        for device, param, tick_s, has_value, value, delay_ms, code in ROW.iter_unpack(raw[start:])
    ]


def _batch_row(samples: Sequence[Sample], payload: bytes) -> tuple:
    """(rows, first_tick, last_tick, devices, crc, payload): what a damaged payload still tells."""
    ticks = [sample.tick_s for sample in samples]
    devices = ",".join(dict.fromkeys(sample.device_id for sample in samples))
    return (len(samples), min(ticks), max(ticks), devices, _crc(len(samples), payload), payload)


def _crc(rows: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<I", rows)))


def _decode_checked(payload: object, rows: int, crc: int, *, decode: bool = True) -> list[Sample] | None:
    """The batch's samples (or [] without ``decode``), None if it is damaged."""
    if not isinstance(payload, bytes) or _crc(rows, payload) != crc:
        return None
    if not decode:
        return []
    try:
        samples = decode_payload(payload)
    except (zlib.error, ValueError, struct.error, IndexError, KeyError, TypeError):
        return None
    return samples if len(samples) == rows else None


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread off: the writer opens at start-up and then uses one worker thread, never two at once.
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    db.isolation_level = "DEFERRED"  # ``with db`` commits or rolls back one transaction
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file only: dropped batches can give their pages back
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # every commit fsync'ed: an acknowledged append survives power loss
    db.execute("PRAGMA journal_size_limit=8388608")  # the WAL shrinks back after a burst
    db.execute("PRAGMA wal_autocheckpoint=64")  # 256 KiB: less than the reserve, so a full disk can finish it
    db.executescript(SCHEMA)
    return db


def _readable_ids(db: sqlite3.Connection) -> list[int]:
    """Batch ids of a damaged file: from the table if it scans, else every id up to the largest known."""
    try:
        return [row[0] for row in db.execute("SELECT id FROM batches ORDER BY id")]
    except sqlite3.Error:
        pass
    try:
        top = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
    except sqlite3.Error:
        return []
    return list(range(1, (top[0] if top else 0) + 1))


def _disk_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_FULL
    return "full" in str(exc)


def _utc(tick_s: float | None) -> str:
    if tick_s is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(tick_s))
