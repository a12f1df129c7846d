"""The collector's tuning: a young generation sized to the site, frozen start-up, all undone on exit."""

from __future__ import annotations

import gc

import pytest

from susee.runtime import YOUNG_GC_THRESHOLD, YOUNG_OBJECTS_PER_DEVICE, quiet_collector


@pytest.mark.parametrize(("devices", "young"), [
    pytest.param(0, YOUNG_GC_THRESHOLD, id="no-devices-the-floor"),
    pytest.param(2500, YOUNG_GC_THRESHOLD, id="2500-devices-still-the-floor"),
    pytest.param(10_000, 10_000 * YOUNG_OBJECTS_PER_DEVICE, id="10000-devices-scale"),
])
def test_quiet_collector_sizes_the_young_generation_and_restores_everything(devices, young) -> None:
    before = gc.get_threshold()

    with quiet_collector(devices):
        inside = gc.get_threshold()
        frozen = gc.get_freeze_count()

    assert inside == (young, *before[1:])
    assert frozen > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_quiet_collector_restores_the_collector_when_acquisition_fails() -> None:
    before = gc.get_threshold()

    with pytest.raises(RuntimeError), quiet_collector(100):
        raise RuntimeError("the service crashed")

    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
