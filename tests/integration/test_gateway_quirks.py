"""Quirks of real gateways and meters, against raw-socket servers and a raw meter on a pty (issue 16).

Each fault is played the same way on every transport the service speaks
(Modbus TCP through the lean client, RTU frames over TCP and RTU on a
serial line through its RTU variant), and the poller must make the same Code of
it everywhere, with no traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from contextlib import AsyncExitStack, asynccontextmanager
from typing import NamedTuple

import pytest

from ptyline import PtyLine
from rawmodbus import CLOSE, MBAP_REQUEST, RTU_REQUEST, RawSerialDevice, RawServer, mbap, registers, rtu
from susee.config import Settings
from susee.devices import plan_devices
from susee.links import Endpoint, LinkError, Read, SerialEndpoint
from susee.links.pool import LinkPool
from susee.links.rtulink import QUIET_S, SerialLink
from susee.links.tcp import FastTcpLink
from susee.poller import Poller
from susee.quality import Code
from susee.ticks import TickGrid, WallClock

TRANSPORTS = ["tcp", "rtu-over-tcp", "serial"]
TIMEOUT_S = 0.5  # for a fault that must not wait for its timeout, and for one that does
# The PAC3200 profile's default params: two reads, fc 3 7+64 and fc 3 801+20.
PARAMS = ["104", "107", "132", "133", "134", "135", "222", "226"]
# fc 3 7+8 and 801+20: small frames, so that one sent twice fits in one segment.
SMALL_PARAMS = ["104", "107", "222", "226"]

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs POSIX pseudo-terminals")


class Request(NamedTuple):
    tid: int  # 0 on RTU, which has none
    unit: int
    function: int
    address: int
    count: int


class Wire:
    """Reads requests and builds answers in the framing of a transport."""

    def __init__(self, rtu_frames: bool) -> None:
        self.rtu_frames = rtu_frames

    def request(self, raw: bytes) -> Request:
        if self.rtu_frames:
            return Request(0, *RTU_REQUEST.unpack_from(raw))
        tid, _, _, unit, function, address, count = MBAP_REQUEST.unpack(raw)
        return Request(tid, unit, function, address, count)

    def frame(self, request: Request, pdu: bytes, *, function: int | None = None, tid: int | None = None) -> bytes:
        function = request.function if function is None else function
        if self.rtu_frames:
            return rtu(request.unit, function, pdu)
        return mbap(request.tid if tid is None else tid, request.unit, function, pdu)

    def answer(self, request: Request, **kwargs) -> bytes:
        """The right answer: register n holds its own address."""
        return self.frame(request, registers(*range(request.address, request.address + request.count)), **kwargs)


@asynccontextmanager
async def meter(transport: str, script):
    """A device on ``transport`` whose every request ``script(wire, request, n)`` answers; yields its settings."""
    wire = Wire(rtu_frames=transport != "tcp")
    seen: list[Request] = []

    def play(raw: bytes):
        request = wire.request(raw)
        seen.append(request)
        return script(wire, request, len(seen))

    async with AsyncExitStack() as stack:
        if transport == "serial":
            line = stack.enter_context(PtyLine())
            await stack.enter_async_context(RawSerialDevice(play, line.device_port))
            device = {"serial": {"port": line.client_port}}
        else:
            server = await stack.enter_async_context(RawServer(play, rtu_frames=wire.rtu_frames))
            device = {"host": "127.0.0.1", "port": server.port, "framer": "socket" if transport == "tcp" else "rtu"}
        yield {"id": "m1", "unit": 1, "timeout": TIMEOUT_S, "params": PARAMS, **device}, seen


async def poll_codes(device: dict, tmp_path, polls: int = 1) -> list[list]:
    """Poll ``device`` ``polls`` times through the service's own pool and poller: each poll's samples."""
    settings = Settings(database={"url": "sqlite:///unused.db"}, devices=[device])
    (plan,) = plan_devices(settings, tmp_path / "site.yaml")
    pool = LinkPool()
    clock = WallClock()
    poller = Poller(plan, pool.link_for(plan.endpoint), TickGrid(1), clock, lambda samples: None)
    try:
        return [await poller.poll(clock.now()) for _ in range(polls)]
    finally:
        pool.close()


def codes(samples) -> set[int]:
    return {sample.code for sample in samples}


def values_right(samples) -> bool:
    """The PAC3200 fields decode what ``Wire.answer`` served: nonzero floats, never NULL."""
    return all(sample.value is not None for sample in samples)


# --- 2. transaction id 0 ------------------------------------------------------------------------


async def test_answers_with_transaction_id_0_are_taken_when_one_request_is_outstanding(tmp_path) -> None:
    async with meter("tcp", lambda wire, request, n: wire.answer(request, tid=0)) as (device, seen):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {0}
    assert len(seen) == 2  # one request per block, each answered


# (case id, what the gateway answers with transaction id 0)
TID_0_MISFITS = {
    "another-unit": lambda wire, request: mbap(0, request.unit + 1, request.function, registers(*[1] * request.count)),
    "another-function": lambda wire, request: mbap(0, request.unit, 4, registers(*[1] * request.count)),
    "another-count": lambda wire, request: mbap(0, request.unit, request.function, registers(1)),
}


@pytest.mark.parametrize("answer", TID_0_MISFITS.values(), ids=TID_0_MISFITS.keys())
async def test_a_transaction_id_0_answer_that_does_not_fit_the_request_is_not_taken(tmp_path, answer) -> None:
    async with meter("tcp", lambda wire, request, n: answer(wire, request)) as (device, _):
        link = FastTcpLink(Endpoint("127.0.0.1", device["port"]))
        try:
            with pytest.raises(LinkError) as caught:
                await link.read(1, 3, 7, 2, 0.3)
        finally:
            link.close()

    assert caught.value.timed_out  # dropped as a stray frame: the request waited for its own answer


# --- 3. a connection closed as the request goes out ---------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp"])
async def test_a_read_whose_connection_closes_before_any_answer_is_sent_again_on_a_fresh_one(tmp_path, transport):
    def closes_the_first(wire, request, n):
        return CLOSE if n == 1 else wire.answer(request)

    async with meter(transport, closes_the_first) as (device, seen):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {0}
    assert [request.address for request in seen] == [7, 7, 801]  # the first read, once more, then the next


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp"])
async def test_a_read_closed_after_part_of_its_answer_is_not_sent_again(tmp_path, transport) -> None:
    def half_then_close(wire, request, n):
        return [wire.answer(request)[:10], 0.01, CLOSE] if n == 1 else wire.answer(request)

    async with meter(transport, half_then_close) as (device, seen):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {Code.ERR_CONNECTION}
    assert len(seen) == 1  # the tick ended at the lost connection


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp"])
async def test_a_read_sent_again_that_gets_no_answer_is_one_timeout(transport) -> None:
    async with meter(transport, lambda wire, request, n: CLOSE if n == 1 else None) as (device, seen):
        pool = LinkPool()
        link = pool.link_for(Endpoint("127.0.0.1", device["port"], device["framer"]))
        try:
            with pytest.raises(LinkError) as caught:
                await link.read(1, 3, 7, 2, 0.3)
        finally:
            pool.close()

    assert caught.value.timed_out  # the second attempt, silent, ran into the one timeout of the read
    assert len(seen) == 2


# --- 4. RTU paths check function, unit and count like Modbus TCP --------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_with_another_function_code_is_code_1_on_every_transport(tmp_path, transport, caplog):
    async with meter(transport, lambda wire, request, n: wire.answer(request, function=4)) as (device, _):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {Code.ERR_CONNECTION}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_exception_response_of_another_function_is_code_1_on_every_transport(tmp_path, transport):
    async with meter(transport, lambda wire, request, n: wire.frame(request, bytes([2]), function=0x84)) as (device, _):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {Code.ERR_CONNECTION}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_fewer_registers_than_asked_is_code_32_on_every_transport(tmp_path, transport):
    def short(wire, request, n):
        return wire.frame(request, registers(*range(request.count - 1)))

    async with meter(transport, short) as (device, _):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {Code.LENREG_ZERO}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_from_another_unit_is_not_taken_on_any_transport(tmp_path, transport):
    def other_unit(wire, request, n):
        return wire.answer(request._replace(unit=request.unit + 1))

    async with meter(transport, other_unit) as (device, _):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {Code.ERR_CONNECTION}


# --- 5. bytes that come while no request is outstanding -----------------------------------------


async def test_a_frame_sent_ahead_with_the_previous_answer_is_never_the_next_answer(tmp_path) -> None:
    def with_a_frame_ahead(wire, request, n):
        if n == 1:  # in the same segment: a frame carrying the next request's transaction id, all zeros
            ahead = mbap(request.tid + 1, request.unit, 3, registers(*[0] * 20))
            return wire.answer(request) + ahead
        return wire.answer(request)

    async with meter("tcp", with_a_frame_ahead) as (device, seen):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {0}
    assert values_right(samples)
    by_param = {sample.param_id: sample.value for sample in samples}
    assert by_param["222"] != 0.0  # fc 3 801+20 decoded from its own answer, not the zeros sent ahead


async def test_bytes_that_come_between_requests_belong_to_nobody(tmp_path) -> None:
    stray_sent = asyncio.Event()

    def stray_after(wire, request, n):  # the start of a frame, after the answer, while nothing is outstanding
        if n == 1:
            return [wire.answer(request), 0.02, wire.answer(request)[:5], stray_sent.set]
        return wire.answer(request)

    async with meter("tcp", stray_after) as (device, _):
        link = FastTcpLink(Endpoint("127.0.0.1", device["port"]))
        try:
            first = await link.read(1, 3, 7, 2, TIMEOUT_S)
            await stray_sent.wait()
            await asyncio.sleep(0)  # the link's data_received runs
            second = await link.read(1, 3, 801, 2, TIMEOUT_S)
        finally:
            link.close()

    assert first == struct.pack(">2H", 7, 8)
    assert second == struct.pack(">2H", 801, 802)


# --- 6. the same fault gives the same Code on every transport ----------------------------------


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp"])
async def test_a_connection_accepted_then_closed_is_code_1_and_no_answer(tmp_path, transport, caplog):
    async with meter(transport, lambda wire, request, n: wire.answer(request)) as (device, _):
        settings = Settings(database={"url": "sqlite:///unused.db"}, devices=[device])
        (plan,) = plan_devices(settings, tmp_path / "site.yaml")
        async with RawServer(lambda raw: None, rtu_frames=transport != "tcp", close_on_accept=True) as closing:
            plan = plan_devices(
                Settings(database={"url": "sqlite:///unused.db"}, devices=[{**device, "port": closing.port}]),
                tmp_path / "site.yaml",
            )[0]
            pool = LinkPool()
            clock = WallClock()
            poller = Poller(plan, pool.link_for(plan.endpoint), TickGrid(1), clock, lambda samples: None)
            poller.backoff.timeouts = 1  # backing off: only an answer may end it
            try:
                samples = await poller.poll(clock.now())
            finally:
                pool.close()

    assert codes(samples) == {Code.ERR_CONNECTION}
    assert poller.backoff.timeouts == 1  # a closed connection is no answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_duplicated_answer_does_not_poison_later_reads(tmp_path, transport):
    def twice_at_first(wire, request, n):
        return wire.answer(request) * 2 if n == 1 else wire.answer(request)

    async with meter(transport, twice_at_first) as (device, seen):
        polls = await poll_codes({**device, "params": SMALL_PARAMS}, tmp_path, polls=3)

    assert [codes(samples) for samples in polls] == [{0}] * 3
    assert len(seen) == 6


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_duplicate_arriving_late_does_not_poison_later_reads(tmp_path, transport):
    def twice_at_first(wire, request, n):
        return [wire.answer(request), 0.02, wire.answer(request)] if n == 1 else wire.answer(request)

    async with meter(transport, twice_at_first) as (device, _):
        polls = await poll_codes({**device, "params": SMALL_PARAMS}, tmp_path, polls=3)

    assert [codes(samples) for samples in polls] == [{0}] * 3


# (case id, the byte count an answer of ``count`` registers carries, the Code Modbus TCP gives for it)
WRONG_BYTE_COUNTS = {
    "below-the-data": (lambda count: 2 * count - 2, Code.LENREG_ZERO),  # the registers it counts
    "beyond-the-data": (lambda count: 2 * count + 2, Code.ERR_CONNECTION),  # a malformed answer
}


def with_byte_count(byte_count):
    """A script: every answer carries all the registers asked, under the byte count ``byte_count(count)``."""

    def answer(wire, request, n):
        words = struct.pack(f">{request.count}H", *range(request.address, request.address + request.count))
        return wire.frame(request, bytes([byte_count(request.count)]) + words)

    return answer


@pytest.mark.parametrize("case", WRONG_BYTE_COUNTS.values(), ids=WRONG_BYTE_COUNTS.keys())
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_wrong_byte_count_gives_the_code_modbus_tcp_gives_on_every_transport(tmp_path, transport, case):
    byte_count, tcp_code = case

    async with meter(transport, with_byte_count(byte_count)) as (device, seen):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {tcp_code}
    assert len(seen) == (2 if tcp_code == Code.LENREG_ZERO else 1)  # a malformed answer ends the tick


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_byte_count_beyond_the_data_is_no_timeout_on_any_transport(tmp_path, transport):
    async with meter(transport, with_byte_count(lambda count: 2 * count + 2)) as (device, _):
        (plan,) = plan_devices(Settings(database={"url": "sqlite:///unused.db"}, devices=[device]), tmp_path / "s.yaml")
        pool = LinkPool()
        try:
            with pytest.raises(LinkError, match="malformed answer") as caught:
                await pool.link_for(plan.endpoint).read(1, 3, 7, 2, TIMEOUT_S)
        finally:
            pool.close()

    assert not caught.value.timed_out  # the device answered: backing off would be wrong, as over Modbus TCP


@pytest.mark.parametrize("transport", ["rtu-over-tcp", "serial"])
async def test_an_rtu_answer_split_by_a_pause_longer_than_the_quiet_is_still_taken(tmp_path, transport):
    def in_two_parts(wire, request, n):
        frame = wire.answer(request)
        return [frame[:7], 3 * QUIET_S, frame[7:]]

    async with meter(transport, in_two_parts) as (device, _):
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {0}
    assert values_right(samples)


# --- 7. a serial port that rejects its settings -------------------------------------------------


async def test_a_serial_port_that_rejects_its_settings_is_code_1_without_a_traceback(tmp_path, caplog):
    with PtyLine() as line:
        # pyserial opens the port and refuses its options with a ValueError, as it does
        # for a custom baud rate the adapter rejects; pymodbus passes it on.
        device = {"id": "m1", "unit": 1, "params": PARAMS, "serial": {"port": f"alt://{line.client_port}?class=Nope"}}
        (samples,) = await poll_codes(device, tmp_path)

    assert codes(samples) == {Code.ERR_CONNECTION}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_serial_link_names_the_reason_it_cannot_open_the_port() -> None:
    with PtyLine() as line:
        link = SerialLink(SerialEndpoint(f"alt://{line.client_port}?class=Nope"))
        try:
            with pytest.raises(LinkError) as caught:
                await link.read(1, 3, 7, 2, 0.3)
        finally:
            link.close()

    assert "unknown class" in str(caught.value) and not caught.value.timed_out
