"""A raw-socket Modbus server for tests: each request handed to a script that says what to send back.

Not the project's simulator: a gateway's quirks (transaction id 0, a
connection closed as a request comes, a frame sent twice, a wrong function
code) are one line of script each. Read requests have a fixed size: 12
bytes in Modbus TCP (MBAP), 8 in RTU (also RTU frames over TCP), so the
server cuts the stream into requests without parsing it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

HOST = "127.0.0.1"
MBAP_REQUEST = struct.Struct(">HHHBBHH")  # transaction, protocol, length, unit, function, address, count
RTU_REQUEST = struct.Struct(">BBHH")  # unit, function, address, count (then the CRC)
CLOSE = "close"  # in a script's answer: close the connection

# A script's answer to a request: None (silence), bytes to send, CLOSE, or a
# list of those, of floats (seconds to wait before the next item) and of
# callables (called when their turn comes: to tell the test).
Reply = "bytes | str | float | None | list[bytes | str | float]"
Script = Callable[[bytes], Reply]


def crc16(data: bytes) -> bytes:
    """The Modbus RTU CRC of ``data``, as it goes on the wire (low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def rtu(unit: int, function: int, pdu: bytes) -> bytes:
    """An RTU frame: unit, function, the rest of the PDU, CRC."""
    frame = bytes([unit, function]) + pdu
    return frame + crc16(frame)


def mbap(tid: int, unit: int, function: int, pdu: bytes) -> bytes:
    """A Modbus TCP frame: MBAP header, function, the rest of the PDU."""
    return struct.pack(">HHHBB", tid, 0, 2 + len(pdu), unit, function) + pdu


def registers(*words: int) -> bytes:
    """A register read's PDU after the function code: byte count, then the words."""
    return bytes([2 * len(words)]) + struct.pack(f">{len(words)}H", *words)


class RawServer:
    """Listens on an ephemeral port; ``script(request)`` answers each request (None: silence)."""

    def __init__(self, script: Script, rtu_frames: bool = False, port: int = 0, close_on_accept: bool = False) -> None:
        self.script = script
        self.close_on_accept = close_on_accept  # a gateway that takes a connection and drops it at once
        self.request_size = 8 if rtu_frames else MBAP_REQUEST.size
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = port
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.Transport] = []

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.get_running_loop().create_server(lambda: _Connection(self), HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for transport in self._transports:
            transport.abort()
        await self._server.wait_closed()


class _Connection(asyncio.Protocol):
    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server._transports.append(self.transport)
        if self.server.close_on_accept:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        size = self.server.request_size
        while len(self.buffer) >= size and not self.transport.is_closing():
            request, self.buffer = self.buffer[:size], self.buffer[size:]
            self.server.requests.append(request)
            reply = self.server.script(request)
            self._play(reply if isinstance(reply, list) else [reply])

    def _play(self, items: list) -> None:
        """Send, close or wait, item by item (a wait defers the rest)."""
        for index, item in enumerate(items):
            if self.transport.is_closing():
                return
            if isinstance(item, float):
                asyncio.get_running_loop().call_later(item, self._play, items[index + 1 :])
                return
            if callable(item):
                item()
            elif item == CLOSE:
                self.transport.close()
            elif item:
                self.transport.write(item)


class RawSerialDevice:
    """The meter end of a serial line (a pty of ``ptyline.PtyLine``): RTU requests handed to ``script``.

    Use ``async with RawSerialDevice(script, line.device_port)``. CLOSE in a
    reply means nothing on a serial line and is ignored.
    """

    def __init__(self, script: Script, port: str) -> None:
        self.script = script
        self.path = port
        self.requests: list[bytes] = []
        self._fd = -1
        self._buffer = b""

    async def __aenter__(self) -> RawSerialDevice:
        import os
        import tty

        self._fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        import os

        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)

    def _readable(self) -> None:
        import os

        try:
            self._buffer += os.read(self._fd, 4096)
        except BlockingIOError:
            return
        while len(self._buffer) >= 8:
            request, self._buffer = self._buffer[:8], self._buffer[8:]
            self.requests.append(request)
            reply = self.script(request)
            self._play(reply if isinstance(reply, list) else [reply])

    def _play(self, items: list) -> None:
        import os

        for index, item in enumerate(items):
            if isinstance(item, float):
                asyncio.get_running_loop().call_later(item, self._play, items[index + 1 :])
                return
            if callable(item):
                item()
            elif isinstance(item, bytes) and item:
                os.write(self._fd, item)
