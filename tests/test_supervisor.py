"""The supervisor's hold on the garbage collector: frozen start-up, a young generation sized to the site."""

from __future__ import annotations

import gc
import socket

import pytest

from susee.config import Settings
from susee.devices import plan_devices
from susee.sinks import create_sink
from susee.runtime import YOUNG_GC_THRESHOLD, YOUNG_OBJECTS_PER_DEVICE
from susee.supervisor import Supervisor


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Watched(Supervisor):
    """Notes the collector's thresholds while the service acquires."""

    async def main_loop(self, duration_s: float | None) -> None:
        self.thresholds_running = gc.get_threshold()
        await super().main_loop(duration_s)


@pytest.mark.parametrize("devices", [3, 4000], ids=["small-site-gets-the-floor", "large-site-scales"])
async def test_young_generation_threshold_covers_a_tick_in_flight_and_is_restored_at_stop(tmp_path, devices):
    port = _closed_port()
    settings = Settings(
        job_id="t01", sample_time=1,
        devices=[{"id": f"m{n:04d}", "host": "127.0.0.1", "port": port, "unit": 1 + n % 247} for n in range(devices)],
        database={"url": f"sqlite:///{tmp_path / 'site.db'}"}, spool={"path": str(tmp_path / "spool")},
    )
    before = gc.get_threshold()
    supervisor = Watched(settings, plan_devices(settings, tmp_path / "site.yaml"),
                         create_sink(settings.database_target(), settings.job_id))

    assert await supervisor.run(duration_s=0) == 0

    young, middle, oldest = supervisor.thresholds_running
    assert young == max(YOUNG_GC_THRESHOLD, YOUNG_OBJECTS_PER_DEVICE * devices)
    assert (middle, oldest) == before[1:]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0  # an embedding process gets its objects collectable again
