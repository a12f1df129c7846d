"""Nothing lost: outages, kill -9, shutdown and a full spool, against the real MariaDB and simulator.

The database is reached through a TCP proxy written here (never by stopping
the shared server): ``cut`` closes every proxied connection and refuses new
ones, ``stall`` stops forwarding bytes (a hung server), ``restore`` forwards
again. The service runs in-process (Supervisor) or as the real CLI in a
subprocess when it has to be killed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pymysql
import pytest
import yaml

from support import spooled_rows
from susee.config import Settings
from susee.devices import plan_devices
from susee.sample import Sample
from susee.simulator import Pac3200Simulator
from susee.sinks import create_sink
from susee.spool import Spool, inspect
from susee.supervisor import Supervisor
from susee.store import Store
from susee.writer import Writer

MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306  # the shared test server (see tests/integration/conftest.py)
PARAMS = ["104", "107", "132", "133", "134", "135", "222", "226"]  # the PAC3200 default set
UNITS = (1, 2, 3)
DEVICES = tuple(f"d{unit:02d}" for unit in UNITS)
OUTAGE_S = 20.0  # the "about 20 s"
WAIT_S = 30.0  # bound of every "until it is there" loop
STEP_S = 0.1
BATCH_AGE_S = 0.2
CLI_STOP_S = 15.0  # exit after SIGTERM: shutdown_timeout plus start-up and margins


# --- the proxy ---


class DatabaseProxy:
    """A TCP proxy to the test MariaDB that can be cut, stalled and restored."""

    def __init__(self, upstream_port: int = MARIADB_PORT) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.mode = "forward"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> DatabaseProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        self._abort_all()
        self._flowing.set()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Close every connection and refuse new ones (network cut, server gone)."""
        self.mode = "cut"
        self._abort_all()
        self._flowing.set()

    def stall(self) -> None:
        """Keep connections open but forward nothing (a hung server or a black hole)."""
        self.mode = "stall"
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again; connections that lived through a stall are closed (their clients gave up)."""
        if self.mode == "stall":
            self._abort_all()
        self.mode = "forward"
        self._flowing.set()

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())
        try:
            if self.mode == "cut":
                client.transport.abort()
                return
            try:
                upstream_reader, upstream = await asyncio.open_connection(MARIADB_HOST, self.upstream_port)
            except OSError:
                client.transport.abort()
                return
            pair = (client, upstream)
            self._connections.add(pair)
            try:
                await asyncio.gather(self._pump(client_reader, upstream), self._pump(upstream_reader, client))
            finally:
                self._connections.discard(pair)
                for writer in pair:
                    writer.transport.abort()
        finally:
            self._handlers.discard(asyncio.current_task())

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def _abort_all(self) -> None:
        for pair in list(self._connections):
            for writer in pair:
                writer.transport.abort()


@pytest.fixture
async def proxy():
    async with DatabaseProxy() as database_proxy:
        yield database_proxy


@pytest.fixture
async def simulator():
    async with Pac3200Simulator(port=0, units=UNITS, record=False) as sim:
        yield sim


# --- reading what is stored ---


def as_epoch(date: datetime) -> float:
    return date.replace(tzinfo=timezone.utc).timestamp()


async def raw_rows(fetch, job_id: str) -> list[dict]:
    try:
        rows = await fetch(f"SELECT idDevice, idParam, `Date`, Value, Code FROM see{job_id}Raw")
    except pymysql.err.MySQLError:  # database or table not created yet
        return []
    for row in rows:
        row["t"] = as_epoch(row["Date"])
    return rows


async def raw_count(fetch, job_id: str, device_like: str = "%") -> int:
    try:
        rows = await fetch(f"SELECT COUNT(*) AS n FROM see{job_id}Raw WHERE idDevice LIKE %s", (device_like,))
    except pymysql.err.MySQLError:
        return 0
    return rows[0]["n"]


async def until(condition, what: str, timeout_s: float = WAIT_S, process=None) -> None:
    """Poll ``condition`` (sync or async) until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if process is not None and process.returncode is not None:
            pytest.fail(f"susee exited with {process.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(STEP_S)


async def live_after(fetch, job_id: str, after_s: float) -> bool:
    """Whether every device has a row for a tick later than ``after_s`` (a loaded machine starts slowly)."""
    rows = await raw_rows(fetch, job_id)
    latest: dict[str, float] = {}
    for row in rows:
        latest[row["idDevice"]] = max(latest.get(row["idDevice"], 0.0), row["t"])
    return set(latest) == set(DEVICES) and min(latest.values()) > after_s


def ticks_by_device(rows: list[dict]) -> dict[str, list[float]]:
    """Each device's ticks, sorted, after checking every tick has every param exactly once."""
    keys = Counter((row["idDevice"], row["idParam"], row["t"]) for row in rows)
    duplicates = [key for key, n in keys.items() if n > 1]
    assert not duplicates, f"rows stored twice: {duplicates[:5]}"
    params: dict[tuple[str, float], set[str]] = defaultdict(set)
    for device, param, tick in keys:
        params[(device, tick)].add(param)
    incomplete = {key: sorted(p) for key, p in params.items() if p != set(PARAMS)}
    assert not incomplete, f"ticks without every param: {list(incomplete.items())[:5]}"
    ticks: dict[str, list[float]] = defaultdict(list)
    for device, tick in params:
        ticks[device].append(tick)
    return {device: sorted(t) for device, t in ticks.items()}


def runs(ticks: list[float], period_s: float = 1.0) -> list[tuple[float, float]]:
    """Contiguous stretches of the 1 s grid as (first, last) pairs."""
    stretches: list[tuple[float, float]] = []
    for tick in ticks:
        if stretches and tick - stretches[-1][1] == period_s:
            stretches[-1] = (stretches[-1][0], tick)
        else:
            stretches.append((tick, tick))
    return stretches


async def assert_last_is_newest(fetch, job_id: str, rows: list[dict]) -> None:
    newest: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["idDevice"], row["idParam"])
        if key not in newest or row["t"] > newest[key]["t"]:
            newest[key] = row
    last = await fetch(f"SELECT idDevice, idParam, `Date`, Value, Code FROM see{job_id}Last")
    assert len(last) == len(newest)
    for row in last:
        expected = newest[(row["idDevice"], row["idParam"])]
        assert (as_epoch(row["Date"]), row["Value"], row["Code"]) == (expected["t"], expected["Value"],
                                                                      expected["Code"]), row



# --- the service in-process ---


def settings_for(tmp_path: Path, job_id: str, database: str, port: int, meters_port: int, **extra) -> Settings:
    return Settings(
        job_id=job_id,
        sample_time=1,
        database={"url": f"mysql://root@127.0.0.1:{port}/{database}", "connect_timeout": 2.0},
        writer={"batch_age": BATCH_AGE_S},
        spool={"path": tmp_path / "spool", **extra.pop("spool", {})},
        devices=[{"id": f"d{u:02d}", "host": "127.0.0.1", "port": meters_port, "unit": u} for u in UNITS],
        **extra,
    )


def supervisor_for(settings: Settings, tmp_path: Path) -> Supervisor:
    sink = create_sink(settings.database_target(), settings.job_id)
    return Supervisor(settings, plan_devices(settings, tmp_path / "site.yaml"), sink)


@pytest.fixture
def quick_probes(monkeypatch):
    """The database is noticed within 2 s of coming back (production caps at 30 s)."""
    monkeypatch.setattr("susee.store.RETRY_MAX_S", 2.0)


@pytest.mark.timeout(120)
async def test_20_s_outage_loses_nothing_and_duplicates_nothing(
    tmp_path, simulator, proxy, mariadb_target, job_id, fetch, quick_probes, caplog
):
    caplog.set_level("INFO")
    settings = settings_for(tmp_path, job_id, mariadb_target.database, proxy.port, simulator.port)
    supervisor = supervisor_for(settings, tmp_path)
    writer, store = supervisor.writer, supervisor.store
    service = asyncio.create_task(supervisor.run())

    await until(lambda: raw_count(fetch, job_id), "first rows in the database")
    proxy.cut()
    cut_at = time.time()
    await until(lambda: store.stats().rows_spooled > 0, "rows in the spool")
    await asyncio.sleep(OUTAGE_S - (time.time() - cut_at))  # the outage itself: time, not an event
    spooled_rows, spool_bytes = store.spool.pending_rows, store.spool.size_bytes
    proxy.restore()
    restored_at = time.time()
    await until(lambda: store.stats().online and store.spool.pending_rows == 0 and writer.backlog_rows < 100,
                "spool replayed")
    replayed_in_s = time.time() - restored_at
    last_wanted = int(time.time()) + 2
    await until(lambda: supervisor.pollers[0].next_tick_s > last_wanted, "two more live ticks")
    supervisor.stop()
    assert await asyncio.wait_for(service, 15) == 0

    rows = await raw_rows(fetch, job_id)
    ticks = ticks_by_device(rows)
    assert set(ticks) == set(DEVICES)
    for poller in supervisor.pollers:
        device_ticks = ticks[poller.plan.id]
        assert runs(device_ticks) == [(device_ticks[0], device_ticks[-1])], f"{poller.plan.id} has gaps"
        assert len(device_ticks) == poller.stats.ticks, "every polled tick, and only those, is stored"
        assert device_ticks[0] < cut_at and device_ticks[-1] > restored_at + 1
    assert {row["Code"] for row in rows} == {0}, "the meters were fine: no Code from the outage"
    await assert_last_is_newest(fetch, job_id, rows)
    assert store.stats().rows_dropped == 0
    assert store.stats().rows_replayed >= spooled_rows > 0
    messages = [r.getMessage() for r in caplog.records if r.name in ("susee.store", "susee.replay")]
    assert len([m for m in messages if "outage started" in m]) == 1, messages
    (ended,) = [m for m in messages if "outage ended after" in m]
    assert re.search(r"outage ended after (1\d|2\d)\.\d s", ended), ended
    assert any("spool replayed" in m for m in messages)
    print(f"\noutage {OUTAGE_S:g} s: {len(rows)} rows found = {len(DEVICES)} devices x {len(PARAMS)} params x "
          f"{len(ticks[DEVICES[0]])} ticks; {spooled_rows} rows ({spool_bytes} bytes) spooled, "
          f"{store.stats().rows_replayed} replayed, spool empty {replayed_in_s:.1f} s after the restore")


@pytest.mark.timeout(60)
async def test_batch_replayed_twice_after_a_crash_before_its_ack_adds_no_row_and_last_stays_newest(
    tmp_path, mariadb_target, job_id, fetch
):
    folder = tmp_path / "spool" / f"site-{job_id}"  # the default folder of site.yaml
    old_tick, new_tick = 1613644200.0, 1613644200.0 + 3600
    old = [Sample("d01", p, old_tick + k, 100.0 + k, 1.0, 0) for k in range(10) for p in PARAMS]
    new = [Sample("d01", p, new_tick, 999.0, 1.0, 0) for p in PARAMS]
    spool = Spool(folder)
    spool.open()
    spool.append(old)
    spool.close()
    settings = Settings(job_id=job_id, database={"url": f"mysql://root@127.0.0.1:{MARIADB_PORT}/"
                                                        f"{mariadb_target.database}"})

    # First run: the newest rows are written live; the old batch is committed,
    # then the process dies before the spool's cursor moved past it.
    sink = create_sink(settings.database_target(), job_id)
    try:
        await sink.open()
        await sink.migrate()
        await sink.write(new)
        crashed = Spool(folder)
        crashed.open()
        await sink.write(crashed.read(10**6).samples)
        crashed.close()  # no ack: the kill -9 came first
    finally:
        await sink.close()
    assert await raw_count(fetch, job_id) == len(old) + len(new)

    # Second run: the writer finds the batch in the spool and replays it.
    sink = create_sink(settings.database_target(), job_id)
    writer = Writer(Store(sink, Spool(folder)), settings.writer)
    task = asyncio.create_task(writer.run())
    try:
        await until(lambda: writer.store.stats().rows_replayed == len(old), "the batch replayed once more")
        writer.close()
        await asyncio.wait_for(task, 10)
    finally:
        await sink.close()

    rows = await raw_rows(fetch, job_id)
    assert len(rows) == len(old) + len(new), "the replay added no row"
    assert len(ticks_by_device(rows)["d01"]) == 11
    last = await fetch(f"SELECT idParam, `Date`, Value FROM see{job_id}Last")
    assert {(r["idParam"], as_epoch(r["Date"]), r["Value"]) for r in last} == {(p, new_tick, 999.0) for p in PARAMS}
    assert inspect(folder).rows == 0


# --- the real CLI, killed and restarted ---


def write_site(folder: Path, job_id: str, database: str, port: int, meters_port: int, **extra) -> Path:
    data = {
        "job_id": job_id,
        "sample_time": 1,
        "database": {"url": f"mysql://root@127.0.0.1:{port}/{database}", "connect_timeout": 2.0},
        "writer": {"batch_age": BATCH_AGE_S, **extra.pop("writer", {})},
        "devices": [{"id": f"d{u:02d}", "host": "127.0.0.1", "port": meters_port, "unit": u} for u in UNITS],
        **extra,
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli_env(folder: Path) -> dict[str, str]:
    """The caller's environment minus susee settings, with an empty secrets directory."""
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("SUSEE_")}
    # [web] the live view on any free port: never 8050, taken by another test or a running susee
    return env | {"SUSEE_SECRETS_DIR": str(secrets), "SUSEE_HTTP__LISTEN": "127.0.0.1:0"}


class Service:
    """``python -m susee --config site.yaml`` in a subprocess, its log in a file."""

    def __init__(self, folder: Path, site: Path) -> None:
        self.folder = folder
        self.site = site
        self.runs = 0
        self.process: asyncio.subprocess.Process | None = None
        self.log_path: Path | None = None

    async def start(self) -> asyncio.subprocess.Process:
        self.runs += 1
        self.log_path = self.folder / f"susee-{self.runs}.log"
        with open(self.log_path, "wb") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "susee", "--config", str(self.site),
                cwd=self.folder, env=cli_env(self.folder), stdout=log_file, stderr=log_file,
            )
        return self.process

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        try:
            return await asyncio.wait_for(self.process.wait(), CLI_STOP_S)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()
            pytest.fail(f"susee did not exit within {CLI_STOP_S} s of signal {signum}:\n{self.log}")

    async def kill_9(self) -> float:
        self.process.kill()
        await self.process.wait()
        return time.time()

    async def ensure_dead(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def service_factory():
    services: list[Service] = []

    def make(folder: Path, site: Path) -> Service:
        services.append(Service(folder, site))
        return services[-1]

    yield make
    for service in services:
        await service.ensure_dead()


@pytest.mark.timeout(120)
async def test_kill_9_during_an_outage_then_restart_stores_the_spooled_rows_exactly_once(
    tmp_path, simulator, proxy, mariadb_target, job_id, fetch, service_factory
):
    site = write_site(tmp_path, job_id, mariadb_target.database, proxy.port, simulator.port)
    service = service_factory(tmp_path, site)
    folder = tmp_path / "spool" / f"site-{job_id}"  # the default: per site, beside the config file

    process = await service.start()
    await until(lambda: raw_count(fetch, job_id), "first rows in the database", process=process)
    proxy.cut()
    cut_at = time.time()
    await until(lambda: inspect(folder).rows >= 3 * len(UNITS) * len(PARAMS), "three ticks in the spool",
                process=process)
    killed_at = await service.kill_9()
    spooled_at_kill = inspect(folder).rows
    first_log = service.log

    proxy.restore()
    process = await service.start()
    restarted_at = time.time()
    await until(lambda: inspect(folder).rows == 0, "spool replayed after the restart", process=process)
    await until(lambda: live_after(fetch, job_id, restarted_at + 1), "live rows after the restart", process=process)
    assert await service.stop() == 0, service.log

    rows = await raw_rows(fetch, job_id)
    ticks = ticks_by_device(rows)
    assert {row["Code"] for row in rows} == {0}
    for device in DEVICES:
        device_ticks = ticks[device]
        assert device_ticks[0] < cut_at and device_ticks[-1] > restarted_at + 1
        missing = sorted(set(range(int(device_ticks[0]), int(device_ticks[-1]) + 1)) - set(map(int, device_ticks)))
        # kill -9 loses at most what was in memory (batch_age plus the poll in
        # progress); then no process ran until the restart. Nothing else is missing.
        assert all(killed_at - 1 - BATCH_AGE_S <= tick <= restarted_at + 1 for tick in missing), (
            device, missing, killed_at, restarted_at)
    await assert_last_is_newest(fetch, job_id, rows)
    assert "outage started" in first_log
    assert f"holds {spooled_at_kill} rows" in service.log, "the restart found the spool"


@pytest.mark.timeout(150)
async def test_kill_9_during_a_replay_then_restart_stores_every_row_exactly_once(
    tmp_path, simulator, mariadb_target, job_id, fetch, service_factory
):
    # A spool left by a long outage: 40 devices x 8 params x 1500 ticks = 480 000 rows.
    folder = tmp_path / "spool" / f"site-{job_id}"  # the default folder of site.yaml
    spool = Spool(folder)
    spool.open()
    start_s = 1613644200.0
    backlog = 0
    for tick in range(1500):
        batch = [Sample(f"old{n:02d}", p, start_s + tick, tick + n / 100, 3.0, 0) for n in range(40) for p in PARAMS]
        spool.append(batch)
        backlog += len(batch)
    spool.close()
    site = write_site(tmp_path, job_id, mariadb_target.database, MARIADB_PORT, simulator.port)
    service = service_factory(tmp_path, site)

    process = await service.start()
    await until(lambda: raw_count(fetch, job_id, "old%"), "replay started", process=process)
    killed_at_count = await raw_count(fetch, job_id, "old%")
    await service.kill_9()
    assert 0 < killed_at_count < backlog, "killed in the middle of the replay"

    process = await service.start()
    started = time.monotonic()
    await until(lambda: inspect(folder).rows == 0, "spool replayed", timeout_s=90, process=process)
    replay_s = time.monotonic() - started
    await until(lambda: raw_count(fetch, job_id, "d%"), "live rows", process=process)
    assert await service.stop() == 0, service.log

    assert await raw_count(fetch, job_id, "old%") == backlog
    distinct = await fetch(
        f"SELECT COUNT(DISTINCT idDevice, idParam, `Date`) AS n, MIN(Value) AS lo, MAX(Value) AS hi "
        f"FROM see{job_id}Raw WHERE idDevice LIKE 'old%%'"
    )
    assert distinct[0]["n"] == backlog
    assert (distinct[0]["lo"], distinct[0]["hi"]) == (0.0, 1499 + 39 / 100)
    last = await fetch(f"SELECT idDevice, `Date`, Value FROM see{job_id}Last WHERE idDevice LIKE 'old%%'")
    assert len(last) == 40 * len(PARAMS)
    assert {as_epoch(r["Date"]) for r in last} == {start_s + 1499}, "Last holds the newest tick, never older"
    live = ticks_by_device([r for r in await raw_rows(fetch, job_id) if r["idDevice"].startswith("d")])
    assert set(live) == set(DEVICES)
    match = re.search(r"spool replayed: (\d+) rows in ([\d.]+) s \((\d+) rows/s\)", service.log)
    assert match, service.log
    print(f"\nreplay of {backlog} spooled rows: killed at {killed_at_count}; after the restart "
          f"{match.group(1)} rows in {match.group(2)} s = {match.group(3)} rows/s (with 3 live meters); "
          f"spool empty after {replay_s:.1f} s")


@pytest.mark.timeout(120)
async def test_sigterm_with_a_full_queue_and_a_hung_database_exits_0_and_keeps_every_row(
    tmp_path, simulator, proxy, mariadb_target, job_id, fetch, service_factory
):
    # queue_size 2: three meters fill it within a tick once the database hangs.
    site = write_site(tmp_path, job_id, mariadb_target.database, proxy.port, simulator.port,
                      writer={"queue_size": 2}, shutdown_timeout=2.0)
    service = service_factory(tmp_path, site)
    folder = tmp_path / "spool" / f"site-{job_id}"  # the default folder of site.yaml

    process = await service.start()
    await until(lambda: raw_count(fetch, job_id), "first rows in the database", process=process)
    proxy.stall()  # the write in progress hangs: the writer cannot drain the queue
    await until(lambda: inspect(folder).rows > 0, "the full queue spilling to the spool", process=process)
    await until(lambda: inspect(folder).rows >= 4 * len(PARAMS), "a few device-ticks spilled", process=process)
    stopped_at = time.time()
    assert await service.stop(signal.SIGTERM) == 0, service.log
    first_log = service.log
    assert time.time() - stopped_at < 2.0 + 5.0
    assert "spilling them to the spool" in first_log and "spilled the last" in first_log, first_log

    # Every tick polled is in the database or in the spool: nothing was lost.
    in_database = await raw_rows(fetch, job_id)
    in_spool = [{"idDevice": s.device_id, "idParam": s.param_id, "t": s.tick_s} for s in spooled_rows(folder)]
    held = {(r["idDevice"], r["idParam"], r["t"]) for r in in_database + in_spool}
    held_ticks = ticks_by_device([{"idDevice": d, "idParam": p, "t": t} for d, p, t in held])
    for device in DEVICES:
        assert len(runs(held_ticks[device])) == 1, f"{device}: a tick is neither stored nor spooled"

    proxy.restore()
    process = await service.start()
    await until(lambda: inspect(folder).rows == 0, "spool replayed after the restart", process=process)
    assert await service.stop() == 0, service.log

    rows = await raw_rows(fetch, job_id)
    stored = {(r["idDevice"], r["idParam"], r["t"]) for r in rows}
    assert held <= stored, "every row held at shutdown reached the database"
    ticks_by_device(rows)  # exactly once, every param of every tick
    assert {row["Code"] for row in rows} == {0}


# --- a full spool ---


@pytest.mark.timeout(90)
async def test_full_spool_with_stop_polling_pauses_acquisition_counts_the_ticks_and_resumes(
    tmp_path, simulator, proxy, mariadb_target, job_id, fetch, quick_probes, caplog
):
    caplog.set_level("INFO")
    settings = settings_for(tmp_path, job_id, mariadb_target.database, proxy.port, simulator.port,
                            spool={"max_bytes": 3000, "when_full": "stop_polling"})
    supervisor = supervisor_for(settings, tmp_path)
    writer, store = supervisor.writer, supervisor.store
    service = asyncio.create_task(supervisor.run())

    await until(lambda: raw_count(fetch, job_id), "first rows in the database")
    proxy.cut()
    await until(lambda: store.stats().paused, "acquisition paused by the full spool")
    await until(lambda: store.stats().ticks_not_acquired >= 3 * len(UNITS), "three ticks not acquired")
    assert store.spool.size_bytes <= 3000
    proxy.restore()
    await until(lambda: not store.stats().paused and store.spool.pending_rows == 0, "resumed, spool replayed")
    resumed_tick = supervisor.pollers[0].next_tick_s
    await until(lambda: supervisor.pollers[0].next_tick_s > resumed_tick + 2, "live ticks after the pause")
    supervisor.stop()
    assert await asyncio.wait_for(service, 15) == 0

    rows = await raw_rows(fetch, job_id)
    ticks = ticks_by_device(rows)
    not_acquired = 0
    for poller in supervisor.pollers:
        device_ticks = ticks[poller.plan.id]
        assert len(device_ticks) == poller.stats.ticks
        assert len(runs(device_ticks)) == 2, "one gap: the pause"
        not_acquired += round(device_ticks[-1] - device_ticks[0]) + 1 - len(device_ticks)
    assert not_acquired == store.stats().ticks_not_acquired
    assert store.stats().rows_dropped == 0
    assert {row["Code"] for row in rows} == {0}
    messages = [r.getMessage() for r in caplog.records]
    assert any("ACQUISITION PAUSED" in m for m in messages)
    assert any(f"{store.stats().ticks_not_acquired} device-ticks were not acquired while paused" in m for m in messages)
    assert any(f"{store.stats().ticks_not_acquired} device-ticks were not acquired while the spool was full" in m
               for m in messages)


@pytest.mark.timeout(90)
async def test_full_spool_with_drop_oldest_keeps_the_newest_rows_and_counts_the_dropped_ones(
    tmp_path, simulator, proxy, mariadb_target, job_id, fetch, quick_probes, caplog
):
    caplog.set_level("INFO")
    settings = settings_for(tmp_path, job_id, mariadb_target.database, proxy.port, simulator.port,
                            spool={"max_bytes": 3000, "when_full": "drop_oldest"})
    supervisor = supervisor_for(settings, tmp_path)
    writer, store = supervisor.writer, supervisor.store
    service = asyncio.create_task(supervisor.run())

    await until(lambda: raw_count(fetch, job_id), "first rows in the database")
    proxy.cut()
    cut_at = time.time()
    await until(lambda: store.stats().rows_dropped >= 3 * len(UNITS) * len(PARAMS), "three ticks dropped")
    assert not store.stats().paused
    proxy.restore()
    restored_at = time.time()
    await until(lambda: store.stats().online and store.spool.pending_rows == 0, "spool replayed")
    supervisor.stop()
    assert await asyncio.wait_for(service, 15) == 0

    rows = await raw_rows(fetch, job_id)
    ticks = ticks_by_device(rows)
    acquired = sum(p.stats.ticks for p in supervisor.pollers) * len(PARAMS)
    assert len(rows) + store.stats().rows_dropped == acquired, "every acquired row is stored or counted as dropped"
    for device in DEVICES:
        stretches = runs(ticks[device])
        assert len(stretches) == 2, f"{device}: one gap, the oldest spooled rows: {stretches}"
        (_, before), (after, _) = stretches
        assert before < cut_at + 1, "the gap starts with the outage: the oldest rows went"
        assert after < restored_at - 1, "the newest spooled rows were kept"
    dropped_logs = [r.getMessage() for r in caplog.records if "oldest rows to keep the newest" in r.getMessage()]
    assert dropped_logs and f"{store.stats().rows_dropped} rows dropped so far" in dropped_logs[-1]


@pytest.mark.timeout(60)
async def test_second_signal_during_a_slow_shutdown_spills_at_once_and_exits_0(
    tmp_path, simulator, proxy, mariadb_target, job_id, fetch, service_factory
):
    # shutdown_timeout 60 s: only the second signal can make it exit quickly.
    site = write_site(tmp_path, job_id, mariadb_target.database, proxy.port, simulator.port,
                      writer={"queue_size": 2}, shutdown_timeout=60.0)
    service = service_factory(tmp_path, site)
    folder = tmp_path / "spool" / f"site-{job_id}"  # the default folder of site.yaml
    process = await service.start()
    await until(lambda: raw_count(fetch, job_id), "first rows in the database", process=process)
    proxy.stall()
    await until(lambda: inspect(folder).rows > 0, "the full queue spilling to the spool", process=process)

    process.send_signal(signal.SIGINT)
    await until(lambda: "stopping:" in service.log, "the first signal's shutdown")
    signalled_at = time.monotonic()
    assert await service.stop(signal.SIGINT) == 0, service.log

    assert time.monotonic() - signalled_at < 5.0
    assert "asked again to stop" in service.log and "spilled the last" in service.log, service.log
    proxy.restore()
    await service.start()
    await until(lambda: inspect(folder).rows == 0, "spool replayed after the restart", process=service.process)
    assert await service.stop() == 0, service.log
    ticks = ticks_by_device(await raw_rows(fetch, job_id))
    for device in DEVICES:
        assert ticks[device], device


async def test_check_shows_the_spool_size_rows_and_oldest_tick(tmp_path, simulator, mariadb_target, job_id):
    folder = tmp_path / "spool" / f"site-{job_id}"  # the default folder of site.yaml
    spool = Spool(folder)
    spool.open()
    spool.append([Sample("d01", p, 1613644200.0 + k, 1.0, 1.0, 0) for k in range(3) for p in PARAMS])
    spool.close()
    site = write_site(tmp_path, job_id, mariadb_target.database, MARIADB_PORT, simulator.port)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "susee", "check", "--config", str(site), cwd=tmp_path, env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    output = stdout.decode()

    assert process.returncode == 0, output + stderr.decode()
    size = inspect(folder).size_bytes
    assert f"spool {folder}: {size} bytes, 24 rows waiting for the database, " \
           f"oldest tick 2021-02-18 10:30:00.000000 UTC" in output, output
    assert inspect(folder).rows == 24, "check changes nothing"
