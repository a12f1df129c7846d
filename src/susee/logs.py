"""Where log lines go and how they look: text for people, JSON for log collectors.

``--log-format json`` writes one JSON object per line (journald, Docker,
Loki and the like ingest it as is): ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, and ``device`` when the line is about one device.
Which device is found without touching the call sites: every line about a
device starts ``"device %s: ..."`` with the id as its first argument (the
project's rule), or a call passes ``extra={"device": id}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone

FORMATS = ("text", "json")
# Read by the cli as the default of --log-format, and inherited by the worker
# processes, which are started with the parent's environment.
FORMAT_ENV = "SUSEE_LOG_FORMAT"
_DEVICE_PREFIX = "device %s"


def setup(level: str, log_format: str = "text", worker: tuple[int, int] | None = None) -> None:
    """Log to stderr at ``level``; a worker process (K, N) marks each of its lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = f"worker {worker[0]}/{worker[1]} " if worker else ""
        # ISO 8601 with Z: the time is UTC (like the Date column), and says so.
        formatter = logging.Formatter(f"%(asctime)s.%(msecs)03dZ %(levelname)-7s {tag}%(name)s: %(message)s",
                                      datefmt="%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime  # log times in UTC, like the Date column
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the simulator's server logs the faults it plays
    # Python warnings (e.g. a driver's note that MariaDB skipped a table under
    # concurrent DDL) go through the same handler: one format, JSON included.
    logging.captureWarnings(True)


def device_of(record: logging.LogRecord) -> str | None:
    """The id of the device a record is about, or None."""
    device = getattr(record, "device", None)
    if device is not None:
        return str(device)
    args = record.args
    if isinstance(record.msg, str) and record.msg.startswith(_DEVICE_PREFIX) and isinstance(args, tuple) and args:
        return str(args[0])
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes in ``exception``, never across lines."""

    def __init__(self, worker: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.worker = f"{worker[0]}/{worker[1]}" if worker else None

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        device = device_of(record)
        if device is not None:
            entry["device"] = device
        if self.worker is not None:
            entry["worker"] = self.worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)
