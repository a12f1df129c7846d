"""The floor: the least CPU a Python client can spend on susee's job.

Same devices, same 1 s grid, same two requests per PAC3200 (fc3 7+64 and
fc3 801+20), same eight rows per device-tick into tables shaped like susee's
(Raw insert + Last upsert, one transaction per batch). Everything that costs
CPU is stripped to the bone: asyncio.Protocol state machines instead of
coroutines, prebuilt request bytes, one precompiled ``struct`` per block, rows
encoded as bytes by hand into prepared multi-row INSERTs in the binary
protocol. The ratio susee / floor is the figure that holds on a noisy machine.

The writes are what susee's own are (``susee.sinks.prepared``), written out
here because the floor imports nothing of susee: COM_STMT_PREPARE and
COM_STMT_EXECUTE over aiomysql's packet layer, statements of 1024 rows and
the powers of two below for the rest of a batch, all prepared once on the
connection at start-up (outside the measured window); a row is the device
and param ids as length-prefixed strings (prebuilt per device and param),
the tick's DATETIME(6) (once per tick), Delay as DOUBLE and Code as a 32-bit
int (once per block) and Value as a DOUBLE, its own 8 bytes, or a bit of the
NULL bitmap. Text INSERTs, a ``repr()`` per DOUBLE, cost about twice the CPU
per row: a floor whose writes cost more than the service's is no floor.

    python bench/floor.py --site site.yaml --duration 20 [--warmup 5]

Reads devices and the database URL from a site.yaml as the harness writes it
(every device pac3200 with its default params); writes ``see<job>Raw`` /
``see<job>Last`` with ``--job`` (default ``floor``). Prints one JSON line
with its own CPU per device-tick, measured after the warm-up.

What the floor leaves out: per-request timers (a link still busy at the next
tick is closed, its unanswered device-ticks get Code 1 rows, and it
reconnects), retries, spooling, logging.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import re
import resource
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiomysql
import yaml

REPO = Path(__file__).resolve().parent.parent
MIGRATION = REPO / "migrations" / "mariadb" / "0001_create_tables.sql"  # same schema as susee's tables
IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:-]{1,20}$")  # as susee's config: ASCII, so one length byte each
JOB = re.compile(r"^[A-Za-z0-9_]{1,16}$")
DATABASE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
BATCH_ROWS = 2000  # susee's writer default: flush at this many rows, or at the next tick
STATEMENT_ROWS = 1024  # as susee's MariaDB sink: then the powers of two below for the rest of a batch
CONNECT_TIMEOUT_S = 5.0
CODE_OK, CODE_CONNECTION, CODE_REGISTER, CODE_NAN, CODE_SHORT = 0, 1, 8, 16, 32

# The binary protocol, as much of it as two prepared INSERTs need.
COLUMNS = "(idDevice, idParam, `Date`, Delay, Code, Value)"  # the order of a row's bytes
PARAMS_PER_ROW = 6
VALUE_PARAM = 5  # Value's index in a row: the only parameter that may be NULL
COM_STMT_PREPARE, COM_STMT_EXECUTE = 0x16, 0x17
TYPE_DOUBLE, TYPE_LONG, TYPE_DATETIME, TYPE_VAR_STRING = 0x05, 0x03, 0x0C, 0xFD
ROW_TYPES = bytes((TYPE_VAR_STRING, 0, TYPE_VAR_STRING, 0, TYPE_DATETIME, 0,
                   TYPE_DOUBLE, 0, TYPE_LONG, 0, TYPE_DOUBLE, 0))  # per parameter: its type, 0 (not unsigned)
PREPARE_OK = struct.Struct("<IHH")  # after the status byte: statement id, columns, parameters
EXECUTE_HEAD = struct.Struct("<IBI")  # statement id, flags (no cursor), iteration count (always 1)
DATETIME = struct.Struct("<BHBBBBBI")  # length (11), year, month, day, hour, minute, second, microsecond
DELAY_CODE = struct.Struct("<dl")
VALUE = struct.Struct("<d")
# Bytes after the ids of a row whose Value is NULL (Date and Delay + Code); a row with a Value has 8 more.
NULL_TAIL = DATETIME.size + DELAY_CODE.size


@dataclass(frozen=True)
class Block:
    """One read request and the params it carries: (param id, register, struct code)."""

    function: int
    address: int
    count: int
    fields: tuple[tuple[str, int, str], ...]

    def unpacker(self) -> struct.Struct:
        """One struct that pulls every field out of the block's data bytes at once."""
        fmt, cursor = ">", self.address
        for _, address, code in self.fields:
            if address > cursor:
                fmt += f"{2 * (address - cursor)}x"
            fmt += code
            cursor = address + struct.calcsize(">" + code) // 2
        return struct.Struct(fmt)


# The PAC3200 default set as susee plans it (the harness checks this against
# susee's planner): six float32 in one block, two float64 counters in another.
BLOCKS = (
    Block(3, 7, 64, (("104", 7, "f"), ("107", 13, "f"), ("132", 63, "f"), ("133", 65, "f"),
                     ("134", 67, "f"), ("135", 69, "f"))),
    Block(3, 801, 20, (("222", 801, "d"), ("226", 817, "d"))),
)
ROWS_PER_DEVICE_TICK = sum(len(b.fields) for b in BLOCKS)
REQUEST = struct.Struct(">HHHBBHH")
TID = struct.Struct(">H")
HEADER = struct.Struct(">HHHBBB")


class Device:
    """A unit behind a link: its request bytes and its rows' encoded ids per block."""

    __slots__ = ("id", "requests", "keys")

    def __init__(self, device_id: str, unit: int) -> None:
        if not IDENTIFIER.fullmatch(device_id):
            raise ValueError(f"device id {device_id!r} is not a safe identifier")
        self.id = device_id
        # The transaction id (first two bytes) is patched in per send.
        self.requests = [REQUEST.pack(0, 0, 6, unit, b.function, b.address, b.count)[2:] for b in BLOCKS]
        # A row's constant part, (idDevice, idParam) as length-prefixed strings: its first bytes and Last's key.
        self.keys = [[_string(device_id) + _string(pid) for pid, _, _ in b.fields] for b in BLOCKS]


class Rows:
    """Rows waiting for the database; Last keeps the newest row per device and param.

    A device's rows come from one link, in tick order, so the row stored last
    for a key is its newest.
    """

    __slots__ = ("raw", "raw_nulls", "last", "written")

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.raw_nulls: list[int] = []  # indices of the rows of ``raw`` whose Value is NULL, ascending
        self.last: dict[bytes, bytes] = {}  # encoded ids -> row
        self.written = 0


class Link(asyncio.Protocol):
    """One connection per port; its units polled one request at a time, per tick."""

    def __init__(self, floor: Floor, host: str, port: int, devices: list[Device]) -> None:
        self.floor = floor
        self.host, self.port = host, port
        self.devices = devices
        self.steps = [(d, i) for d in devices for i in range(len(BLOCKS))]
        self.unpackers = [b.unpacker() for b in BLOCKS]
        self.transport: asyncio.Transport | None = None
        self.connecting = False
        self.step = len(self.steps)  # idle
        self.tid = 0
        self.buffer = b""
        self.tick_s = 0.0
        self.date = b""

    # -- connection ------------------------------------------------------
    async def connect(self) -> None:
        self.connecting = True
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.create_connection(lambda: self, self.host, self.port), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            self.transport = None
        finally:
            self.connecting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_rest(CODE_CONNECTION)

    # -- one tick --------------------------------------------------------
    def start_tick(self, tick_s: float, date: bytes) -> None:
        if self.step < len(self.steps):  # still busy with the last tick: it overran
            self.floor.overruns += 1
            transport = self.transport
            self._fail_rest(CODE_CONNECTION)
            if transport is not None:
                transport.abort()  # a late answer must not be taken for the next request's
                self.transport = None
        self.tick_s, self.date, self.step = tick_s, date, 0
        if self.transport is None:
            self._fail_rest(CODE_CONNECTION)
            if not self.connecting:
                self.floor.spawn(self.connect())
            return
        self._send()

    def _send(self) -> None:
        self.tid = (self.tid + 1) & 0xFFFF
        device, block = self.steps[self.step]
        self.transport.write(TID.pack(self.tid) + device.requests[block])

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        if len(buf) < 9 or self.step >= len(self.steps):
            self.buffer = buf if self.step < len(self.steps) else b""
            return
        tid, _, _, _, function, count = HEADER.unpack_from(buf)
        size = 9 if function & 0x80 else 9 + count
        if len(buf) < size:
            self.buffer = buf
            return
        self.buffer = b""
        if tid != self.tid:  # a stray answer: never happens with one request in flight
            return
        delay_ms = (time.time() - self.tick_s) * 1000.0
        device, block = self.steps[self.step]
        if function & 0x80:
            self._emit_failed(device, block, delay_ms, CODE_REGISTER)
        elif count < 2 * BLOCKS[block].count:
            self._emit_failed(device, block, delay_ms, CODE_SHORT)
        else:
            self._emit(device, block, self.unpackers[block].unpack_from(buf, 9), delay_ms)
        self.step += 1
        if self.step < len(self.steps):
            self._send()
        if len(self.floor.rows.raw) >= BATCH_ROWS:
            self.floor.flush()

    # -- rows ------------------------------------------------------------
    def _emit(self, device: Device, block: int, values: tuple, delay_ms: float) -> None:
        rows = self.floor.rows
        raw, last = rows.raw, rows.last
        pack_value, isfinite = VALUE.pack, math.isfinite
        ok = self.date + DELAY_CODE.pack(delay_ms, CODE_OK)
        for key, value in zip(device.keys[block], values):
            if isfinite(value):
                row = key + ok + pack_value(value)
            else:  # NULL, and the Code says why
                rows.raw_nulls.append(len(raw))
                row = key + self.date + DELAY_CODE.pack(delay_ms, CODE_NAN)
            raw.append(row)
            last[key] = row

    def _emit_failed(self, device: Device, block: int, delay_ms: float, code: int) -> None:
        rows = self.floor.rows
        raw, last, nulls = rows.raw, rows.last, rows.raw_nulls
        tail = self.date + DELAY_CODE.pack(delay_ms, code)
        for key in device.keys[block]:
            row = key + tail
            nulls.append(len(raw))
            raw.append(row)
            last[key] = row

    def _fail_rest(self, code: int) -> None:
        if self.step >= len(self.steps):
            return
        delay_ms = (time.time() - self.tick_s) * 1000.0
        for device, block in self.steps[self.step :]:
            self._emit_failed(device, block, delay_ms, code)
        self.step = len(self.steps)


class Floor:
    """The whole floor client: links, the tick loop and the batch writer."""

    def __init__(self, links_spec: dict[tuple[str, int], list[Device]], db: dict, job: str) -> None:
        self.links = [Link(self, host, port, devices) for (host, port), devices in links_spec.items()]
        self.device_count = sum(len(d) for d in links_spec.values())
        self.db = db
        self.raw = Prepared(f"INSERT INTO `see{job}Raw` {COLUMNS} VALUES ", " ON DUPLICATE KEY UPDATE idNum = idNum")
        self.last = Prepared(
            f"INSERT INTO `see{job}Last` {COLUMNS} VALUES ",
            " ON DUPLICATE KEY UPDATE Value = IF(VALUES(`Date`) >= `Date`, VALUES(Value), Value),"
            " Delay = IF(VALUES(`Date`) >= `Date`, VALUES(Delay), Delay),"
            " Code = IF(VALUES(`Date`) >= `Date`, VALUES(Code), Code), `Date` = GREATEST(`Date`, VALUES(`Date`))",
        )
        self.job = job
        self.rows = Rows()
        self.conn: aiomysql.Connection | None = None
        self.writing: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.error: BaseException | None = None
        self.overruns = 0
        self.ticks = 0
        self.missed_ticks = 0

    def spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open(self) -> None:
        self.conn = await aiomysql.connect(autocommit=False, charset="utf8mb4", **self.db)
        text = MIGRATION.read_text(encoding="utf-8").replace("{job}", self.job)
        # Comments may hold ';': drop them before cutting the file into statements.
        sql = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        async with self.conn.cursor() as cursor:
            for statement in sql.split(";"):
                if statement.strip():
                    await cursor.execute(statement)
        await self.conn.commit()
        # Every statement size now, so that no prepare (a packet per parameter) lands in the measured window.
        for insert in (self.raw, self.last):
            await insert.prepare_all(self.conn)
        await asyncio.gather(*(link.connect() for link in self.links))

    async def close(self) -> None:
        while self.writing is not None:  # a finished write may start the next one
            await self.writing
        if self.rows.raw:
            await self._write()
        for task in list(self.tasks):
            task.cancel()
        for link in self.links:
            if link.transport is not None:
                link.transport.close()
        if self.conn is not None:
            self.conn.close()

    def on_tick(self, tick_s: float) -> None:
        seconds, micros = divmod(round(tick_s * 1e6), 1_000_000)
        utc = time.gmtime(seconds)
        date = DATETIME.pack(11, utc.tm_year, utc.tm_mon, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, micros)
        self.ticks += 1
        for link in self.links:
            link.start_tick(tick_s, date)
        self.flush()

    def flush(self) -> None:
        """Start a write of what waits, unless one is running (rows keep accumulating)."""
        if self.rows.raw and self.writing is None:
            self.writing = asyncio.get_running_loop().create_task(self._write())
            self.writing.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        self.writing = None
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()  # surfaces in run(), not in the loop's handler
            return
        if len(self.rows.raw) >= BATCH_ROWS:
            self.flush()

    async def _write(self) -> None:
        rows = self.rows
        raw, raw_nulls, last = rows.raw, rows.raw_nulls, rows.last
        rows.raw, rows.raw_nulls, rows.last = [], [], {}
        await self.raw.insert(self.conn, raw, raw_nulls)
        # Last sorted by key, as susee does (writers lock the rows in one order); NULL rows are the short ones.
        newest, newest_nulls = [], []
        for key in sorted(last):
            row = last[key]
            if len(row) - len(key) == NULL_TAIL:
                newest_nulls.append(len(newest))
            newest.append(row)
        await self.last.insert(self.conn, newest, newest_nulls)
        await self.conn.commit()
        rows.written += len(raw)

    async def run(self, duration_s: float, warmup_s: float, period_s: float = 1.0) -> dict:
        """Poll on the grid for ``duration_s``; CPU is measured from the first tick after ``warmup_s``."""
        start_s = time.time()
        end_s = start_s + duration_s
        measure_from = math.ceil((start_s + warmup_s) / period_s) * period_s
        mark = None
        tick_s = math.ceil(start_s / period_s) * period_s
        while tick_s <= end_s:
            if self.error is not None:
                raise self.error
            while (remaining := tick_s - time.time()) > 0:
                await asyncio.sleep(remaining)
            if mark is None and tick_s >= measure_from:
                mark = (_cpu_s(), self.ticks)
            self.on_tick(tick_s)
            following = math.floor(time.time() / period_s) * period_s + period_s
            self.missed_ticks += max(0, round((following - tick_s) / period_s) - 1)
            tick_s = max(tick_s + period_s, following)
        await asyncio.sleep(max(0.0, min(period_s, end_s + period_s - time.time())))  # let the last tick finish
        await self.close()
        summary = {"devices": self.device_count, "ticks": self.ticks, "missed_ticks": self.missed_ticks,
                   "overruns": self.overruns, "rows_written": self.rows.written}
        if mark is not None:
            cpu_s, ticks = _cpu_s() - mark[0], self.ticks - mark[1]
            summary.update(cpu_s=round(cpu_s, 3), measured_ticks=ticks,
                           cpu_us_per_device_tick=round(cpu_s * 1e6 / max(ticks * self.device_count, 1), 1))
        return summary


class Prepared:
    """One multi-row INSERT ``head ... tail``, prepared once per statement size on the floor's one connection."""

    def __init__(self, head: str, tail: str) -> None:
        self.head, self.tail = head, tail
        self.statements: dict[int, int] = {}  # rows -> statement id

    async def prepare_all(self, conn: aiomysql.Connection) -> None:
        size = STATEMENT_ROWS
        while size:
            await self._statement(conn, size)
            size >>= 1

    async def _statement(self, conn: aiomysql.Connection, size: int) -> int:
        statement = self.statements.get(size)
        if statement is None:
            sql = self.head + ",".join(["(?,?,?,?,?,?)"] * size) + self.tail
            statement = self.statements[size] = await _prepare(conn, sql)
        return statement

    async def insert(self, conn: aiomysql.Connection, rows: list[bytes], nulls: list[int]) -> None:
        """Execute the statements that insert ``rows``; ``nulls``: ascending indices of rows with a NULL Value."""
        start = 0
        for size in statement_sizes(len(rows)):
            statement = self.statements.get(size)
            if statement is None:
                statement = await self._statement(conn, size)
            bitmap = 0
            for index in nulls[bisect.bisect_left(nulls, start) : bisect.bisect_left(nulls, start + size)]:
                bitmap |= 1 << ((index - start) * PARAMS_PER_ROW + VALUE_PARAM)
            payload = b"".join((
                EXECUTE_HEAD.pack(statement, 0, 1),
                bitmap.to_bytes((size * PARAMS_PER_ROW + 7) // 8, "little"),
                b"\x01",  # the types of the parameters follow
                _row_types(size),
                *rows[start : start + size],
            ))
            await conn._execute_command(COM_STMT_EXECUTE, payload)
            await conn._read_packet()  # OK; an ERR packet raises the driver's error
            start += size


def statement_sizes(rows: int) -> list[int]:
    """Rows per statement for a batch of ``rows``: full statements, then the binary digits of the rest."""
    full, rest = divmod(rows, STATEMENT_ROWS)
    sizes = [STATEMENT_ROWS] * full
    size = STATEMENT_ROWS >> 1
    while rest:
        if rest & size:
            sizes.append(size)
            rest -= size
        size >>= 1
    return sizes


async def _prepare(conn: aiomysql.Connection, sql: str) -> int:
    """COM_STMT_PREPARE: the statement's id, once the server has described its parameters."""
    await conn._execute_command(COM_STMT_PREPARE, sql.encode("ascii"))
    answer = (await conn._read_packet()).get_all_data()  # an ERR packet raises the driver's error
    if not answer or answer[0] != 0:
        raise RuntimeError(f"COM_STMT_PREPARE answered with status {answer[:1].hex() or 'nothing'}")
    statement, columns, params = PREPARE_OK.unpack_from(answer, 1)
    # A packet per parameter, then per column, each list ended by an EOF packet
    # (aiomysql does not ask for CLIENT_DEPRECATE_EOF).
    for count in (params, columns):
        if count:
            for _ in range(count):
                await conn._read_packet()
            if not (await conn._read_packet()).is_eof_packet():
                raise RuntimeError("COM_STMT_PREPARE: no EOF packet after the definitions")
    return statement


_ROW_TYPES: dict[int, bytes] = {}


def _row_types(rows: int) -> bytes:
    types = _ROW_TYPES.get(rows)
    if types is None:
        types = _ROW_TYPES[rows] = ROW_TYPES * rows
    return types


def _string(text: str) -> bytes:
    """A length-prefixed string of the protocol (``text`` is an IDENTIFIER: ASCII, at most 20 bytes)."""
    raw = text.encode("ascii")
    return bytes((len(raw),)) + raw


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # microsecond resolution, unlike os.times()
    return usage.ru_utime + usage.ru_stime


def load_site(path: Path) -> tuple[dict[tuple[str, int], list[Device]], dict]:
    """Devices grouped by endpoint, and aiomysql connect arguments, from a site.yaml."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    site = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    links: dict[tuple[str, int], list[Device]] = {}
    for device in site["devices"]:
        if device.get("profile", "pac3200") != "pac3200" or device.get("params") is not None:
            raise ValueError(f"device {device['id']}: the floor only knows pac3200 with its default params")
        if device.get("enabled", True):
            key = (device["host"], int(device.get("port", 502)))
            links.setdefault(key, []).append(Device(str(device["id"]), int(device.get("unit", 1))))
    url = urlsplit(site["database"]["url"])
    name = url.path.lstrip("/")
    if not DATABASE.match(name):
        raise ValueError(f"database name {name!r} is not a safe identifier")
    db = {"host": url.hostname or "127.0.0.1", "port": url.port or 3306, "user": unquote(url.username or "root"),
          "password": os.environ.get("SUSEE_DATABASE__PASSWORD", unquote(url.password or "")), "db": name}
    return links, db


async def amain(args: argparse.Namespace) -> int:
    links, db = load_site(Path(args.site))
    floor = Floor(links, db, args.job)
    await floor.open()
    summary = await floor.run(args.duration, args.warmup)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", required=True, help="site.yaml (devices and database.url)")
    parser.add_argument("--duration", type=float, required=True, help="seconds to poll")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds before the CPU measurement starts")
    parser.add_argument("--job", default="floor", help="table prefix: see<job>Raw, see<job>Last (default floor)")
    args = parser.parse_args(argv)
    if not JOB.match(args.job):
        parser.error("--job must match ^[A-Za-z0-9_]{1,16}$")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
