"""``workers: N``: the real CLI as a parent of N worker processes, against MariaDB and simulators.

Three PAC3200 simulators on ephemeral ports are three buses: A (units 1-3 as
d01-d03), B (d04, d05) and C (d06). Two workers split them A | B + C (largest
bus first onto the lightest worker). The service runs in its own session, so
a signal can go to the whole process group as a terminal's Ctrl-C or
systemd's stop does; its log goes to a file the test reads while it runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pymysql
import pytest
import yaml

from support import spooled_rows
from susee.sample import Sample
from susee.simulator import Pac3200Simulator
from susee.spool import Spool, inspect

PARAMS = ["104", "107", "132", "133", "134", "135", "222", "226"]  # the PAC3200 default set
BUSES = {"A": (1, 2, 3), "B": (1, 2), "C": (1,)}  # simulator -> its unit ids
DEVICE_BUS = {"d01": ("A", 1), "d02": ("A", 2), "d03": ("A", 3), "d04": ("B", 1), "d05": ("B", 2), "d06": ("C", 1)}
SHARES = {0: ("d01", "d02", "d03"), 1: ("d04", "d05", "d06")}  # what partition() makes of them with 2 workers
BATCH_AGE_S = 0.2
START_S = 15.0  # the parent, then each worker, starts an interpreter: generous on a busy box
STOP_S = 10.0  # exit after a stop signal: shutdown plus margins
WAIT_S = 15.0  # bound of every "until it is there" loop
STEP_S = 0.1
OLD_TICK_S = 1613644200.0  # 2021-02-18 10:30:00 UTC: rows of an earlier run, never polled by this one


# --- fixtures and helpers ---


@pytest.fixture
async def buses():
    """One simulator per bus name, each on its own ephemeral port."""
    sims = {name: Pac3200Simulator(port=0, units=units, record=False) for name, units in BUSES.items()}
    for sim in sims.values():
        await sim.__aenter__()
    try:
        yield {name: sim.port for name, sim in sims.items()}
    finally:
        for sim in sims.values():
            await sim.__aexit__(None, None, None)


def closed_port() -> int:
    """A loopback port nothing listens on (bound to port 0, read back, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def devices_on(ports: dict[str, int]) -> list[dict]:
    return [
        {"id": device_id, "host": "127.0.0.1", "port": ports[bus], "unit": unit, "timeout": 1.0}
        for device_id, (bus, unit) in DEVICE_BUS.items()
    ]


def write_site(folder: Path, *, job_id: str, db_url: str, devices: list[dict], **extra: object) -> Path:
    data = {
        "job_id": job_id,
        "sample_time": 1,
        "database": {"url": db_url, "connect_timeout": 2.0},
        "writer": {"batch_age": BATCH_AGE_S},
        "spool": {"path": str(folder / "spool")},
        "workers": 2,
        "devices": devices,
        **extra,
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def mysql_url(target) -> str:
    return f"mysql://{target.user}@{target.host}:{target.port}/{target.database}"


def cli_env(folder: Path) -> dict[str, str]:
    """The caller's environment minus susee settings, with an empty secrets directory."""
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    env = {
        key: value for key, value in os.environ.items()
        if not key.upper().startswith("SUSEE_") and key.lower() not in ("user_db", "pswd_db", "host_db", "port_db")
    }
    # [web] the live view on any free port: never 8050, taken by another test or a running susee
    return env | {"SUSEE_SECRETS_DIR": str(secrets), "SUSEE_HTTP__LISTEN": "127.0.0.1:0"}


class Service:
    """``python -m susee --config site.yaml run`` in its own session, its log in a file."""

    def __init__(self, folder: Path, site: Path) -> None:
        self.folder = folder
        self.site = site
        self.log_path = folder / "susee.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> None:
        with open(self.log_path, "wb") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "susee", "--config", str(self.site), "run", *args,
                cwd=self.folder, env=cli_env(self.folder), stdout=log_file, stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal_group(self, signum: int) -> None:
        """``signum`` to every process of the service (parent and workers), as a terminal or systemd does."""
        os.killpg(self.process.pid, signum)

    async def finish(self, timeout_s: float) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except asyncio.TimeoutError:
            self.kill_group()
            await self.process.wait()
            pytest.fail(f"susee did not exit within {timeout_s} s:\n{self.log}")

    def worker_pids(self, index: int, count: int = 2) -> list[int]:
        """Live processes running worker ``index`` of this test's site (found by their command line)."""
        wanted = ["--config", str(self.site), "run", "--worker", f"{index}/{count}"]
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # gone meanwhile
            if state != "Z" and all(part in argv for part in wanted) and _in_order(argv, wanted):
                pids.append(int(entry.name))
        return pids

    async def until_log(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + WAIT_S
        while (found := re.search(pattern, self.log)) is None:
            if self.process.returncode is not None:
                pytest.fail(f"susee exited ({self.process.returncode}) before logging {pattern!r}:\n{self.log}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} in the log within {WAIT_S} s:\n{self.log}")
            await asyncio.sleep(STEP_S)
        return found

    def kill_group(self) -> None:
        """Kill the parent and its workers; workers that outlived their parent one by one, by pid."""
        if self.process is None:
            return
        if self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        for index in range(2):
            for pid in self.worker_pids(index):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _in_order(argv: list[str], wanted: list[str]) -> bool:
    """``wanted`` appears in ``argv`` as one contiguous run."""
    return any(argv[i:i + len(wanted)] == wanted for i in range(len(argv) - len(wanted) + 1))


@pytest.fixture
async def service_for():
    services: list[Service] = []

    def make(folder: Path, site: Path) -> Service:
        services.append(Service(folder, site))
        return services[-1]

    yield make
    for service in services:
        service.kill_group()
        if service.process is not None:
            await service.process.wait()


async def raw_rows(fetch, job_id: str, where: str = "") -> list[dict]:
    try:
        return await fetch(f"SELECT idDevice, Date, idParam, Value, Code FROM see{job_id}Raw {where}")
    except pymysql.err.MySQLError:  # database or table not created yet
        return []


def ticks_by_device(rows: list[dict]) -> dict[str, dict[float, list[dict]]]:
    ticks: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        ticks[row["idDevice"]][as_epoch(row["Date"])].append(row)
    return ticks


def as_epoch(date: datetime) -> float:
    return date.replace(tzinfo=timezone.utc).timestamp()


async def until_every_device_has_rows(fetch, job_id: str, service: Service, devices, *, after_s: float = 0.0) -> None:
    deadline = time.monotonic() + START_S
    while True:
        rows = await raw_rows(fetch, job_id, f"WHERE Date > FROM_UNIXTIME({after_s})")
        missing = set(devices) - {row["idDevice"] for row in rows}
        if not missing:
            return
        if service.process.returncode is not None:
            pytest.fail(f"susee exited ({service.process.returncode}) early:\n{service.log}")
        if time.monotonic() > deadline:
            pytest.fail(f"no rows after {after_s} for {sorted(missing)} within {START_S} s:\n{service.log}")
        await asyncio.sleep(STEP_S)


async def until_mid_tick() -> None:
    # A stop right at a tick could land between two pollers waking up; mid-tick,
    # every poll of the previous tick finished long ago (localhost).
    await asyncio.sleep((0.5 - time.time() % 1.0) % 1.0)


def assert_whole_ticks_exactly_once(ticks: dict[float, list[dict]], device_id: str) -> None:
    for tick_s, rows in ticks.items():
        assert sorted(row["idParam"] for row in rows) == sorted(PARAMS), (device_id, tick_s)
        assert tick_s == int(tick_s), f"{device_id}: tick {tick_s} not on the 1 s grid"


def contiguous(ticks) -> bool:
    ordered = sorted(ticks)
    return ordered == [ordered[0] + n for n in range(len(ordered))]


def worker_lines(log: str, index: int, count: int = 2) -> list[str]:
    return [line for line in log.splitlines() if f" worker {index}/{count} " in line]


# --- the tests ---


@pytest.mark.timeout(40)
async def test_two_workers_poll_every_device_every_tick_once_and_exit_0_after_the_duration(
    tmp_path, buses, mariadb_target, job_id, fetch, service_for
):
    # A dead meter on a bus of its own: bus 4 goes to worker 0 (3 + 1 against 3 devices).
    dead = {"id": "dead1", "host": "127.0.0.1", "port": closed_port(), "unit": 1, "timeout": 0.5}
    site = write_site(tmp_path, job_id=job_id, db_url=mysql_url(mariadb_target), devices=[*devices_on(buses), dead])
    service = service_for(tmp_path, site)
    shares = {0: (*SHARES[0], "dead1"), 1: SHARES[1]}

    await service.start("--duration", "4")
    code = await service.finish(START_S + 4 + STOP_S)

    log = service.log
    assert code == 0, log
    ticks = ticks_by_device(await raw_rows(fetch, job_id))
    assert set(ticks) == {*DEVICE_BUS, "dead1"}, log
    for index, devices in shares.items():
        span = {tick for device_id in devices for tick in ticks[device_id]}
        assert len(span) >= 2, f"worker {index} polled {len(span)} tick(s):\n{log}"
        first, last = min(span), max(span)
        for device_id in devices:
            assert_whole_ticks_exactly_once(ticks[device_id], device_id)
            own = set(ticks[device_id])
            assert contiguous(own), (device_id, sorted(own))
            # Same process, same ticks; a stop landing right on a tick may cut one device short.
            assert span - own <= {first, last}, (device_id, sorted(span - own))
            codes = {row["Code"] for rows in ticks[device_id].values() for row in rows}
            if device_id == "dead1":
                assert 0 not in codes, codes
            else:
                assert codes == {0}, (device_id, codes)
    assert "starting 2 workers" in log
    for index in shares:
        lines = worker_lines(log, index)
        assert any("sampling" in line for line in lines), log
        assert sum("stopping:" in line for line in lines) == 1, log
    assert "Traceback" not in log


@pytest.mark.timeout(40)
async def test_sigterm_to_the_process_group_stops_each_worker_once_cleanly_and_stores_the_last_tick(
    tmp_path, buses, mariadb_target, job_id, fetch, service_for
):
    # batch_age 2 s: when the signal comes, the last ticks are still queued in
    # the workers, so only their shutdown flush can have stored them.
    site = write_site(tmp_path, job_id=job_id, db_url=mysql_url(mariadb_target), devices=devices_on(buses),
                      writer={"batch_age": 2.0})
    service = service_for(tmp_path, site)
    await service.start()
    await until_every_device_has_rows(fetch, job_id, service, DEVICE_BUS)

    await until_mid_tick()
    signalled_at = time.time()
    service.signal_group(signal.SIGTERM)
    code = await service.finish(STOP_S)

    log = service.log
    assert code == 0, log
    assert "asked again to stop" not in log and "asked twice" not in log, log
    assert log.count("SIGTERM: stopping the workers") == 1, log
    for index in SHARES:
        assert sum("stopping:" in line for line in worker_lines(log, index)) == 1, log
    ticks = ticks_by_device(await raw_rows(fetch, job_id))
    assert set(ticks) == set(DEVICE_BUS)
    for device_id, device_ticks in ticks.items():
        assert_whole_ticks_exactly_once(device_ticks, device_id)
        assert contiguous(device_ticks), (device_id, sorted(device_ticks))
        # The tick polled just before the signal was flushed on the way out.
        assert max(device_ticks) == int(signalled_at), (device_id, max(device_ticks), signalled_at)
    assert "rows written" in log and "dropped 0" in log, log


@pytest.mark.timeout(45)
async def test_kill_9_of_a_worker_restarts_it_and_only_its_devices_have_a_gap(
    tmp_path, buses, mariadb_target, job_id, fetch, service_for
):
    site = write_site(tmp_path, job_id=job_id, db_url=mysql_url(mariadb_target), devices=devices_on(buses))
    service = service_for(tmp_path, site)
    await service.start()
    await until_every_device_has_rows(fetch, job_id, service, DEVICE_BUS)
    (victim,) = service.worker_pids(0)
    (survivor,) = service.worker_pids(1)

    await until_mid_tick()
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    await service.until_log(rf"worker 0/2 \(pid {victim}\) died with code -9; restarting")
    await until_every_device_has_rows(fetch, job_id, service, SHARES[0], after_s=killed_at + 1)
    successors = service.worker_pids(0)
    assert len(successors) == 1 and successors != [victim], successors
    assert service.worker_pids(1) == [survivor], "the other worker was left alone"
    await until_mid_tick()
    service.signal_group(signal.SIGTERM)
    code = await service.finish(STOP_S)

    log = service.log
    assert code == 0, log
    assert service.worker_pids(0) == [] and service.worker_pids(1) == [], "no worker outlives the parent"
    assert log.count("died with code") == 1, log
    assert sum("sampling" in line for line in worker_lines(log, 0)) == 2, "worker 0 started twice"
    assert sum("sampling" in line for line in worker_lines(log, 1)) == 1, "worker 1 was left alone"
    ticks = ticks_by_device(await raw_rows(fetch, job_id))
    for device_id in SHARES[1]:
        assert_whole_ticks_exactly_once(ticks[device_id], device_id)
        assert contiguous(ticks[device_id]), (device_id, sorted(ticks[device_id]))
        assert min(ticks[device_id]) < killed_at < max(ticks[device_id])
    for device_id in SHARES[0]:
        own = sorted(ticks[device_id])
        assert_whole_ticks_exactly_once(ticks[device_id], device_id)
        missing = [t for t in range(int(own[0]), int(own[-1]) + 1) if t not in ticks[device_id]]
        assert missing, f"{device_id}: no gap although its worker was killed"
        # The gap is the restart: from (at most a batch_age before) the kill to the successor's first tick.
        assert all(killed_at - 1 - BATCH_AGE_S <= t for t in missing), (device_id, missing, killed_at)
        assert contiguous(missing), (device_id, missing)
        assert own[-1] > max(missing), f"{device_id}: no rows after the restart"


@pytest.mark.timeout(40)
async def test_workers_stop_cleanly_on_their_own_when_the_parent_is_killed(
    tmp_path, buses, mariadb_target, job_id, fetch, service_for
):
    # batch_age 2 s: the last ticks are stored only if the workers flush on the way out.
    site = write_site(tmp_path, job_id=job_id, db_url=mysql_url(mariadb_target), devices=devices_on(buses),
                      writer={"batch_age": 2.0})
    service = service_for(tmp_path, site)
    await service.start()
    await until_every_device_has_rows(fetch, job_id, service, DEVICE_BUS)

    await until_mid_tick()
    killed_at = time.time()
    os.kill(service.process.pid, signal.SIGKILL)  # the parent only: its workers see their stdin close
    await service.process.wait()
    deadline = time.monotonic() + STOP_S
    while service.worker_pids(0) or service.worker_pids(1):
        if time.monotonic() > deadline:
            pytest.fail(f"workers still running {STOP_S} s after their parent died:\n{service.log}")
        await asyncio.sleep(STEP_S)

    log = service.log
    for index in SHARES:
        lines = worker_lines(log, index)
        assert sum("the parent process is gone" in line for line in lines) == 1, log
        assert sum("stopping:" in line for line in lines) == 1, log
    assert "asked again to stop" not in log, log
    ticks = ticks_by_device(await raw_rows(fetch, job_id))
    assert set(ticks) == set(DEVICE_BUS)
    for device_id, device_ticks in ticks.items():
        assert_whole_ticks_exactly_once(device_ticks, device_id)
        assert contiguous(device_ticks), (device_id, sorted(device_ticks))
        assert max(device_ticks) == int(killed_at), (device_id, max(device_ticks), killed_at)


def old_rows(device_ids: tuple[str, ...], ticks: int) -> list[list[Sample]]:
    """Batches of an earlier run: one tick of every device each, long before this run."""
    return [
        [Sample(device_id, param_id, OLD_TICK_S + n, 100.0 + n + p / 10, 12.5, 0)
         for device_id in device_ids for p, param_id in enumerate(PARAMS)]
        for n in range(ticks)
    ]


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    ("workers", "orphan"),
    [(2, "worker-5"), (2, "."), (1, "worker-0")],
    ids=["two-workers-replay-worker-5", "two-workers-replay-the-root", "one-process-replays-worker-0"],
)
async def test_spool_of_an_earlier_run_with_another_worker_count_is_replayed(
    workers, orphan, tmp_path, buses, mariadb_target, job_id, fetch, service_for
):
    site = write_site(tmp_path, job_id=job_id, db_url=mysql_url(mariadb_target), devices=devices_on(buses),
                      workers=workers)
    folder = tmp_path / "spool" / orphan
    spool = Spool(folder, 1 << 30, "stop_polling")
    spool.open()
    batches = old_rows(("d01", "d04"), 3)
    for batch in batches:
        spool.append(batch)
    spool.close()
    spooled = sum(len(batch) for batch in batches)
    assert inspect(folder).rows == spooled
    service = service_for(tmp_path, site)

    await service.start("--duration", "3")
    code = await service.finish(START_S + 3 + STOP_S)

    log = service.log
    assert code == 0, log
    replayed = await raw_rows(fetch, job_id, f"WHERE Date < FROM_UNIXTIME({OLD_TICK_S + 3600})")
    expected = {(s.device_id, s.tick_s, s.param_id): s.value for batch in batches for s in batch}
    assert {(r["idDevice"], as_epoch(r["Date"]), r["idParam"]): r["Value"] for r in replayed} == pytest.approx(expected)
    assert len(replayed) == spooled
    assert inspect(folder).rows == 0, "the orphan folder is drained"
    assert "belongs to no process of this run" in log, log
    current = ticks_by_device(await raw_rows(fetch, job_id, f"WHERE Date > FROM_UNIXTIME({OLD_TICK_S + 3600})"))
    assert set(current) == set(DEVICE_BUS), "this run polled as usual meanwhile"


@pytest.mark.timeout(40)
async def test_with_the_database_down_each_worker_spools_only_its_own_devices(tmp_path, buses, job_id, service_for):
    url = f"mysql://root@127.0.0.1:{closed_port()}/susee_unreachable_{job_id}"
    site = write_site(tmp_path, job_id=job_id, db_url=url, devices=devices_on(buses), shutdown_timeout=2.0)
    service = service_for(tmp_path, site)

    await service.start("--duration", "3")
    code = await service.finish(START_S + 3 + STOP_S)

    log = service.log
    assert code == 0, log
    root = tmp_path / "spool"
    assert inspect(root).rows == 0, "nothing in the root folder: each worker has its own"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["worker-0", "worker-1"]
    for index, devices in SHARES.items():
        rows = spooled_rows(root / f"worker-{index}")
        assert {row.device_id for row in rows} == set(devices), (index, log)
        by_device_tick = defaultdict(list)
        for row in rows:
            by_device_tick[(row.device_id, row.tick_s)].append(row.param_id)
        assert all(sorted(params) == sorted(PARAMS) for params in by_device_tick.values()), by_device_tick

    # ``check`` shows the shares and what each worker's spool holds (read-only, the service is stopped).
    checked = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "susee", "--config", str(site), "check",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(checked.communicate(), 30))[0].decode()
    assert checked.returncode == 1, output  # the database is down
    assert "workers: 2 processes, devices per worker 3/3" in output, output
    for index in SHARES:
        folder = root / f"worker-{index}"
        assert re.search(rf"spool {re.escape(str(folder))}: \d+ bytes, {inspect(folder).rows} rows waiting", output), output
