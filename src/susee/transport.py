"""Modbus connections, one per endpoint, shared by the devices behind it.

Several unit ids behind one gateway (same host and port) share one TCP
connection; a lock keeps one transaction at a time on it, in FIFO order, as a
real gateway requires. Only read function codes are ever sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

log = logging.getLogger(__name__)

READ_FUNCTIONS = frozenset({1, 2, 3, 4})  # coils, discrete inputs, holding, input


class LinkError(Exception):
    """No usable answer: connect failed, timeout, or connection lost."""


class ExceptionResponse(Exception):
    """The peer answered with a Modbus exception response."""

    def __init__(self, exception_code: int) -> None:
        super().__init__(f"Modbus exception 0x{exception_code:02X}")
        self.exception_code = exception_code


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a device is reached; devices with equal endpoints share a link."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class TcpLink:
    """A Modbus TCP connection, (re)connected on demand, one request at a time."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._lock = asyncio.Lock()
        # retries=0: a timeout is a fact about this tick, not something to hide;
        # reconnect_delay=0: we reconnect ourselves, at the next read.
        self._client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=1.0, retries=0, reconnect_delay=0)

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> list[int]:
        """Read ``count`` registers (or bits) and return them as ints.

        Raises LinkError or ExceptionResponse. The returned list may be shorter
        than ``count`` if the device sent less; the caller judges that.
        """
        if function not in READ_FUNCTIONS:
            raise ValueError(f"function {function} is not a read")
        async with self._lock:
            await self._ensure_connected(timeout_s)
            # The client has one timeout; devices behind one gateway may differ.
            self._client.ctx.comm_params.timeout_connect = timeout_s
            try:
                response = await self._request(unit, function, address, count)
            except ModbusException as exc:
                raise LinkError(str(exc)) from exc
            except asyncio.TimeoutError as exc:
                raise LinkError("timeout") from exc
        if response.isError():
            raise ExceptionResponse(response.exception_code)
        if function in (1, 2):
            return [int(bit) for bit in response.bits[:count]]
        return list(response.registers)

    async def _ensure_connected(self, timeout_s: float) -> None:
        if self._client.connected:
            return
        self._client.ctx.comm_params.timeout_connect = timeout_s
        try:
            connected = await asyncio.wait_for(self._client.connect(), timeout_s)
        except asyncio.TimeoutError:
            connected = False
        if not connected:
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


class LinkPool:
    """Hands out one shared link per endpoint and closes them all at the end."""

    def __init__(self) -> None:
        self._links: dict[Endpoint, TcpLink] = {}

    def link_for(self, endpoint: Endpoint) -> TcpLink:
        link = self._links.get(endpoint)
        if link is None:
            link = self._links[endpoint] = TcpLink(endpoint)
        return link

    @property
    def links(self) -> Iterable[TcpLink]:
        return self._links.values()

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
