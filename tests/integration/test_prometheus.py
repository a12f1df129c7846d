"""A real Prometheus server scrapes the live service: rows written increase, an injected fault is counted.

Prometheus comes from Debian (``apt-get install prometheus``, done by
``.ci/run``); the test starts it on a free port with a generated config and
asks it through its HTTP API, as a site's monitoring would.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time

import aiohttp
import pytest
import yaml

from web_site import TOKEN, running_site

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
WAIT_S = 60.0  # Prometheus' start and its first scrapes on a busy 2-core machine

pytestmark = pytest.mark.timeout(150)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _until(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while True:
        result = await predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"Prometheus: {what} not seen within {WAIT_S:g} s"
        await asyncio.sleep(0.25)


class PrometheusApi:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params) -> dict | None:
        try:
            async with self.session.get(self.base + path, params=params) as response:
                return await response.json() if response.status == 200 else None
        except aiohttp.ClientError:
            return None  # not listening yet

    async def value(self, query: str) -> float | None:
        answer = await self.get("/api/v1/query", query=query)
        result = answer["data"]["result"] if answer else []
        return float(result[0]["value"][1]) if result else None

    async def target_up(self) -> bool:
        answer = await self.get("/api/v1/targets")
        targets = answer["data"]["activeTargets"] if answer else []
        return bool(targets) and targets[0]["health"] == "up"


async def test_prometheus_scrapes_rows_written_and_a_devices_failures(tmp_path):
    if not shutil.which(PROMETHEUS):
        pytest.fail("prometheus is not installed: apt-get install prometheus (.ci/run does)", pytrace=False)
    async with running_site(tmp_path, http={"token": TOKEN}) as site, aiohttp.ClientSession() as session:
        host_port = site.url.split("//")[1].rstrip("/")
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{
                "job_name": "susee", "static_configs": [{"targets": [host_port]}],
                "authorization": {"type": "Bearer", "credentials": TOKEN},
            }],
        }), encoding="utf-8")
        port = _free_port()
        server = await asyncio.create_subprocess_exec(
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            api = PrometheusApi(session, f"http://127.0.0.1:{port}")
            await _until(api.target_up, "the susee target up")
            first = await _until(lambda: api.value("susee_rows_written_total > 0"), "rows written")
            await _until(lambda: _above(api, "susee_rows_written_total", first), "rows written increasing")

            site.simulator.set_fault(2, "illegal_address")  # d01 answers every read with exception 0x02
            failures = await _until(
                lambda: api.value('susee_device_failures_total{device="d01", code="err_register"} > 0'),
                "d01's failures")
            assert failures > 0
            assert await api.value('sum(susee_device_failures_total{device="d00"})') is None  # healthy: no series
            assert await api.value('susee_failures_total{code="err_register"}') >= failures
            assert await api.value("susee_database_online") == 1
            assert await api.value("process_resident_memory_bytes") > 0
        finally:
            server.terminate()
            await server.wait()


async def _above(api: PrometheusApi, query: str, floor: float) -> bool:
    value = await api.value(query)
    return value is not None and value > floor
