"""CPU per request of the RTU-over-TCP link, next to the Modbus TCP link and pymodbus' RTU client.

    .venv/bin/python bench/rtu_cpu.py [--requests 6000] [--rounds 3]

A raw server (``tests/rawmodbus.py``) in a process of its own answers every
read at once; this process reads fc 3 7+64 and 801+20 in turn, one request
at a time (a wake-up per answer, like one device alone on its bus), and
prints its own CPU time per request for each client, round after round, so
the clients share the machine's load alike:

- ``rtu``: ``links.rtulink.RtuLink`` (RTU frames over TCP, ``links.rtu`` framing);
- ``tcp``: ``links.tcp.FastTcpLink`` (Modbus TCP), the same client with MBAP framing;
- ``pymodbus-rtu``: pymodbus' ``AsyncModbusTcpClient`` with the RTU framer, which
  served RTU over TCP before ``links.rtulink``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rawmodbus import MBAP_REQUEST, RTU_REQUEST, RawServer, mbap, registers, rtu  # noqa: E402

from susee.links import Endpoint  # noqa: E402
from susee.links.rtulink import RtuLink  # noqa: E402
from susee.links.tcp import FastTcpLink  # noqa: E402

READS = [(3, 7, 64), (3, 801, 20)]  # the PAC3200's default reads
WARM_UP = 200


def _answer(raw: bytes) -> bytes:
    if len(raw) == RTU_REQUEST.size + 2:
        unit, function, address, count = RTU_REQUEST.unpack_from(raw)
        return rtu(unit, function, registers(*range(address, address + count)))
    tid, _, _, unit, function, address, count = MBAP_REQUEST.unpack(raw)
    return mbap(tid, unit, function, registers(*range(address, address + count)))


def _serve(rtu_frames: bool, ports) -> None:
    async def serve() -> None:
        async with RawServer(_answer, rtu_frames=rtu_frames) as server:
            ports.send(server.port)
            await asyncio.Event().wait()

    asyncio.run(serve())


async def _lean(link, requests: int) -> float:
    try:
        for _ in range(WARM_UP):
            await link.read_many(1, READS, 1.0)
        started = time.process_time()
        for _ in range(requests // len(READS)):
            answers = await link.read_many(1, READS, 1.0)
            assert not isinstance(answers[-1][0], Exception), answers
        return time.process_time() - started
    finally:
        link.close()


async def _pymodbus(port: int, requests: int) -> float:
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=FramerType.RTU, timeout=1.0, retries=0)
    await client.connect()
    try:
        for _ in range(WARM_UP):
            await client.read_holding_registers(7, count=64, device_id=1)
        started = time.process_time()
        for _ in range(requests // len(READS)):
            for _, address, count in READS:
                response = await client.read_holding_registers(address, count=count, device_id=1)
                assert not response.isError()
        return time.process_time() - started
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    servers, ports = [], {}
    for name, rtu_frames in (("rtu", True), ("tcp", False)):
        receive, send = multiprocessing.Pipe(duplex=False)
        server = multiprocessing.Process(target=_serve, args=(rtu_frames, send), daemon=True)
        server.start()
        servers.append(server)
        ports[name] = receive.recv()
    clients = {
        "rtu": lambda: _lean(RtuLink(Endpoint("127.0.0.1", ports["rtu"], "rtu")), args.requests),
        "tcp": lambda: _lean(FastTcpLink(Endpoint("127.0.0.1", ports["tcp"])), args.requests),
        "pymodbus-rtu": lambda: _pymodbus(ports["rtu"], args.requests),
    }
    try:
        for round_ in range(1, args.rounds + 1):
            figures = {name: asyncio.run(client()) for name, client in clients.items()}
            print(f"round {round_}: " + ", ".join(
                f"{name} {1e6 * cpu_s / args.requests:.0f} µs" for name, cpu_s in figures.items()
            ) + " CPU per request")
    finally:
        for server in servers:
            server.terminate()


if __name__ == "__main__":
    main()
