"""The real command line, as a user runs it: ``python -m susee ...`` in a subprocess.

Meters are the in-process PAC3200 simulator on an ephemeral port (it keeps
serving while the test awaits the child, hence asyncio subprocesses); the
database is a fresh MariaDB database or an SQLite file in tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import struct
import sys
import time
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pymysql
import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from susee.simulator import Pac3200Simulator

DEFAULT_SET = ["104", "107", "132", "133", "134", "135", "222", "226"]
DEVICE_IDS = ("d01", "d02")
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
CLI_TIMEOUT_S = 30  # generous: a busy CI box; a hung command fails the test, never the suite
STOP_WITHIN_S = 5.0  # "exit within a few seconds" of SIGTERM/SIGINT
WAIT_FOR_S = 10.0  # bound of every "until it is there" loop
POLL_STEP_S = 0.2
# Variables that would leak the caller's settings into a test.
LEGACY_NAMES = ("user_db", "pswd_db", "host_db", "port_db")
PASSWORD = "s3cr3t-value"
GATEWAY_NO_RESPONSE = 0x0B


@dataclass(frozen=True)
class Finished:
    """A finished CLI run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def lines_of(self, device_id: str) -> list[list[str]]:
        """stdout table lines whose first column is ``device_id``, split into columns."""
        return [line.split() for line in self.stdout.splitlines() if line.split()[:1] == [device_id]]


def free_port() -> int:
    """A port nothing listens on (bound to port 0, read back, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_env(folder: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus susee settings, with an empty secrets directory."""
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("SUSEE_") and key.lower() not in LEGACY_NAMES
    }
    return env | {"SUSEE_SECRETS_DIR": str(secrets)} | extra


async def start_cli(folder: Path, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "susee", *args,
        cwd=folder, env=cli_env(folder, **env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process, timeout_s: float = CLI_TIMEOUT_S) -> Finished:
    """Wait for the process and collect its output; kill it if it outlives ``timeout_s``."""
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except asyncio.TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        pytest.fail(f"susee did not exit within {timeout_s} s\nstdout:\n{stdout.decode()}\nstderr:\n{stderr.decode()}")
    return Finished(process.returncode, stdout.decode(), stderr.decode())


async def run_cli(folder: Path, *args: str, **env: str) -> Finished:
    return await finish(await start_cli(folder, *args, **env))


def write_site(folder: Path, *, devices: list[dict], db_url: str, job_id: str = "000",
               name: str = "site.yaml", **extra: object) -> Path:
    data = {
        "job_id": job_id,
        "sample_time": 1,
        "database": {"url": db_url},
        "writer": {"batch_age": 0.2},
        "devices": devices,
        **extra,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def meters(port: int, units: tuple[int, ...] = (1, 2)) -> list[dict]:
    return [{"id": f"d{unit:02d}", "host": "127.0.0.1", "port": port, "unit": unit, "timeout": 1.0} for unit in units]


def mysql_url(target) -> str:
    return f"mysql://{target.user}@{target.host}:{target.port}/{target.database}"


def sqlite_rows(path: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def as_epoch(date: datetime) -> float:
    return date.replace(tzinfo=timezone.utc).timestamp()


@pytest.fixture
async def simulator():
    async with Pac3200Simulator(port=0, units=(1, 2), record=False) as sim:
        yield sim


# --- run ---


async def test_run_with_duration_exits_0_after_storing_good_rows_and_params(
    tmp_path, simulator, mariadb_target, job_id, fetch
):
    site = write_site(tmp_path, devices=meters(simulator.port), db_url=mysql_url(mariadb_target), job_id=job_id)

    result = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "2.5")

    assert result.returncode == 0, result.stderr
    rows = await fetch(f"SELECT idDevice, idParam, Code FROM see{job_id}Raw")
    per_device = Counter(row["idDevice"] for row in rows)
    assert set(per_device) == set(DEVICE_IDS)
    assert all(n >= 2 * len(DEFAULT_SET) and n % len(DEFAULT_SET) == 0 for n in per_device.values()), per_device
    assert {row["idParam"] for row in rows} == set(DEFAULT_SET)
    assert {row["Code"] for row in rows} == {0}
    params = {p["idParam"]: p["Acronimo"] for p in await fetch(f"SELECT idParam, Acronimo FROM see{job_id}Params")}
    assert set(DEFAULT_SET) <= set(params)
    assert params["104"] == "UL1_L2"


async def raw_row_count(fetch, job_id: str) -> int:
    try:
        return (await fetch(f"SELECT COUNT(*) AS n FROM see{job_id}Raw"))[0]["n"]
    except pymysql.err.MySQLError:  # database or table not created yet
        return 0


async def until_rows_are_stored(fetch, job_id: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + WAIT_FOR_S
    while await raw_row_count(fetch, job_id) == 0:
        if process.returncode is not None:
            result = await finish(process)
            pytest.fail(f"susee exited early with {result.returncode}:\n{result.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"no rows in see{job_id}Raw within {WAIT_FOR_S} s")
        await asyncio.sleep(POLL_STEP_S)


async def until_mid_tick(sample_time_s: float = 1.0) -> None:
    # A signal right at a tick could land between two pollers waking up: one
    # polls the tick, the other is stopped before it. Mid-tick, every device's
    # previous poll finished long ago (localhost) and none has started the next.
    await asyncio.sleep((sample_time_s / 2 - time.time() % sample_time_s) % sample_time_s)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_the_service_with_exit_0_and_only_whole_ticks_stored(
    signum, tmp_path, simulator, mariadb_target, job_id, fetch
):
    # batch_age 2 s: when the signal comes, the last ticks are still queued,
    # so only the shutdown flush can have stored them.
    site = write_site(
        tmp_path, devices=meters(simulator.port), db_url=mysql_url(mariadb_target), job_id=job_id,
        writer={"batch_age": 2.0},
    )
    process = await start_cli(tmp_path, "run", "--config", str(site))
    try:
        await until_rows_are_stored(fetch, job_id, process)
        await until_mid_tick()
        signalled_at = time.time()
        process.send_signal(signum)
        result = await finish(process, STOP_WITHIN_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()

    assert result.returncode == 0, result.stderr
    rows = await fetch(f"SELECT idDevice, Date, idParam FROM see{job_id}Raw")
    params_by_tick: dict[str, dict[datetime, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        params_by_tick[row["idDevice"]][row["Date"]].append(row["idParam"])
    assert set(params_by_tick) == set(DEVICE_IDS)
    last_tick = max(row["Date"] for row in rows)
    # The tick polled just before the signal was flushed on the way out.
    assert as_epoch(last_tick) == int(signalled_at), (last_tick, signalled_at)
    for device_id, ticks in params_by_tick.items():
        assert sum(len(p) for p in ticks.values()) % len(DEFAULT_SET) == 0, device_id
        for tick, params in ticks.items():
            assert sorted(params) == sorted(DEFAULT_SET), (device_id, tick)
        assert last_tick in ticks, f"{device_id} has no rows of the last tick {last_tick}"
    assert "rows written" in result.stderr and "dropped 0" in result.stderr


# --- check ---


async def test_check_masks_the_password_and_exits_1_when_the_login_fails(tmp_path, simulator, mariadb_target):
    # root's password is empty on the test server: any password is refused.
    site = write_site(tmp_path, devices=meters(simulator.port), db_url=mysql_url(mariadb_target))

    result = await run_cli(tmp_path, "check", "--config", str(site), SUSEE_DATABASE__PASSWORD=PASSWORD)

    assert PASSWORD not in result.output
    assert f"mysql://root:***@127.0.0.1:3306/{mariadb_target.database}" in result.stdout
    assert "fc3 7+64, fc3 801+20" in result.stdout
    assert "database: UNREACHABLE" in result.stdout
    assert result.returncode == 1, result.output


async def test_check_exits_0_when_every_device_and_the_database_answer(tmp_path, simulator, mariadb_target):
    site = write_site(tmp_path, devices=meters(simulator.port), db_url=mysql_url(mariadb_target))

    result = await run_cli(tmp_path, "check", "--config", str(site))

    assert result.returncode == 0, result.output
    assert f"database: mysql://root@127.0.0.1:3306/{mariadb_target.database}" in result.stdout
    for device_id in DEVICE_IDS:
        assert f"{device_id}: pac3200 unit" in result.stdout
    assert result.stdout.count("fc3 7+64, fc3 801+20") == len(DEVICE_IDS)
    assert "database: reachable" in result.stdout
    assert "all reachable" in result.stdout and "NOT all reachable" not in result.stdout


async def test_check_exits_1_and_names_a_device_that_does_not_answer(tmp_path, simulator):
    devices = meters(simulator.port, units=(1,))
    devices.append({"id": "dead01", "host": "127.0.0.1", "port": free_port(), "unit": 1, "timeout": 0.5})
    site = write_site(tmp_path, devices=devices, db_url=f"sqlite:///{tmp_path / 'check.db'}")

    result = await run_cli(tmp_path, "check", "--config", str(site))

    assert result.returncode == 1, result.output
    lines = result.stdout.splitlines()
    dead_at = next(i for i, line in enumerate(lines) if line.strip().startswith("dead01:"))
    assert "err_connection" in lines[dead_at + 1], result.stdout
    assert "NOT all reachable" in result.stdout


async def test_check_exits_1_and_says_driver_not_found_for_a_missing_profile(tmp_path, simulator):
    devices = meters(simulator.port, units=(1,))
    devices.append({"id": "noprof", "profile": "no-such-meter.yaml", "host": "127.0.0.1", "port": simulator.port})
    site = write_site(tmp_path, devices=devices, db_url=f"sqlite:///{tmp_path / 'check.db'}")

    result = await run_cli(tmp_path, "check", "--config", str(site))

    assert result.returncode == 1, result.output
    assert any(line.strip().startswith("noprof: driver not found") for line in result.stdout.splitlines()), result.stdout
    assert "no-such-meter.yaml" in result.stdout


async def test_check_exits_2_on_an_invalid_config_before_trying_anything(tmp_path):
    site = write_site(tmp_path, devices=meters(free_port()), db_url="sqlite:///check.db", colour="blue")

    result = await run_cli(tmp_path, "check", "--config", str(site))

    assert result.returncode == 2, result.output
    assert "config error" in result.stderr and "field 'colour': unknown key" in result.stderr
    assert "reachable" not in result.stdout


# --- migrate ---


async def test_migrate_creates_the_tables_then_reports_the_schema_up_to_date(tmp_path, mariadb_target, job_id):
    site = write_site(tmp_path, devices=[], db_url=mysql_url(mariadb_target), job_id=job_id)

    first = await run_cli(tmp_path, "migrate", "--config", str(site))
    second = await run_cli(tmp_path, "migrate", "--config", str(site))

    assert first.returncode == 0, first.output
    for table in ("Raw", "Last", "Params"):
        assert f"created table see{job_id}{table}" in first.stdout
    assert second.returncode == 0, second.output
    assert "schema up to date" in second.stdout
    assert "created" not in second.stdout


# --- read ---


async def test_read_prints_one_row_per_param_with_acronym_and_code(tmp_path, simulator):
    site = write_site(tmp_path, devices=meters(simulator.port), db_url=f"sqlite:///{tmp_path / 'read.db'}")

    result = await run_cli(tmp_path, "read", "--config", str(site), "--device", "d01")

    assert result.returncode == 0, result.output
    table = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line.strip()}
    assert list(table) == DEFAULT_SET
    param_id, acronym, value, unit, code, _ = table["104"]
    assert (acronym, unit, code) == ("UL1_L2", "V", "0")
    assert 380.0 <= float(value) <= 420.0
    assert all(columns[4] == "0" for columns in table.values()), result.stdout


async def test_read_of_an_unknown_device_exits_2_naming_the_known_ids(tmp_path):
    site = write_site(tmp_path, devices=meters(free_port()), db_url=f"sqlite:///{tmp_path / 'read.db'}")

    result = await run_cli(tmp_path, "read", "--config", str(site), "--device", "d99")

    assert result.returncode == 2, result.output
    assert "'d99'" in result.stderr and "d01, d02" in result.stderr


# --- last ---


async def test_last_prints_every_param_of_every_device_and_raw_prints_n_rows(tmp_path, simulator, job_id):
    database = tmp_path / "last.db"
    site = write_site(tmp_path, devices=meters(simulator.port), db_url=f"sqlite:///{database}", job_id=job_id)
    run = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "2.5")
    assert run.returncode == 0, run.stderr

    last, raw = await asyncio.gather(
        run_cli(tmp_path, "last", "--config", str(site)),
        run_cli(tmp_path, "last", "--config", str(site), "--raw", "5"),
    )

    assert last.returncode == 0, last.output
    for device_id in DEVICE_IDS:
        # idDevice, date, time, idParam, acronym, Value, unit, Delay, Code, (meaning)
        printed = {columns[3]: columns for columns in last.lines_of(device_id)}
        assert sorted(printed) == sorted(DEFAULT_SET), last.stdout
        assert (printed["104"][4], printed["104"][6]) == ("UL1_L2", "V")
        assert printed["222"][6] == "Wh"
        assert all(columns[8] == "0" for columns in printed.values()), last.stdout
    assert f"{len(DEVICE_IDS) * len(DEFAULT_SET)} row(s) from see{job_id}Last" in last.stdout
    assert raw.returncode == 0, raw.output
    assert sum(len(raw.lines_of(device_id)) for device_id in DEVICE_IDS) == 5
    assert f"5 row(s) from see{job_id}Raw" in raw.stdout


# --- the embedded default ---


async def test_demo_config_runs_its_embedded_simulator_into_sqlite(tmp_path):
    port = free_port()
    demo = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    demo["simulator"]["port"] = port
    for device in demo["devices"]:
        device["port"] = port
    database = tmp_path / "demo.db"
    demo["database"]["url"] = f"sqlite:///{database}"
    site = tmp_path / "demo.yaml"
    site.write_text(yaml.safe_dump(demo, sort_keys=False), encoding="utf-8")

    # The demo samples every 5 s; one 1 s tick per second keeps the test short.
    result = await run_cli(tmp_path, "--config", str(site), "--duration", "2.5", SUSEE_SAMPLE_TIME="1")

    assert result.returncode == 0, result.stderr
    job = demo["job_id"]
    codes = sqlite_rows(database, f'SELECT idDevice, Code, COUNT(*) FROM "see{job}Raw" GROUP BY idDevice, Code')
    assert {device for device, _, _ in codes} == {"d00", "d01", "d02"}
    assert {code for _, code, _ in codes} == {0}, codes
    per_tick = sqlite_rows(database, f'SELECT idDevice, COUNT(DISTINCT idParam) FROM "see{job}Raw" GROUP BY idDevice')
    assert dict(per_tick) == {"d00": 8, "d01": 8, "d02": 16}


# --- simulate ---


async def until_port_accepts(port: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + WAIT_FOR_S
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process.returncode is not None:
                result = await finish(process)
                pytest.fail(f"simulate exited early with {result.returncode}:\n{result.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"simulate did not listen on {port} within {WAIT_FOR_S} s")
            await asyncio.sleep(POLL_STEP_S)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def test_simulate_serves_values_and_faults_until_sigint(tmp_path):
    port = free_port()
    process = await start_cli(
        tmp_path, "simulate", "--port", str(port), "--units", "1-2", "--fault", "2=gateway_no_response"
    )
    try:
        await until_port_accepts(port, process)
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0)
        try:
            assert await client.connect()
            voltage = await client.read_holding_registers(7, count=2, device_id=1)
            faulty = await client.read_holding_registers(7, count=2, device_id=2)
        finally:
            client.close()
        process.send_signal(signal.SIGINT)
        result = await finish(process, STOP_WITHIN_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()

    assert not voltage.isError(), voltage
    (ul1_l2,) = struct.unpack(">f", struct.pack(">2H", *voltage.registers))
    assert 380.0 <= ul1_l2 <= 420.0
    assert faulty.isError() and faulty.exception_code == GATEWAY_NO_RESPONSE, faulty
    assert result.returncode == 0, result.stderr
