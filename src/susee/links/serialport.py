"""A serial port as an asyncio transport: pyserial opens and sets up the port, the loop watches it.

The RTU link (``links.rtulink``) speaks to a serial port as to a TCP
connection: ``open_serial`` hands its protocol a transport that writes,
reads when the loop says bytes are there, and is closed or lost like a
socket (a USB adapter unplugged: the read fails, the protocol hears
``connection_lost``). A port is anything ``serial.serial_for_url`` opens to a
local file descriptor (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, a pty);
POSIX only, as the loop's ``add_reader`` on a serial port is.
"""

from __future__ import annotations

import asyncio
import os

import serial

from susee.links import SerialEndpoint

READ_SIZE = 4096  # more than any frame: one read takes what the driver holds


def open_serial(endpoint: SerialEndpoint, protocol: asyncio.Protocol, loop: asyncio.AbstractEventLoop) -> SerialTransport:
    """Open ``endpoint``'s port with its settings, hand ``protocol`` the transport; OSError if it cannot be.

    A port that exists but rejects its settings (pyserial's ValueError, or
    the termios error of an adapter refusing a baud rate) is an OSError too,
    whose text says why: the read fails with Code 1, not the service.
    """
    try:
        port = serial.serial_for_url(
            endpoint.port, baudrate=endpoint.baudrate, bytesize=endpoint.bytesize, parity=endpoint.parity,
            stopbits=endpoint.stopbits, timeout=0,
        )
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 (ValueError, termios.error: the port refuses its settings)
        raise OSError(str(exc)) from exc
    try:
        fd = port.fileno()
    except Exception as exc:  # noqa: BLE001 (a URL such as rfc2217:// has no descriptor to watch)
        port.close()
        raise OSError(f"not a local serial port: {exc}") from exc
    transport = SerialTransport(loop, port, fd, protocol)
    try:
        loop.add_reader(fd, transport._readable)
    except NotImplementedError:  # Windows' proactor loop watches no descriptors: Code 1, said why
        port.close()
        raise OSError("serial ports need a POSIX event loop (Linux, macOS, BSD)") from None
    protocol.connection_made(transport)
    return transport


class SerialTransport(asyncio.Transport):
    """An open serial port: ``write``, ``close``/``abort``, ``is_closing``; bytes go to the protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: serial.Serial, fd: int, protocol: asyncio.Protocol):
        super().__init__()
        self._loop = loop
        self._port = port
        self._fd = fd
        self._protocol = protocol
        self._closing = False

    def write(self, data: bytes) -> None:
        """Write a request: a few bytes into the driver's buffer, which has room for them."""
        if self._closing:
            return
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._close(exc)
            return
        if written < len(data):  # a driver with no room for 8 bytes is a port gone wrong
            self._close(OSError(f"serial port took {written} of {len(data)} bytes"))

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the adapter is gone
            self._close(exc)
            return
        if data:
            self._protocol.data_received(data)
        else:
            self._close(None)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._close(None)

    def abort(self) -> None:
        self._close(None)

    def get_extra_info(self, name: str, default=None):
        return self._port if name == "serial" else default

    def _close(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._port.close()
        # As asyncio's transports: the protocol hears of it from the loop, not from inside close().
        self._loop.call_soon(self._protocol.connection_lost, exc)
