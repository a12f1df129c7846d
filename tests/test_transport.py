"""Transports and buses: settings, bus keys, fair paced turns, the backoff schedule of silent devices."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException

from susee import transport
from susee.buses import Backoff, BusScheduler, backoff_cap_ticks
from susee.config import ConfigError, DeviceSettings, load_settings
from susee.fastlink import FastTcpLink
from susee.transport import (
    Endpoint,
    LinkError,
    LinkPool,
    ModbusLink,
    SerialEndpoint,
    SerialLink,
    TcpLink,
    endpoint_of,
)

EXIT_CONFIG = 2
CLI_TIMEOUT_S = 30

SITE = """\
database: {url: "sqlite:///susee-test.db"}
devices:
"""


# --- Settings -------------------------------------------------------------------------


def _load(tmp_path: Path, devices: str):
    path = tmp_path / "site.yaml"
    path.write_text(SITE + devices, encoding="utf-8")
    return load_settings(path, environ={"SUSEE_SECRETS_DIR": str(tmp_path / "no-secrets")})


# (case id, devices YAML, fragments the ConfigError must contain)
BAD_TRANSPORTS = [
    ("neither-host-nor-serial", "  - {id: d01}\n", ["devices[0] (id 'd01')", "field 'host': required, or 'serial'"]),
    (
        "host-and-serial",
        "  - {id: d01, host: 10.0.0.5, serial: {port: /dev/ttyUSB0}}\n",
        ["devices[0] (id 'd01')", "field 'serial': give either host", "not both"],
    ),
    (
        "framer-rtu-on-serial",
        "  - {id: d01, serial: {port: /dev/ttyUSB0}, framer: rtu}\n",
        ["devices[0] (id 'd01')", "field 'framer': only for host/port devices"],
    ),
    (
        "tcp-port-on-serial",
        "  - {id: d01, serial: {port: /dev/ttyUSB0}, port: 502}\n",
        ["devices[0] (id 'd01')", "field 'port'", "serial.port"],
    ),
    ("unknown-framer", "  - {id: d01, host: 10.0.0.5, framer: ascii}\n", ["field 'framer'", "'socket' or 'rtu'"]),
    ("serial-without-port", "  - {id: d01, serial: {baudrate: 9600}}\n", ["field 'serial.port'", "required"]),
    ("bad-parity", "  - {id: d01, serial: {port: /dev/ttyUSB0, parity: X}}\n", ["field 'serial.parity'"]),
    ("bad-stopbits", "  - {id: d01, serial: {port: /dev/ttyUSB0, stopbits: 3}}\n", ["field 'serial.stopbits'"]),
    ("bad-bytesize", "  - {id: d01, serial: {port: /dev/ttyUSB0, bytesize: 6}}\n", ["field 'serial.bytesize'"]),
    ("unknown-serial-key", "  - {id: d01, serial: {port: /dev/ttyUSB0, speed: 9600}}\n",
     ["field 'serial.speed': unknown key"]),
    ("negative-inter-request-delay", "  - {id: d01, host: 10.0.0.5, inter_request_delay: -0.1}\n",
     ["field 'inter_request_delay'"]),
    (
        "one-line-two-baud-rates",
        "  - {id: m1, serial: {port: /dev/ttyUSB0, baudrate: 9600}, unit: 1}\n"
        "  - {id: m2, serial: {port: /dev/ttyUSB1, baudrate: 19200}, unit: 1}\n"
        "  - {id: m3, serial: {port: /dev/ttyUSB0, baudrate: 19200}, unit: 3}\n",
        ["devices[2] (id 'm3')", "field 'serial.baudrate'", "19200 differs from 9600",
         "devices[0] (id 'm1')", "serial port /dev/ttyUSB0"],
    ),
    (
        "one-line-two-parities",
        "  - {id: m1, serial: {port: /dev/ttyUSB0, parity: E}, unit: 1}\n"
        "  - {id: m2, serial: {port: /dev/ttyUSB0}, unit: 2}\n",
        ["devices[1] (id 'm2')", "field 'serial.parity'", "devices[0] (id 'm1')"],
    ),
    (
        "one-gateway-two-framers",
        "  - {id: g1, host: 10.0.0.5, port: 4001, framer: rtu, unit: 1}\n"
        "  - {id: g2, host: 10.0.0.5, port: 4001, unit: 2}\n",
        ["devices[1] (id 'g2')", "field 'framer': socket differs from rtu", "devices[0] (id 'g1')",
         "host:port 10.0.0.5:4001"],
    ),
]


@pytest.mark.parametrize(("case_id", "devices", "fragments"), BAD_TRANSPORTS, ids=[c[0] for c in BAD_TRANSPORTS])
def test_bad_transport_settings_are_config_errors_naming_device_and_field(tmp_path, case_id, devices, fragments):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, devices)

    for fragment in fragments:
        assert fragment in str(caught.value)


def test_serial_defaults_parity_words_and_port_shorthand(tmp_path) -> None:
    settings = _load(
        tmp_path,
        "  - {id: m1, serial: {port: /dev/ttyUSB0}}\n"
        "  - {id: m2, serial: {port: /dev/ttyUSB1, baudrate: 19200, parity: even, stopbits: 2, bytesize: 7}}\n"
        "  - {id: g1, host: 10.0.0.5, port: 4001, framer: rtu, inter_request_delay: 0.02}\n"
        "  - {id: m3, serial: /dev/ttyUSB2}\n",
    )

    m1, m2, g1, m3 = settings.devices
    assert m3.serial == m1.serial.model_copy(update={"port": "/dev/ttyUSB2"})
    assert (m1.serial.baudrate, m1.serial.parity, m1.serial.stopbits, m1.serial.bytesize) == (9600, "N", 1, 8)
    assert (m2.serial.baudrate, m2.serial.parity, m2.serial.stopbits, m2.serial.bytesize) == (19200, "E", 2, 7)
    assert (m1.host, m1.framer, m1.inter_request_delay) == (None, "socket", 0.0)
    assert (g1.framer, g1.inter_request_delay) == ("rtu", 0.02)


def test_disabled_device_may_disagree_with_its_bus(tmp_path) -> None:
    settings = _load(
        tmp_path,
        "  - {id: m1, serial: {port: /dev/ttyUSB0, baudrate: 9600}}\n"
        "  - {id: m2, serial: {port: /dev/ttyUSB0, baudrate: 19200}, enabled: false}\n",
    )

    assert [d.id for d in settings.devices] == ["m1", "m2"]


def test_check_exits_2_on_a_bus_conflict(tmp_path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE + BAD_TRANSPORTS[-1][1], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUSEE_")}
    env["SUSEE_SECRETS_DIR"] = str(tmp_path / "no-secrets")

    result = subprocess.run(
        [sys.executable, "-m", "susee", "check", "--config", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )

    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    assert "devices[1] (id 'g2')" in result.stderr and "devices[0] (id 'g1')" in result.stderr


# --- Bus keys and the link pool ----------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "endpoint", "shown"),
    [
        pytest.param({"host": "10.0.0.5"}, Endpoint("10.0.0.5", 502), "10.0.0.5:502", id="modbus-tcp"),
        pytest.param({"host": "10.0.0.5", "port": 4001, "framer": "rtu"}, Endpoint("10.0.0.5", 4001, "rtu"),
                     "10.0.0.5:4001 (RTU over TCP)", id="rtu-over-tcp"),
        pytest.param({"serial": {"port": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E"}},
                     SerialEndpoint("/dev/ttyUSB0", 19200, "E", 1, 8), "/dev/ttyUSB0 19200 8E1", id="serial"),
    ],
)
def test_endpoint_of_device(device, endpoint, shown) -> None:
    found = endpoint_of(DeviceSettings(id="d01", **device))

    assert found == endpoint
    assert str(found) == shown


async def test_devices_on_one_bus_share_one_link_and_its_largest_inter_request_delay() -> None:
    pool = LinkPool()
    try:
        gateway = pool.link_for(Endpoint("10.0.0.5", 502), 0.01)
        line = pool.link_for(SerialEndpoint("/dev/ttyUSB0", 19200), 0.0)
        rtu_gateway = pool.link_for(Endpoint("10.0.0.5", 4001, "rtu"))

        assert pool.link_for(Endpoint("10.0.0.5", 502), 0.05) is gateway
        assert pool.link_for(Endpoint("10.0.0.5", 502), 0.02) is gateway
        assert pool.link_for(SerialEndpoint("/dev/ttyUSB0", 19200)) is line
        assert pool.link_for(Endpoint("10.0.0.6", 502)) is not gateway
        # Modbus TCP takes the lean client; RTU frames over TCP and serial lines stay with pymodbus.
        assert isinstance(gateway, FastTcpLink) and isinstance(rtu_gateway, TcpLink) and isinstance(line, SerialLink)
        assert gateway.bus.inter_request_delay_s == 0.05
        assert line.bus.inter_request_delay_s == 0.0
        assert len(list(pool.links)) == 4
        with pytest.raises(ValueError, match="bus 10.0.0.5:4001"):
            pool.link_for(Endpoint("10.0.0.5", 4001, "socket"))  # settings validation forbids this
    finally:
        pool.close()


# --- Links: errors and connects -------------------------------------------------------------


class FakeClient:
    """Stands in for a pymodbus client: counts connects, answers or raises."""

    def __init__(self, connect_ok: bool = True, error: Exception | None = None) -> None:
        self.connected = False
        self.connect_ok = connect_ok
        self.error = error
        self.connects = 0
        self.ctx = SimpleNamespace(comm_params=SimpleNamespace(timeout_connect=1.0))

    async def connect(self) -> bool:
        self.connects += 1
        await asyncio.sleep(0.01)
        self.connected = self.connect_ok
        return self.connected

    async def read_holding_registers(self, address, count, device_id):
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(isError=lambda: False, registers=[device_id] * count)

    def close(self) -> None:
        self.connected = False


@pytest.mark.parametrize(
    ("error", "timed_out"),
    [
        pytest.param(ModbusIOException("No response received after 0 retries"), True, id="no-answer-is-a-timeout"),
        pytest.param(asyncio.TimeoutError(), True, id="asyncio-timeout"),
        pytest.param(ConnectionException("Not connected"), False, id="connection-lost-is-not"),
    ],
)
async def test_link_error_says_whether_the_bus_was_held_for_a_timeout(error, timed_out) -> None:
    link = ModbusLink(Endpoint("10.0.0.5", 502), FakeClient(error=error))

    with pytest.raises(LinkError) as caught:
        await link.read(1, 3, 7, 2, 0.3)

    assert caught.value.timed_out is timed_out


async def test_failed_connect_fails_the_requests_queued_meanwhile_at_once_and_is_retried_later() -> None:
    client = FakeClient(connect_ok=False)
    link = ModbusLink(Endpoint("10.0.0.5", 502), client)

    results = await asyncio.gather(*(link.read(unit, 3, 7, 2, 0.3) for unit in (1, 2, 3)), return_exceptions=True)

    assert all(isinstance(r, LinkError) and not r.timed_out for r in results)
    assert client.connects == 1  # one connect attempt per tick, not one per device
    client.connect_ok = True
    assert await link.read(2, 3, 7, 2, 0.3) == bytes([0, 2, 0, 2])  # registers: their wire bytes
    assert client.connects == 2


async def test_serial_port_that_cannot_be_opened_is_a_link_error_not_a_crash(tmp_path) -> None:
    link = SerialLink(SerialEndpoint(str(tmp_path / "ttyNOPE"), 19200))
    try:
        with pytest.raises(LinkError) as caught:
            await link.read(1, 3, 7, 2, 0.3)
    finally:
        link.close()

    assert not caught.value.timed_out
    assert "ttyNOPE" in str(caught.value)


# --- Bus scheduler: fair order, one at a time, paced --------------------------------------


class BusLog:
    """Records turns taken on a scheduler, and checks that none overlap."""

    def __init__(self, bus: BusScheduler, work_s: float = 0.0) -> None:
        self.bus = bus
        self.work_s = work_s
        self.turns: list[tuple[int, int, float, float]] = []  # tick, key, start, end (loop time)
        self._holders = 0

    async def device(self, tick: int, key: int, requests: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(requests):
            async with self.bus.turn(key):
                self._holders += 1
                assert self._holders == 1, "two turns at once"
                start = loop.time()
                await asyncio.sleep(self.work_s)
                self.turns.append((tick, key, start, loop.time()))
                self._holders -= 1


async def test_each_tick_starts_with_the_next_device_and_every_device_waits_as_long_on_average() -> None:
    log = BusLog(BusScheduler("line"))
    keys, ticks, requests = (1, 2, 3), 6, 2

    for tick in range(ticks):
        await asyncio.gather(*(log.device(tick, key, requests) for key in keys))

    orders = [[key for t, key, _, _ in log.turns if t == tick] for tick in range(ticks)]
    # Round robin inside a tick (everyone's first request before anyone's second),
    # and the round starts one device further on each tick.
    assert orders == [
        [1, 2, 3, 1, 2, 3], [2, 3, 1, 2, 3, 1], [3, 1, 2, 3, 1, 2],
        [1, 2, 3, 1, 2, 3], [2, 3, 1, 2, 3, 1], [3, 1, 2, 3, 1, 2],
    ]
    # A device's Delay is set by its last request: its position in the tick.
    last_positions = {key: [max(i for i, k in enumerate(order) if k == key) for order in orders] for key in keys}
    assert {key: sum(p) for key, p in last_positions.items()} == {1: 24, 2: 24, 3: 24}


async def test_first_served_device_rotates_whatever_order_the_pollers_wake_in() -> None:
    log = BusLog(BusScheduler("line"))

    for tick in range(4):
        await asyncio.gather(*(log.device(tick, key, 1) for key in (3, 1, 2)))  # always woken 3, 1, 2

    firsts = [next(key for t, key, _, _ in log.turns if t == tick) for tick in range(4)]
    assert len(set(firsts)) == 3


async def test_a_busy_device_cannot_starve_the_others() -> None:
    log = BusLog(BusScheduler("line"))

    await asyncio.gather(log.device(0, 1, 10), log.device(0, 2, 2), log.device(0, 3, 2))

    order = [key for _, key, _, _ in log.turns]
    assert order[:6] == [1, 2, 3, 1, 2, 3]
    assert order[6:] == [1] * 8


async def test_inter_request_delay_keeps_the_bus_silent_after_every_transaction() -> None:
    gap_s = 0.03
    log = BusLog(BusScheduler("line", inter_request_delay_s=gap_s), work_s=0.005)

    await asyncio.gather(*(log.device(0, key, 2) for key in (1, 2)))
    await log.device(1, 1, 1)  # a request on an idle bus waits out the gap too

    spans = sorted((start, end) for _, _, start, end in log.turns)
    gaps = [start - previous_end for (_, previous_end), (start, _) in zip(spans, spans[1:])]
    assert len(gaps) == 4
    assert min(gaps) >= gap_s - 0.002  # the loop clock may round to the millisecond


async def test_request_cancelled_while_waiting_does_not_block_the_bus() -> None:
    bus = BusScheduler("line")
    log = BusLog(bus, work_s=0.02)
    first = asyncio.create_task(log.device(0, 1, 1))
    waiting = asyncio.create_task(log.device(0, 2, 1))
    await asyncio.sleep(0.01)  # 1 holds the bus, 2 waits

    waiting.cancel()
    await asyncio.gather(first, waiting, return_exceptions=True)
    await asyncio.wait_for(log.device(1, 3, 1), 1.0)

    assert [key for _, key, _, _ in log.turns] == [1, 3]


class CallbackTurns:
    """Turns taken through ``submit()``: each grant is recorded and ends at once or when told."""

    def __init__(self, bus: BusScheduler, hold: bool = False) -> None:
        self.bus = bus
        self.hold = hold  # keep the bus after the grant until release()
        self.granted: list[object] = []

    def submit(self, key: int, payload: object) -> asyncio.Future:
        waiter = asyncio.get_running_loop().create_future()
        self.bus.submit(key, waiter, self._grant, payload)
        return waiter

    def _grant(self, waiter: asyncio.Future, payload: object) -> None:
        self.granted.append(payload)
        waiter.set_result(payload)
        if not self.hold:
            self.bus.release()


async def test_device_alone_on_its_bus_is_granted_in_the_caller_without_a_loop_round_trip() -> None:
    turns = CallbackTurns(BusScheduler("meter"))

    for n in range(3):
        turns.submit(1, n)
        assert turns.granted == list(range(n + 1))  # before anything else ran


async def test_turns_ending_inside_their_grant_keep_the_round_robin_and_do_not_recurse() -> None:
    bus = BusScheduler("gateway")
    turns = CallbackTurns(bus)
    holder = CallbackTurns(bus, hold=True)
    holder.submit(9, "held")  # the bus is busy while the others queue
    for n in range(3000):  # far deeper than the recursion limit
        turns.submit(1 + n % 3, (1 + n % 3, n // 3))

    bus.release()  # the holder is done: every queued turn runs and ends inside its grant

    assert turns.granted == [(1 + n % 3, n // 3) for n in range(3000)]
    turns.submit(2, "next")
    await asyncio.sleep(bus.gather_s * 2)
    assert turns.granted[-1] == "next"  # the bus went idle, and a new round starts


async def test_a_round_starts_as_soon_as_every_device_of_the_bus_has_queued() -> None:
    bus = BusScheduler("gateway", gather_s=0.01)
    turns = CallbackTurns(bus)
    await asyncio.gather(*(turns.submit(key, ("first", key)) for key in (1, 2, 3)))  # the bus learns its devices
    bus.gather_s = 5.0
    loop = asyncio.get_running_loop()
    started = loop.time()

    await asyncio.wait_for(asyncio.gather(*(turns.submit(key, ("second", key)) for key in (1, 2, 3))), 1.0)

    assert loop.time() - started < 0.5  # the third device's request started the round: no 5 s gathering
    second = [key for tick, key in turns.granted if tick == "second"]
    assert sorted(second) == [1, 2, 3] and second[0] != turns.granted[0][1]  # the rotation still holds


async def test_a_round_waits_the_gathering_for_a_device_that_does_not_queue() -> None:
    bus = BusScheduler("gateway", gather_s=0.01)
    turns = CallbackTurns(bus)
    await asyncio.gather(*(turns.submit(key, ("first", key)) for key in (1, 2, 3)))
    bus.gather_s = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()

    await asyncio.gather(*(turns.submit(key, ("second", key)) for key in (1, 2)))  # 3 is backing off

    assert loop.time() - started >= 0.2 - 0.002  # the loop clock may round to the millisecond


async def test_submitted_turns_and_coroutine_turns_share_one_fair_order() -> None:
    bus = BusScheduler("gateway")
    log = BusLog(bus)
    turns = CallbackTurns(bus)

    futures = [turns.submit(1, "a1"), turns.submit(1, "a2")]
    await asyncio.gather(log.device(0, 2, 2), *futures)

    assert turns.granted == ["a1", "a2"]
    assert [key for _, key, _, _ in log.turns] == [2, 2]
    assert not bus._busy


@pytest.mark.parametrize(
    ("limits", "buses", "set_to", "warned"),
    [
        pytest.param((1024, 4096), 2000, (4096, 4096), False, id="raised-to-the-hard-limit"),
        pytest.param((1024, 4096), 100, None, False, id="enough-already"),
        pytest.param((256, 512), 1000, (512, 512), True, id="hard-limit-too-low-is-logged"),
    ],
)
def test_open_files_limit_is_raised_for_one_descriptor_per_bus(monkeypatch, caplog, limits, buses, set_to, warned):
    import resource

    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits)
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: calls.append(value))

    transport.raise_open_files_limit(buses)

    assert calls == ([set_to] if set_to else [])
    assert any("below" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") is warned


# --- Backoff of silent devices ----------------------------------------------------------------


def _run_backoff(script: str, cap_ticks: int) -> str:
    """Feed poll outcomes to a Backoff; return what each tick was.

    ``script`` holds one outcome per poll actually made: T timed out, A answered,
    P answered in part (one block answered, one timed out), R refused (no
    answer, no timeout). Returned: one letter per tick, "." skipped.
    """
    backoff = Backoff("d01", cap_ticks)
    outcomes, ticks = iter(script), []
    while True:
        if backoff.skip():
            ticks.append(".")
            continue
        outcome = next(outcomes, None)
        if outcome is None:
            return "".join(ticks)
        backoff.record(timed_out=outcome in "TP", answered=outcome in "AP")
        ticks.append(outcome)


BACKOFF_SCHEDULES = {
    "doubles 1, 2, 4, 8": ("TTTTA", 64, "T.T..T....T........A"),
    "capped": ("TTTTTA", 4, "T.T..T....T....T....A"),
    "cap of one tick": ("TTTA", 1, "T.T.T.A"),
    "answer resets": ("TTATTA", 64, "T.T..AT.T..A"),
    "healthy device never skips": ("AAAA", 64, "AAAA"),
    "refused connect neither extends nor resets": ("TRRTA", 64, "T.RRT..A"),
    "a device answering some blocks is not backed off": ("PPTPT", 64, "PPT.PT."),
}


@pytest.mark.parametrize(("script", "cap_ticks", "ticks"), BACKOFF_SCHEDULES.values(), ids=BACKOFF_SCHEDULES.keys())
def test_backoff_schedule(script, cap_ticks, ticks) -> None:
    assert _run_backoff(script, cap_ticks) == ticks


@pytest.mark.parametrize(
    ("period_s", "cap_ticks"),
    [(1, 64), (4.5, 64), (5, 60), (10, 30), (60, 5), (300, 1), (900, 1)],
)
def test_backoff_cap_is_64_ticks_or_5_minutes(period_s, cap_ticks) -> None:
    assert backoff_cap_ticks(period_s) == cap_ticks
