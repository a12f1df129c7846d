"""Measure an RS485 line with a dead meter: healthy Delay, missed ticks, timeouts paid.

    .venv/bin/python bench/rtu_line.py --baud 19200 --duration 60 [--no-backoff]

Three PAC3200 units and one that never answers (TIMEOUT fault) on one pty
line whose relay holds every byte for its wire time at ``--baud``. The real
service (Supervisor, pollers, writer) runs in-process at sample_time 1 into a
throw-away SQLite file. Prints the healthy devices' Delay p50/p99 and max,
their missed ticks, and the requests the dead unit cost the line per minute.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from statistics import quantiles

# The pty line relay is the one the RTU tests use.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ptyline import BITS_PER_BYTE, PtyLine  # noqa: E402

from susee.backoff import Backoff  # noqa: E402
from susee.config import Settings  # noqa: E402
from susee.devices import plan_devices  # noqa: E402
from susee.simulator import Fault, Pac3200Simulator  # noqa: E402
from susee.sinks import create_sink  # noqa: E402
from susee.supervisor import Supervisor  # noqa: E402

HEALTHY, DEAD = (1, 2, 3), 4
# One PAC3200 tick with the default params: fc3 7+64 and fc3 801+20.
TICK_FRAMES = [(8, 5 + 2 * 64), (8, 5 + 2 * 20)]


def wire_ms(baud: int) -> float:
    """Wire time of one PAC3200 tick: bytes plus the 3.5-character gap before each frame."""
    frame_bytes = sum(request + response for request, response in TICK_FRAMES)
    char_s = BITS_PER_BYTE / baud
    gap_s = 3.5 * char_s if baud <= 19200 else 0.00175  # Modbus over serial line: fixed 1.75 ms above 19200
    return 1000 * (frame_bytes * char_s + 2 * len(TICK_FRAMES) * gap_s)


async def measure(baud: int, duration_s: float, backoff: bool, timeout_s: float) -> None:
    if not backoff:
        Backoff.skip = lambda self: False  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder, PtyLine(baudrate=baud) as line:
        database = Path(folder) / "bench.db"
        devices = [{"id": f"m{u}", "serial": {"port": line.client_port, "baudrate": baud}, "unit": u} for u in HEALTHY]
        devices.append({"id": f"m{DEAD}", "serial": {"port": line.client_port, "baudrate": baud}, "unit": DEAD,
                        "timeout": timeout_s})
        # The spool too in the throw-away folder: rows a run spills must not meet the next run's database.
        settings = Settings(job_id="bench", sample_time=1, database={"url": f"sqlite:///{database}"},
                            spool={"path": Path(folder) / "spool"}, devices=devices)
        plans = plan_devices(settings, Path(folder) / "site.yaml")
        faults = {DEAD: Fault.TIMEOUT}
        async with Pac3200Simulator(serial_port=line.device_port, baudrate=baud, units=(*HEALTHY, DEAD),
                                    faults=faults, record=False):
            supervisor = Supervisor(settings, plans, create_sink(settings.database_target(), settings.job_id))
            await supervisor.run(duration_s=duration_s)
        with closing(sqlite3.connect(database)) as conn:
            delays = [row[0] for row in conn.execute("SELECT Delay FROM seebenchRaw WHERE idDevice != ?", (f"m{DEAD}",))]
            ticks = conn.execute("SELECT COUNT(DISTINCT Date) FROM seebenchRaw").fetchone()[0]
        frames = line.frames()
    dead_requests = sum(1 for f in frames if f.to_device and f.unit == DEAD)
    missed = sum(p.stats.missed_ticks for p in supervisor.pollers if p.plan.id != f"m{DEAD}")
    cuts = quantiles(delays, n=100)
    print(
        f"baud {baud} backoff {'on ' if backoff else 'off'} ticks {ticks}: healthy Delay p50 {cuts[49]:.0f} ms "
        f"p99 {cuts[98]:.0f} ms max {max(delays):.0f} ms, missed ticks {missed}, "
        f"dead-unit timeouts {dead_requests} = {dead_requests * 60 / ticks:.1f}/min "
        f"(theoretical wire time per meter-tick {wire_ms(baud):.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=0.3, help="the dead unit's timeout, s")
    parser.add_argument("--no-backoff", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the simulator's: its timeout dumps are noise here
    asyncio.run(measure(args.baud, args.duration, not args.no_backoff, args.timeout))


if __name__ == "__main__":
    main()
