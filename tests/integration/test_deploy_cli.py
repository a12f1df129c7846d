"""What an operator deploying susee relies on: --version, JSON logs, a clean stop on SIGTERM as PID 1."""

from __future__ import annotations

import asyncio
import json
import re
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from susee import __version__
from susee.simulator import Pac3200Simulator

from .test_cli import cli_env, finish, free_port, mysql_url, run_cli, start_cli, write_site

STOP_WITHIN_S = 10.0  # a clean stop flushes the queue: seconds, not the 20 s of a kill after a timeout
READY_WITHIN_S = 20.0


@pytest.mark.parametrize("args", [["--version"], ["run", "--version"], ["simulate", "--version"],
                                  ["--config", "missing.yaml", "check", "--version"]])
async def test_version_answers_in_every_form(tmp_path, args):
    finished = await run_cli(tmp_path, *args)
    assert (finished.returncode, finished.stdout.strip()) == (0, f"susee {__version__}")


def embedded_site(folder: Path, port: int) -> Path:
    """Two simulated meters and one unit nobody serves, into SQLite."""
    devices = [{"id": f"m{unit}", "host": "127.0.0.1", "port": port, "unit": unit, "timeout": 0.3}
               for unit in (1, 2, 3)]
    return write_site(folder, devices=devices, db_url=f"sqlite:///{folder / 'site.db'}",
                      simulator={"port": port, "units": "1-2"})


async def test_json_log_format_writes_one_object_per_line_naming_the_device(tmp_path):
    site = embedded_site(tmp_path, free_port())
    finished = await run_cli(tmp_path, "--config", str(site), "--log-format", "json", "--log-level", "DEBUG",
                             "run", "--duration", "3")
    assert finished.returncode == 0, finished.stderr
    entries = [json.loads(line) for line in finished.stderr.splitlines()]  # every line is one object
    assert entries
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys()
        assert entry["time"].endswith("Z")
    about_m3 = [e for e in entries if e.get("device") == "m3"]
    assert about_m3 and all(re.match(r"device m3\b", e["message"]) for e in about_m3)


async def test_log_format_from_the_environment_and_a_bad_one_is_a_config_error(tmp_path):
    finished = await run_cli(tmp_path, "simulate", "--port", "1", SUSEE_LOG_FORMAT="yaml")
    assert finished.returncode == 2
    assert "SUSEE_LOG_FORMAT='yaml'" in finished.stderr


# --- SIGTERM as PID 1 ---------------------------------------------------------------------------

def unshare_problem() -> str | None:
    """Why a new PID namespace cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --pid is not permitted here: {probe.stderr.strip()}"
    return None


def pid1_of(unshare_pid: int) -> int:
    """The command unshare forked: PID 1 of the new namespace."""
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def namespace_pid(pid: int) -> int:
    """The pid of process ``pid`` in its own (innermost) PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for process {pid}")


async def wait_for_line(stream: asyncio.StreamReader, text: str) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(READY_WITHIN_S) if sys.version_info >= (3, 11) else _no_timeout():
        while True:
            line = (await stream.readline()).decode()
            if not line:
                pytest.fail(f"exited before logging {text!r}:\n{''.join(seen)}")
            seen.append(line)
            if text in line:
                return seen


class _no_timeout:  # Python 3.10: the per-test timeout bounds the wait
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


PID1_COMMANDS = {
    "simulate": (["simulate", "--port", "{port}"], "simulator listening on"),
    "run": (["--config", "{site}", "run"], "device(s) on"),
}


@pytest.mark.parametrize(("args", "ready"), PID1_COMMANDS.values(), ids=PID1_COMMANDS.keys())
async def test_every_long_running_command_stops_on_sigterm_as_pid_1(tmp_path, args, ready):
    problem = unshare_problem()
    if problem:
        pytest.skip(problem)
    port = free_port()
    site = embedded_site(tmp_path, port)
    command = [arg.format(port=port, site=site) for arg in args]
    process = await asyncio.create_subprocess_exec(
        "unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-m", "susee", *command,
        cwd=tmp_path, env=cli_env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for_line(process.stderr, ready)
        inner = pid1_of(process.pid)
        assert namespace_pid(inner) == 1
        os.kill(inner, signal.SIGTERM)
        finished = await finish(process, STOP_WITHIN_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert finished.returncode == 0, finished.stderr


async def test_sigterm_stops_the_simulator_cleanly_outside_a_namespace_too(tmp_path):
    process = await start_cli(tmp_path, "simulate", "--port", str(free_port()))
    await wait_for_line(process.stderr, "simulator listening on")
    process.send_signal(signal.SIGTERM)
    finished = await finish(process, STOP_WITHIN_S)
    assert finished.returncode == 0, finished.stderr


async def test_worker_processes_log_json_too_each_line_naming_its_worker(tmp_path, mariadb_target):
    async with Pac3200Simulator(port=0, units=(1,), record=False) as first, \
            Pac3200Simulator(port=0, units=(1,), record=False) as second:
        devices = [{"id": f"w{n}", "host": "127.0.0.1", "port": sim.port, "unit": 1, "timeout": 0.5}
                   for n, sim in enumerate((first, second))]
        site = write_site(tmp_path, devices=devices, db_url=mysql_url(mariadb_target), workers=2)
        finished = await run_cli(tmp_path, "--config", str(site), "--log-format", "json", "run", "--duration", "3")
    assert finished.returncode == 0, finished.stderr
    entries = [json.loads(line) for line in finished.stderr.splitlines()]  # parent and workers alike
    assert {e["worker"] for e in entries if "worker" in e} == {"0/2", "1/2"}
    assert any("starting 2 workers" in e["message"] and "worker" not in e for e in entries)
