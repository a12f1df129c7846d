"""The PAC3200 simulator, exercised over a real socket with pymodbus' client."""

from __future__ import annotations

import asyncio
import logging
import math
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from susee.simulator import Fault, Pac3200Simulator, parse_units, serve

NOON_UTC = 1_699_963_200.0  # 2023-11-14 12:00 UTC: day plateau of the load shape
CLIENT_TIMEOUT_S = 1.0
SHORT_TIMEOUT_S = 0.3  # for the TIMEOUT fault: long enough for localhost, short for the suite

# Float32 block and float64 energy block as the original driver reads them.
BLOCK_F32 = (1, 70)
BLOCK_F64 = (801, 40)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON_UTC)


@pytest.fixture
async def sim(clock):
    async with Pac3200Simulator(units=(1, 2, 3), clock=clock) as simulator:
        yield simulator


@pytest.fixture
async def client(sim):
    modbus = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=CLIENT_TIMEOUT_S, retries=0)
    assert await modbus.connect()
    yield modbus
    modbus.close()


def decode_block(address: int, registers: list[int]) -> dict[str, float]:
    """Decode a block by the register facts, independently of susee.codec."""
    raw = struct.pack(f">{len(registers)}H", *registers)
    values = {}
    if address == 1:
        for offset in range(0, len(registers) - 1, 2):
            values[str(100 + (address + offset + 1) // 2)] = struct.unpack_from(">f", raw, 2 * offset)[0]
    else:
        for offset in range(0, len(registers) - 3, 4):
            values[str(222 + (address + offset - 801) // 4)] = struct.unpack_from(">d", raw, 2 * offset)[0]
    return values


async def read_values(client, unit: int, block=BLOCK_F32, function: int = 3) -> dict[str, float]:
    address, count = block
    read = client.read_holding_registers if function == 3 else client.read_input_registers
    rr = await read(address, count=count, device_id=unit)
    assert not rr.isError(), rr
    assert len(rr.registers) == count
    return decode_block(address, rr.registers)


async def test_values_are_plausible_and_consistent(client):
    v = await read_values(client, 1)
    for param in ("101", "102", "103", "129"):
        assert 227.7 <= v[param] <= 232.3
    for param in ("104", "105", "106", "130"):
        assert 380 <= v[param] <= 420
    for param in ("119", "120", "121", "135"):
        assert 0 < v[param] <= 1
    assert 49.9 <= v["128"] <= 50.1
    assert 0 < v["107"] <= 130
    for k in range(3):
        s, p, q = v[str(110 + k)], v[str(113 + k)], v[str(116 + k)]
        assert s == pytest.approx(v[str(101 + k)] * v[str(107 + k)], rel=1e-5)
        assert p == pytest.approx(s * v[str(119 + k)], rel=1e-5)
        assert q == pytest.approx(math.sqrt(s * s - p * p), rel=1e-3)
    assert v["133"] == pytest.approx(v["113"] + v["114"] + v["115"], rel=1e-5)
    assert v["135"] == pytest.approx(v["133"] / v["132"], rel=1e-5)
    assert v["131"] == pytest.approx((v["107"] + v["108"] + v["109"]) / 3, rel=1e-5)


async def test_function_codes_3_and_4_serve_the_same_data(client):
    holding = await read_values(client, 1, function=3)
    inputs = await read_values(client, 1, function=4)
    assert holding == inputs  # the clock did not move


async def test_unmapped_registers_inside_the_ranges_read_zero(client):
    rr = await client.read_holding_registers(71, count=12, device_id=1)
    assert rr.registers == [0] * 12


async def test_energy_counters_grow_only_as_the_clock_advances(client, clock):
    readings = []
    for _ in range(3):
        readings.append(await read_values(client, 2, BLOCK_F64))
        clock.now += 60.0
    power = (await read_values(client, 2))["133"]
    for earlier, later in zip(readings, readings[1:]):
        for counter in ("222", "226", "230"):
            assert later[counter] > earlier[counter]
        for constant in ("223", "224", "225", "227", "228", "229", "231"):
            assert later[constant] == earlier[constant]
        # One minute at the day plateau: the energy is about the power times the time.
        assert later["222"] - earlier["222"] == pytest.approx(power / 60, rel=0.05)
    assert 1e7 <= readings[0]["222"] <= 1.1e9


async def test_counters_do_not_shrink_when_the_clock_steps_back(client, clock):
    first = await read_values(client, 1, BLOCK_F64)
    clock.now -= 3600.0
    assert await read_values(client, 1, BLOCK_F64) == first


async def test_units_on_one_port_answer_with_different_values(client):
    currents = [(await read_values(client, unit))["107"] for unit in (1, 2, 3)]
    energies = [(await read_values(client, unit, BLOCK_F64))["222"] for unit in (1, 2, 3)]
    assert len(set(currents)) == 3
    assert len(set(energies)) == 3


async def test_same_unit_repeats_across_simulators(clock):
    values = []
    for _ in range(2):
        async with Pac3200Simulator(units=[7], clock=clock, record=False) as simulator:
            values.append(simulator.values_at(7, NOON_UTC))
    assert values[0] == values[1]


async def test_unknown_unit_gets_gateway_exception_0x0B(client):
    rr = await client.read_holding_registers(1, count=2, device_id=9)
    assert rr.isError() and rr.exception_code == 0x0B


@pytest.mark.parametrize(
    ("address", "count"),
    [(0, 2), (81, 4), (83, 1), (100, 2), (800, 2), (839, 4), (841, 1), (5000, 10)],
)
async def test_read_outside_the_meter_ranges_gets_exception_0x02(client, address, count):
    rr = await client.read_holding_registers(address, count=count, device_id=1)
    assert rr.isError() and rr.exception_code == 0x02


async def test_writes_are_refused_with_illegal_function(client):
    rr = await client.write_register(1, 42, device_id=1)
    assert rr.isError() and rr.exception_code == 0x01


async def test_timeout_fault_sends_no_answer_and_heals(sim):
    sim.set_fault(1, Fault.TIMEOUT)
    modbus = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=SHORT_TIMEOUT_S, retries=0)
    try:
        assert await modbus.connect()
        with pytest.raises(ModbusIOException):
            await modbus.read_holding_registers(1, count=2, device_id=1)
        rr = await modbus.read_holding_registers(1, count=2, device_id=2)
        assert not rr.isError()  # the other meters behind the gateway still answer
        sim.set_fault(1, "none")
        rr = await modbus.read_holding_registers(1, count=2, device_id=1)
        assert not rr.isError()
    finally:
        modbus.close()


@pytest.mark.parametrize(("fault", "code"), [(Fault.ILLEGAL_ADDRESS, 0x02), (Fault.GATEWAY_NO_RESPONSE, 0x0B)])
async def test_exception_faults_answer_with_their_code(sim, client, fault, code):
    sim.set_fault(2, fault)
    rr = await client.read_holding_registers(1, count=2, device_id=2)
    assert rr.isError() and rr.exception_code == code
    assert not (await client.read_holding_registers(1, count=2, device_id=1)).isError()


async def test_nan_fault_serves_every_float_as_nan(sim, client):
    sim.set_fault(3, Fault.NAN)
    for block in (BLOCK_F32, BLOCK_F64):
        values = await read_values(client, 3, block)
        assert all(math.isnan(v) for v in values.values())


@pytest.mark.parametrize(("count", "expected"), [(70, 35), (2, 1), (1, 0)])
async def test_short_fault_answers_fewer_registers(sim, client, count, expected):
    sim.set_fault(1, Fault.SHORT)
    rr = await client.read_holding_registers(1, count=count, device_id=1)
    assert not rr.isError()
    assert len(rr.registers) == expected


async def test_faults_given_at_construction_apply(clock):
    faults = {1: Fault.GATEWAY_NO_RESPONSE}
    async with Pac3200Simulator(units=[1], clock=clock, faults=faults) as simulator:
        modbus = AsyncModbusTcpClient("127.0.0.1", port=simulator.port, timeout=CLIENT_TIMEOUT_S, retries=0)
        try:
            assert await modbus.connect()
            rr = await modbus.read_holding_registers(1, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 0x0B
        finally:
            modbus.close()


async def test_set_fault_rejects_unknown_units_and_faults(sim):
    with pytest.raises(ValueError, match="unit 99"):
        sim.set_fault(99, Fault.NAN)
    with pytest.raises(ValueError):
        sim.set_fault(1, "melted")


async def test_served_values_match_what_the_client_decoded(sim, client, clock):
    decoded = []
    for _ in range(3):
        current = (await read_values(client, 1))["107"]
        energy = (await read_values(client, 1, BLOCK_F64))["222"]
        decoded.append((clock.now, current, energy))
        clock.now += 15.0
    await read_values(client, 2)  # another unit's reads must not show up
    assert sim.served_values(1, "107") == [(t, current) for t, current, _ in decoded]
    assert sim.served_values(1, "222") == [(t, energy) for t, _, energy in decoded]
    assert sim.served[-1].unit == 2 and sim.served[-1].count == BLOCK_F32[1]


async def test_values_at_agrees_with_a_read(sim, client, clock):
    values = await read_values(client, 1)
    model = sim.values_at(1, clock.now)
    assert values["104"] == pytest.approx(model["104"], rel=1e-6)
    assert values["133"] == pytest.approx(model["133"], rel=1e-6)


async def test_serve_logs_its_port_and_runs_until_cancelled():
    listening = asyncio.Event()
    records: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "listening" in record.getMessage():
                records.append(record)
                listening.set()

    logger = logging.getLogger("susee.simulator")
    handler, old_level = Catch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    task = asyncio.create_task(serve("127.0.0.1", 0, [4, 5]))
    try:
        await asyncio.wait_for(listening.wait(), 2.0)
        message = records[0].getMessage()
        assert "units 4,5" in message
        port = int(message.split("127.0.0.1:")[1].split(",")[0])
        modbus = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=CLIENT_TIMEOUT_S, retries=0)
        try:
            assert await modbus.connect()
            assert not (await modbus.read_holding_registers(7, count=2, device_id=5)).isError()
        finally:
            modbus.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", [1]),
        ("1-3", [1, 2, 3]),
        ("1,4-5", [1, 4, 5]),
        (" 5, 1 ,2-3 ", [1, 2, 3, 5]),
        ("3,3,2-3", [2, 3]),
        ("247", [247]),
    ],
)
def test_parse_units_accepts_ids_and_ranges(text, expected):
    assert parse_units(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty entry"),
        ("1,,2", "empty entry"),
        ("0", "outside 1..247"),
        ("1-248", "outside 1..247"),
        ("3-1", "runs backwards"),
        ("a", "not a unit id"),
        ("1-", "not a unit id"),
        ("-3", "not a unit id"),
    ],
)
def test_parse_units_rejects_bad_lists(text, message):
    with pytest.raises(ValueError, match=message):
        parse_units(text)


def test_simulator_rejects_bad_unit_ids():
    with pytest.raises(ValueError, match="unit 0"):
        Pac3200Simulator(units=[0])
    with pytest.raises(ValueError, match="at least one"):
        Pac3200Simulator(units=[])
