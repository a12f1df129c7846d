"""At a site of thousands of meters, events many devices have at once make one line, not one per device.

Start-up sums up the devices by profile and the connects made ahead of the
first tick; devices that stop answering (a gateway dies with its meters) or
answer again are logged per period, naming the first few.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from contextlib import AsyncExitStack

import pytest

from support import FakeClock, ReadsInTurn
from susee.backoff import Backoff
from susee.config import DeviceSettings, Settings
from susee.devices import DevicePlan, plan_devices
from susee.links import Endpoint, LinkError
from susee.links.pool import LinkPool
from susee.links.tcp import FastTcpLink
from susee.planner import plan_reads
from susee.poller import Poller, PollReports
from susee.profiles import load_profile
from susee.sinks import create_sink
from susee.supervisor import Supervisor, profile_summary
from susee.ticks import TickGrid

T0 = 1_700_000_000.0
PERIOD_S = 10.0
WAIT_S = 5.0  # for a line that comes from a background callback: a bound, not a timing


def messages(caplog, logger: str, level: int) -> list[str]:
    """Messages of ``logger`` at exactly ``level``."""
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def loud(caplog, logger: str) -> list[str]:
    """Messages of ``logger`` at INFO or above: what a site's log shows."""
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.INFO]


async def logged(caplog, logger: str, pattern: str) -> str:
    """Wait for the first INFO+ line of ``logger`` matching ``pattern`` (it comes from a callback)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [m for m in loud(caplog, logger) if re.search(pattern, m)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no line like {pattern!r} in {caplog.text}"
        await asyncio.sleep(0.01)


# --- Backoff of silent devices ---------------------------------------------------------------

SILENT_AT_ONCE = {
    "one device is named": (1, "d00"),
    "five are all named": (5, "d00, d01, d02, d03, d04"),
    "fifty: five named, the rest counted": (50, "d00, d01, d02, d03, d04 and 45 more"),
}


@pytest.mark.parametrize(("devices", "named"), SILENT_AT_ONCE.values(), ids=SILENT_AT_ONCE.keys())
async def test_devices_going_silent_and_coming_back_in_one_period_make_one_warning_each(caplog, devices, named):
    caplog.set_level(logging.DEBUG)
    reports = PollReports(PERIOD_S)
    backoffs = [Backoff(f"d{n:02d}", 64, reports) for n in range(devices)]

    for backoff in backoffs:
        backoff.record(timed_out=True, answered=False)
    assert loud(caplog, "susee.backoff") == [], "nothing at INFO or above per device"
    assert len(messages(caplog, "susee.backoff", logging.DEBUG)) == devices, "each device's detail stays at DEBUG"
    reports.flush()
    assert messages(caplog, "susee.poller", logging.WARNING) == [
        f"{devices} device(s) stopped answering, backing off: skipping {devices} tick(s) in all "
        f"in the last 10 s: {named}"
    ]

    caplog.clear()
    for backoff in backoffs:
        assert backoff.skip()
        backoff.record(timed_out=False, answered=True)
    reports.flush()
    assert loud(caplog, "susee.backoff") == []
    assert messages(caplog, "susee.poller", logging.WARNING) == [
        f"{devices} device(s) answer again, backoff ended after {devices} skipped tick(s) in all "
        f"in the last 10 s: {named}"
    ]


def _run_backoff(script: str, reports: PollReports | None = None) -> None:
    """Feed poll outcomes (T timed out, A answered) to device d01's Backoff, skipping what it skips."""
    backoff = Backoff("d01", 64, reports)
    for outcome in script:
        while backoff.skip():
            pass
        backoff.record(timed_out=outcome == "T", answered=outcome == "A")


STANDALONE = {
    "silent, then answers": (
        "TTTA",
        [
            "device d01: no answer, backing off: skipping the next 1 tick(s)",
            "device d01: answers again, backoff ended after 3 timed-out polls and 7 skipped tick(s)",
        ],
        2,
    ),
    "stays silent: one warning, the further probes at DEBUG": (
        "TTTTT", ["device d01: no answer, backing off: skipping the next 1 tick(s)"], 4,
    ),
    "healthy: nothing": ("AAA", [], 0),
}


@pytest.mark.parametrize(("script", "warnings", "debug_lines"), STANDALONE.values(), ids=STANDALONE.keys())
def test_a_backoff_without_reports_warns_per_device_and_keeps_the_probes_at_debug(caplog, script, warnings,
                                                                                  debug_lines):
    caplog.set_level(logging.DEBUG, logger="susee.backoff")
    _run_backoff(script)
    assert loud(caplog, "susee.backoff") == warnings
    assert messages(caplog, "susee.backoff", logging.WARNING) == warnings
    assert len(messages(caplog, "susee.backoff", logging.DEBUG)) == debug_lines


async def test_a_device_that_stays_silent_is_reported_once_not_at_every_probe(caplog):
    caplog.set_level(logging.DEBUG)
    reports = PollReports(PERIOD_S)
    _run_backoff("TTTTT", reports)
    reports.flush()
    assert loud(caplog, "susee.backoff") == []
    assert loud(caplog, "susee.poller") == [
        "1 device(s) stopped answering, backing off: skipping 1 tick(s) in all in the last 10 s: d01"
    ]


class DeadGateway(ReadsInTurn):
    """A link whose every request goes out and gets no answer in time."""

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> list[int]:
        await asyncio.sleep(0)
        raise LinkError(f"no answer within {timeout_s:g} s", timed_out=True)


class Enough(Exception):
    pass


def _stop_at_first_poll(samples) -> None:
    raise Enough


def pac3200(device_id: str, params: list[str] | None = None, port: int = 502, host: str = "127.0.0.1") -> DevicePlan:
    profile = load_profile("pac3200")
    settings = DeviceSettings(id=device_id, host=host, port=port, params=params)
    return DevicePlan(settings=settings, profile=profile, blocks=plan_reads(profile, params or profile.default_ids))


async def test_a_gateway_dying_with_fifty_meters_makes_one_warning_from_the_pollers(caplog):
    caplog.set_level(logging.INFO)
    reports = PollReports(PERIOD_S)
    gateway = DeadGateway()
    pollers = []
    for n in range(50):
        clock = FakeClock(T0 - 0.5)
        pollers.append(Poller(pac3200(f"m{n:02d}"), gateway, TickGrid(PERIOD_S), clock, _stop_at_first_poll, reports))

    results = await asyncio.gather(*(p.run() for p in pollers), return_exceptions=True)
    assert all(isinstance(r, Enough) for r in results), results
    assert all(p.backoff.active for p in pollers)
    reports.flush()

    assert loud(caplog, "susee.backoff") == []
    assert messages(caplog, "susee.poller", logging.WARNING) == [
        "50 device(s) stopped answering, backing off: skipping 50 tick(s) in all in the last 10 s: "
        "m00, m01, m02, m03, m04 and 45 more"
    ]


# --- Start-up: devices by profile, missing drivers -------------------------------------------


def _sdm630(device_id: str, params: list[str] | None) -> DevicePlan:
    profile = load_profile("sdm630")
    settings = DeviceSettings(id=device_id, host="127.0.0.1", profile="sdm630", params=params)
    return DevicePlan(settings=settings, profile=profile, blocks=plan_reads(profile, params or profile.default_ids))


def _without_driver(device_id: str) -> DevicePlan:
    settings = DeviceSettings(id=device_id, host="127.0.0.1", profile="nope.yaml")
    return DevicePlan(settings, None, (), profile_error="profile file nope.yaml not found")


PROFILE_SUMMARIES = {
    "one profile": (lambda: [pac3200(f"p{n}") for n in range(3)], "3 pac3200 (2 request(s) each)"),
    "most first, request counts as a range": (
        lambda: [_sdm630("s1", None), _sdm630("s2", ["133"]), *(pac3200(f"p{n}") for n in range(4))],
        "4 pac3200 (2 request(s) each), 2 sdm630 (1-3 request(s) each)",
    ),
    "devices without a driver are counted": (
        lambda: [pac3200("p1"), _without_driver("x1"), _without_driver("x2")],
        "1 pac3200 (2 request(s) each), 2 without a driver",
    ),
    "no devices": (lambda: [], "none"),
}


@pytest.mark.parametrize(("plans", "summary"), PROFILE_SUMMARIES.values(), ids=PROFILE_SUMMARIES.keys())
def test_profile_summary_groups_devices_by_profile(plans, summary):
    assert profile_summary(plans()) == summary


def _closed_port() -> int:
    """A loopback port nobody listens on: connects to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _site(tmp_path, devices: list[dict]) -> Settings:
    return Settings(
        job_id="t01", sample_time=1, devices=devices,
        database={"url": f"sqlite:///{tmp_path / 'site.db'}"}, spool={"path": str(tmp_path / "spool")},
    )


NO_DRIVER = "profile 'no-such-meter.yaml' not found: not a built-in profile (generic, pac3200, sdm630, umg604) nor a file"
STARTUP = {
    "a few missing drivers: one error each": (3, [f"device x{n}: driver not found: {NO_DRIVER}" for n in range(3)]),
    "many missing drivers: one error per reason, five named": (
        8, [f"8 device(s): driver not found: {NO_DRIVER}: x0, x1, x2, x3, x4 and 3 more"],
    ),
}


@pytest.mark.parametrize(("missing", "errors"), STARTUP.values(), ids=STARTUP.keys())
async def test_startup_logs_a_summary_by_profile_and_each_device_only_at_debug(caplog, tmp_path, missing, errors):
    caplog.set_level(logging.DEBUG)
    port = _closed_port()
    devices = [{"id": f"m{n:02d}", "host": "127.0.0.1", "port": port, "unit": 1 + n % 10} for n in range(10)]
    devices += [{"id": f"n{n:02d}", "host": "127.0.0.2", "port": port, "unit": 1 + n} for n in range(10)]
    devices += [{"id": f"s{n}", "host": "127.0.0.3", "port": port, "profile": "sdm630"} for n in range(2)]
    devices += [{"id": f"x{n}", "host": "127.0.0.1", "port": port, "profile": "no-such-meter.yaml"}
                for n in range(missing)]
    settings = _site(tmp_path, devices)

    sink = create_sink(settings.database_target(), settings.job_id)
    assert await Supervisor(settings, plan_devices(settings, tmp_path / "site.yaml"), sink).run(duration_s=0) == 0

    info = messages(caplog, "susee.supervisor", logging.INFO)
    assert f"{22 + missing} device(s) on 3 bus(es): 20 pac3200 (2 request(s) each), 2 sdm630 (3 request(s) each), " \
           f"{missing} without a driver" in info
    assert not [m for m in info if "params in" in m], "per-device detail is not at INFO"
    detail = [m for m in messages(caplog, "susee.supervisor", logging.DEBUG) if "params in" in m]
    assert len(detail) == 22
    assert "device m00: pac3200 unit 1 at 127.0.0.1:%d, 8 params in 2 request(s)" % port in detail
    assert messages(caplog, "susee.supervisor", logging.ERROR) == errors


# --- Connects ahead of the first tick -------------------------------------------------------


async def _listeners(stack: AsyncExitStack, count: int) -> list[asyncio.Server]:
    """``count`` loopback gateways that accept connections and say nothing; closed with ``stack``."""
    accepted: list[asyncio.StreamWriter] = []

    def close_accepted() -> None:
        for writer in accepted:
            writer.close()

    servers = []
    for _ in range(count):
        server = await asyncio.start_server(lambda reader, writer: accepted.append(writer), "127.0.0.1", 0)
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        servers.append(server)
    stack.callback(close_accepted)
    return servers


def _port(server: asyncio.Server) -> int:
    return server.sockets[0].getsockname()[1]


async def test_connects_ahead_of_the_first_tick_make_one_info_line(caplog):
    caplog.set_level(logging.DEBUG)
    async with AsyncExitStack() as stack:
        servers = await _listeners(stack, 4)
        pool = LinkPool()
        stack.callback(pool.close)
        for server in servers:
            pool.link_for(Endpoint("127.0.0.1", _port(server)))
        pool.open_all()

        line = await logged(caplog, "susee.links.pool", "connected to")

    assert re.fullmatch(r"connected to 4 of 4 bus\(es\) ahead of the first tick in \d+\.\d s", line), line
    assert loud(caplog, "susee.links.pool") == [line], "one line for all the buses"
    assert loud(caplog, "susee.links.tcp") == [], "no line per bus"
    assert len([m for m in messages(caplog, "susee.links.tcp", logging.DEBUG) if m.startswith("connected to")]) == 4


async def test_failed_connects_ahead_are_one_warning_naming_the_first_five(caplog):
    caplog.set_level(logging.INFO)
    refused = sorted({_closed_port() for _ in range(7)})
    async with AsyncExitStack() as stack:
        servers = await _listeners(stack, 2)
        pool = LinkPool()
        stack.callback(pool.close)
        for port in [*map(_port, servers), *refused]:
            pool.link_for(Endpoint("127.0.0.1", port))
        pool.open_all()

        line = await logged(caplog, "susee.links.pool", "connected to")

    failed = len(refused)
    match = re.fullmatch(
        rf"connected to 2 of {2 + failed} bus\(es\) ahead of the first tick in \d+\.\d s; "
        rf"{failed} failed: (?P<named>.*) and {failed - 5} more",
        line,
    )
    assert match, line
    named = match["named"].split(", ")
    assert len(named) == 5
    assert all(re.fullmatch(r"127\.0\.0\.1:(\d+) \(Connection refused\)", n) for n in named), named
    assert {int(re.search(r":(\d+)", n)[1]) for n in named} <= set(refused)
    assert [r.levelno for r in caplog.records if r.name == "susee.links.pool"] == [logging.WARNING]


async def test_a_pool_closed_before_its_connects_end_says_nothing(caplog):
    caplog.set_level(logging.INFO)
    async with AsyncExitStack() as stack:
        (server,) = await _listeners(stack, 1)
        pool = LinkPool()
        link = pool.link_for(Endpoint("127.0.0.1", _port(server)))
        pool.open_all()
        attempt = link._opening
        pool.close()  # at once: the connect is cancelled, not failed
        await asyncio.gather(attempt, return_exceptions=True)  # the pool's callback ran before this returns
        assert attempt.cancelled()
    assert loud(caplog, "susee.links.pool") == []


async def test_a_reconnect_after_a_lost_connection_is_info(caplog):
    caplog.set_level(logging.DEBUG, logger="susee.links.tcp")
    accepted: list[asyncio.StreamWriter] = []
    got_one = asyncio.Event()

    def accept(reader, writer) -> None:
        accepted.append(writer)
        got_one.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    endpoint = f"127.0.0.1:{_port(server)}"
    link = FastTcpLink(Endpoint("127.0.0.1", _port(server)))
    try:
        await link.open_ahead()
        await asyncio.wait_for(got_one.wait(), WAIT_S)
        accepted[0].close()  # the gateway drops the connection
        await logged(caplog, "susee.links.tcp", "connection lost")
        await link.open_ahead()
    finally:
        link.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

    assert loud(caplog, "susee.links.tcp") == [f"{endpoint}: connection lost", f"reconnected to {endpoint}"]
    assert messages(caplog, "susee.links.tcp", logging.DEBUG) == [f"connected to {endpoint}"]


# --- The summary at stop ----------------------------------------------------------------------

async def test_stop_summary_is_one_line_of_totals_naming_five_troubled_devices(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    port = _closed_port()  # every read is refused: every device has failures
    devices = [{"id": f"m{n:02d}", "host": "127.0.0.1", "port": port, "unit": 1 + n} for n in range(12)]
    settings = _site(tmp_path, devices)

    sink = create_sink(settings.database_target(), settings.job_id)
    assert await Supervisor(settings, plan_devices(settings, tmp_path / "site.yaml"), sink).run(duration_s=1.2) == 0

    totals = [m for m in messages(caplog, "susee.supervisor", logging.INFO) if m.startswith("12 device(s): ")]
    assert len(totals) == 1
    assert "(devices with failures or missed ticks: m00, m01, m02, m03, m04 and 7 more)" in totals[0]
    assert "failures: err_connection=" in totals[0]
    per_device = [m for m in messages(caplog, "susee.supervisor", logging.DEBUG) if " skipped in backoff" in m]
    assert len(per_device) == 12  # each device's own line is DEBUG
    assert not [m for m in messages(caplog, "susee.supervisor", logging.INFO) if m.startswith("device m")]
