"""A running site with its live view, for the web tests: simulator, SQLite, HTTP on a free port.

The service runs in the test's own event loop, built exactly as ``susee run``
builds it (``commands.run``): a LiveView, the timed sink and the tap.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from susee.commands import Site, load_site
from susee.simulator import Pac3200Simulator
from susee.sinks import create_sink
from susee.supervisor import Supervisor
from susee.web import LiveView

TOKEN = "s3cret-token-for-tests-0123456789"


@dataclass
class RunningSite:
    url: str
    site: Site
    supervisor: Supervisor
    simulator: Pac3200Simulator
    db_path: Path

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the site's SQLite file with a connection of its own (WAL: never blocks the writer).

        [] until the writer has created the tables.
        """
        conn = sqlite3.connect(str(self.db_path), timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()


def write_config(folder: Path, port: int, devices: list[dict], http: dict | None = None) -> Path:
    config = {
        "job_id": "000", "sample_time": 1,
        "database": {"url": f"sqlite:///{folder / 'site.db'}"},
        "spool": {"path": str(folder / "spool")},
        "http": {"listen": "127.0.0.1:0", **(http or {})},
        "devices": [{"host": "127.0.0.1", "port": port, "timeout": 0.3, **device} for device in devices],
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def stored(site: RunningSite, sql: str, params: tuple = ()) -> list[tuple]:
    """``site.query`` in a thread (the service shares the test's loop)."""
    return await asyncio.to_thread(site.query, sql, params)


@asynccontextmanager
async def running_site(folder: Path, devices: list[dict] | None = None, units=(1, 2, 3),
                       http: dict | None = None) -> AsyncIterator[RunningSite]:
    """Serve until the block ends; devices default to d00.. on units 1.. of the simulator."""
    async with Pac3200Simulator(port=0, units=units, record=False) as simulator:
        devices = devices or [{"id": f"d{index:02d}", "unit": unit} for index, unit in enumerate(units)]
        site = load_site(str(write_config(folder, simulator.port, devices, http)))
        view = LiveView(site.settings, site.plans)
        sink = view.timed(create_sink(site.settings.database_target(), site.settings.job_id))
        supervisor = Supervisor(site.settings, site.plans, sink, handle_signals=False, observe=view.tap.wrap)
        async with view.serving(view.site_state(supervisor)) as url:
            task = asyncio.create_task(supervisor.run())
            try:
                yield RunningSite(url, site, supervisor, simulator, folder / "site.db")
            finally:
                supervisor.stop()
                await task
