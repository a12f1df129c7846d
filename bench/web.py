"""HTTP benchmark (named web.py: a bench/http.py would hide the standard library's http package):
/metrics scrape time and the fleet page's data time while the service runs.

    .venv/bin/python bench/web.py --meters 5000 --duration 40
    .venv/bin/python bench/web.py --meters 1000 --duration 40 --cpu   # + service CPU, http off vs on

The real service (``python -m susee``) polls a simulated fleet (the fleet
server of bench/fleet.py) into a fresh MariaDB database, with its HTTP
endpoint on a free loopback port. Once every device has been polled, the
harness asks for ``/metrics`` and ``/api/devices`` (the data behind the
fleet page) once a second each, timing the whole answer as a client sees
it, and prints median, p90 and maximum with the answer sizes. Targets at
5,000 devices: scrape <= 200 ms, fleet data <= 100 ms.

With ``--cpu`` the service runs twice on the same fleet, ``http.enabled``
false then true (with a scrape and a fleet-data request every
``--requests-every`` seconds, default 15), and prints the CPU per device-tick of each
over the same steady window (target: on <= 1.03 x off). Keep runs short on a
shared machine; see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fleet import (
    Child,
    Fleet,
    clean_environment,
    create_database,
    drop_database,
    fleet_server,
    raise_open_files_limit,
    runtime_ns,
    write_site,
)

READY_TIMEOUT_S = 120.0  # a 5,000-device start-up on a busy machine
WARMUP_TICKS = 5  # after every device has polled once: connections made, gc frozen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_get(url: str) -> tuple[float, int, bytes]:
    """(seconds, status, body) of one GET, from sending to the last byte."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
        status = response.status
    return time.perf_counter() - started, status, body


def wait_all_polled(base: str, meters: int, child: Child) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"the service stopped: {child.stderr_text()[-800:]}")
        try:
            _, _, body = timed_get(base + "api/devices")
            answer = json.loads(body)
            polls = answer["columns"].index("polls")
            if len(answer["devices"]) == meters and all(row[polls] > 0 for row in answer["devices"]):
                return
        except OSError:
            pass  # not listening yet
        time.sleep(1.0)
    raise RuntimeError(f"not every device polled within {READY_TIMEOUT_S:g} s")


def site_file(tmp: Path, database: str, fleet: Fleet, meters: int, units: int, http: str) -> Path:
    path = write_site(tmp, database, fleet.ports, meters, units)
    path.write_text(path.read_text(encoding="utf-8") + http, encoding="utf-8")
    return path


def summary(name: str, times: list[float], sizes: list[int], target_ms: float) -> str:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    verdict = "ok" if p90 <= target_ms else "OVER"
    return (f"{name:<14} n={len(ms):<3} median {statistics.median(ms):7.1f} ms  p90 {p90:7.1f} ms  "
            f"max {ms[-1]:7.1f} ms  size {statistics.median(sizes) / 1024:7.0f} KiB  target {target_ms:g} ms: {verdict}")


def measure_latency(args: argparse.Namespace, tmp: Path, database: str, fleet: Fleet, env: dict) -> list[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    site = site_file(tmp, database, fleet, args.meters, args.units_per_port, f"http:\n  listen: 127.0.0.1:{port}\n")
    run_s = READY_TIMEOUT_S + args.duration + 30
    child = Child("susee-http", [sys.executable, "-m", "susee", "--config", str(site), "run", "--duration",
                                 str(run_s)], tmp, env)
    try:
        wait_all_polled(base, args.meters, child)
        time.sleep(WARMUP_TICKS)
        scrape_t, scrape_b, fleet_t, fleet_b = [], [], [], []
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            tick = time.monotonic()
            seconds, status, body = timed_get(base + "metrics")
            assert status == 200
            scrape_t.append(seconds)
            scrape_b.append(len(body))
            seconds, status, body = timed_get(base + "api/devices")
            assert status == 200
            fleet_t.append(seconds)
            fleet_b.append(len(body))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        series = sum(1 for line in body_lines(base + "metrics") if not line.startswith("#"))
        return [summary("/metrics", scrape_t, scrape_b, 200.0) + f"  ({series} series)",
                summary("/api/devices", fleet_t, fleet_b, 100.0)]
    finally:
        child.stop()


def body_lines(url: str) -> list[str]:
    return timed_get(url)[2].decode().splitlines()


def measure_cpu(args: argparse.Namespace, tmp: Path, fleet: Fleet, env: dict) -> list[str]:
    """CPU per device-tick of the service with http off, then on (each on fresh tables)."""
    lines = []
    for enabled in (False, True) * args.rounds:  # alternated: a shared machine's load drifts
        database = create_database()
        port = free_port()
        base = f"http://127.0.0.1:{port}/"
        http = f"http:\n  enabled: {'true' if enabled else 'false'}\n  listen: 127.0.0.1:{port}\n"
        site = site_file(tmp, database, fleet, args.meters, args.units_per_port, http)
        warm_s = args.warmup
        child = Child(f"susee-cpu-{enabled}", [sys.executable, "-m", "susee", "--config", str(site), "run",
                                               "--duration", str(warm_s + args.duration + 5)], tmp, env)
        try:
            time.sleep(warm_s)
            before = runtime_ns(child.pid)
            started = time.monotonic()
            next_dashboard = started
            while time.monotonic() - started < args.duration:
                if enabled and args.requests_every and time.monotonic() >= next_dashboard:
                    timed_get(base + "metrics")
                    timed_get(base + "api/devices")
                    next_dashboard += args.requests_every
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            after = runtime_ns(child.pid)
        finally:
            child.stop()
            drop_database(database)
        if before is None or after is None:
            lines.append(f"http {'on ' if enabled else 'off'}: no CPU accounting on this system")
            continue
        per_tick_us = (after - before) / 1000 / (args.meters * elapsed)
        lines.append(f"http {'on ' if enabled else 'off'}: {per_tick_us:6.1f} us CPU per device-tick "
                     f"({(after - before) / 1e9 / elapsed * 100:5.1f} % of a core) over {elapsed:.0f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measurement (per run)")
    parser.add_argument("--warmup", type=float, default=15.0, help="--cpu: seconds before the CPU window")
    parser.add_argument("--units-per-port", type=int, default=10)
    parser.add_argument("--cpu", action="store_true", help="also compare service CPU with http off and on")
    parser.add_argument("--rounds", type=int, default=1, help="--cpu: off/on pairs, alternated")
    parser.add_argument("--requests-every", type=float, default=15.0, metavar="S",
                        help="--cpu: a scrape and a fleet-data request every S seconds in the 'on' run "
                             "(default 15, Prometheus' usual interval; 0: none, the endpoint idle)")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    with tempfile.TemporaryDirectory(prefix="susee-http-bench-") as folder:
        tmp = Path(folder)
        (tmp / "secrets").mkdir()
        env = clean_environment(tmp / "secrets")
        fleet = Fleet(args.meters, args.units_per_port, tmp, env, fleet_server("c"))
        database = create_database()
        try:
            print(f"{args.meters} meters at 1 s, {args.duration:g} s of one request a second each", flush=True)
            for line in measure_latency(args, tmp, database, fleet, env):
                print(line, flush=True)
            if args.cpu:
                for line in measure_cpu(args, tmp, fleet, env):
                    print(line, flush=True)
        finally:
            drop_database(database)
            fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
