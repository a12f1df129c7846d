"""The spool on its own: batches in, batches out, across reopenings, damage, a full budget and a full disk."""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from susee.sample import Sample
from susee.spool import (
    Spool,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    SpoolMismatch,
    decode_payload,
    encode_payload,
    inspect,
)

TICK_S = 1613644200.0  # 2021-02-18 10:30:00 UTC
PARAMS_PER_TICK = 8


def device_tick(device_id: str, tick_index: int = 0) -> list[Sample]:
    tick_s = TICK_S + tick_index
    return [Sample(device_id, str(101 + n), tick_s, 230.0 + n / 3, 1.5 + n, 0) for n in range(PARAMS_PER_TICK)]


def batches(count: int, devices: tuple[str, ...] = ("d01", "d02")) -> list[list[Sample]]:
    """``count`` batches of one tick each, ticks 0, 1, 2 ..."""
    return [[s for d in devices for s in device_tick(d, i)] for i in range(count)]


def read_all(spool: Spool, max_rows: int = 1_000_000) -> list[Sample]:
    batch = spool.read(max_rows)
    return [] if batch is None else batch.samples


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.open()
    yield spool
    spool.close()


def test_payload_round_trip_is_exact_for_awkward_values():
    samples = [
        Sample("d01", "104", TICK_S + 0.000001, 0.1 + 0.2, 0.123456789, 0),
        Sample("d01", "222", TICK_S, 123456789012.3456, 3.0, 0),
        Sample("gw:7", "100", TICK_S, None, 1000.5, 64),
        Sample("d02", "104", TICK_S, -0.0, 0.0, 16),
        Sample("d02", "105", TICK_S, 5e-324, 1e300, 2),
        Sample("d02", "106", TICK_S, math.inf, 0.0, 0),
        Sample("dü", "107", 1.5, 1.7976931348623157e308, 2.5, 1 | 4 | 8),
    ]

    decoded = decode_payload(encode_payload(samples))

    assert decoded == samples
    assert math.copysign(1, decoded[3].value) == -1  # -0.0 stays negative
    nan = decode_payload(encode_payload([Sample("d", "p", TICK_S, math.nan, 0.0, 16)]))[0]
    assert math.isnan(nan.value)


def test_appended_batches_are_read_back_in_order_and_acked_ones_are_not_returned_again(spool):
    first, second = batches(2)
    spool.append(first)
    spool.append(second)
    assert spool.pending_rows == len(first) + len(second)

    batch = spool.read(len(first))  # whole records: the first one is enough
    assert batch.samples == first
    spool.ack(batch)

    assert spool.pending_rows == len(second)
    assert read_all(spool) == second
    spool.ack(spool.read(100))
    assert spool.pending_rows == 0
    assert spool.read(100) is None



def test_reopened_spool_holds_exactly_the_unacknowledged_batches(tmp_path):
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.open()
    written = batches(10)
    for batch in written:
        spool.append(batch)
    spool.ack(spool.read(4 * 16))
    spool.read(16)  # committed to the database, then the process died before ack
    spool.close()

    reopened = Spool(folder)
    reopened.open()

    assert reopened.pending_rows == 6 * 16
    assert read_all(reopened) == [s for b in written[4:] for s in b]
    reopened.ack(reopened.read(10**6))
    assert reopened.pending_rows == 0 and reopened.size_bytes == 0
    reopened.append(device_tick("d09"))  # and it goes on
    assert read_all(reopened) == device_tick("d09")
    reopened.close()


def payload_offset(db_file: Path, payload: bytes) -> int:
    data = db_file.read_bytes()
    at = data.find(payload)
    assert at > 0 and data.find(payload, at + 1) < 0, "the payload is stored once, in one piece"
    return at


def test_a_flipped_byte_loses_only_its_batch_which_is_reported_and_moved_aside(tmp_path, caplog):
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.open()
    written = batches(3, devices=("d01", "d02", "d07"))
    for batch in written:
        spool.append(batch)
    spool.close()
    db_file = folder / "spool.db"
    _checkpoint(db_file)
    damaged = encode_payload(written[1])
    at = payload_offset(db_file, damaged) + len(damaged) // 2
    with open(db_file, "r+b") as file:
        file.seek(at)
        byte = file.read(1)
        file.seek(at)
        file.write(bytes([byte[0] ^ 0x10]))  # one flipped bit in the middle of the second batch

    stats = inspect(folder)  # check sees it before a replay meets it
    assert stats.rows == 48 and "fails its checksum" in stats.damage and "24 rows" in stats.damage
    caplog.set_level(logging.ERROR, logger="susee.spool")
    reopened = Spool(folder)
    reopened.open()

    assert read_all(reopened) == written[0] + written[2], "every batch but the damaged one is replayed"
    (aside,) = folder.glob("damaged-*")
    assert aside.stat().st_size == len(damaged)
    (error,) = [r.getMessage() for r in caplog.records]
    assert "24 rows" in error and "2021-02-18 10:30:01" in error and "d01,d02,d07" in error and aside.name in error
    assert aside.name in inspect(folder).damage
    reopened.close()


def _checkpoint(db_file: Path) -> None:
    """Move the WAL's pages into the database file, where a damaged byte on disk would be."""
    import sqlite3

    db = sqlite3.connect(db_file)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def test_a_damaged_database_file_is_set_aside_and_its_readable_batches_kept(tmp_path, caplog):
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.open()
    written = batches(3)
    for batch in written:
        spool.append(batch)
    spool.close()
    db_file = folder / "spool.db"
    _checkpoint(db_file)
    with open(db_file, "r+b") as file:  # the header of the file's last page: a b-tree page SQLite cannot read
        size = file.seek(0, os.SEEK_END)
        file.seek(size - 4096)
        file.write(b"\xff" * 12)

    caplog.set_level(logging.ERROR, logger="susee.spool")
    reopened = Spool(folder)
    reopened.open()

    kept = read_all(reopened)
    assert len(kept) % 16 == 0 and set(kept) <= {s for b in written for s in b}, "whole batches, nothing invented"
    assert list(folder.glob("damaged-*spool.db")), "the damaged file is kept aside"
    assert any("damaged" in r.getMessage() for r in caplog.records)
    reopened.append(device_tick("d09", 9))
    assert read_all(reopened)[-8:] == device_tick("d09", 9)
    reopened.close()


def test_stop_polling_refuses_a_batch_over_max_bytes_and_keeps_what_is_spooled(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1500, when_full="stop_polling")
    spool.open()
    accepted = []
    with pytest.raises(SpoolFull):
        for batch in batches(50):
            spool.append(batch)
            accepted.append(batch)
    assert 0 < len(accepted) < 50
    assert spool.size_bytes <= 1500
    assert read_all(spool) == [s for b in accepted for s in b]

    spool.append(batches(1)[0], force=True)  # the exit spill goes over the limit rather than lose rows
    assert spool.pending_rows == (len(accepted) + 1) * 16
    spool.close()


def test_drop_oldest_deletes_the_oldest_batches_and_counts_their_rows(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=3000, when_full="drop_oldest")
    spool.open()
    written = batches(60)
    dropped = 0
    for batch in written:
        dropped += spool.append(batch)

    kept = read_all(spool)
    assert dropped > 0
    assert spool.size_bytes <= 3000
    assert dropped + len(kept) == 60 * 16, "every row is either kept or counted as dropped"
    assert kept == [s for b in written for s in b][dropped:], "the newest rows are the ones kept"
    spool.close()


def limit_pages(spool: Spool, pages: int | None) -> None:
    """SQLite's own page limit: an append past it fails with SQLITE_FULL, exactly as on a full disk."""
    spool._db.execute(f"PRAGMA max_page_count = {pages or 1_000_000_000}")


def test_injected_full_disk_refuses_the_whole_batch_and_the_spool_takes_rows_again_after(tmp_path):
    spool = Spool(tmp_path / "spool", when_full="stop_polling")
    spool.open()
    spool.append(device_tick("d01", 0))
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    limit_pages(spool, pages)
    big = [s for i in range(1, 200) for s in device_tick("d01", i)]  # needs new pages
    with pytest.raises(SpoolFull, match="disk is full"):
        spool.append(big)
    assert spool.pending_rows == 8 and read_all(spool) == device_tick("d01", 0), "the spool is exactly as before"

    limit_pages(spool, None)  # space is back
    spool.append(big)
    assert read_all(spool) == device_tick("d01", 0) + big
    spool.close()


def test_injected_full_disk_with_drop_oldest_drops_the_oldest_batches_to_make_room(tmp_path):
    spool = Spool(tmp_path / "spool", when_full="drop_oldest")
    spool.open()
    rng = random.Random(5)  # values that do not compress: each batch needs pages of its own
    written = [[Sample("d01", str(p), TICK_S + 40 * n + i, rng.random(), 1.0, 0) for i in range(40) for p in range(8)]
               for n in range(6)]
    for batch in written[:5]:
        spool.append(batch)
    limit_pages(spool, spool._db.execute("PRAGMA page_count").fetchone()[0])

    dropped = spool.append(written[5])

    kept = read_all(spool)
    assert dropped > 0 and kept[-len(written[5]):] == written[5]
    assert dropped + len(kept) == 6 * 320
    spool.close()


def test_destination_is_recorded_and_rows_are_never_opened_for_another_one(tmp_path):
    folder = tmp_path / "spool"
    spool = Spool(folder, destination="mysql 127.0.0.1:3306/seedb000 job 000")
    spool.open()
    spool.append(device_tick("d01"))
    spool.close()

    other = Spool(folder, destination="sqlite /srv/site.db job 000")
    with pytest.raises(SpoolMismatch, match="8 rows for mysql 127.0.0.1:3306/seedb000 job 000.*sqlite /srv/site.db"):
        other.open()
    assert inspect(folder).destination == "mysql 127.0.0.1:3306/seedb000 job 000"

    same = Spool(folder, destination="mysql 127.0.0.1:3306/seedb000 job 000")
    same.ack(same.read(100))
    same.close()
    other.open()  # an empty spool takes the new destination
    assert inspect(folder).destination == "sqlite /srv/site.db job 000"
    other.close()


def test_inspect_reports_size_rows_and_oldest_tick_without_changing_anything(tmp_path):
    folder = tmp_path / "spool"
    assert inspect(folder).rows == 0 and not folder.exists()
    spool = Spool(folder)
    spool.open()
    for batch in batches(6):
        spool.append(batch)
    spool.ack(spool.read(32))  # ticks 0 and 1 are in the database
    spool.close()
    before = {path.name: path.read_bytes() for path in folder.iterdir() if not path.name.endswith(("-shm", "-wal"))}

    stats = inspect(folder)

    assert stats.rows == 4 * 16
    assert 0 < stats.size_bytes < 4 * 16 * 100
    assert stats.oldest_tick_s == TICK_S + 2
    assert stats.damage is None
    assert {path.name: path.read_bytes() for path in folder.iterdir() if not path.name.endswith(("-shm", "-wal"))} == before


def test_a_second_user_of_the_folder_is_refused_with_the_holders_pid(tmp_path):
    first = Spool(tmp_path / "spool")
    first.open()
    first.append(device_tick("d01"))
    # flock locks belong to the open file description: a second open in this
    # process conflicts just as a second process would.
    second = Spool(tmp_path / "spool")
    with pytest.raises(SpoolLocked, match=f"in use by another susee process \\(pid {os.getpid()}\\)"):
        second.open()
    first.close()
    second.open()
    assert read_all(second) == device_tick("d01")
    second.close()


def test_open_takes_the_lock_at_once_even_before_anything_is_spooled(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.open()
    assert (tmp_path / "spool" / "lock").read_text().strip() == str(os.getpid())
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "spool").open()
    spool.close()


def test_segment_files_of_the_older_format_are_not_silently_ignored(tmp_path):
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "segment-000001.log").write_bytes(b"SSP1")
    with pytest.raises(SpoolError, match="older susee version"):
        Spool(folder).open()


def test_folder_problem_names_a_parent_that_is_not_a_folder_and_creates_nothing(tmp_path):
    from susee.spool import folder_problem

    assert folder_problem(tmp_path / "a" / "b" / "spool") is None
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    assert folder_problem(tmp_path / "file" / "spool") == f"{tmp_path / 'file'} is not a folder"


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB filesystem (tmpfs), to fill up: needs root (CAP_SYS_ADMIN)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): the injected full-disk tests cover the path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_up(path: Path) -> None:
    """Write ``path`` until the disk refuses another byte."""
    with open(path, "wb", buffering=0) as file:
        for size in (1 << 16, 4096, 1):
            try:
                while file.write(bytes(size)):
                    pass
            except OSError:
                pass


def random_batch(rng: random.Random, tick: int, devices: int = 50) -> list[Sample]:
    return [Sample(f"d{d:03d}", str(p), TICK_S + tick, rng.random(), rng.random(), 0) for d in range(devices) for p in range(8)]


def test_a_real_full_disk_refuses_whole_batches_uses_the_reserve_at_exit_and_recovers(small_disk):
    rng = random.Random(1)
    filler = small_disk / "other-files"
    filler.write_bytes(bytes(512 << 10))  # someone else's files, deleted later: space comes back
    spool = Spool(small_disk / "spool", max_bytes=16 << 20, when_full="stop_polling")  # reserve: 1/8 of the free space
    spool.open()
    assert (small_disk / "spool" / "reserve").stat().st_size > 100_000
    accepted: list[Sample] = []
    tick = 0
    with pytest.raises(SpoolFull, match="the disk is full"):
        while tick < 10_000:
            batch = random_batch(rng, tick)
            spool.append(batch)
            accepted += batch
            tick += 1
    assert tick > 10
    assert read_all(spool) == accepted, "the refused batch left no trace"

    last = [s for k in range(40) for s in random_batch(rng, tick + k)]  # 16,000 rows: more than the WAL holds
    with pytest.raises(SpoolFull):
        spool.append(last)
    fill_up(small_disk / "the-rest")  # now truly full: not a byte left
    spool.append(last, force=True)  # the exit spill: the reserve makes room
    accepted += last
    assert not (small_disk / "spool" / "reserve").exists()

    filler.unlink()  # space returns
    (small_disk / "the-rest").unlink()
    after = random_batch(rng, tick + 50)
    spool.append(after)
    accepted += after
    spool.close()
    reopened = Spool(small_disk / "spool")
    reopened.open()
    assert read_all(reopened) == accepted
    reopened.close()


def test_a_real_full_disk_with_drop_oldest_keeps_the_newest_rows(small_disk):
    """drop_oldest applies to a full disk as to max_bytes: the oldest batches go, the newest stay."""
    rng = random.Random(2)
    spool = Spool(small_disk / "spool", max_bytes=1 << 30, when_full="drop_oldest")  # the disk is the limit
    spool.open()
    stored: list[Sample] = []
    dropped = 0
    refused = False
    for tick in range(600):  # far more than 4 MiB
        batch = random_batch(rng, tick)
        try:
            dropped += spool.append(batch)
        except SpoolFull:
            refused = True
            break
        stored += batch
    kept = read_all(spool)
    assert not refused and dropped > 0
    assert kept == stored[dropped:], "the newest rows are kept, whole and in order"
    spool.close()
    reopened = Spool(small_disk / "spool")
    reopened.open()
    assert read_all(reopened) == kept
    reopened.close()


APPENDER = """
import random, sys
from susee.sample import Sample
from susee.spool import Spool
spool = Spool(sys.argv[1])
spool.open()
rng = random.Random(3)
for n in range(100_000):
    spool.append([Sample(f"d{d:03d}", str(p), 1613644200.0 + n, rng.random(), 1.0, 0) for d in range(100) for p in range(8)])
    print(n, flush=True)
"""


def test_kill_9_in_the_middle_of_appends_leaves_whole_batches_only(tmp_path):
    folder = tmp_path / "spool"
    child = subprocess.Popen([sys.executable, "-c", APPENDER, str(folder)], stdout=subprocess.PIPE, text=True)
    for _ in range(30):  # 30 batches acknowledged, the next one in flight
        child.stdout.readline()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()

    spool = Spool(folder)
    spool.open()
    rows = read_all(spool)
    spool.close()
    assert len(rows) % 800 == 0 and len(rows) >= 30 * 800, "whole batches, at least every acknowledged one"
    ticks = sorted({sample.tick_s for sample in rows})
    assert ticks == [1613644200.0 + n for n in range(len(rows) // 800)], "in order, none missing"
