"""Links through pymodbus: serial lines (Modbus RTU) and RTU frames over TCP.

Modbus TCP with the socket framer, the hot path of a large site, goes
through the lean client of ``links.tcp``; everything else through pymodbus'
clients, one per bus, (re)connected on demand, one request at a time. What
a read gives is what the lean client gives (see ``susee.links``), and the
same faults end the same way: an answer of another function or unit is a
``LinkError`` (``check_response``), and over TCP a connection closed before
a byte of the answer came gets the read sent once more (``TcpLink``).

pymodbus keeps a client's one timeout where it documents nothing:
``client.ctx.comm_params.timeout_connect``. Devices on one bus may have
different timeouts, so each request sets it; ``set_client_timeout`` is the
one place that touches it, and this module refuses to load on a pymodbus
that keeps it elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from importlib.metadata import version

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.transaction import TransactionManager
from pymodbus.transport import CommParams, ModbusProtocol

from susee.codec import registers_to_bytes
from susee.links import (
    READ_FUNCTIONS,
    Answer,
    Endpoint,
    ExceptionResponse,
    LinkError,
    Read,
    SerialEndpoint,
    check_reads,
    read_one_by_one,
)
from susee.links.bus import BusScheduler

log = logging.getLogger(__name__)

# The pymodbus clients' own timeout until the first request sets the device's.
INITIAL_TIMEOUT_S = 1.0
# What pyproject.toml asks for, and where the private attribute below was checked.
SUPPORTED_PYMODBUS = ">=3.10,<3.17"


class UnsupportedPymodbus(ImportError):
    """The installed pymodbus does not keep its client timeout where this module sets it."""


def check_timeout_attribute(
    client_class: type = ModbusBaseClient,
    manager_class: type = TransactionManager,
    protocol_class: type = ModbusProtocol,
    params_class: type = CommParams,
) -> None:
    """Raise UnsupportedPymodbus unless ``client.ctx.comm_params.timeout_connect`` exists on these classes.

    Checked on the classes, without building a client (that needs a running
    loop): each ``__init__`` must assign the attribute, and the transaction
    manager (``ctx``) must be the protocol whose ``comm_params`` it reads.
    """
    missing = []
    if not _assigns(client_class, "ctx"):
        missing.append(f"{client_class.__qualname__}.ctx")
    if not issubclass(manager_class, protocol_class) or not _assigns(protocol_class, "comm_params"):
        missing.append(f"{manager_class.__qualname__}.comm_params")
    if not dataclasses.is_dataclass(params_class) or "timeout_connect" not in {
        f.name for f in dataclasses.fields(params_class)
    }:
        missing.append(f"{params_class.__qualname__}.timeout_connect")
    if missing:
        raise UnsupportedPymodbus(
            f"susee supports pymodbus {SUPPORTED_PYMODBUS}; the installed pymodbus {version('pymodbus')} "
            f"has no {', '.join(missing)} (client.ctx.comm_params.timeout_connect): "
            f"install a supported version (pip install 'pymodbus{SUPPORTED_PYMODBUS}')"
        )


def _assigns(cls: type, name: str) -> bool:
    """Whether ``cls.__init__`` (Python code) sets an attribute ``name``."""
    code = getattr(cls.__init__, "__code__", None)
    return code is not None and name in code.co_names


check_timeout_attribute()


def set_client_timeout(client: ModbusBaseClient, timeout_s: float) -> None:
    """Make ``client`` wait ``timeout_s`` for a connect and for each answer (pymodbus' private attribute)."""
    client.ctx.comm_params.timeout_connect = timeout_s


def link_error(exc: Exception, endpoint: Endpoint | SerialEndpoint, timeout_s: float) -> LinkError:
    """The LinkError of a pymodbus request that raised ``exc``: did it hold the bus for a timeout?"""
    if isinstance(exc, ConnectionException):  # not connected, or lost before sending
        return LinkError(f"{endpoint}: {exc}")
    if isinstance(exc, ModbusIOException):  # sent, and no (valid) answer in time
        return LinkError(f"no answer within {timeout_s:g} s", timed_out=True)
    if isinstance(exc, asyncio.TimeoutError):
        return LinkError("timeout", timed_out=True)
    return LinkError(str(exc))


def check_response(response, unit: int, function: int, endpoint: Endpoint | SerialEndpoint) -> None:
    """Raise LinkError unless ``response`` answers ``function`` of ``unit``, as the Modbus TCP client checks.

    pymodbus hands over whatever frame came with a good CRC: a function-4
    answer to a function-3 read would be stored as good data. Unit 0 takes
    any unit, as on Modbus TCP.
    """
    expected = function | 0x80 if response.isError() else function
    if response.function_code != expected or (unit and response.dev_id != unit):
        raise LinkError(
            f"{endpoint}: malformed answer (function {response.function_code}, unit {response.dev_id}) "
            f"to fc {function} of unit {unit}"
        )


class ModbusLink:
    """A pymodbus client on one bus, (re)connected on demand, one request at a time."""

    def __init__(self, endpoint: Endpoint | SerialEndpoint, client, inter_request_delay_s: float = 0.0) -> None:
        self.endpoint = endpoint
        self.scheduler = BusScheduler(str(endpoint), inter_request_delay_s)
        self._client = client
        # Loop time of the last failed connect: requests already queued then
        # fail at once instead of each waiting another connect timeout.
        self._connect_failed_at = float("-inf")
        self._connected_before = False  # a connect now is a reconnect: logged at INFO

    async def read_many(self, unit: int, reads: Sequence[Read], timeout_s: float) -> list[Answer]:
        """One device's reads of a tick: one Answer per read (see ``susee.links``)."""
        check_reads(reads)
        return await read_one_by_one(self.read, unit, reads, timeout_s)

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> bytes | list[int]:
        """Read ``count`` registers (or bits): registers as their wire bytes (big-endian words), bits as 0/1 ints.

        Raises LinkError or ExceptionResponse. The result may hold fewer than
        ``count`` if the device sent less; the caller judges that. Registers
        come back as bytes because that is what the decoders read (the lean
        TCP client hands over the frame's own bytes).
        """
        if function not in READ_FUNCTIONS:
            raise ValueError(f"function {function} is not a read")
        queued_at = asyncio.get_running_loop().time()
        async with self.scheduler.turn(unit):
            await self._ensure_connected(timeout_s, queued_at)
            response = await self._exchange(unit, function, address, count, timeout_s)
        check_response(response, unit, function, self.endpoint)
        if response.isError():
            raise ExceptionResponse(response.exception_code)
        if function in (1, 2):
            return [int(bit) for bit in response.bits[:count]]
        return registers_to_bytes(response.registers)

    async def _ensure_connected(self, timeout_s: float, queued_at: float) -> None:
        if self._client.connected:
            return
        if queued_at <= self._connect_failed_at:
            raise LinkError(f"cannot connect to {self.endpoint} (failed while this request waited)")
        set_client_timeout(self._client, timeout_s)
        reason = ""
        try:
            connected = await asyncio.wait_for(self._client.connect(), timeout_s)
        except asyncio.TimeoutError:
            connected = False
        except Exception as exc:  # noqa: BLE001 (a port that rejects its settings: pyserial's ValueError, termios.error)
            connected, reason = False, f": {exc}"
        if not connected:
            self._connect_failed_at = asyncio.get_running_loop().time()
            raise LinkError(f"cannot connect to {self.endpoint}{reason}")
        self._log_connected()

    def _log_connected(self) -> None:
        """A first connect at the first attempt is DEBUG: a site of hundreds of buses would
        write hundreds of lines at start-up. A reconnect, or a connect after a failed
        attempt, tells that a bus came back: INFO."""
        if self._connected_before:
            log.info("reconnected to %s", self.endpoint)
        elif self._connect_failed_at > float("-inf"):
            log.info("connected to %s after failed attempts", self.endpoint)
        else:
            log.debug("connected to %s", self.endpoint)
        self._connected_before = True

    async def _exchange(self, unit: int, function: int, address: int, count: int, timeout_s: float):
        """Send the read and await its response, inside the turn; raise LinkError if none came."""
        # The client has one timeout; devices on one bus may differ.
        set_client_timeout(self._client, timeout_s)
        try:
            return await self._request(unit, function, address, count)
        except (ModbusException, asyncio.TimeoutError) as exc:
            raise link_error(exc, self.endpoint, timeout_s) from exc

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
    """pymodbus over TCP: RTU frames over TCP (the socket framer's buses use ``links.tcp``)."""

    def __init__(self, endpoint: Endpoint, inter_request_delay_s: float = 0.0) -> None:
        self._lost: asyncio.Future | None = None  # resolved if the connection closes during a request
        self._heard = False  # bytes came since the request went out
        # retries=0: a timeout is a fact about this tick, not something to hide;
        # reconnect_delay=0: we reconnect ourselves, at the next read. The trace
        # hooks (public API) tell a connection closed before any answer came.
        client = AsyncModbusTcpClient(
            endpoint.host, port=endpoint.port, framer=FramerType(endpoint.framer),
            timeout=INITIAL_TIMEOUT_S, retries=0, reconnect_delay=0,
            trace_packet=self._traced_packet, trace_connect=self._traced_connect,
        )
        super().__init__(endpoint, client, inter_request_delay_s)

    async def _exchange(self, unit: int, function: int, address: int, count: int, timeout_s: float):
        """As the lean client: a read whose connection closes before a byte of its answer came
        is sent once more on a fresh connection, within its first timeout (pymodbus alone would
        wait out the timeout on the closed connection)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for attempt in (1, 2):
            self._heard = False
            lost = self._lost = loop.create_future()
            request = asyncio.ensure_future(super()._exchange(unit, function, address, count, deadline - loop.time()))
            try:
                await asyncio.wait((request, lost), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._lost = None
                if not request.done():  # the connection closed, or our reader was cancelled
                    request.cancel()
                    await asyncio.gather(request, return_exceptions=True)
            if not request.cancelled():
                return request.result()
            log.info("%s: connection lost", self.endpoint)
            remaining_s = deadline - loop.time()
            if attempt == 2 or self._heard or remaining_s <= 0:
                break
            await self._ensure_connected(remaining_s, loop.time())
        raise LinkError(f"{self.endpoint}: connection lost")

    def _traced_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._heard = True
        return data

    def _traced_connect(self, connected: bool) -> None:
        if not connected and self._lost is not None and not self._lost.done():
            self._lost.set_result(None)


class SerialLink(ModbusLink):
    """Modbus RTU on a serial port; a port that cannot be opened fails the read, not the service."""

    def __init__(self, endpoint: SerialEndpoint, inter_request_delay_s: float = 0.0) -> None:
        client = AsyncModbusSerialClient(
            endpoint.port, framer=FramerType.RTU, baudrate=endpoint.baudrate, bytesize=endpoint.bytesize,
            parity=endpoint.parity, stopbits=endpoint.stopbits,
            timeout=INITIAL_TIMEOUT_S, retries=0, reconnect_delay=0,
        )
        super().__init__(endpoint, client, inter_request_delay_s)
