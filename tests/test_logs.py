"""Log formats: JSON lines carry time, level, logger, message and the device id where there is one."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

import pytest

from susee.logs import JsonFormatter, device_of

CREATED = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


def record(msg: str, args: tuple = (), *, level: int = logging.INFO, name: str = "susee.poller",
           extra: dict | None = None, exc_info=None) -> logging.LogRecord:
    entry = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    entry.created = CREATED
    for key, value in (extra or {}).items():
        setattr(entry, key, value)
    return entry


DEVICES = {
    "a device line names its device": (record("device %s: no answer, backing off", ("d07",)), "d07"),
    "a numeric id comes out as text": (record("device %s: %d of %d registers", (12, 3, 4)), "12"),
    "an extra device field wins": (record("read failed", extra={"device": "m1"}), "m1"),
    "a line about many devices names none": (record("%d device(s) stopped answering: %s", (2, "d1, d2")), None),
    "a line about the database names none": (record("database %s is back", ("x",)), None),
    "a device prefix without its argument names none": (record("device %s: literal"), None),
}


@pytest.mark.parametrize(("entry", "device"), DEVICES.values(), ids=DEVICES.keys())
def test_device_of_finds_the_device_a_line_is_about(entry, device):
    assert device_of(entry) == device


def test_json_line_has_utc_iso_time_level_logger_message_and_device():
    line = JsonFormatter().format(record("device %s: answers again after %d ticks", ("d02", 3), level=logging.WARNING))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-05-28T20:26:40.250Z",
        "level": "WARNING",
        "logger": "susee.poller",
        "message": "device d02: answers again after 3 ticks",
        "device": "d02",
    }
    stamp = datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00"))
    assert stamp == datetime.fromtimestamp(CREATED, timezone.utc)


def test_json_line_of_a_worker_names_it_and_keeps_a_traceback_on_one_line():
    try:
        raise ValueError("bad \"quoted\" value\nsecond line")
    except ValueError:
        exc_info = sys.exc_info()
    line = JsonFormatter((1, 4)).format(record("device %s: unexpected error", ("é-1",), level=logging.ERROR,
                                               exc_info=exc_info))
    assert len(line.splitlines()) == 1
    entry = json.loads(line)
    assert entry["worker"] == "1/4"
    assert entry["device"] == "é-1"
    assert entry["exception"].startswith("Traceback")
    assert 'ValueError: bad "quoted" value\nsecond line' in entry["exception"]
