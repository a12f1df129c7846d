"""A lean Modbus TCP server standing in for a fleet of PAC3200 meters.

Benchmark use only: the pymodbus server costs far more CPU per request than
the client under test, so it cannot stand in for thousands of meters. This
one answers fc3/fc4 reads of the PAC3200 ranges from a prebuilt register
image per unit, refreshed at most once per second when the unit is read.

    python bench/fleet_server.py --ports 50 --units-per-port 10

Binds ``--ports`` listeners on 127.0.0.1 (ephemeral ports unless
``--base-port`` is given) and prints one JSON line on stdout:
``{"ports": [...], "units_per_port": U, "pid": ...}``. SIGUSR1 prints a
statistics line; SIGTERM/SIGINT print it and exit. The server also exits when
its parent dies, so a killed harness leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import struct
import sys
import time

HOST = "127.0.0.1"
# The PAC3200 answers these register ranges (PDU offsets, end exclusive):
# 41 float32 measurements at 1..81 and 10 float64 energy counters at 801..837.
FLOAT_FIRST, FLOAT_END = 1, 83
ENERGY_FIRST, ENERGY_END = 801, 841
FLOAT_VALUES = (FLOAT_END - FLOAT_FIRST) // 2
ENERGY_VALUES = (ENERGY_END - ENERGY_FIRST) // 4
MAX_READ_REGISTERS = 125  # Modbus limit for one fc3/fc4 read
MAX_UNITS_PER_PORT = 247  # unit ids 1..247 are addressable
MAX_FRAME_LENGTH = 254  # MBAP length field of the largest legal ADU
LOAD_CYCLE_S = 900.0  # slow load swing, so values change a little every second
PARENT_CHECK_S = 1.0
LISTEN_BACKLOG = 1024  # a start-up may connect to every port at once

# Modbus exception codes answered.
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, GATEWAY_TARGET_FAILED = 0x01, 0x02, 0x03, 0x0B

REQUEST_HEAD = struct.Struct(">HHHB")  # transaction, protocol, length, unit
READ_REQUEST = struct.Struct(">BHH")  # function, address, count
RESPONSE_HEAD = struct.Struct(">HHHBBB")  # ... unit, function, byte count (or exception code)
FLOAT_IMAGE = struct.Struct(f">{FLOAT_VALUES}f")
ENERGY_IMAGE = struct.Struct(f">{ENERGY_VALUES}d")

# How strongly each float32 value follows the load swing (index = (offset - 1) / 2):
# voltages and frequency barely move, currents and powers follow the load.
_SENSITIVITY = (
    [0.02] * 6  # voltages L-N, L-L
    + [1.0] * 12  # currents, apparent, active, reactive power per phase
    + [0.05] * 3  # power factor per phase
    + [0.1] * 6  # THD
    + [0.001]  # frequency
    + [0.02] * 2  # average voltages
    + [1.0] * 4  # average current, total S, P, Q
    + [0.05]  # total power factor
    + [0.0] * 6  # unmapped words 71..82
)


class Meter:
    """One simulated PAC3200: its register images and how they evolve."""

    __slots__ = ("base", "phase", "floats", "energy", "energy_image", "stamp_s", "last_s")

    def __init__(self, rng: random.Random, now_s: float) -> None:
        self.base = _plausible_values(rng)
        self.phase = rng.uniform(0.0, 2.0 * math.pi)
        self.floats = bytearray(FLOAT_IMAGE.size)
        # Imported tariff-1 counters (801, 817, 833) carry the load; the others barely move.
        self.energy = [rng.uniform(1e5, 1e9) if i in (0, 4, 8) else rng.uniform(0.0, 1e4) for i in range(ENERGY_VALUES)]
        self.energy_image = bytearray(ENERGY_IMAGE.size)
        self.stamp_s = -1
        self.last_s = now_s
        self.refresh(now_s)

    def refresh(self, now_s: float) -> None:
        """Rebuild both images for the current second; counters grow with P, Q and S."""
        swing = 0.15 * math.sin(2.0 * math.pi * now_s / LOAD_CYCLE_S + self.phase)
        values = [b * (1.0 + swing * k) for b, k in zip(self.base, _SENSITIVITY)]
        FLOAT_IMAGE.pack_into(self.floats, 0, *values)
        hours = max(now_s - self.last_s, 0.0) / 3600.0
        energy = self.energy
        energy[0] += values[32] * hours  # 801: active energy imported, tariff 1 (P total)
        energy[4] += values[33] * hours  # 817: reactive energy imported, tariff 1 (Q total)
        energy[8] += values[31] * hours  # 833: apparent energy, tariff 1 (S total)
        ENERGY_IMAGE.pack_into(self.energy_image, 0, *energy)
        self.last_s = now_s
        self.stamp_s = int(now_s)


def _plausible_values(rng: random.Random) -> list[float]:
    """A three-phase load at 230/400 V: 41 float32 values in register order."""
    u_ln = [rng.uniform(226.0, 234.0) for _ in range(3)]
    u_ll = [u * math.sqrt(3.0) for u in u_ln]
    current = [rng.uniform(5.0, 80.0) for _ in range(3)]
    pf = [rng.uniform(0.85, 0.98) for _ in range(3)]
    s = [u * i for u, i in zip(u_ln, current)]
    p = [a * f for a, f in zip(s, pf)]
    q = [math.sqrt(max(a * a - b * b, 0.0)) for a, b in zip(s, p)]
    thd = [rng.uniform(1.0, 3.0) for _ in range(3)] + [rng.uniform(5.0, 20.0) for _ in range(3)]
    s_tot, p_tot, q_tot = sum(s), sum(p), sum(q)
    values = u_ln + u_ll + current + s + p + q + pf + thd + [50.0]
    values += [sum(u_ln) / 3, sum(u_ll) / 3, sum(current) / 3, s_tot, p_tot, q_tot, p_tot / s_tot]
    return values + [0.0] * (FLOAT_VALUES - len(values))


class FleetStats:
    """Counters for the harness: did the client storm, reconnect, misbehave?"""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self.exceptions = 0
        self.max_accepts_per_s = 0
        self._accept_second = 0
        self._accepts_this_second = 0

    def on_accept(self) -> None:
        self.accepted += 1
        self.open += 1
        second = int(time.monotonic())
        if second != self._accept_second:
            self._accept_second, self._accepts_this_second = second, 0
        self._accepts_this_second += 1
        self.max_accepts_per_s = max(self.max_accepts_per_s, self._accepts_this_second)

    def report(self) -> dict[str, int]:
        """The counters; the accept peak restarts, so each report covers one phase."""
        report = self.as_dict()
        self.max_accepts_per_s = self._accepts_this_second = 0
        return report

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "open": self.open,
            "requests": self.requests,
            "exceptions": self.exceptions,
            "max_accepts_per_s": self.max_accepts_per_s,
        }


class GatewayProtocol(asyncio.Protocol):
    """One client connection to one port: pipelined requests, answers in order."""

    __slots__ = ("meters", "stats", "transport", "buffer")

    def __init__(self, meters: dict[int, Meter], stats: FleetStats) -> None:
        self.meters = meters
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.on_accept()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        end, pos = len(buf), 0
        answers = []
        now_s = time.time()
        while end - pos >= 8:
            tid, _, length, unit = REQUEST_HEAD.unpack_from(buf, pos)
            if length < 2 or length > MAX_FRAME_LENGTH:
                self.transport.close()  # not Modbus TCP: a real device drops the link too
                return
            frame_end = pos + 6 + length
            if frame_end > end:
                break
            answers.append(self._answer(buf, pos, tid, unit, length, now_s))
            pos = frame_end
        self.buffer = buf[pos:] if pos < end else b""
        if answers:
            self.stats.requests += len(answers)
            self.transport.write(answers[0] if len(answers) == 1 else b"".join(answers))

    def _answer(self, buf: bytes, pos: int, tid: int, unit: int, length: int, now_s: float) -> bytes:
        function = buf[pos + 7]
        if function not in (3, 4):
            return self._exception(tid, unit, function, ILLEGAL_FUNCTION)
        if length != 6:
            return self._exception(tid, unit, function, ILLEGAL_VALUE)
        meter = self.meters.get(unit)
        if meter is None:
            return self._exception(tid, unit, function, GATEWAY_TARGET_FAILED)
        _, address, count = READ_REQUEST.unpack_from(buf, pos + 7)
        if not 1 <= count <= MAX_READ_REGISTERS:
            return self._exception(tid, unit, function, ILLEGAL_VALUE)
        if meter.stamp_s != int(now_s):
            meter.refresh(now_s)
        if FLOAT_FIRST <= address and address + count <= FLOAT_END:
            start = 2 * (address - FLOAT_FIRST)
            image = meter.floats
        elif ENERGY_FIRST <= address and address + count <= ENERGY_END:
            start = 2 * (address - ENERGY_FIRST)
            image = meter.energy_image
        else:
            return self._exception(tid, unit, function, ILLEGAL_ADDRESS)
        size = 2 * count
        return RESPONSE_HEAD.pack(tid, 0, 3 + size, unit, function, size) + image[start : start + size]

    def _exception(self, tid: int, unit: int, function: int, code: int) -> bytes:
        self.stats.exceptions += 1
        return RESPONSE_HEAD.pack(tid, 0, 3, unit, (function | 0x80) & 0xFF, code)


async def serve(base_port: int, port_count: int, units_per_port: int, seed: int) -> int:
    """Bind the listeners, announce them, serve until a signal or the parent dies."""
    loop = asyncio.get_running_loop()
    stats = FleetStats()
    # Handlers first: SIGUSR1's default action kills, and the harness may ask as
    # soon as it has read the ports.
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: _print_json(stats.report()))
    rng = random.Random(seed)
    now_s = time.time()
    servers, ports = [], []
    for index in range(port_count):
        meters = {unit: Meter(rng, now_s) for unit in range(1, units_per_port + 1)}
        wanted = base_port + index if base_port else 0
        try:
            server = await loop.create_server(
                lambda meters=meters: GatewayProtocol(meters, stats), HOST, wanted, backlog=LISTEN_BACKLOG
            )
        except OSError as exc:
            print(f"fleet_server: cannot listen on {HOST}:{wanted}: {exc.strerror}", file=sys.stderr)
            for s in servers:
                s.close()
            return 1
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    _print_json({"ports": ports, "units_per_port": units_per_port, "pid": os.getpid()})
    parent = os.getppid()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), PARENT_CHECK_S)
        except asyncio.TimeoutError:
            if os.getppid() != parent:  # orphaned: the harness is gone
                break
    for server in servers:
        server.close()
    _print_json(stats.as_dict())
    return 0


def _print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-port", type=int, default=0,
                        help="first port (binds P..P+K-1); 0 (default) binds ephemeral ports")
    parser.add_argument("--ports", type=int, default=1, help="number of listening ports (K)")
    parser.add_argument("--units-per-port", type=int, default=10, help="unit ids 1..U on every port")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the simulated loads")
    args = parser.parse_args(argv)
    if args.ports < 1:
        parser.error("--ports must be >= 1")
    if not 1 <= args.units_per_port <= MAX_UNITS_PER_PORT:
        parser.error(f"--units-per-port must be 1..{MAX_UNITS_PER_PORT}")
    if args.base_port and not 1 <= args.base_port <= 65536 - args.ports:
        parser.error("--base-port leaves no room for --ports listeners")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    coroutine = serve(args.base_port, args.ports, args.units_per_port, args.seed)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    raise SystemExit(main())
