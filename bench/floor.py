"""The floor: the least CPU a Python client can spend on susee's job.

Same devices, same 1 s grid, same two requests per PAC3200 (fc3 7+64 and
fc3 801+20), same eight rows per device-tick into tables shaped like susee's
(Raw insert + Last upsert, one transaction per batch). Everything that costs
CPU is stripped to the bone: asyncio.Protocol state machines instead of
coroutines, prebuilt request bytes, one precompiled ``struct`` per block, rows
formatted by hand into multi-row INSERTs. The ratio susee / floor is the
figure that holds on a noisy machine.

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
IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:-]{1,20}$")  # device and param ids go into SQL text unquoted
JOB = re.compile(r"^[A-Za-z0-9_]{1,16}$")
DATABASE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
BATCH_ROWS = 2000  # susee's writer default: flush at this many rows, or at the next tick
ROWS_PER_STATEMENT = 1000  # as susee's sinks
CONNECT_TIMEOUT_S = 5.0
CODE_OK, CODE_CONNECTION, CODE_REGISTER, CODE_NAN, CODE_SHORT = 0, 1, 8, 16, 32


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
    """A unit behind a link: its request bytes and its row prefixes per block."""

    __slots__ = ("id", "requests", "prefixes")

    def __init__(self, device_id: str, unit: int) -> None:
        if not IDENTIFIER.match(device_id):
            raise ValueError(f"device id {device_id!r} is not a safe identifier")
        self.id = device_id
        # The transaction id (first two bytes) is patched in per send.
        self.requests = [REQUEST.pack(0, 0, 6, unit, b.function, b.address, b.count)[2:] for b in BLOCKS]
        # Column order (idDevice, idParam, Date, Delay, Code, Value): the constant part first.
        self.prefixes = [[f"('{device_id}','{pid}','" for pid, _, _ in b.fields] for b in BLOCKS]


class Rows:
    """Rows waiting for the database; Last keeps the newest row per device and param."""

    def __init__(self) -> None:
        self.raw: list[str] = []
        self.last: dict[str, str] = {}
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
        self.date = ""

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
    def start_tick(self, tick_s: float, date: str) -> None:
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
        ok = f"{self.date}',{delay_ms:.3f},0,"
        for prefix, value in zip(device.prefixes[block], values):
            if math.isfinite(value):
                row = prefix + ok + repr(value) + ")"
            else:
                row = prefix + f"{self.date}',{delay_ms:.3f},{CODE_NAN},NULL)"
            rows.raw.append(row)
            rows.last[prefix] = row

    def _emit_failed(self, device: Device, block: int, delay_ms: float, code: int) -> None:
        rows = self.floor.rows
        tail = f"{self.date}',{delay_ms:.3f},{code},NULL)"
        for prefix in device.prefixes[block]:
            row = prefix + tail
            rows.raw.append(row)
            rows.last[prefix] = row

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
        self.raw_head = f"INSERT INTO `see{job}Raw` (idDevice, idParam, `Date`, Delay, Code, Value) VALUES "
        self.raw_tail = " ON DUPLICATE KEY UPDATE idNum = idNum"
        self.last_head = f"INSERT INTO `see{job}Last` (idDevice, idParam, `Date`, Delay, Code, Value) VALUES "
        self.last_tail = (
            " ON DUPLICATE KEY UPDATE Value = IF(VALUES(`Date`) >= `Date`, VALUES(Value), Value),"
            " Delay = IF(VALUES(`Date`) >= `Date`, VALUES(Delay), Delay),"
            " Code = IF(VALUES(`Date`) >= `Date`, VALUES(Code), Code), `Date` = GREATEST(`Date`, VALUES(`Date`))"
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
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}"
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
        raw, last = self.rows.raw, list(self.rows.last.values())
        self.rows.raw, self.rows.last = [], {}
        for start in range(0, len(raw), ROWS_PER_STATEMENT):
            await self.conn.query(self.raw_head + ",".join(raw[start : start + ROWS_PER_STATEMENT]) + self.raw_tail)
        for start in range(0, len(last), ROWS_PER_STATEMENT):
            await self.conn.query(self.last_head + ",".join(last[start : start + ROWS_PER_STATEMENT]) + self.last_tail)
        await self.conn.commit()
        self.rows.written += len(raw)

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
