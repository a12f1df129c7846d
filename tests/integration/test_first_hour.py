"""The first hour of a new user, through the real CLI in a subprocess from a fresh folder (issue 16).

Each test starts ``python -m susee`` the way the README tells a newcomer to,
in a temporary folder of its own, and checks what the user sees and what
ends up on disk or in the database.
"""

from __future__ import annotations

import re
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from integration.test_cli import DEMO_CONFIG, DEVICE_IDS, meters, mysql_url, run_cli, simulator, write_site
from susee.quality import Code

__all__ = ["simulator"]  # the fixture, shared with test_cli

# A log line's time: ISO 8601 with Z, so nobody has to guess the zone.
UTC_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG) ", re.M)

WIDE_PROFILE = {
    "name": "wide",
    "description": "64-bit counters, 0xFFFFFFFFFFFFFFFF meaning 'not available'",
    "params": [
        {"id": "NA", "address": 0, "type": "uint64", "unit": "Wh", "acronym": "E_NA"},
        {"id": "MIN", "address": 4, "type": "int64", "unit": "Wh", "acronym": "E_MIN"},
        {"id": "BIG", "address": 8, "type": "uint64", "unit": "Wh", "acronym": "E_BIG"},
    ],
}
WIDE_REGISTERS = [0xFFFF] * 4 + [0x8000, 0, 0, 0] + [0x0000, 0x0000, 0x1234, 0x5678]


def sqlite_rows(path: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
async def pymodbus_server():
    """pymodbus' own Modbus TCP server (not susee's simulator) holding the 64-bit registers, on a free port."""
    # pymodbus numbers a sequential block from 1: block address 1 is protocol address 0.
    block = ModbusSequentialDataBlock(1, WIDE_REGISTERS)
    context = ModbusServerContext(devices=ModbusDeviceContext(hr=block, ir=block), single=True)
    server = ModbusTcpServer(context, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    yield server.transport.sockets[0].getsockname()[1]
    await server.shutdown()


# --- item 1: 64-bit integers ---


async def test_64_bit_not_available_from_pymodbus_server_is_stored_as_a_double_run_after_run(tmp_path, pymodbus_server):
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(WIDE_PROFILE), encoding="utf-8")
    device = {"id": "w01", "profile": "wide.yaml", "host": "127.0.0.1", "port": pymodbus_server, "unit": 1}
    site = write_site(tmp_path, devices=[device], db_url="sqlite:///wide.db", job_id="w64")

    first = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "1.5")
    second = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "1.5")  # once died on the next start

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert "OverflowError" not in first.stderr + second.stderr
    rows = sqlite_rows(tmp_path / "wide.db", 'SELECT idParam, Value, typeof(Value), Code FROM "seew64Raw"')
    assert {(param, value, kind, code) for param, value, kind, code in rows} == {
        ("NA", 18446744073709551615.0, "real", 0),
        ("MIN", -9223372036854775808.0, "real", 0),
        ("BIG", float(0x12345678), "real", 0),
    }
    assert len(rows) >= 2 * 3
    assert "spooled 0" in first.stderr and "spooled 0" in second.stderr


# --- item 8: ids YAML reads as numbers ---


@pytest.mark.parametrize(
    ("job_line", "device_id", "fragments"),
    [
        ("job_id: 010", "d01", ["field 'job_id': 010 is read by YAML as the number 8", 'job_id: "010"']),
        ("job_id: 000", "d01", ["field 'job_id': 000 is read by YAML as the number 0", 'job_id: "000"']),
        ('job_id: "000"', "01", ["devices[0] (id 1): field 'id': 01 is read by YAML as the number 1", 'id: "01"']),
    ],
    ids=["job-010", "job-000", "device-01"],
)
async def test_an_unquoted_id_is_refused_with_exit_2_saying_to_quote_it(tmp_path, job_line, device_id, fragments):
    site = tmp_path / "site.yaml"
    site.write_text(
        f'{job_line}\ndatabase: {{url: "sqlite:///ids.db"}}\n'
        f"devices:\n  - {{id: {device_id}, host: 127.0.0.1, port: 1502}}\n",
        encoding="utf-8",
    )

    for command in (["run", "--duration", "1"], ["check"]):
        result = await run_cli(tmp_path, *command, "--config", str(site))

        assert result.returncode == 2, result.output
        for fragment in fragments:
            assert fragment in result.stderr
    assert not (tmp_path / "ids.db").exists()


def test_the_shipped_configs_quote_their_ids():
    for path in (DEMO_CONFIG, DEMO_CONFIG.with_name("site.example.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(data["job_id"], str), path
        assert all(isinstance(device["id"], str) for device in data["devices"]), path


# --- item 9: nothing to poll ---


@pytest.mark.parametrize("devices", [[], [{"id": "d01", "host": "127.0.0.1", "enabled": False}]],
                         ids=["no-devices", "none-enabled"])
async def test_run_without_an_enabled_device_is_a_config_error_and_check_warns(tmp_path, devices):
    site = write_site(tmp_path, devices=devices, db_url="sqlite:///empty.db")

    run = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "1")
    check = await run_cli(tmp_path, "check", "--config", str(site))

    assert run.returncode == 2, run.output
    assert "config error" in run.stderr and "no enabled device" in run.stderr
    assert "WARNING: no enabled device" in check.stdout
    assert "all reachable" not in check.stdout and "nothing to poll" in check.stdout
    assert check.returncode == 1


# --- item 10: the demo's port already taken ---


async def test_demo_port_in_use_is_one_line_naming_the_port_and_exit_1(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        demo = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
        demo["simulator"]["port"] = port
        for device in demo["devices"]:
            device["port"] = port
        site = tmp_path / "demo.yaml"
        site.write_text(yaml.safe_dump(demo, sort_keys=False), encoding="utf-8")

        result = await run_cli(tmp_path, "--config", str(site), "--duration", "2")

    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if not UTC_STAMP.match(line)]  # besides the log
    assert f"127.0.0.1:{port}" in line and "in use" in line and "simulator.port" in line, line


# --- item 11: relative paths and read-only commands ---


async def test_relative_paths_are_taken_from_the_config_folder_wherever_susee_runs(tmp_path, simulator):
    site_folder, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site_folder.mkdir()
    elsewhere.mkdir()
    site = write_site(site_folder, devices=meters(simulator.port, units=(1,)), db_url="sqlite:///data/susee.db",
                      spool={"path": "buffer"})
    (site_folder / "data").mkdir()
    relative = Path("..") / "site" / "site.yaml"

    run = await run_cli(elsewhere, "run", "--config", str(relative), "--duration", "1.5")
    last = await run_cli(elsewhere, "last", "--config", str(relative))

    assert run.returncode == 0, run.stderr
    assert (site_folder / "data" / "susee.db").is_file()
    assert f"spool {site_folder / 'buffer'} holds 0 rows" in run.stderr
    assert list(elsewhere.iterdir()) == [elsewhere / "secrets"], "nothing created in the working folder"
    assert last.returncode == 0, last.output
    assert len(last.lines_of("d01")) == 8


async def test_last_and_check_never_create_a_database_file(tmp_path):
    site = write_site(tmp_path, devices=[{"id": "d01", "host": "127.0.0.1", "port": 1, "timeout": 0.2}],
                      db_url="sqlite:///never.db")

    last = await run_cli(tmp_path, "last", "--config", str(site))
    check = await run_cli(tmp_path, "check", "--config", str(site))

    assert not (tmp_path / "never.db").exists()
    assert last.returncode == 1
    assert "the SQLite file does not exist" in last.stdout and "susee migrate" in last.stdout
    assert "no such table" not in last.output
    assert "database: the SQLite file does not exist yet" in check.stdout
    # a path, not "spool spool: empty"; the default folder is per site: spool/<config name>-<job>
    assert f"spool {tmp_path / 'spool' / (site.stem + '-000')}: empty" in check.stdout


# --- item 12: a database without susee tables ---


async def test_last_on_an_sqlite_file_without_tables_says_to_migrate(tmp_path):
    sqlite3.connect(tmp_path / "bare.db").close()
    site = write_site(tmp_path, devices=meters(1), db_url="sqlite:///bare.db")

    result = await run_cli(tmp_path, "last", "--config", str(site))

    assert result.returncode == 1
    assert "has no susee tables" in result.stdout and "susee migrate" in result.stdout
    assert result.stderr == ""  # said once, on stdout; no WARNING line repeating it


async def test_last_on_a_mariadb_database_that_does_not_exist_says_to_migrate_naming_the_url_once(
    tmp_path, mariadb_target
):
    url = mysql_url(mariadb_target)
    site = write_site(tmp_path, devices=meters(1), db_url=url)

    result = await run_cli(tmp_path, "last", "--config", str(site))

    assert result.returncode == 1
    assert "has no susee tables" in result.stdout and "susee migrate" in result.stdout
    assert "1046" not in result.output and "No database selected" not in result.output
    assert result.output.count(mariadb_target.database) == 1, result.output


# --- item 13 and 15: the status line, UTC log times, last's table ---


async def test_a_run_logs_status_lines_and_a_failing_device_once_with_utc_times(tmp_path, simulator):
    simulator.set_fault(2, "nan")
    site = write_site(tmp_path, devices=meters(simulator.port), db_url="sqlite:///status.db", status_every=1)

    result = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "3.5")

    assert result.returncode == 0, result.stderr
    status = [line for line in result.stderr.splitlines() if "status of the last 1 s" in line]
    assert len(status) >= 2, result.stderr
    assert "1 of 2 devices failing: value_nan: d02" in status[-1]
    assert re.search(r"Delay p50 <= [\d.]+ ms, p99 <= [\d.]+ ms; database online; spool empty$", status[-1])
    assert result.stderr.count("device d02 now failing: value_nan (Code 16)") == 1
    assert "d01 now failing" not in result.stderr
    assert all(UTC_STAMP.match(line) for line in result.stderr.splitlines()), result.stderr


async def test_last_shows_units_groups_digits_and_sorts_the_rows_of_a_tick(tmp_path, simulator):
    site = write_site(tmp_path, devices=meters(simulator.port), db_url="sqlite:///last.db")
    run = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "2.5")
    assert run.returncode == 0, run.stderr

    last = await run_cli(tmp_path, "last", "--config", str(site))
    raw = await run_cli(tmp_path, "last", "--config", str(site), "--raw", "16")

    energy = next(columns for columns in last.lines_of("d01") if columns[3] == "222")
    assert energy[6] == "Wh"
    assert re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d{4})?", energy[5]), energy  # a counter in the millions, grouped
    lines = [line.split() for line in raw.stdout.splitlines() if line.split()[:1] in ([d] for d in DEVICE_IDS)]
    assert len(lines) == 16
    dates = [columns[1:3] for columns in lines]
    assert dates == sorted(dates, reverse=True), raw.stdout  # newest tick first
    newest = [(columns[0], columns[3]) for columns in lines if columns[1:3] == dates[0]]
    assert newest == sorted(newest) and len(newest) > 1, raw.stdout  # one tick's rows in device and param order


# --- item 15: one error, one line; YAML errors and typos ---


async def test_a_yaml_syntax_error_names_the_file_and_a_typo_gets_a_suggestion(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text('job_id: "a"\ndevices: [\n', encoding="utf-8")
    typo = write_site(tmp_path, devices=meters(1), db_url="sqlite:///t.db", name="typo.yaml", sample_tiem=5)

    syntax = await run_cli(tmp_path, "check", "--config", str(broken))
    misspelt = await run_cli(tmp_path, "check", "--config", str(typo))

    assert syntax.returncode == 2 and f'in "{broken}", line 3' in syntax.stderr, syntax.stderr
    assert "<unicode string>" not in syntax.stderr
    assert misspelt.returncode == 2
    assert "field 'sample_tiem': unknown key; did you mean 'sample_time'?" in misspelt.stderr


async def test_an_unreachable_database_is_reported_once(tmp_path):
    site = write_site(tmp_path, devices=meters(1), db_url="mysql://nobody@127.0.0.1:1/seedb000")

    result = await run_cli(tmp_path, "last", "--config", str(site))

    assert result.returncode == 1
    assert result.stderr == "", result.stderr
    assert result.stdout.count("cannot connect") == 1, result.stdout
    assert result.stdout.count("mysql://nobody@127.0.0.1:1/seedb000") == 1, result.stdout


def test_value_nan_is_spelled_as_the_cli_prints_it():
    readme = (DEMO_CONFIG.parents[1] / "README.md").read_text(encoding="utf-8")

    assert Code.VALUE_NAN.name.lower() == "value_nan"
    assert "value_NaN" not in readme and "| value_nan |" in readme
