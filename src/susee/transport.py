"""Modbus connections, one per bus, shared by the devices on it.

A bus is what one connection reaches (see ``modbus``). Devices on one bus
share its link; ``BusScheduler`` keeps one transaction at a time on it, in a
fair order, with the configured silence in between. Only read function codes
are ever sent. Modbus TCP with the socket framer, the common case and the
hot path of a large site, goes through the lean client of ``fastlink``;
serial lines and RTU frames over TCP through pymodbus.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence
from functools import partial

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from susee.buses import BusScheduler
from susee.codec import registers_to_bytes
from susee.fastlink import MAX_CONNECTS_IN_FLIGHT, FastTcpLink
from susee.shown import first_few
from susee.modbus import (  # noqa: F401 (re-exported: the names every link user needs)
    READ_FUNCTIONS,
    Answer,
    Endpoint,
    ExceptionResponse,
    LinkError,
    Read,
    SerialEndpoint,
    check_reads,
    endpoint_of,
    read_one_by_one,
)

log = logging.getLogger(__name__)

# The pymodbus clients' own timeout until the first request sets the device's.
INITIAL_TIMEOUT_S = 1.0
# Descriptors the process needs besides one per bus: database connections,
# the spool's files, logging, the interpreter's own.
SPARE_DESCRIPTORS = 64


class ModbusLink:
    """A pymodbus client on one bus, (re)connected on demand, one request at a time."""

    def __init__(self, endpoint: Endpoint | SerialEndpoint, client, inter_request_delay_s: float = 0.0) -> None:
        self.endpoint = endpoint
        self.bus = BusScheduler(str(endpoint), inter_request_delay_s)
        self._client = client
        # Loop time of the last failed connect: requests already queued then
        # fail at once instead of each waiting another connect timeout.
        self._connect_failed_at = float("-inf")
        self._connected_before = False  # a connect now is a reconnect: logged at INFO

    async def read_many(self, unit: int, reads: Sequence[Read], timeout_s: float) -> list[Answer]:
        """One device's reads of a tick: one Answer per read (see ``modbus``)."""
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
        return registers_to_bytes(response.registers)

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
    """pymodbus over TCP: RTU frames over TCP (the socket framer's buses use ``FastTcpLink``)."""

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


Link = ModbusLink | FastTcpLink


class LinkPool:
    """Hands out one shared link per bus and closes them all at the end.

    Connection attempts of the pool's lean TCP links are bounded: at most
    ``max_connects`` are in flight at once, so a site of hundreds of gateways
    does not open them all in the same millisecond.
    """

    def __init__(self, max_connects: int = MAX_CONNECTS_IN_FLIGHT) -> None:
        self._links: dict[tuple, Link] = {}
        self._connect_slots = asyncio.Semaphore(max_connects)
        self._connects_ahead: ConnectsAhead | None = None

    def link_for(self, endpoint: Endpoint | SerialEndpoint, inter_request_delay_s: float = 0.0) -> Link:
        """The link of ``endpoint``'s bus; its inter-request delay is the largest asked for."""
        link = self._links.get(endpoint.bus_key)
        if link is None:
            if isinstance(endpoint, SerialEndpoint):
                link = SerialLink(endpoint, inter_request_delay_s)
            elif endpoint.framer == "socket":
                link = FastTcpLink(endpoint, inter_request_delay_s, self._connect_slots)
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

    def open_all(self) -> None:
        """At start-up: make room for one descriptor per bus, start connecting the TCP links.

        The connects run in the background, ``max_connects`` at a time, so
        that the first tick finds its connections open; a read that comes
        while its link is still connecting waits for that attempt. When the
        last of them has ended, one line tells how many succeeded.
        """
        raise_open_files_limit(len(self._links))
        opening = []
        for link in self._links.values():
            if isinstance(link, FastTcpLink):
                attempt = link.open_ahead()
                if attempt is not None:
                    opening.append((link, attempt))
        if opening:
            self._connects_ahead = ConnectsAhead(opening)

    @property
    def links(self) -> Iterable[Link]:
        return self._links.values()

    def __len__(self) -> int:
        return len(self._links)

    def close(self) -> None:
        if self._connects_ahead is not None:
            self._connects_ahead.closed = True  # connects cancelled now are no news
        for link in self._links.values():
            link.close()
        self._links.clear()


class ConnectsAhead:
    """One line for the connects ``LinkPool.open_all`` started, once the last of them has ended.

    A site of 500 gateways would otherwise write 500 "connected" lines at
    start-up. The links log their own first connect at DEBUG only. Failures
    are named (the first few, see ``susee.shown``): nothing else tells of them above
    DEBUG until the data shows Code 1.
    """

    def __init__(self, opening: list[tuple[FastTcpLink, asyncio.Task]]) -> None:
        self.started_s = asyncio.get_running_loop().time()
        self.buses = self.waiting = len(opening)
        self.failures: list[str] = []  # "host:port (reason)", in the order they ended
        self.closed = False  # the pool closed before the last ended: say nothing
        for link, attempt in opening:
            attempt.add_done_callback(partial(self._ended, link))

    def _ended(self, link: FastTcpLink, attempt: asyncio.Task) -> None:
        if self.closed:
            return
        if attempt.cancelled():
            self.failures.append(f"{link.endpoint} (cancelled)")
        elif (exc := attempt.exception()) is not None:
            self.failures.append(f"{link.endpoint} ({_reason(link, exc)})")
        self.waiting -= 1
        if not self.waiting:
            self._log()

    def _log(self) -> None:
        elapsed_s = asyncio.get_running_loop().time() - self.started_s
        connected = self.buses - len(self.failures)
        if not self.failures:
            log.info(
                "connected to %d of %d bus(es) ahead of the first tick in %.1f s", connected, self.buses, elapsed_s,
            )
            return
        log.warning(
            "connected to %d of %d bus(es) ahead of the first tick in %.1f s; %d failed: %s",
            connected, self.buses, elapsed_s, len(self.failures), first_few(self.failures),
        )


def _reason(link: FastTcpLink, exc: BaseException) -> str:
    """Why a connect failed, without the endpoint its message repeats.

    asyncio words a refused connect "Connect call failed ('10.0.0.7', 502)";
    the errno's own text ("Connection refused") says it in fewer words.
    """
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    text = str(exc)
    return text.removeprefix(f"cannot connect to {link.endpoint}: ").removeprefix(f"{link.endpoint}: ")


def raise_open_files_limit(buses: int) -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard limit so every bus gets its descriptor.

    Logs a warning when even the hard limit leaves too few: links beyond it
    fail with "Too many open files" (Code 1) until the limit is raised.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    needed = buses + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    else:
        log.info("open-files limit raised from %d to %d for %d buses", soft, target, buses)
        soft = target
    if soft < needed:
        log.warning(
            "open-files limit %d is below the %d descriptors that %d buses need (one each, plus %d): "
            "raise the hard limit (ulimit -n, systemd LimitNOFILE=)",
            soft, needed, buses, SPARE_DESCRIPTORS,
        )
