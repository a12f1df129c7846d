"""Modbus links: the contract every link keeps, which is all the poller sees.

A bus is what one connection reaches: a Modbus TCP endpoint (host and port,
spoken with the TCP framer, or with the RTU framer as cheap serial servers
expect), or a serial port with an RS485 line of meters behind it; its key is
``Endpoint.bus`` (see ``susee.bus_key``). The package:

- ``mbap``: Modbus TCP framing, pure functions over bytes;
- ``rtu``: Modbus RTU framing, pure functions over bytes;
- ``tcp``: the lean Modbus TCP client (the socket framer, the hot path);
- ``rtulink``: the same client with RTU framing, over TCP and on serial lines;
- ``serialport``: a serial port as an asyncio transport (pyserial);
- ``bus``: ``BusScheduler``, the turn-taking of the devices on one bus;
- ``pool``: one link per bus, bounded connects, the open-files limit.

This module imports nothing from the settings: ``devices.endpoint_of`` turns
a device's settings into an endpoint.

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

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from susee.bus_key import BusKey, serial_bus, tcp_bus

if TYPE_CHECKING:
    from susee.links.bus import BusScheduler

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


class LinkError(Exception):
    """No usable answer: connect failed, timeout, or connection lost.

    ``timed_out`` is True when a request went out and no answer came within
    the timeout: the bus was held for the whole timeout, which is what
    backing off a silent device saves.
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class MalformedAnswer(ValueError):
    """A well-framed response whose PDU does not answer the read: another function, a byte count beyond the data."""


def read_outcome(read: Read, function: int, buffer: bytes, count_at: int,
                 data_end: int) -> bytes | list[int] | ExceptionResponse | None:
    """What a response PDU says to ``read``: the one rule of every transport (``mbap``, ``rtu``).

    ``function`` is the response's function code, ``buffer[count_at]`` the
    byte after it (a byte count, or an exception code) and the data ends at
    ``data_end``. Registers (fc 3/4) as their wire bytes, whole words, as
    many as the byte count says; bits (fc 1/2) as 0/1 ints, least significant
    bit first, at most the count asked; an exception response of the read's
    function as ``ExceptionResponse``. None: malformed (another function, a
    byte count beyond the data, no byte count at all).
    """
    asked = read[0]
    if count_at >= data_end:
        return None
    if function == asked:
        byte_count = buffer[count_at]
        if byte_count <= data_end - count_at - 1:
            if asked >= 3:
                return buffer[count_at + 1 : count_at + 1 + (byte_count & ~1)]
            bits = [(byte >> i) & 1 for byte in buffer[count_at + 1 : data_end] for i in range(8)]
            return bits[: read[2]]
    elif function == asked | 0x80:
        return ExceptionResponse(buffer[count_at])
    return None


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
    def bus(self) -> BusKey:
        """The key of the bus: the framer does not matter, one connection per host and port."""
        return tcp_bus(self.host, self.port)

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
    def bus(self) -> BusKey:
        """The key of the bus: one line per serial port."""
        return serial_bus(self.port)

    def __str__(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


class Link(Protocol):
    """What the pool hands out and the poller reads through: one link per bus.

    ``read_many`` is the poller's whole use of a link (see above); ``read``
    takes one read alone, raising ``LinkError`` or ``ExceptionResponse``.
    ``scheduler`` gives the bus's turns to its devices.
    """

    endpoint: Endpoint | SerialEndpoint
    scheduler: BusScheduler

    def read_many(self, unit: int, reads: Sequence[Read], timeout_s: float) -> Awaitable[list[Answer]]: ...

    def read(
        self, unit: int, function: int, address: int, count: int, timeout_s: float
    ) -> Awaitable[bytes | list[int]]: ...

    def close(self) -> None: ...
