"""A virtual RS485 line for tests: two pseudo-terminals joined by a relay thread.

susee opens ``client_port``, the simulated meters (pymodbus' serial server)
open ``device_port``. Every byte goes through the relay, which records it with
its direction and time, and with ``baudrate`` holds it for its wire time so
timings look like a real line (a pty alone delivers at once, whatever the
baud rate). One relay thread carries both directions: like RS485, the line is
half duplex. Self-contained: no socat, nothing to install.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from dataclasses import dataclass

# 8E1, the Modbus RTU default: start bit + 8 data bits + parity + stop bit.
BITS_PER_BYTE = 11
READ_FUNCTIONS = (1, 2, 3, 4)
REQUEST_BYTES = 8  # unit, function, address (2), count (2), CRC (2)


@dataclass(frozen=True, slots=True)
class Frame:
    """One RTU frame seen on the line; ``time_s`` is time.monotonic() when it was complete."""

    time_s: float
    to_device: bool  # a request from susee; False: a response from a meter
    unit: int
    function: int
    data: bytes


class PtyLine:
    """Two pty pairs and a relay; use ``with PtyLine() as line``."""

    def __init__(self, baudrate: int | None = None) -> None:
        self.baudrate = baudrate
        self.chunks: list[tuple[float, bool, bytes]] = []  # (time forwarded, to_device, bytes)
        self._fds: list[int] = []
        self._thread: threading.Thread | None = None

    def open(self) -> PtyLine:
        client_master, client_slave = self._pair()
        device_master, device_slave = self._pair()
        self.client_port = os.ttyname(client_slave)
        self.device_port = os.ttyname(device_slave)
        self._wake_read, self._wake_write = os.pipe()
        self._fds += [self._wake_read, self._wake_write]
        self._thread = threading.Thread(
            target=self._relay, args=(client_master, device_master), name="pty-line", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_write, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> PtyLine:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _pair(self) -> tuple[int, int]:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass unchanged
        # The slave stays open here too, so the master never sees a hang-up
        # while the serial client closes and reopens its end.
        self._fds += [master, slave]
        return master, slave

    def _relay(self, client_master: int, device_master: int) -> None:
        peer = {client_master: device_master, device_master: client_master}
        while True:
            readable, _, _ = select.select([client_master, device_master, self._wake_read], [], [])
            if self._wake_read in readable:
                return
            for fd in readable:
                data = os.read(fd, 4096)
                if self.baudrate:
                    time.sleep(len(data) * BITS_PER_BYTE / self.baudrate)
                os.write(peer[fd], data)
                self.chunks.append((time.monotonic(), fd == client_master, data))

    def frames(self) -> list[Frame]:
        """Requests and responses in the order they crossed the line."""
        frames: list[Frame] = []
        for to_device in (True, False):
            buffer = b""
            for time_s, direction, data in self.chunks:
                if direction != to_device:
                    continue
                buffer += data
                while (size := _frame_size(buffer, to_device)) and len(buffer) >= size:
                    frames.append(Frame(time_s, to_device, buffer[0], buffer[1], buffer[2 : size - 2]))
                    buffer = buffer[size:]
        return sorted(frames, key=lambda frame: frame.time_s)


def _frame_size(buffer: bytes, request: bool) -> int:
    """Length of the read request or response at the start of ``buffer``; 0: not known yet."""
    if len(buffer) < 3:
        return 0
    if request:
        return REQUEST_BYTES
    if buffer[1] & 0x80:
        return 5  # unit, function | 0x80, exception code, CRC
    return 5 + buffer[2]  # unit, function, byte count, data, CRC
