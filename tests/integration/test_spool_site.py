"""The spool of a real ``susee run``: one per site, locked at start, only replayed into its own database."""

from __future__ import annotations

import asyncio

from susee.sample import Sample
from susee.spool import Spool

from .test_cli import finish, free_port, meters, run_cli, start_cli, write_site


async def until_locked(lock, process) -> int:
    """The pid written in the spool's lock file, once the service has taken it."""
    for _ in range(400):
        if process.returncode is not None:
            break
        text = lock.read_text().strip() if lock.exists() else ""
        if text.isdigit():
            return int(text)
        await asyncio.sleep(0.05)
    raise AssertionError("the service never took its spool's lock")


async def test_two_sites_in_one_folder_get_their_own_spools_and_a_second_process_on_one_exits_2(tmp_path):
    port = free_port()  # nothing answers: the service still runs, storing error rows
    first = write_site(tmp_path, devices=meters(port), db_url="sqlite:///a.db", name="a.yaml")
    second = write_site(tmp_path, devices=meters(port), db_url="sqlite:///b.db", name="b.yaml")

    running = await start_cli(tmp_path, "run", "--config", str(first), "--duration", "30")
    try:
        pid = await until_locked(tmp_path / "spool" / "a-000" / "lock", running)
        assert pid == running.pid
        other_site = await run_cli(tmp_path, "run", "--config", str(second), "--duration", "1")
        same_site = await run_cli(tmp_path, "run", "--config", str(first), "--duration", "1")
    finally:
        running.terminate()
        await finish(running)

    assert other_site.returncode == 0, other_site.stderr
    assert (tmp_path / "spool" / "b-000").is_dir()
    assert same_site.returncode == 2
    assert same_site.stderr.strip().count("\n") == 0, same_site.stderr
    assert f"spool/a-000 is in use by another susee process (pid {running.pid})" in same_site.stderr
    assert "Traceback" not in same_site.stderr


async def test_rows_spooled_for_another_database_stop_the_start_with_exit_2_saying_what_to_do(tmp_path):
    site = write_site(tmp_path, devices=meters(free_port()), db_url="sqlite:///now.db")
    spool = Spool(tmp_path / "spool" / "site-000", destination="mysql 10.0.0.9:3306/seedb000 job 000")
    spool.open()
    spool.append([Sample("d01", "104", 1613644200.0, 1.0, 1.0, 0)])
    spool.close()

    result = await run_cli(tmp_path, "run", "--config", str(site), "--duration", "1")

    assert result.returncode == 2
    assert "holds 1 rows for mysql 10.0.0.9:3306/seedb000 job 000" in result.stderr
    assert "database.url" in result.stderr and "move the folder away" in result.stderr
    assert not (tmp_path / "now.db").exists() or "Traceback" not in result.stderr


async def test_check_shows_a_damaged_batch_with_what_it_held_and_its_size(tmp_path):
    from test_spool import _checkpoint, payload_offset

    from susee.spool import encode_payload

    site = write_site(tmp_path, devices=meters(free_port()), db_url="sqlite:///site.db")
    folder = tmp_path / "spool" / "site-000"
    batches = [[Sample("d01", "104", 1613644200.0 + k, float(k * n), 1.0, 0) for n in range(50)] for k in range(3)]
    spool = Spool(folder)
    spool.open()
    for batch in batches:
        spool.append(batch)
    spool.close()
    _checkpoint(folder / "spool.db")
    damaged = encode_payload(batches[1])
    at = payload_offset(folder / "spool.db", damaged) + 10
    with open(folder / "spool.db", "r+b") as file:
        file.seek(at)
        byte = file.read(1)
        file.seek(at)
        file.write(bytes([byte[0] ^ 1]))

    result = await run_cli(tmp_path, "check", "--config", str(site))

    assert f"spool {folder}: " in result.stdout and "100 rows waiting" in result.stdout, result.stdout
    assert (f"damaged: batch 2 ({len(damaged)} bytes): 50 rows of ticks 2021-02-18 10:30:01 to 2021-02-18 10:30:01 "
            f"UTC, devices d01 fails its checksum") in result.stdout, result.stdout
