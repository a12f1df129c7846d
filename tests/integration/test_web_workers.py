"""With ``workers: 2`` the parent serves the whole site: every device of every worker, one set of metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest

from integration.test_workers import buses, devices_on, mysql_url, service_for, write_site  # noqa: F401 (fixtures)

WAIT_S = 45.0  # three interpreters start on a busy machine before the first tick

pytestmark = pytest.mark.timeout(120)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    try:
        async with session.get(url) as response:
            return response.status, await response.read()
    except aiohttp.ClientError:
        return 0, b""  # not listening yet


async def test_the_parent_shows_every_workers_devices_and_metrics(tmp_path, buses, mariadb_target, job_id,
                                                                   service_for):
    site = write_site(tmp_path, job_id=job_id, db_url=mysql_url(mariadb_target), devices=devices_on(buses))
    service = service_for(tmp_path, site)
    await service.start()
    base = (await service.until_log(r"live view, health and metrics on (http://\S+)")).group(1)
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + WAIT_S
        while True:
            status, body = await _get(session, base + "api/devices")
            if status == 200:
                answer = json.loads(body)
                rows = [dict(zip(answer["columns"], row)) for row in answer["devices"]]
                if len(rows) == 6 and all(row["polls"] > 0 and row["status"] == "good" for row in rows):
                    break
            assert service.process.returncode is None, service.log
            assert time.monotonic() < deadline, f"not every device polled and good:\n{body[:500]!r}\n{service.log}"
            await asyncio.sleep(0.2)
        status, body = await _get(session, base + "metrics")
        text = body.decode()
        assert status == 200
        for device_id in ("d01", "d02", "d03", "d04", "d05", "d06"):  # worker 0 has d01-d03, worker 1 d04-d06
            assert f'susee_device_polls_total{{device="{device_id}"}}' in text
        assert "susee_worker_cpu_seconds_total" in text
        status, body = await _get(session, base + "readyz")
        assert status == 200, body
    service.signal_group(signal.SIGTERM)
    assert await service.finish(30.0) == 0
