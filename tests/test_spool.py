"""The spool on its own: records in, records out, across reopenings, damage and a full disk budget."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pytest

from susee.sample import Sample
from susee.spool import HEADER, Spool, SpoolFull, decode_payload, encode_payload, inspect

TICK_S = 1613644200.0  # 2021-02-18 10:30:00 UTC
PARAMS_PER_TICK = 8


def device_tick(device_id: str, tick_index: int = 0) -> list[Sample]:
    tick_s = TICK_S + tick_index
    return [Sample(device_id, str(101 + n), tick_s, 230.0 + n / 3, 1.5 + n, 0) for n in range(PARAMS_PER_TICK)]


def batches(count: int, devices: tuple[str, ...] = ("d01", "d02")) -> list[list[Sample]]:
    """``count`` batches of one tick each, ticks 0, 1, 2 ..."""
    return [[s for d in devices for s in device_tick(d, i)] for i in range(count)]


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("segment-*.log"))


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


def test_ack_of_everything_deletes_the_segments_and_leaves_the_spool_empty(spool):
    for batch in batches(3):
        spool.append(batch)
    assert segments(spool.folder)

    spool.ack(spool.read(1_000_000))

    assert segments(spool.folder) == []
    assert spool.size_bytes == 0
    spool.append(device_tick("d09"))  # and it goes on
    assert read_all(spool) == device_tick("d09")


def test_segments_rotate_at_their_size_and_fully_acked_ones_are_deleted(tmp_path):
    spool = Spool(tmp_path / "spool", segment_bytes=600)
    spool.open()
    written = batches(12)
    for batch in written:
        spool.append(batch)
    files = segments(spool.folder)
    assert len(files) > 2
    assert all(path.stat().st_size <= 600 for path in files)
    assert spool.size_bytes == sum(path.stat().st_size for path in files)

    batch = spool.read(3 * 16)  # the first three ticks (two devices x 8 params each)
    spool.ack(batch)
    assert segments(spool.folder)[0] != files[0], "the first segment is fully acknowledged"
    assert read_all(spool) == [s for b in written[3:] for s in b]
    spool.close()


def test_reopened_spool_resumes_at_the_cursor(tmp_path):
    folder = tmp_path / "spool"
    spool = Spool(folder, segment_bytes=600)
    spool.open()
    written = batches(10)
    for batch in written:
        spool.append(batch)
    spool.ack(spool.read(4 * 16))
    spool.close()

    reopened = Spool(folder, segment_bytes=600)
    reopened.open()

    assert reopened.pending_rows == 6 * 16
    assert read_all(reopened) == [s for b in written[4:] for s in b]
    reopened.close()


def test_a_batch_read_but_not_acked_before_a_crash_is_read_again(tmp_path):
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.open()
    written = batches(2)
    for batch in written:
        spool.append(batch)
    spool.read(16)  # committed to the database, then the process died before ack
    spool.close()

    reopened = Spool(folder)
    reopened.open()
    assert read_all(reopened) == written[0] + written[1]
    reopened.close()


def test_truncated_last_record_is_moved_aside_with_a_warning_and_appends_go_on(tmp_path, caplog):
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.open()
    written = batches(3)
    for batch in written:
        spool.append(batch)
    spool.close()
    (segment,) = segments(folder)
    whole = segment.stat().st_size
    with open(segment, "r+b") as file:  # a crash in the middle of the last append
        file.truncate(whole - 5)

    caplog.set_level(logging.WARNING, logger="susee.spool")
    reopened = Spool(folder)
    reopened.open()

    assert read_all(reopened) == written[0] + written[1]
    (aside,) = folder.glob("segment-*.log.corrupt-*")
    good = segment.stat().st_size  # the two whole records
    assert aside.stat().st_size == whole - 5 - good
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert segment.name in message and "truncated record" in message
    assert f"offset {good}" in message and f"{whole - 5 - good} bytes" in message and aside.name in message

    reopened.append(device_tick("d03", 9))
    assert read_all(reopened) == written[0] + written[1] + device_tick("d03", 9)
    reopened.close()


def test_bad_checksum_ends_the_good_part_and_later_records_are_set_aside(tmp_path, caplog):
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.open()
    written = batches(3)
    for batch in written:
        spool.append(batch)
    spool.close()
    (segment,) = segments(folder)
    data = bytearray(segment.read_bytes())
    first_length = HEADER.unpack_from(data)[1]
    second_at = HEADER.size + first_length
    data[second_at + HEADER.size + 3] ^= 0xFF  # one flipped bit in the second record's payload
    segment.write_bytes(bytes(data))

    caplog.set_level(logging.WARNING, logger="susee.spool")
    reopened = Spool(folder)
    reopened.open()

    assert read_all(reopened) == written[0]
    assert segment.stat().st_size == second_at
    (aside,) = folder.glob("segment-*.log.corrupt-*")
    assert aside.read_bytes() == bytes(data[second_at:])
    assert any("bad checksum" in r.getMessage() and f"offset {second_at}" in r.getMessage() for r in caplog.records)
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


def test_drop_oldest_deletes_the_oldest_segments_and_counts_their_rows(tmp_path):
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


def test_drop_oldest_counts_only_unacknowledged_rows_of_a_partly_replayed_segment(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=3000, when_full="drop_oldest", segment_bytes=1000)
    spool.open()
    for batch in batches(3):
        spool.append(batch)
    spool.ack(spool.read(16))  # the first batch is committed
    pending = spool.pending_rows
    dropped = 0
    for batch in batches(60)[3:]:
        dropped += spool.append(batch)

    assert dropped + spool.pending_rows == pending + 57 * 16
    spool.close()


def test_inspect_reports_size_rows_and_oldest_tick_without_changing_anything(tmp_path):
    folder = tmp_path / "spool"
    assert inspect(folder).rows == 0 and not folder.exists()
    spool = Spool(folder, segment_bytes=600)
    spool.open()
    written = batches(6)
    for batch in written:
        spool.append(batch)
    spool.ack(spool.read(32))  # ticks 0 and 1 are in the database
    spool.close()
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    stats = inspect(folder)

    assert stats.rows == 4 * 16
    assert stats.size_bytes == sum(path.stat().st_size for path in segments(folder))
    assert stats.oldest_tick_s == TICK_S + 2
    assert stats.damage is None
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_inspect_names_a_damaged_segment_but_does_not_repair_it(tmp_path):
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.open()
    for batch in batches(2):
        spool.append(batch)
    spool.close()
    (segment,) = segments(folder)
    size = segment.stat().st_size
    with open(segment, "r+b") as file:
        file.truncate(size - 1)

    stats = inspect(folder)

    assert stats.rows == 16
    assert stats.damage and segment.name in stats.damage and "truncated" in stats.damage
    assert segment.stat().st_size == size - 1
    assert not list(folder.glob("*.corrupt-*"))


def test_a_second_process_cannot_use_the_same_folder(tmp_path):
    from susee.spool import SpoolError

    first = Spool(tmp_path / "spool")
    first.open()
    first.append(device_tick("d01"))
    # flock locks belong to the open file description: a second open in this
    # process conflicts just as a second process would.
    second = Spool(tmp_path / "spool")
    with pytest.raises(SpoolError, match="in use"):
        second.open()
    first.close()
    second.open()
    assert read_all(second) == device_tick("d01")
    second.close()


def test_folder_is_only_created_when_something_is_spooled(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.open()
    assert not (tmp_path / "spool").exists()
    spool.append(device_tick("d01"))
    assert (tmp_path / "spool").is_dir()
    spool.close()


def test_cursor_file_is_replaced_atomically(spool):
    spool.append(device_tick("d01", 0))
    spool.append(device_tick("d01", 1))
    spool.ack(spool.read(8))
    names = sorted(path.name for path in spool.folder.iterdir())
    assert "cursor" in names and "cursor.tmp" not in names
    assert os.path.getsize(spool.folder / "cursor") > 0


def test_folder_problem_names_a_parent_that_is_not_a_folder_and_creates_nothing(tmp_path):
    from susee.spool import folder_problem

    assert folder_problem(tmp_path / "a" / "b" / "spool") is None
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    assert folder_problem(tmp_path / "file" / "spool") == f"{tmp_path / 'file'} is not a folder"
