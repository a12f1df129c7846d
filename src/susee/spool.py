"""The durable local buffer: an append-only log of the batches the database did not take.

Layout of the spool folder::

    segment-000001.log ...  records, appended and fsync'ed one batch at a time
    cursor                  segment and offset of the first record not yet committed
    lock                    held (flock) by the one process using the folder

A record is a 16-byte header (magic, payload bytes, rows, CRC32) and a
zlib'd payload of struct-packed samples, so floats round-trip exactly. A
record leaves the spool only when the cursor moves past it, after its rows
were committed; a crash in between replays it once more, which the
database's unique key turns into a no-op. Fully acknowledged segments are
deleted. At start-up a truncated or damaged tail (a crash mid-append, a bad
disk) is moved aside into ``<segment>.corrupt-<time>`` and the good records
before it are kept.

Everything here blocks (file I/O, fsync): the writer calls it from one
worker thread, which also keeps appends in order.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from susee.sample import Sample, fast_tuple

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one process per folder is up to the user
    fcntl = None

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: about 70 million rows, weeks of a large site
# Rotation size: deleting a replayed segment frees disk early, and drop_oldest
# frees space in steps of one segment, so a segment is at most 1/8 of the limit.
SEGMENT_BYTES = 16 << 20
MAX_RECORD_BYTES = 256 << 20  # a larger length field can only be damage
ZLIB_LEVEL = 1  # fast; the packed rows still shrink to about a third

MAGIC = b"SSP1"
HEADER = struct.Struct("<4sIII")  # magic, payload bytes, rows, CRC32 of (payload bytes, rows, payload)
NAMES_LENGTH = struct.Struct("<I")
# device index, param index, tick_s, has value, value, delay_ms, code
ROW = struct.Struct("<IIdBddq")
CURSOR_FILE = "cursor"
LOCK_FILE = "lock"
SEGMENT_PREFIX, SEGMENT_SUFFIX = "segment-", ".log"


class SpoolError(Exception):
    """The spool cannot store or read (I/O error, damage, folder used by another process)."""


class SpoolFull(SpoolError):
    """``max_bytes`` reached and the policy is ``stop_polling``: the batch was not stored."""


@dataclass(frozen=True, order=True)
class Position:
    """A record boundary: segment number and byte offset in it."""

    segment: int
    offset: int


@dataclass(frozen=True)
class SpoolBatch:
    """Rows read from the head of the spool; ``Spool.ack`` removes them once committed."""

    samples: list[Sample]
    end: Position  # just after the last record read
    end_rows: int  # rows of the end segment before ``end``


@dataclass(frozen=True)
class SpoolStats:
    """What ``check`` shows: the spool as found on disk, read without changing it."""

    folder: Path
    size_bytes: int
    rows: int
    oldest_tick_s: float | None
    damage: str | None = None


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int
    rows: int


@dataclass(frozen=True)
class _Scan:
    good_size: int  # bytes of whole, intact records from the start
    rows: int
    acked_rows: int  # rows of the records that end at or before the cursor
    acked_size: int  # the cursor, moved back to a record boundary if it was not on one
    file_size: int
    damage: str | None


class Spool:
    """An append-only, crash-safe log of sample batches in ``folder``.

    The folder is created by the first append, so a site whose database never
    fails has no spool on disk. Not thread-safe: use it from one thread.
    """

    def __init__(
        self,
        folder: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        when_full: str = "stop_polling",
        segment_bytes: int | None = None,
    ) -> None:
        if when_full not in ("stop_polling", "drop_oldest"):
            raise ValueError(f"when_full must be stop_polling or drop_oldest, not {when_full!r}")
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.segment_bytes = segment_bytes or min(SEGMENT_BYTES, max(max_bytes // 8, 1))
        self._segments: list[_Segment] = []
        self._cursor = Position(1, 0)
        self._head_acked_rows = 0
        self._next_seq = 1
        self._tail = None  # the file appended to: the last segment, open for append
        self._lock_fd: int | None = None

    @property
    def size_bytes(self) -> int:
        """Bytes of the segment files (what ``max_bytes`` limits)."""
        return sum(segment.size for segment in self._segments)

    @property
    def pending_rows(self) -> int:
        """Rows stored and not yet acknowledged."""
        return sum(segment.rows for segment in self._segments) - self._head_acked_rows

    def open(self) -> None:
        """Take the folder's lock and recover what an earlier run left (if anything)."""
        if not self.folder.is_dir():
            return
        self._take_lock()
        cursor = _read_cursor(self.folder)
        numbers = _segment_numbers(self.folder)
        self._next_seq = max([*numbers, cursor.segment - 1 if cursor else 0]) + 1
        for seq in numbers:
            path = _segment_path(self.folder, seq)
            if cursor is not None and seq < cursor.segment:
                path.unlink()  # acknowledged before a crash stopped its deletion
                continue
            at = cursor.offset if cursor is not None and seq == cursor.segment else None
            scan = _scan(path, at, verify=True)
            if scan.damage is not None:
                _set_aside(path, scan, self.folder)
            if scan.good_size == 0:
                path.unlink()
                continue
            if not self._segments and at is not None:
                self._cursor, self._head_acked_rows = Position(seq, scan.acked_size), scan.acked_rows
            elif not self._segments:
                self._cursor, self._head_acked_rows = Position(seq, 0), 0
            self._segments.append(_Segment(seq, path, scan.good_size, scan.rows))
        if not self._segments or self.pending_rows == 0:
            self._reset()
        elif self._segments[0].seq != (cursor.segment if cursor else None) or self._cursor.offset != cursor.offset:
            self._write_cursor(self._cursor)

    def append(self, samples: Sequence[Sample], *, force: bool = False) -> int:
        """Store one batch durably (fsync'ed); return the rows dropped to make room.

        Over ``max_bytes`` the policy decides: ``stop_polling`` raises
        SpoolFull, ``drop_oldest`` deletes the oldest segments. ``force``
        ignores the limit (the last rows in memory at shutdown). An empty
        spool always takes one batch, however large.
        """
        if not samples:
            return 0
        record = encode_record(samples)
        dropped = 0
        if not force and self._segments and self.size_bytes + len(record) > self.max_bytes:
            if self.when_full == "stop_polling":
                raise SpoolFull(f"spool {self.folder} is full ({self.size_bytes} of {self.max_bytes} bytes)")
            dropped = self._drop_oldest(len(record))
        tail = self._tail_for(len(record))
        segment = self._segments[-1]
        try:
            tail.write(record)
            tail.flush()
            os.fsync(tail.fileno())
        except OSError as exc:
            self._undo_partial_append(segment)
            raise SpoolError(f"spool {segment.path}: cannot append: {exc}") from exc
        segment.size += len(record)
        segment.rows += len(samples)
        return dropped

    def read(self, max_rows: int) -> SpoolBatch | None:
        """The oldest unacknowledged records, at least one, until ``max_rows`` rows; None if empty."""
        if self.pending_rows == 0:
            return None
        samples: list[Sample] = []
        end, end_rows = self._cursor, self._head_acked_rows
        for segment in self._segments:
            offset = self._cursor.offset if segment.seq == self._cursor.segment else 0
            rows = self._head_acked_rows if segment.seq == self._cursor.segment else 0
            with open(segment.path, "rb") as file:
                file.seek(offset)
                while offset < segment.size and len(samples) < max_rows:
                    count, payload = _read_record(file, segment.path, offset)
                    samples.extend(decode_payload(payload))
                    offset += HEADER.size + len(payload)
                    rows += count
            end, end_rows = Position(segment.seq, offset), rows
            if len(samples) >= max_rows:
                break
        return SpoolBatch(samples, end, end_rows)

    def ack(self, batch: SpoolBatch) -> None:
        """Forget the records of ``batch``: their rows are committed.

        The cursor is replaced atomically before any segment is deleted, so a
        crash at any point leaves either the old or the new cursor.
        """
        end = batch.end
        index = next((i for i, s in enumerate(self._segments) if s.seq == end.segment), None)
        if index is None or end <= self._cursor:
            return  # acknowledged already, or dropped meanwhile (drop_oldest)
        segment = self._segments[index]
        if index == len(self._segments) - 1 and end.offset >= segment.size:
            self._reset()
            return
        if end.offset >= segment.size:
            following = self._segments[index + 1]
            self._write_cursor(Position(following.seq, 0))
            self._cursor, self._head_acked_rows = Position(following.seq, 0), 0
            self._delete_head(index + 1)
        else:
            self._write_cursor(end)
            self._cursor, self._head_acked_rows = end, batch.end_rows
            self._delete_head(index)

    def close(self) -> None:
        """Close the segment being appended to and release the folder's lock."""
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _tail_for(self, record_size: int):
        """The open last segment, rotated when the record would overflow it."""
        if self._tail is not None and self._segments[-1].size + record_size > self.segment_bytes:
            self._tail.close()
            self._tail = None
        if self._tail is None:
            self._take_lock()
            seq = self._next_seq
            self._next_seq += 1
            path = _segment_path(self.folder, seq)
            self._tail = open(path, "ab")  # noqa: SIM115 - stays open across appends
            _fsync_dir(self.folder)  # the new name must survive a crash too
            if not self._segments:
                self._cursor, self._head_acked_rows = Position(seq, 0), 0
                self._write_cursor(self._cursor)
            self._segments.append(_Segment(seq, path, 0, 0))
        return self._tail

    def _undo_partial_append(self, segment: _Segment) -> None:
        try:
            self._tail.truncate(segment.size)
        except OSError:
            pass  # start-up recovery cuts a partial record anyway
        self._tail.close()
        self._tail = None

    def _drop_oldest(self, needed: int) -> int:
        """Delete the oldest segments until ``needed`` bytes fit; return the rows lost."""
        dropped = 0
        while self._segments and self.size_bytes + needed > self.max_bytes:
            head = self._segments[0]
            dropped += head.rows - self._head_acked_rows
            if len(self._segments) == 1:
                self._reset()  # the segment being appended to goes too
            else:
                following = self._segments[1]
                self._write_cursor(Position(following.seq, 0))
                self._cursor, self._head_acked_rows = Position(following.seq, 0), 0
                self._delete_head(1)
        return dropped

    def _reset(self) -> None:
        """Everything is acknowledged (or dropped): delete every segment."""
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        self._cursor, self._head_acked_rows = Position(self._next_seq, 0), 0
        if self.folder.is_dir():
            self._write_cursor(self._cursor)
        self._delete_head(len(self._segments))

    def _delete_head(self, count: int) -> None:
        for segment in self._segments[:count]:
            segment.path.unlink(missing_ok=True)
        del self._segments[:count]

    def _write_cursor(self, position: Position) -> None:
        temporary = self.folder / (CURSOR_FILE + ".tmp")
        with open(temporary, "w", encoding="ascii") as file:
            json.dump({"segment": position.segment, "offset": position.offset}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.folder / CURSOR_FILE)
        _fsync_dir(self.folder)

    def _take_lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                raise SpoolError(f"spool {self.folder} is in use by another susee process") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd


def folder_problem(folder: Path) -> str | None:
    """Why a spool could not be written in ``folder`` (None if it can), without creating it.

    The folder is created only when needed, during an outage: too late to
    find out it cannot be.
    """
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def inspect(folder: Path) -> SpoolStats:
    """Size, pending rows and oldest tick of the spool in ``folder``, changing nothing.

    Record headers are read, payloads skipped (only the oldest is decoded),
    so this is quick even for a large spool; damage is reported, not repaired.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return SpoolStats(folder, 0, 0, None)
    cursor = _read_cursor(folder)
    size = rows = 0
    oldest: float | None = None
    damage: str | None = None
    for seq in _segment_numbers(folder):
        if cursor is not None and seq < cursor.segment:
            continue
        path = _segment_path(folder, seq)
        at = cursor.offset if cursor is not None and seq == cursor.segment else None
        scan = _scan(path, at, verify=False)
        size += scan.file_size
        rows += scan.rows - scan.acked_rows
        if scan.damage is not None and damage is None:
            damage = f"{path.name}: {scan.damage} at offset {scan.good_size}"
        if oldest is None and scan.rows > scan.acked_rows:
            with open(path, "rb") as file:
                file.seek(scan.acked_size)
                _, payload = _read_record(file, path, scan.acked_size)
            oldest = min(sample.tick_s for sample in decode_payload(payload))
    return SpoolStats(folder, size, rows, oldest, damage)


def encode_record(samples: Sequence[Sample]) -> bytes:
    """One record: header plus the compressed batch."""
    payload = encode_payload(samples)
    return _header(len(payload), len(samples), payload) + payload


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
    """The samples of one record, exactly as they were appended."""
    raw = zlib.decompress(payload)
    (names_length,) = NAMES_LENGTH.unpack_from(raw)
    start = NAMES_LENGTH.size + names_length
    devices, params = json.loads(raw[NAMES_LENGTH.size : start])
    new = fast_tuple  # each Sample built in C: a replay decodes 100,000 rows at a time
    return [
        new(Sample, (devices[device], params[param], tick_s, value if has_value else None, delay_ms, code))
        for device, param, tick_s, has_value, value, delay_ms, code in ROW.iter_unpack(raw[start:])
    ]


def _header(length: int, rows: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, length, rows, _crc(length, rows, payload))


def _crc(length: int, rows: int, payload: bytes) -> int:
    """CRC32 over the length and row count too: a damaged header must not pass."""
    return zlib.crc32(payload, zlib.crc32(struct.pack("<II", length, rows)))


def _read_record(file, path: Path, offset: int) -> tuple[int, bytes]:
    """(rows, payload) of the record at ``offset``; SpoolError if it is damaged."""
    header = file.read(HEADER.size)
    problem = _header_problem(header)
    if problem is None:
        _, length, rows, crc = HEADER.unpack(header)
        payload = file.read(length)
        if len(payload) < length:
            problem = "truncated record"
        elif _crc(length, rows, payload) != crc:
            problem = "bad checksum"
        else:
            return rows, payload
    raise SpoolError(f"spool {path}: {problem} at offset {offset}")


def _header_problem(header: bytes) -> str | None:
    if len(header) < HEADER.size:
        return "truncated record header"
    magic, length, _, _ = HEADER.unpack(header)
    if magic != MAGIC:
        return "no record marker"
    if length > MAX_RECORD_BYTES:
        return "impossible record length"
    return None


def _scan(path: Path, cursor_offset: int | None, *, verify: bool) -> _Scan:
    """Walk the records of one segment up to the first damaged one.

    ``verify`` checks the CRC of every record after the cursor (start-up);
    without it only headers and lengths are checked (``inspect``).
    """
    good = rows = acked_rows = acked_size = 0
    damage = None
    file_size = path.stat().st_size
    with open(path, "rb") as file:
        while good < file_size:
            header = file.read(HEADER.size)
            damage = _header_problem(header)
            if damage is not None:
                break
            _, length, count, crc = HEADER.unpack(header)
            end = good + HEADER.size + length
            if end > file_size:
                damage = "truncated record"
                break
            acked = cursor_offset is not None and end <= cursor_offset
            if verify and not acked:
                payload = file.read(length)
                if _crc(length, count, payload) != crc:
                    damage = "bad checksum"
                    break
            else:
                file.seek(end)
            if acked:
                acked_rows += count
                acked_size = end
            rows += count
            good = end
    return _Scan(good, rows, acked_rows, acked_size, file_size, damage)


def _set_aside(path: Path, scan: _Scan, folder: Path) -> None:
    """Move the damaged tail of a segment into its own file, keep the good part."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while aside.exists():
        counter += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    with open(path, "r+b") as source, open(aside, "xb") as target:
        source.seek(scan.good_size)
        while chunk := source.read(1 << 20):
            target.write(chunk)
        target.flush()
        os.fsync(target.fileno())
        source.truncate(scan.good_size)
        source.flush()
        os.fsync(source.fileno())
    _fsync_dir(folder)
    log.warning(
        "spool %s: %s at offset %d: moved the %d bytes from there to %s, kept the %d rows before it",
        path, scan.damage, scan.good_size, scan.file_size - scan.good_size, aside.name, scan.rows,
    )


def _read_cursor(folder: Path) -> Position | None:
    try:
        data = json.loads((folder / CURSOR_FILE).read_text(encoding="ascii"))
        return Position(int(data["segment"]), int(data["offset"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        # The cursor is replaced atomically, so this is outside damage: replaying
        # everything is safe (the unique key absorbs it), skipping is not.
        log.warning("spool %s: unreadable cursor file, replaying every segment from the start", folder)
        return None


def _segment_numbers(folder: Path) -> list[int]:
    numbers = []
    for path in folder.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        digits = path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]
        if digits.isdigit():
            numbers.append(int(digits))
    return sorted(numbers)


def _segment_path(folder: Path, seq: int) -> Path:
    return folder / f"{SEGMENT_PREFIX}{seq:06d}{SEGMENT_SUFFIX}"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported here (Windows): the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
