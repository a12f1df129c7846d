"""Links: transport settings, bus keys, the link pool, the RTU links over TCP and on a serial port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rawmodbus import HOST, RTU_REQUEST, RawServer, registers, rtu
from susee.config import ConfigError, DeviceSettings, load_settings
from susee.devices import endpoint_of
from susee.links import Endpoint, LinkError, SerialEndpoint
from susee.links.pool import LinkPool, raise_open_files_limit
from susee.links.rtulink import RtuLink, SerialLink
from susee.links.tcp import FastTcpLink

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


@pytest.mark.parametrize(
    ("device", "key"),
    [
        pytest.param({"host": "10.0.0.5"}, "host:port 10.0.0.5:502", id="modbus-tcp"),
        pytest.param({"host": "10.0.0.5", "framer": "rtu"}, "host:port 10.0.0.5:502", id="framer-does-not-matter"),
        pytest.param({"serial": "/dev/ttyUSB0"}, "serial port /dev/ttyUSB0", id="serial"),
    ],
)
def test_settings_and_endpoint_name_a_bus_by_one_key(device, key) -> None:
    settings = DeviceSettings(id="d01", **device)

    assert settings.bus == endpoint_of(settings).bus == key


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
        # Modbus TCP takes the lean client; RTU frames over TCP and serial lines its RTU variants.
        assert type(gateway) is FastTcpLink and type(rtu_gateway) is RtuLink and type(line) is SerialLink
        assert gateway.scheduler.inter_request_delay_s == 0.05
        assert line.scheduler.inter_request_delay_s == 0.0
        assert len(list(pool.links)) == 4
        with pytest.raises(ValueError, match="bus 10.0.0.5:4001"):
            pool.link_for(Endpoint("10.0.0.5", 4001, "socket"))  # settings validation forbids this
    finally:
        pool.close()


# --- Links: errors and connects -------------------------------------------------------------


async def test_a_silent_peer_is_a_timeout_through_the_rtu_link() -> None:
    async with RawServer(lambda request: None, rtu_frames=True) as server:
        link = RtuLink(Endpoint(HOST, server.port, "rtu"))
        try:
            with pytest.raises(LinkError) as caught:
                await link.read(1, 3, 7, 2, 0.3)
        finally:
            link.close()

    assert caught.value.timed_out
    assert len(server.requests) == 1


def _answer_unit_words(request: bytes) -> bytes:
    """Every register read answered with ``count`` words holding the unit id (RTU frames)."""
    unit, function, _, count = RTU_REQUEST.unpack_from(request)
    return rtu(unit, function, registers(*[unit] * count))


async def test_failed_connect_fails_the_requests_queued_meanwhile_at_once_and_is_retried_later(monkeypatch) -> None:
    port = _free_port()  # nothing listens: the connect is refused
    link = RtuLink(Endpoint(HOST, port, "rtu"))
    connects = []
    connect = link._create_connection

    async def counted_connect(conn) -> None:
        connects.append(port)
        await connect(conn)

    monkeypatch.setattr(link, "_create_connection", counted_connect)  # the real connect, counted
    try:
        results = await asyncio.gather(*(link.read(unit, 3, 7, 2, 0.3) for unit in (1, 2, 3)), return_exceptions=True)

        assert all(isinstance(r, LinkError) and not r.timed_out for r in results)
        assert len(connects) == 1  # one connect attempt per tick, not one per device
        async with RawServer(_answer_unit_words, rtu_frames=True, port=port):
            assert await link.read(2, 3, 7, 2, 0.3) == bytes([0, 2, 0, 2])  # registers: their wire bytes
        assert len(connects) == 2
    finally:
        link.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


async def test_serial_port_that_cannot_be_opened_is_a_link_error_not_a_crash(tmp_path) -> None:
    link = SerialLink(SerialEndpoint(str(tmp_path / "ttyNOPE"), 19200))
    try:
        with pytest.raises(LinkError) as caught:
            await link.read(1, 3, 7, 2, 0.3)
    finally:
        link.close()

    assert not caught.value.timed_out
    assert "ttyNOPE" in str(caught.value)


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

    raise_open_files_limit(buses)

    assert calls == ([set_to] if set_to else [])
    assert any("below" in r.getMessage() for r in caplog.records if r.levelname == "WARNING") is warned


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs POSIX pseudo-terminals")
async def test_a_serial_adapter_gone_while_a_read_waits_fails_it_at_once_not_at_its_timeout() -> None:
    adapter, port = os.openpty()  # the master end plays the USB adapter; closing it is pulling the plug
    link = SerialLink(SerialEndpoint(os.ttyname(port), 19200))
    try:
        loop = asyncio.get_running_loop()
        reading = asyncio.ensure_future(link.read(1, 3, 7, 2, 5.0))
        request = await loop.run_in_executor(None, os.read, adapter, 8)  # the request went out
        started_s = loop.time()
        os.close(adapter)
        with pytest.raises(LinkError) as caught:
            await reading
        failed_after_s = loop.time() - started_s
    finally:
        link.close()
        os.close(port)

    assert request[:2] == bytes([1, 3])
    assert not caught.value.timed_out and failed_after_s < 1.0  # no 5 s timeout held the bus
