"""A Siemens PAC3200 Modbus TCP simulator, one port for many unit ids.

It behaves like a gateway with meters behind it: unknown unit ids get exception
0x0B, reads outside the meter's register ranges get 0x02, energy counters only
grow, and faults can be switched on per unit while it runs. Values come from
``simulator_model`` and are encoded with the ``pac3200`` profile, so what the
poller decodes is exactly what the model produced.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from susee.codec import encode, make_decoder, registers_to_bytes
from susee.config import StartError
from susee.profiles import load_profile
from susee.simulator_model import UnitModel

if TYPE_CHECKING:
    from susee.config import Settings

_log = logging.getLogger(__name__)

# Register ranges a real PAC3200 answers (the float32 block and the float64
# energy block); unmapped words inside read as 0, anything outside is 0x02.
REGISTER_RANGES = ((1, 83), (801, 841))
READ_FUNCTIONS = frozenset({3, 4})  # the meter serves holding and input registers alike
MIN_UNIT, MAX_UNIT = 1, 247  # Modbus unicast addresses
# Enough history for any test or debugging session without growing forever.
MAX_SERVED = 100_000
# A stopping server waits this long for its connections to close.
STOP_TIMEOUT_S = 2.0


class Fault(str, enum.Enum):
    """A misbehaviour to inject for one unit."""

    NONE = "none"
    TIMEOUT = "timeout"  # no answer at all -> client times out
    ILLEGAL_ADDRESS = "illegal_address"  # exception 0x02 for every read of that unit
    GATEWAY_NO_RESPONSE = "gateway_no_response"  # exception 0x0B
    NAN = "nan"  # every float value of that unit is served as NaN
    SHORT = "short"  # response carries fewer registers than requested


# Faults answered with an exception response instead of data.
_FAULT_EXCEPTIONS = {
    Fault.ILLEGAL_ADDRESS: ExcCodes.ILLEGAL_ADDRESS,
    Fault.GATEWAY_NO_RESPONSE: ExcCodes.GATEWAY_NO_RESPONSE,
}


def parse_units(text: str) -> list[int]:
    """Parse a unit list such as ``"1-3"`` or ``"1,4-5"`` into sorted unique ids."""
    units: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ValueError(f"unit list {text!r}: empty entry")
        low_text, dash, high_text = part.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise ValueError(f"unit list {text!r}: {part!r} is not a unit id or a range like 1-3") from None
        if low > high:
            raise ValueError(f"unit list {text!r}: range {part!r} runs backwards")
        for unit in (low, high):
            if not MIN_UNIT <= unit <= MAX_UNIT:
                raise ValueError(f"unit list {text!r}: unit {unit} is outside {MIN_UNIT}..{MAX_UNIT}")
        units.update(range(low, high + 1))
    return sorted(units)


@dataclass(frozen=True, slots=True)
class ServedRead:
    """One answered read request, recorded for tests."""

    time_s: float
    unit: int
    function: int
    address: int
    count: int
    registers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Field:
    param_id: str
    address: int
    words: int
    type_name: str
    byte_order: str
    word_order: str
    scale: float
    offset: float


def _in_ranges(address: int, count: int) -> bool:
    return any(low <= address and address + count <= high for low, high in REGISTER_RANGES)


class _SimulatorContext(ModbusServerContext):
    """Adapter that makes pymodbus' request handler ask the simulator.

    ModbusServerContext.__init__ is skipped on purpose: it wants datastore
    blocks (and logs a deprecation) while every answer here is computed. The
    server only checks the type and ``old_simulator`` before calling the async
    getters below.
    """

    def __init__(self, simulator: Pac3200Simulator) -> None:  # pylint: disable=super-init-not-called
        self.old_simulator = True
        self.simdevices = []
        self._devices = {}
        self._simulator = simulator

    async def async_getValues(self, device_id, func_code, address, count=1):  # noqa: N802 (pymodbus API)
        return self._simulator._answer(device_id, func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):  # noqa: N802 (pymodbus API)
        return self._simulator._refuse_write(device_id)

    def device_ids(self):
        return list(self._simulator.units)


class Pac3200Simulator:
    """PAC3200 meters behind one Modbus TCP port; use ``async with`` or start()/stop().

    With ``framer=FramerType.RTU`` it speaks RTU frames over TCP, like a serial
    server; with ``serial_port`` it serves an RS485 line on that port (e.g. one
    end of a pseudo-terminal pair) instead of TCP. On RTU a unit that is not
    there, or has the TIMEOUT fault, stays silent, as on a real line.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        units: Iterable[int] = (1, 2, 3),
        *,
        clock: Callable[[], float] = time.time,
        faults: Mapping[int, Fault] | None = None,
        record: bool = True,
        framer: FramerType = FramerType.SOCKET,
        serial_port: str | None = None,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        self.host = host
        self.port = port
        self.units = tuple(dict.fromkeys(units))
        if not self.units:
            raise ValueError("simulator needs at least one unit id")
        for unit in self.units:
            if not MIN_UNIT <= unit <= MAX_UNIT:
                raise ValueError(f"unit {unit} is outside {MIN_UNIT}..{MAX_UNIT}")
        self.served: list[ServedRead] = []
        self._clock = clock
        self._record = record
        self._framer = FramerType.RTU if serial_port is not None else framer
        self.serial_port = serial_port
        self._serial_framing = {"baudrate": baudrate, "parity": parity, "stopbits": stopbits, "bytesize": bytesize}
        self._models = {unit: UnitModel(unit) for unit in self.units}
        self._faults: dict[int, Fault] = {}
        for unit, fault in (faults or {}).items():
            self.set_fault(unit, fault)
        profile = load_profile("pac3200")
        self._fields = tuple(
            _Field(p.id, profile.wire_address(p), p.words, p.type, *profile.orders_of(p), p.scale, p.offset)
            for p in profile.params
        )
        self._fields_by_id = {f.param_id: f for f in self._fields}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    async def start(self) -> None:
        """Listen; ``port`` holds the real port afterwards (useful with port 0)."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        if self.serial_port is not None:
            await self._start_serial()
            return
        server = ModbusTcpServer(
            _SimulatorContext(self),
            framer=self._framer,
            address=(self.host, self.port),
            # Lets a TIMEOUT fault drop the request without any answer.
            ignore_missing_devices=True,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus logs the OSError, then raises this
            raise StartError(
                f"simulator: cannot listen on {self.host}:{self.port} ({_listen_problem(self.host, self.port)}): "
                f"stop whatever uses the port (another susee demo?) or set a free port in simulator.port "
                f"and in the devices' port"
            ) from exc
        self._server = server
        self.port = server.transport.sockets[0].getsockname()[1]
        _log.debug("PAC3200 simulator on %s:%d started, units %s", self.host, self.port, self.units)

    async def _start_serial(self) -> None:
        server = ModbusSerialServer(
            _SimulatorContext(self),
            framer=FramerType.RTU,
            port=self.serial_port,
            **self._serial_framing,
            ignore_missing_devices=True,  # silence for TIMEOUT faults and absent units
        )
        await server.serve_forever(background=True)
        self._server = server
        _log.debug("PAC3200 simulator on serial port %s started, units %s", self.serial_port, self.units)

    async def stop(self) -> None:
        """Close the listener and every client connection; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        listener = server.transport
        await server.shutdown()
        if listener is not None and self.serial_port is None:  # a serial port has no listener to wait for
            await asyncio.wait_for(listener.wait_closed(), STOP_TIMEOUT_S)
        _log.debug("PAC3200 simulator on %s:%d stopped", self.host, self.port)

    async def __aenter__(self) -> Pac3200Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def set_fault(self, unit: int, fault: Fault | str) -> None:
        """Make ``unit`` misbehave from its next request on (Fault.NONE heals it)."""
        if unit not in self._models:
            raise ValueError(f"unit {unit} is not simulated (units {self.units})")
        fault = Fault(fault)
        self._faults[unit] = fault
        _log.info("PAC3200 simulator unit %d: fault %s", unit, fault.value)

    def served_values(self, unit: int, param_id: str) -> list[tuple[float, float]]:
        """(time_s, value) of ``param_id`` from every recorded read of ``unit`` that covered it."""
        field = self._fields_by_id[str(param_id)]
        found = []
        for read in self.served:
            offset = field.address - read.address
            if read.unit != unit or offset < 0 or offset + field.words > len(read.registers):
                continue
            decode = make_decoder(
                field.type_name, offset, field.byte_order, field.word_order, field.scale, field.offset
            )
            value, _code = decode(registers_to_bytes(list(read.registers)))
            found.append((read.time_s, math.nan if value is None else float(value)))
        return found

    def values_at(self, unit: int, t: float) -> dict[str, float]:
        """The model's values of ``unit`` at ``t``, counters included but not committed."""
        return self._models[unit].values_at(t)

    def _answer(self, unit: int, function: int, address: int, count: int) -> list[int] | ExcCodes:
        """Serve one read; returns registers or the exception code to answer with."""
        refusal = self._refusal(unit, function, address, count)
        if refusal is not None:
            return refusal
        now = self._clock()
        values = self._models[unit].advance(now)  # once per request: counters integrate here
        fault = self._faults.get(unit, Fault.NONE)
        registers = self._encode(values, address, count, nan=fault is Fault.NAN)
        if fault is Fault.SHORT:
            registers = registers[: count // 2]
        if self._record:
            self.served.append(ServedRead(now, unit, function, address, count, tuple(registers)))
            if len(self.served) > MAX_SERVED:
                del self.served[0]
        return registers

    def _refusal(self, unit: int, function: int, address: int, count: int) -> ExcCodes | None:
        """The exception for a read that gets no data, or None; raises to stay silent."""
        refusal = self._unit_refusal(unit)
        if refusal is not None:
            return refusal
        if function not in READ_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        if not _in_ranges(address, count):
            _log.debug("PAC3200 simulator unit %d: address %d count %d out of range", unit, address, count)
            return ExcCodes.ILLEGAL_ADDRESS
        return None

    def _unit_refusal(self, unit: int) -> ExcCodes | None:
        if unit not in self._models:
            if self._framer == FramerType.RTU:  # an RS485 line: nobody there, nobody answers
                raise NoSuchIdException(f"unit {unit}: not on the line")
            return ExcCodes.GATEWAY_NO_RESPONSE  # like a gateway with nothing at that address
        fault = self._faults.get(unit, Fault.NONE)
        if fault is Fault.TIMEOUT:
            _log.debug("PAC3200 simulator unit %d: dropping request (timeout fault)", unit)
            # With ignore_missing_devices the request handler sends nothing back.
            raise NoSuchIdException(f"unit {unit}: simulated timeout")
        return _FAULT_EXCEPTIONS.get(fault)

    def _refuse_write(self, unit: int) -> ExcCodes:
        # The meter's measurements are read-only; a faulty unit fails as it does for reads.
        return self._unit_refusal(unit) or ExcCodes.ILLEGAL_FUNCTION

    def _encode(self, values: dict[str, float], address: int, count: int, *, nan: bool) -> list[int]:
        registers = [0] * count
        end = address + count
        for field in self._fields:
            if field.address >= end or field.address + field.words <= address:
                continue
            value = math.nan if nan else values[field.param_id]
            words = encode(field.type_name, value, field.byte_order, field.word_order)
            for index, word in enumerate(words, start=field.address):
                if address <= index < end:
                    registers[index - address] = word
        return registers


def _listen_problem(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on, as the system says it."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "refused by the Modbus server"


async def serve(host: str, port: int, units: list[int], faults: Mapping[int, Fault] | None = None) -> None:
    """Run a simulator until cancelled (the ``susee simulate`` entry point)."""
    async with Pac3200Simulator(host, port, units, faults=faults, record=False) as simulator:
        _log.info(
            "PAC3200 simulator listening on %s:%d, units %s",
            host,
            simulator.port,
            ",".join(str(u) for u in simulator.units),
        )
        await asyncio.Event().wait()


def embedded_simulator(settings: Settings) -> AbstractAsyncContextManager:
    """The in-process PAC3200 simulator of the demo, or a no-op when none is configured.

    Either way an async context manager, so callers just enter it.
    """
    sim = settings.simulator
    if sim is None or not sim.enabled:
        return nullcontext()
    _log.info("embedded PAC3200 simulator on %s:%d, units %s", sim.host, sim.port, sim.units)
    return Pac3200Simulator(sim.host, sim.port, parse_units(sim.units), record=False)
