"""What every Modbus link shares: where a device is reached, and what a read raises.

A bus is what one connection reaches: a Modbus TCP endpoint (host and port,
spoken with the TCP framer, or with the RTU framer as cheap serial servers
expect), or a serial port with an RS485 line of meters behind it. The links
themselves live in ``transport`` (pymodbus) and ``fastlink`` (lean Modbus
TCP); the poller only sees what is defined here.

What every link offers the poller, ``read_many(unit, reads, timeout_s)``:
one device's reads of one tick, awaited once. Each read is a turn of its
own on the bus, taken in the bus's round like any other (the next read of
the device queues when the previous one is answered), so the order on the
wire is what it would be with one ``read()`` per request. It gives one
``Answer`` per read, in order: what came back (the registers' wire bytes,
bits as 0/1 ints, or the ``ExceptionResponse`` or ``LinkError`` it ended
with, not raised) and the wall-clock time it came, from which the poller
computes Delay. A ``LinkError`` ends the device's tick: it is unreachable,
so its later reads are not sent (one timeout per tick, not one per request)
and carry the same error and time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from susee.config import DeviceSettings

READ_FUNCTIONS = frozenset({1, 2, 3, 4})  # coils, discrete inputs, holding, input


class Read(NamedTuple):
    """One read request: function code, first address and count (registers, or bits for fc 1/2)."""

    function: int
    address: int
    count: int


class Answer(NamedTuple):
    """What one read gave and when: the data, or the failure it ended with (not raised)."""

    outcome: bytes | list[int] | Exception
    received_s: float  # wall clock (epoch seconds) when the answer or the failure came


def check_reads(reads: Sequence[Read]) -> None:
    """Refuse anything but a read (ValueError): the service never writes to a meter."""
    for read in reads:
        if read[0] not in READ_FUNCTIONS:
            raise ValueError(f"function {read[0]} is not a read")


def unsent_answers(error: Exception, at_s: float, count: int) -> list[Answer]:
    """The answers of the ``count`` reads a ``LinkError`` kept from being sent: that same error."""
    return [Answer(error, at_s)] * count


async def read_one_by_one(
    read: Callable[[int, int, int, int, float], Awaitable[bytes | list[int]]],
    unit: int,
    reads: Sequence[Read],
    timeout_s: float,
    now: Callable[[], float] = time.time,
) -> list[Answer]:
    """``read_many`` for a link whose ``read()`` is a coroutine that takes its own turn on the bus."""
    answers: list[Answer] = []
    for function, address, count in reads:
        try:
            outcome = await read(unit, function, address, count, timeout_s)
        except Exception as exc:  # handed over: the poller makes every failure a Code
            outcome = exc
        received_s = now()
        answers.append(Answer(outcome, received_s))
        if isinstance(outcome, LinkError):
            answers += unsent_answers(outcome, received_s, len(reads) - len(answers))
            break
    return answers


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
