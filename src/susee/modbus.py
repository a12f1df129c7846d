"""What every Modbus link shares: where a device is reached, and what a read raises.

A bus is what one connection reaches: a Modbus TCP endpoint (host and port,
spoken with the TCP framer, or with the RTU framer as cheap serial servers
expect), or a serial port with an RS485 line of meters behind it. The links
themselves live in ``transport`` (pymodbus) and ``fastlink`` (lean Modbus
TCP); the poller only sees the two errors below.
"""

from __future__ import annotations

from dataclasses import dataclass

from susee.config import DeviceSettings

READ_FUNCTIONS = frozenset({1, 2, 3, 4})  # coils, discrete inputs, holding, input


class LinkError(Exception):
    """No usable answer: connect failed, timeout, or connection lost.

    ``timed_out`` is True when a request went out and no answer came within
    the timeout: the bus was held for the whole timeout, which is what
    backing off a silent device saves.
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ExceptionResponse(Exception):
    """The peer answered with a Modbus exception response."""

    def __init__(self, exception_code: int) -> None:
        super().__init__(f"Modbus exception 0x{exception_code:02X}")
        self.exception_code = exception_code


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A Modbus TCP endpoint; ``framer`` "rtu" for RTU frames over TCP."""

    host: str
    port: int
    framer: str = "socket"

    @property
    def bus_key(self) -> tuple:
        return ("tcp", self.host, self.port)

    def __str__(self) -> str:
        suffix = " (RTU over TCP)" if self.framer == "rtu" else ""
        return f"{self.host}:{self.port}{suffix}"


@dataclass(frozen=True, slots=True)
class SerialEndpoint:
    """A serial port (Modbus RTU) and the line's framing."""

    port: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def bus_key(self) -> tuple:
        return ("serial", self.port)

    def __str__(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


def endpoint_of(settings: DeviceSettings) -> Endpoint | SerialEndpoint:
    """Where ``settings`` says the device is reached."""
    serial = settings.serial
    if serial is not None:
        return SerialEndpoint(serial.port, serial.baudrate, serial.parity, serial.stopbits, serial.bytesize)
    return Endpoint(settings.host or "", settings.port, settings.framer)
