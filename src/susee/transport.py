"""Modbus connections, one per bus, shared by the devices on it.

A bus is what one connection reaches: a Modbus TCP endpoint (host and port,
spoken with the TCP framer, or with the RTU framer as cheap serial servers
expect), or a serial port with an RS485 line of meters behind it. Devices on
one bus share its link; ``BusScheduler`` keeps one transaction at a time on
it, in a fair order, with the configured silence in between. Only read
function codes are ever sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from susee.buses import BusScheduler
from susee.config import DeviceSettings

log = logging.getLogger(__name__)

READ_FUNCTIONS = frozenset({1, 2, 3, 4})  # coils, discrete inputs, holding, input
# The pymodbus clients' own timeout until the first request sets the device's.
INITIAL_TIMEOUT_S = 1.0


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


class ModbusLink:
    """A pymodbus client on one bus, (re)connected on demand, one request at a time."""

    def __init__(self, endpoint: Endpoint | SerialEndpoint, client, inter_request_delay_s: float = 0.0) -> None:
        self.endpoint = endpoint
        self.bus = BusScheduler(str(endpoint), inter_request_delay_s)
        self._client = client
        # Loop time of the last failed connect: requests already queued then
        # fail at once instead of each waiting another connect timeout.
        self._connect_failed_at = float("-inf")

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> list[int]:
        """Read ``count`` registers (or bits) and return them as ints.

        Raises LinkError or ExceptionResponse. The returned list may be shorter
        than ``count`` if the device sent less; the caller judges that.
        """
        if function not in READ_FUNCTIONS:
            raise ValueError(f"function {function} is not a read")
        queued_at = asyncio.get_running_loop().time()
        async with self.bus.turn(unit):
            await self._ensure_connected(timeout_s, queued_at)
            # The client has one timeout; devices on one bus may differ.
            self._client.ctx.comm_params.timeout_connect = timeout_s
            try:
                response = await self._request(unit, function, address, count)
            except ConnectionException as exc:  # not connected, or lost before sending
                raise LinkError(f"{self.endpoint}: {exc}") from exc
            except ModbusIOException as exc:  # sent, and no (valid) answer in time
                raise LinkError(f"no answer within {timeout_s:g} s", timed_out=True) from exc
            except ModbusException as exc:
                raise LinkError(str(exc)) from exc
            except asyncio.TimeoutError as exc:
                raise LinkError("timeout", timed_out=True) from exc
        if response.isError():
            raise ExceptionResponse(response.exception_code)
        if function in (1, 2):
            return [int(bit) for bit in response.bits[:count]]
        return list(response.registers)

    async def _ensure_connected(self, timeout_s: float, queued_at: float) -> None:
        if self._client.connected:
            return
        if queued_at <= self._connect_failed_at:
            raise LinkError(f"cannot connect to {self.endpoint} (failed while this request waited)")
        self._client.ctx.comm_params.timeout_connect = timeout_s
        try:
            connected = await asyncio.wait_for(self._client.connect(), timeout_s)
        except asyncio.TimeoutError:
            connected = False
        if not connected:
            self._connect_failed_at = asyncio.get_running_loop().time()
            raise LinkError(f"cannot connect to {self.endpoint}")
        log.info("connected to %s", self.endpoint)

    def _request(self, unit: int, function: int, address: int, count: int):
        client = self._client
        if function == 3:
            return client.read_holding_registers(address, count=count, device_id=unit)
        if function == 4:
            return client.read_input_registers(address, count=count, device_id=unit)
        if function == 1:
            return client.read_coils(address, count=count, device_id=unit)
        return client.read_discrete_inputs(address, count=count, device_id=unit)

    def close(self) -> None:
        self._client.close()


class TcpLink(ModbusLink):
    """Modbus TCP, or RTU frames over TCP, to one host and port."""

    def __init__(self, endpoint: Endpoint, inter_request_delay_s: float = 0.0) -> None:
        # retries=0: a timeout is a fact about this tick, not something to hide;
        # reconnect_delay=0: we reconnect ourselves, at the next read.
        client = AsyncModbusTcpClient(
            endpoint.host, port=endpoint.port, framer=FramerType(endpoint.framer),
            timeout=INITIAL_TIMEOUT_S, retries=0, reconnect_delay=0,
        )
        super().__init__(endpoint, client, inter_request_delay_s)


class SerialLink(ModbusLink):
    """Modbus RTU on a serial port; a port that cannot be opened fails the read, not the service."""

    def __init__(self, endpoint: SerialEndpoint, inter_request_delay_s: float = 0.0) -> None:
        client = AsyncModbusSerialClient(
            endpoint.port, framer=FramerType.RTU, baudrate=endpoint.baudrate, bytesize=endpoint.bytesize,
            parity=endpoint.parity, stopbits=endpoint.stopbits,
            timeout=INITIAL_TIMEOUT_S, retries=0, reconnect_delay=0,
        )
        super().__init__(endpoint, client, inter_request_delay_s)


class LinkPool:
    """Hands out one shared link per bus and closes them all at the end."""

    def __init__(self) -> None:
        self._links: dict[tuple, ModbusLink] = {}

    def link_for(self, endpoint: Endpoint | SerialEndpoint, inter_request_delay_s: float = 0.0) -> ModbusLink:
        """The link of ``endpoint``'s bus; its inter-request delay is the largest asked for."""
        link = self._links.get(endpoint.bus_key)
        if link is None:
            if isinstance(endpoint, SerialEndpoint):
                link = SerialLink(endpoint, inter_request_delay_s)
            else:
                link = TcpLink(endpoint, inter_request_delay_s)
            self._links[endpoint.bus_key] = link
            return link
        if link.endpoint != endpoint:
            # Settings validation rejects this; a programming error if it happens.
            raise ValueError(f"bus {link.endpoint} is also asked for as {endpoint}")
        if inter_request_delay_s != link.bus.inter_request_delay_s:
            largest = max(inter_request_delay_s, link.bus.inter_request_delay_s)
            log.info(
                "bus %s: devices ask for inter_request_delay %g s and %g s; the bus keeps the largest",
                endpoint, link.bus.inter_request_delay_s, inter_request_delay_s,
            )
            link.bus.inter_request_delay_s = largest
        return link

    @property
    def links(self) -> Iterable[ModbusLink]:
        return self._links.values()

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
