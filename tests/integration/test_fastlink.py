"""The lean Modbus TCP client against real sockets: the PAC3200 simulator and a raw server.

The raw server below answers from a fixed register image and misbehaves on
request (by address), so every protocol edge case is one table entry; the
client of pymodbus reads the same server to prove the two clients agree.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from contextlib import AsyncExitStack

import pytest
from pymodbus.client import AsyncModbusTcpClient

from susee.links import Endpoint, ExceptionResponse, LinkError
from susee.links.pool import LinkPool
from susee.links.tcp import RECONNECT_AFTER_TIMEOUTS, FastTcpLink
from susee.simulator import Fault, Pac3200Simulator

HOST = "127.0.0.1"
REQUEST = struct.Struct(">HHHBBHH")

# Addresses at which the raw server misbehaves (data reads elsewhere).
SHORT_BASE = 1000  # 1000 + n: answer with n registers only
ILLEGAL_ADDRESS = 2002  # exception 0x02
GATEWAY_TARGET_FAILED = 2011  # exception 0x0B
SILENT = 3000  # no answer at all
CLOSE = 4000  # close the connection instead of answering
LATE = 5000  # answer after LATE_S
WRONG_UNIT = 6000  # answer carries another unit id
WRONG_TID = 6001  # answer carries another transaction id
NOT_MODBUS = 7000  # protocol id 1
LATE_S = 0.3


def _word(function: int, address: int) -> int:
    return (address * (7 if function == 3 else 13) + function) & 0xFFFF


def _wire(*words: int) -> bytes:
    """Registers as a read returns them: their big-endian bytes."""
    return struct.pack(f">{len(words)}H", *words)


def _bit(function: int, address: int) -> int:
    return int(address % (3 if function == 1 else 2) == 0)


class RawServer:
    """A few dozen lines of Modbus TCP server: what it saw, and one rule per address.

    Like a gateway, it works through the requests of a connection in order:
    each answer leaves ``answer_delay_s`` (LATE_S for LATE) after the one before.
    """

    def __init__(self, answer_delay_s: float = 0.0) -> None:
        self.answer_delay_s = answer_delay_s
        self.connections = 0
        self.connected = asyncio.Event()
        self.requests: list[tuple[int, int, int, int]] = []  # unit, function, address, count
        self.outstanding = 0  # requests received and not yet answered, on all connections
        self.most_outstanding = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.Transport] = []

    async def __aenter__(self) -> RawServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _RawProtocol(self), HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for transport in self._transports:
            transport.close()
        await self._server.wait_closed()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(HOST, self.port)

    def answer(self, tid: int, unit: int, function: int, address: int, count: int) -> bytes | None:
        """The bytes to send back for one request (None: stay silent)."""
        if address in (ILLEGAL_ADDRESS, GATEWAY_TARGET_FAILED):
            return REQUEST.pack(tid, 0, 3, unit, function | 0x80, 0, 0)[:8] + bytes([address - 2000])
        if address == SILENT:
            return None
        if address == WRONG_UNIT:
            unit = (unit + 1) & 0xFF
        if address == WRONG_TID:
            tid = (tid + 1) & 0xFFFF
        protocol = 1 if address == NOT_MODBUS else 0
        if SHORT_BASE < address < SHORT_BASE + 125:
            count = address - SHORT_BASE
        if function in (3, 4):
            data = struct.pack(f">{count}H", *(_word(function, address + i) for i in range(count)))
        else:
            bits = [_bit(function, address + i) for i in range(count)]
            data = bytes(sum(bit << j for j, bit in enumerate(bits[k : k + 8])) for k in range(0, count, 8))
        return struct.pack(">HHHBBB", tid, protocol, 3 + len(data), unit, function, len(data)) + data


class _RawProtocol(asyncio.Protocol):
    def __init__(self, server: RawServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy_until = 0.0  # loop time of the last answer scheduled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server.connected.set()
        self.server._transports.append(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while len(self.buffer) >= REQUEST.size:
            tid, _, _, unit, function, address, count = REQUEST.unpack_from(self.buffer)
            self.buffer = self.buffer[REQUEST.size :]
            server = self.server
            server.requests.append((unit, function, address, count))
            if address == CLOSE:
                self.transport.close()
                return
            server.outstanding += 1
            server.most_outstanding = max(server.most_outstanding, server.outstanding)
            delay_s = LATE_S if address == LATE else server.answer_delay_s
            self.busy_until = max(loop.time(), self.busy_until) + delay_s
            loop.call_at(self.busy_until, self._send, server.answer(tid, unit, function, address, count))

    def _send(self, reply: bytes | None) -> None:
        self.server.outstanding -= 1
        if reply is not None and not self.transport.is_closing():
            self.transport.write(reply)


@pytest.fixture
async def raw():
    async with RawServer() as server:
        yield server


@pytest.fixture
async def link(raw):
    link = FastTcpLink(raw.endpoint)
    yield link
    link.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


async def _outcome(link, *request, timeout_s: float = 0.5):
    try:
        return await link.read(*request, timeout_s)
    except ExceptionResponse as exc:
        return ("exception", exc.exception_code)
    except LinkError as exc:
        return ("link error", exc.timed_out)


# (unit, function, address, count): every read function, odd sizes, the largest, short answers, exceptions
PARITY_READS = [
    (1, 3, 7, 64), (1, 3, 801, 20), (2, 4, 0, 125), (1, 3, 9, 1), (247, 4, 100, 3),
    (1, 1, 0, 1), (1, 1, 3, 13), (1, 2, 5, 16), (1, 2, 0, 2000), (3, 1, 11, 9),
    (1, 3, SHORT_BASE + 5, 10), (1, 4, SHORT_BASE + 1, 2),
    (1, 3, ILLEGAL_ADDRESS, 2), (5, 4, GATEWAY_TARGET_FAILED, 2), (1, 1, ILLEGAL_ADDRESS, 8),
]


async def _pymodbus_outcome(client: AsyncModbusTcpClient, unit: int, function: int, address: int, count: int):
    """What pymodbus' own client reads, in ``_outcome``'s terms: registers' wire bytes, bits, an exception."""
    read = {1: client.read_coils, 2: client.read_discrete_inputs, 3: client.read_holding_registers,
            4: client.read_input_registers}[function]
    response = await read(address, count=count, device_id=unit)
    if response.isError():
        return ("exception", response.exception_code)
    if function in (1, 2):
        return [int(bit) for bit in response.bits[:count]]
    return _wire(*response.registers)


async def test_values_and_exceptions_are_what_pymodbus_reads_from_the_same_server(raw, link) -> None:
    reference = AsyncModbusTcpClient(HOST, port=raw.endpoint.port, timeout=0.5, retries=0)
    await reference.connect()
    try:
        expected = [await _pymodbus_outcome(reference, *request) for request in PARITY_READS]
    finally:
        reference.close()

    found = [await _outcome(link, *request) for request in PARITY_READS]

    assert found == expected
    assert found[0] == _wire(*(_word(3, 7 + i) for i in range(64)))
    assert found[10] == _wire(*(_word(3, SHORT_BASE + 5 + i) for i in range(5)))  # short: fewer registers, no error
    assert found[-3:] == [("exception", 2), ("exception", 11), ("exception", 2)]


async def test_simulator_values_are_the_registers_it_served() -> None:
    async with Pac3200Simulator(port=0, units=(1, 2)) as sim:
        link = FastTcpLink(Endpoint(HOST, sim.port))
        try:
            for unit, address, count in ((1, 7, 64), (2, 801, 20), (1, 1, 82)):
                registers = await link.read(unit, 3, address, count, 1.0)
                served = sim.served[-1]
                assert (served.unit, served.address, served.count) == (unit, address, count)
                assert registers == _wire(*served.registers)
        finally:
            link.close()


@pytest.mark.parametrize(
    ("unit", "fault", "expected"),
    [
        pytest.param(1, Fault.ILLEGAL_ADDRESS, ("exception", 2), id="illegal-address-0x02"),
        pytest.param(9, None, ("exception", 11), id="unknown-unit-0x0B"),
        pytest.param(1, Fault.GATEWAY_NO_RESPONSE, ("exception", 11), id="gateway-no-response-0x0B"),
    ],
)
async def test_simulator_exception_responses(unit, fault, expected) -> None:
    async with Pac3200Simulator(port=0, units=(1,), faults={1: fault} if fault else None) as sim:
        link = FastTcpLink(Endpoint(HOST, sim.port))
        try:
            assert await _outcome(link, unit, 3, 7, 64) == expected
        finally:
            link.close()


async def test_simulator_short_response_gives_fewer_registers() -> None:
    async with Pac3200Simulator(port=0, units=(1,), faults={1: Fault.SHORT}) as sim:
        link = FastTcpLink(Endpoint(HOST, sim.port))
        try:
            registers = await link.read(1, 3, 7, 64, 1.0)
        finally:
            link.close()

    assert len(registers) == 2 * 32  # 32 registers, as their bytes


@pytest.mark.parametrize(("timeout_s", "after_s"), [(0.2, None), (0.2, 1.0), (0.5, 0.1)],
                         ids=["first-request", "after-a-longer-timeout", "after-a-shorter-timeout"])
async def test_silent_unit_times_out_within_its_own_timeout(timeout_s, after_s) -> None:
    # The link keeps one timer: a request with a shorter timeout than the one
    # it was armed for must still time out on time, a longer one not early.
    async with Pac3200Simulator(port=0, units=(1, 3), faults={3: Fault.TIMEOUT}) as sim:
        link = FastTcpLink(Endpoint(HOST, sim.port))
        try:
            if after_s is not None:
                await link.read(1, 3, 7, 64, after_s)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(LinkError) as caught:
                await link.read(3, 3, 7, 64, timeout_s)
            elapsed = loop.time() - started
            assert await link.read(1, 3, 801, 20, 1.0)  # the bus is free again, same connection
        finally:
            link.close()

    assert caught.value.timed_out
    assert timeout_s - 0.002 <= elapsed < timeout_s + 0.1


async def test_late_answer_after_a_timeout_is_not_given_to_the_next_request(raw, link) -> None:
    with pytest.raises(LinkError) as caught:
        await link.read(1, 3, LATE, 4, 0.1)  # answered after LATE_S, long after its timeout

    assert caught.value.timed_out
    # Sent while the late answer is on its way, answered after it: it must get its own answer.
    assert await link.read(1, 3, 20, 4, 1.0) == _wire(*(_word(3, 20 + i) for i in range(4)))
    assert await link.read(1, 3, 30, 2, 1.0) == _wire(_word(3, 30), _word(3, 31))
    assert raw.connections == 1


@pytest.mark.parametrize("address", [WRONG_UNIT, WRONG_TID], ids=["wrong-unit", "wrong-transaction"])
async def test_answer_for_another_unit_or_transaction_is_dropped(raw, link, address) -> None:
    with pytest.raises(LinkError) as caught:
        await link.read(1, 3, address, 2, 0.2)

    assert caught.value.timed_out  # dropped, so the request ran into its timeout, as with pymodbus
    assert await link.read(1, 3, 20, 2, 1.0) == _wire(_word(3, 20), _word(3, 21))


async def test_frame_that_is_not_modbus_tcp_drops_the_connection(raw, link) -> None:
    assert await _outcome(link, 1, 3, NOT_MODBUS, 2) == ("link error", False)
    assert await link.read(1, 3, 20, 2, 1.0) == _wire(_word(3, 20), _word(3, 21))
    assert raw.connections == 2


async def test_connection_closed_mid_request_fails_at_once_and_the_next_read_reconnects(raw, link) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(LinkError) as caught:
        await link.read(1, 3, CLOSE, 2, 5.0)

    assert not caught.value.timed_out
    assert loop.time() - started < 1.0  # not the 5 s timeout
    # Closed before a byte of the answer came: sent once more on a fresh connection, closed again.
    assert [request[2] for request in raw.requests] == [CLOSE, CLOSE]
    assert await link.read(1, 3, 20, 2, 1.0) == _wire(_word(3, 20), _word(3, 21))
    assert raw.connections == 3


async def test_refused_connect_is_a_link_error_that_did_not_time_out() -> None:
    link = FastTcpLink(Endpoint(HOST, _free_port()))
    try:
        results = await asyncio.gather(*(link.read(unit, 3, 7, 2, 0.5) for unit in (1, 2, 3)), return_exceptions=True)
    finally:
        link.close()

    assert all(isinstance(r, LinkError) and not r.timed_out for r in results), results


async def test_connection_is_renewed_after_five_timeouts_in_a_row(raw, link) -> None:
    for _ in range(RECONNECT_AFTER_TIMEOUTS):
        assert await _outcome(link, 1, 3, SILENT, 2, timeout_s=0.05) == ("link error", True)

    assert await link.read(1, 3, 20, 2, 1.0) == _wire(_word(3, 20), _word(3, 21))
    assert raw.connections == 2


async def test_many_concurrent_reads_on_one_link_go_out_one_at_a_time(link, raw) -> None:
    raw.answer_delay_s = 0.002
    reads = [(unit, 3, 10 * unit + n, 4) for unit in range(1, 11) for n in range(5)]

    results = await asyncio.gather(*(link.read(*request, 1.0) for request in reads))

    assert results == [_wire(*(_word(3, address + i) for i in range(4))) for _, _, address, _ in reads]
    assert raw.most_outstanding == 1
    assert len(raw.requests) == len(reads)
    # Round robin: every unit's first request before any unit's second.
    assert sorted(unit for unit, *_ in raw.requests[:10]) == list(range(1, 11))


# read_many, the poller's call: (reads of unit 1, what each answer is, reads sent).
DATA_20 = _wire(_word(3, 20), _word(3, 21))
READ_MANY_CASES = {
    "answers in order": ([(3, 7, 4), (3, 801, 2)],
                         [_wire(*(_word(3, 7 + i) for i in range(4))), _wire(_word(3, 801), _word(3, 802))], 2),
    "an exception response does not end the tick": ([(3, ILLEGAL_ADDRESS, 2), (3, 20, 2)],
                                                     [("exception", 2), DATA_20], 2),
    "a timeout ends the tick: the next read is not sent": ([(3, SILENT, 2), (3, 20, 2)],
                                                           [("link error", True)] * 2, 1),
    "a dropped connection ends the tick": ([(3, CLOSE, 2), (3, 20, 2)], [LinkError] * 2, 1),
}


def _answer_outcome(outcome):
    if isinstance(outcome, ExceptionResponse):
        return ("exception", outcome.exception_code)
    if isinstance(outcome, LinkError):
        return ("link error", outcome.timed_out)
    return outcome


@pytest.mark.parametrize(("reads", "expected", "sent"), READ_MANY_CASES.values(), ids=READ_MANY_CASES.keys())
async def test_read_many_answers_each_read_in_order_and_stops_at_a_link_error(raw, reads, expected, sent):
    link = FastTcpLink(raw.endpoint)
    try:
        queued_s = time.time()
        answers = await link.read_many(1, reads, 0.3)
        done_s = time.time()
    finally:
        link.close()

    assert len(answers) == len(reads)
    for (outcome, _), want in zip(answers, expected):
        if want is LinkError:
            assert isinstance(outcome, LinkError)
        else:
            assert _answer_outcome(outcome) == want
    received = [received_s for _, received_s in answers]
    assert queued_s <= received[0] <= received[-1] <= done_s  # each stamped when it came (Delay)
    if sent < len(reads):  # not sent: the same error at the same time
        assert answers[-1] == answers[sent - 1]
    sent_addresses = [address for _, address, _ in reads[:sent]]
    if sent_addresses[-1] == CLOSE:
        sent_addresses.append(CLOSE)  # closed before a byte of the answer came: sent once more, on a fresh connection
    assert [address for _, _, address, _ in raw.requests] == sent_addresses


async def test_read_many_of_several_devices_takes_turns_request_by_request(raw) -> None:
    link = FastTcpLink(raw.endpoint)
    try:
        results = await asyncio.gather(*(link.read_many(unit, [(3, 10 * unit, 2), (3, 10 * unit + 5, 2)], 1.0)
                                         for unit in (1, 2, 3)))
    finally:
        link.close()

    assert [[outcome for outcome, _ in answers] for answers in results] == [
        [_wire(_word(3, 10 * unit), _word(3, 10 * unit + 1)), _wire(_word(3, 10 * unit + 5), _word(3, 10 * unit + 6))]
        for unit in (1, 2, 3)
    ]
    order = [(unit, address % 10) for unit, _, address, _ in raw.requests]
    # Every device's first request before any device's second, as with one read() per request.
    assert sorted(order[:3]) == [(1, 0), (2, 0), (3, 0)] and sorted(order[3:]) == [(1, 5), (2, 5), (3, 5)]
    assert raw.most_outstanding == 1


async def test_reader_cancelled_while_waiting_or_in_flight_does_not_block_the_bus(raw, link) -> None:
    await link.read(1, 3, 1, 1, 1.0)  # connected: the next read goes out inside read()
    raw.answer_delay_s = 0.05
    in_flight = asyncio.ensure_future(link.read(1, 3, 10, 2, 1.0))
    waiting = asyncio.ensure_future(link.read(2, 3, 20, 2, 1.0))  # read() queues at once: 1 is sent, 2 waits

    in_flight.cancel()
    waiting.cancel()

    assert await link.read(3, 3, 30, 2, 1.0) == _wire(_word(3, 30), _word(3, 31))
    assert [address for _, _, address, _ in raw.requests] == [1, 10, 30]  # the cancelled waiter never went out
    assert raw.most_outstanding == 1  # the next request waited for the cancelled one's answer


class ConnectCounter:
    """Wraps the loop's create_connection: how many connects are in flight at most."""

    def __init__(self, monkeypatch, connect_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._create_connection = loop.create_connection
        self.connect_s = connect_s  # each connect takes this long, as over a slow network
        self.in_flight = self.most = 0
        monkeypatch.setattr(loop, "create_connection", self._counted)

    async def _counted(self, *args, **kwargs):
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.connect_s)
            return await self._create_connection(*args, **kwargs)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def gateways():
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(RawServer()) for _ in range(12)]


async def test_connects_are_bounded_and_opened_ahead_of_the_first_read(monkeypatch, gateways) -> None:
    counter = ConnectCounter(monkeypatch, connect_s=0.02)
    pool = LinkPool(max_connects=3)
    try:
        links = [pool.link_for(gateway.endpoint) for gateway in gateways]
        pool.open_all()
        await asyncio.wait_for(asyncio.gather(*(g.connected.wait() for g in gateways)), 5.0)
        results = await asyncio.gather(*(link.read(1, 3, 7, 2, 1.0) for link in links))
    finally:
        pool.close()

    assert counter.most == 3
    assert results == [_wire(_word(3, 7), _word(3, 8))] * len(gateways)
    assert [g.connections for g in gateways] == [1] * len(gateways)  # the reads used the connections opened ahead


async def test_first_reads_of_many_links_connect_a_bounded_number_at_a_time(monkeypatch, gateways) -> None:
    counter = ConnectCounter(monkeypatch, connect_s=0.01)
    pool = LinkPool(max_connects=4)
    try:
        results = await asyncio.gather(*(pool.link_for(g.endpoint).read(1, 3, 7, 2, 1.0) for g in gateways))
    finally:
        pool.close()

    assert counter.most == 4
    assert results == [_wire(_word(3, 7), _word(3, 8))] * len(gateways)
