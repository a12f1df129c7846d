"""A wall-clock step under the real CLI, made by libfaketime (Debian package ``faketime``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .test_cli import finish, free_port, meters, sqlite_rows, start_cli, write_site

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime missing: apt-get install faketime")
async def test_a_forward_step_under_the_real_cli_flags_late_rows_and_logs_it_once(tmp_path):
    site = write_site(tmp_path, devices=meters(free_port(), units=(1,)), db_url="sqlite:///site.db")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # loop timers keep real time, as a step leaves them
    process = await start_cli(tmp_path, "run", "--config", str(site), "--duration", "8", **env)
    await asyncio.sleep(3)  # a few ticks on the real clock
    offset.write_text("+60\n")  # the NTP step
    finished = await finish(process)

    assert finished.returncode == 0, finished.stderr
    rows = sqlite_rows(tmp_path / "site.db", "SELECT Date, Code FROM see000Raw WHERE idParam = '104' ORDER BY Date")
    assert any(code & 128 for _, code in rows), rows
    dates = [date for date, _ in rows]
    assert len(dates) == len(set(dates)), "no Date written twice"
    assert finished.stderr.count("jumped forward") == 1, finished.stderr
